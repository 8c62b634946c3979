"""The MAC array's free-running data path (``MacArray(free_running=True)``, the default with
``"dspreg"`` products): no enable on the products, the adder tree or the DSP blocks, and an
output buffer whose credits make ``i.ready``.

Every multiplier style runs free against the golden model with random stalls, short and long;
at full rate the array never makes its input wait (``buffer_depth`` results are enough); with
the output stalled it takes exactly ``buffer_depth`` dot products and then holds ``i.ready``
low, and gives every one of them back, in order, when the output moves again.
"""

import numpy as np
import pytest
from amaranth.hdl import Fragment

from qmac.hw.config import LayerConfig
from qmac.hw.mac_array import MacArray
from qmac.hw.multiply import MulPlan
from qmac.sim import beats, golden
from harness import cfg_id, measure_latency, run, stream_get, stream_test
from vectors import dot_config, dot_product_beats, mac_stimulus, random_operands


def uniform_plan(cfg, style):
    """Every MAC product of ``style`` (behavioural models, no target family)."""
    return MulPlan(mac=((style,) * cfg.cols,) * cfg.rows, requant=("lut",) * cfg.requant_lanes)


def check_outputs(cfg, dots, got):
    assert len(got) == len(dots)
    for k, ((x, w), out) in enumerate(zip(dots, got)):
        acc, overflow = golden.mac(dot_config(cfg, x), x[None, :], w)
        assert list(out.acc) == [int(v) for v in acc[0]], f"dot product {k}"
        assert list(out.overflow) == [int(v) for v in overflow[0]], f"dot product {k}"


STYLE_CONFIGS = [
    # 8x8 operands: every style but "pack" (two 8-bit products do not share a MULT18X18D).
    (LayerConfig(rows=3, cols=4, in_features=4, out_features=6, a_bits=8, w_bits=8,
                 acc_bits=17, a_signed=True, overflow="saturate"),
     ["lut", "dsp", "dsp2", "dspreg"]),
    # 4x4 operands: "pack" too.
    (LayerConfig(rows=4, cols=3, in_features=9, out_features=8, a_bits=4, w_bits=4,
                 acc_bits=9, overflow="wrap"),
     ["lut", "dsp", "pack", "dspreg"]),
]


@pytest.mark.parametrize("route", [False, True], ids=["", "route"])
@pytest.mark.parametrize("cfg, style", [pytest.param(cfg, style, id=f"{cfg_id(cfg)}-{style}")
                                        for cfg, styles in STYLE_CONFIGS for style in styles])
def test_free_running_styles(cfg, style, route):
    """Each multiplier style on the free-running path, with and without route registers:
    exact under short and long stalls (the output buffer full); one cycle more latency than
    the stalling pipeline, and one per tree stage and one more with route registers (and one
    for the operand registers that come with them on ``"dspreg"`` products)."""
    plan = uniform_plan(cfg, style)
    dots = mac_stimulus(cfg, 11, 10)

    def make():
        return MacArray(cfg, mul_plan=plan, free_running=True, route_registers=route)

    dut = make()
    check_outputs(cfg, dots, stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=11))
    dut = make()
    check_outputs(cfg, dots, stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=12,
                                         gap=0.05, stall=0.8))
    one = dot_product_beats(cfg, mac_stimulus(cfg, 7, 1)[:1])
    plain = MacArray(cfg, mul_plan=plan, free_running=False)
    route_stages = (cfg.cols - 1).bit_length() + 1 if route else 0
    assert dut.route_stages == route_stages
    # Operand registers come with route registers on "dspreg" products (one stage).
    operand_stages = int(route and style == "dspreg")
    assert dut.operand_registers == bool(operand_stages) and not plain.operand_registers
    assert measure_latency(plain, one) + 1 + route_stages + operand_stages == \
        plain.latency + 1 + route_stages + operand_stages == dut.latency == \
        measure_latency(make(), one)


def dots_of(cfg, count, seed):
    """``count`` dot products of ``cfg.beats`` beats each."""
    rng = np.random.default_rng(seed)
    return [random_operands(cfg, rng, ((cfg.K,), (cfg.rows, cfg.K)), "uniform")
            for _ in range(count)]


BUFFER_CONFIGS = [
    # beats 1: a result every cycle; the buffer holds latency + 1 results.
    LayerConfig(rows=2, cols=4, in_features=4, out_features=2, a_bits=8, w_bits=8,
                acc_bits=18, a_signed=True),
    # beats 3: fewer results in flight.
    LayerConfig(rows=2, cols=2, in_features=6, out_features=2, a_bits=8, w_bits=8,
                acc_bits=19),
    # beats 8: the output register and one stored result.
    LayerConfig(rows=2, cols=2, in_features=16, out_features=2, a_bits=8, w_bits=8,
                acc_bits=20, a_signed=True),
]


@pytest.mark.parametrize("cfg", BUFFER_CONFIGS, ids=lambda cfg: f"beats{cfg.beats}")
def test_free_running_full_rate(cfg):
    """With ``o.ready`` always high, ``i.ready`` never falls: one beat per cycle."""
    plan = uniform_plan(cfg, "dspreg")
    dut = MacArray(cfg, mul_plan=plan)
    assert dut.free_running
    assert dut.buffer_depth == 1 + -(-(dut.latency + 1) // cfg.beats)
    dots = dots_of(cfg, 24, cfg.beats)
    beats_in = dot_product_beats(cfg, dots)
    waits, got = [], []

    async def producer(ctx):
        ctx.set(dut.i.valid, 1)
        for beat in beats_in:
            ctx.set(dut.i.p.as_value(), beat)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    break
                waits.append(1)
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        for _ in dots:
            got.append(await stream_get(ctx, dut.o))

    run(dut, producer, consumer, deadline=len(beats_in) + 100)
    assert not waits, f"i.ready fell {len(waits)} times at full rate"
    check_outputs(cfg, dots, got)


@pytest.mark.parametrize("cfg", BUFFER_CONFIGS, ids=lambda cfg: f"beats{cfg.beats}")
def test_free_running_credits(cfg):
    """With ``o`` stalled, the array takes exactly ``buffer_depth`` dot products, then holds
    ``i.ready`` low (however long it waits); released, it gives all of them back in order."""
    dut = MacArray(cfg, mul_plan=uniform_plan(cfg, "dspreg"))
    depth = dut.buffer_depth
    dots = dots_of(cfg, depth + 3, 5)
    beats_in = dot_product_beats(cfg, dots)
    taken = []
    got = []

    async def producer(ctx):
        ctx.set(dut.i.valid, 1)
        for k, beat in enumerate(beats_in):
            ctx.set(dut.i.p.as_value(), beat)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    taken.append(k)
                    break
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 0)
        for _ in range(dut.latency + 4 * cfg.beats * (depth + 3) + 20):
            await ctx.tick()
        # Stalled long enough: exactly `depth` dot products went in, their results wait.
        assert len(taken) == depth * cfg.beats, \
            f"{len(taken)} beats taken with the output stalled, expected {depth * cfg.beats}"
        assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
        for _ in dots:
            got.append(await stream_get(ctx, dut.o))

    run(dut, producer, consumer, deadline=10_000)
    check_outputs(cfg, dots, got)


@pytest.mark.parametrize("cols, levels_per_stage", [(1, 1), (3, 1), (8, 1), (8, 2), (8, 3),
                                                    (5, 8)])
def test_route_registers_latency(cols, levels_per_stage):
    """Route registers: one stage before each tree stage and one before the accumulators, at
    every ``levels_per_stage``; exact with stalls, and the latency property is measured."""
    cfg = LayerConfig(rows=2, cols=cols, in_features=2 * cols, out_features=2, a_bits=4,
                      w_bits=4, acc_bits=9, a_signed=True, overflow="saturate")

    def make():
        return MacArray(cfg, levels_per_stage=levels_per_stage, free_running=True,
                        route_registers=True)

    tree_stages = -(-(cols - 1).bit_length() // levels_per_stage)
    dut = make()
    assert dut.latency == 2 + tree_stages + (tree_stages + 1) + 1
    one = dot_product_beats(cfg, mac_stimulus(cfg, 7, 1)[:1])
    assert measure_latency(make(), one) == dut.latency
    dots = mac_stimulus(cfg, 13, 8)
    check_outputs(cfg, dots, stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=13))


@pytest.mark.parametrize("free_running", [True, False], ids=["free", "enable"])
@pytest.mark.parametrize("cfg, style", [pytest.param(cfg, style, id=f"{cfg_id(cfg)}-{style}")
                                        for cfg, styles in STYLE_CONFIGS for style in styles])
def test_operand_registers(cfg, style, free_running):
    """Operand registers before the products, with each multiplier style, free-running (with
    route registers) or under the global enable: exact under stalls, and one stage of latency
    more than without them, measured."""
    plan = uniform_plan(cfg, style)
    dots = mac_stimulus(cfg, 17, 6)

    def make(operands):
        return MacArray(cfg, mul_plan=plan, free_running=free_running,
                        route_registers=free_running, operand_registers=operands)

    dut = make(True)
    assert dut.operand_registers
    check_outputs(cfg, dots, stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=17,
                                         gap=0.3, stall=0.5))
    one = dot_product_beats(cfg, mac_stimulus(cfg, 7, 1)[:1])
    without = make(False)
    assert not without.operand_registers
    assert measure_latency(without, one) + 1 == without.latency + 1 == dut.latency == \
        measure_latency(make(True), one)


def test_operand_registers_default():
    """Operand registers come by default with route registers on ``"dspreg"`` products only
    (their DSP blocks may sit far from what feeds ``i``)."""
    cfg = STYLE_CONFIGS[0][0]

    def operand_registers(style, **options):
        dut = MacArray(cfg, mul_plan=uniform_plan(cfg, style), **options)
        Fragment.get(dut, None)             # used: no UnusedElaboratable warning
        return dut.operand_registers

    assert operand_registers("dspreg")
    assert not operand_registers("dspreg", route_registers=False)
    assert not operand_registers("dspreg", free_running=False)
    for style in ("lut", "dsp", "dsp2"):
        assert not operand_registers(style, free_running=True, route_registers=True)
