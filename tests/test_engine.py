"""Amaranth-simulator unit tests of the layer engine.

Every test runs a producer and a consumer testbench side by side with random stalls on both
streams, and compares every output beat bit for bit with the golden model (``sim.golden``).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Fragment, Module

from qmac.hw.config import LayerConfig
from qmac.hw.engine import LayerEngine
from qmac.sim import beats, golden
from harness import (GAP, STALL, engine_id, expect_idle, grid, measure_latency, run, stream_get,
                     stream_put, stream_test)
from vectors import engine_problem


def check_engine_outputs(cfg, x, w, M, B, S, got):
    expected = golden.layer(cfg, x, w, M, B, S)
    assert len(got) == len(x) * cfg.out_beats
    for k, out in enumerate(got):
        vector, fold = divmod(k, cfg.out_beats)
        assert out.last == (fold == cfg.out_beats - 1), f"vector {vector}, fold {fold}: last"
        for r in range(cfg.rows):
            c = fold * cfg.rows + r
            assert (out.y[r], out.overflow[r]) == \
                (int(expected.y[vector, c]), int(expected.overflow[vector, c])), \
                f"vector {vector}, channel {c}: got y {out.y[r]} overflow {out.overflow[r]}, " \
                f"expected {expected.y[vector, c]} {expected.overflow[vector, c]} " \
                f"(acc {expected.acc[vector, c]})"
    return expected


def check_engine(cfg, *, seed=3, batch=5, kind="uniform", levels_per_stage=1):
    x, w, M, B, S = engine_problem(cfg, seed, batch, kind)
    dut = LayerEngine(cfg, w, M, B, S, levels_per_stage=levels_per_stage)
    got = stream_test(dut, beats.engine_beats(cfg, x), batch * cfg.out_beats, seed=seed,
                      cycles=dut.cycles(batch))
    return check_engine_outputs(cfg, x, w, M, B, S, got)


def engine_cfg(**changes):
    base = dict(m_bits=16, b_bits=32, s_max=20)
    base.update(changes)
    return LayerConfig(**base)


ENGINE_CONFIGS = [
    engine_cfg(in_features=3, out_features=2, rows=1, cols=1, a_bits=2, w_bits=2, acc_bits=4,
               a_signed=True, out_bits=2, out_signed=True),
    engine_cfg(in_features=6, out_features=4, rows=2, cols=3, a_bits=4, w_bits=4, acc_bits=8,
               overflow="saturate"),
    engine_cfg(in_features=4, out_features=6, rows=3, cols=2, a_bits=8, w_bits=8, acc_bits=32,
               a_signed=True, shared_shift=True, out_bits=8, out_signed=True, relu=True),
    engine_cfg(in_features=4, out_features=8, rows=4, cols=4, a_bits=4, w_bits=4, acc_bits=9,
               a_signed=True, overflow="wrap"),
    engine_cfg(in_features=12, out_features=2, rows=2, cols=2, a_bits=2, w_bits=4,
               acc_bits=6, overflow="saturate", shared_shift=True),
    engine_cfg(in_features=16, out_features=16, rows=8, cols=8, a_bits=8, w_bits=8,
               acc_bits=18, overflow="wrap", out_bits=4),
]


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS, ids=engine_id)
def test_engine(cfg):
    expected = check_engine(cfg)
    # The parameters must put outputs strictly inside the clamp range too, not only on it.
    assert np.any((expected.y > cfg.y_min) & (expected.y < cfg.y_max))


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS[1:4:2], ids=engine_id)
def test_engine_extreme_operands(cfg):
    check_engine(cfg, seed=4, batch=4, kind="extreme")


def test_engine_tree_pipelining():
    cfg = ENGINE_CONFIGS[-1]
    check_engine(cfg, levels_per_stage=2)
    x, w, M, B, S = engine_problem(cfg, 2, 1)
    dut = LayerEngine(cfg, w, M, B, S, levels_per_stage=2)
    # Buffer write, read and read data register; MAC array; requantizer: rows 8 over beats 2
    # gives 4 lanes, 2 steps of 1 digit, 7 more stages and the one level of its adder tree
    # ("dsp" lanes: the product and B).
    assert dut._requant.tree_levels == 1
    assert dut.latency == 3 + (2 + 2) + (2 * 1 + 7 + 1)
    assert measure_latency(dut, beats.engine_beats(cfg, x)) == dut.latency


def run_full_rate(cfg, dut, x):
    """Run the engine beats of the vectors ``x`` through ``dut`` with no gaps and an always
    ready consumer. Returns the output beats and the cycle (counted from 1) of the last one."""
    got, timing = [], {}

    async def producer(ctx):
        for beat in beats.engine_beats(cfg, x):
            await stream_put(ctx, dut.i, beat)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(got) < len(x) * cfg.out_beats:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid:
                got.append(payload)
        timing["cycles"] = cycle

    run(dut, producer, consumer, deadline=10 * dut.cycles(len(x)))
    return got, timing["cycles"]


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS, ids=engine_id)
def test_engine_cycles(cfg):
    """At full rate (no gaps, no stalls) the last output beat comes in cycle cycles(batch) - 1."""
    batch = 3
    x, w, M, B, S = engine_problem(cfg, 5, batch)
    dut = LayerEngine(cfg, w, M, B, S)
    got, cycles = run_full_rate(cfg, dut, x)
    check_engine_outputs(cfg, x, w, M, B, S, got)
    assert len(x) == batch and cycles == dut.cycles(batch)
    assert dut.cycles(batch) == batch * cfg.out_beats * cfg.beats + dut.latency


RESET_CONFIG = engine_cfg(in_features=6, out_features=8, rows=2, cols=2, a_bits=4, w_bits=4,
                          acc_bits=10, overflow="saturate")
# (configuration, number of stale beats before the reset): in the first vector, in the second
# (the reader still busy with the first), and with two whole vectors waiting.
RESET_CASES = [(RESET_CONFIG, 1), (RESET_CONFIG, 4), (RESET_CONFIG, 5), (RESET_CONFIG, 6),
               (ENGINE_CONFIGS[0], 4), (ENGINE_CONFIGS[4], 8)]


@pytest.mark.parametrize("cfg, cut", RESET_CASES,
                         ids=[f"{engine_id(cfg)}-cut{cut}" for cfg, cut in RESET_CASES])
def test_engine_reset_mid_vector(cfg, cut):
    """A synchronous reset in the middle of a vector, with results in flight, leaves nothing
    behind: after it, the next ``beats`` beats form a fresh vector."""
    x, w, M, B, S = engine_problem(cfg, 6, 6)
    stale, fresh = x[:3], x[3:]
    dut = LayerEngine(cfg, w, M, B, S)
    top = Module()
    top.domains.sync = sync = ClockDomain("sync")
    top.submodules.engine = dut
    got, phase = [], {"reset": False}
    # Input at full rate and no output taken: stale beats and results fill the engine.
    stale_beats = beats.engine_beats(cfg, stale)[:cut]

    async def producer(ctx):
        rng = random.Random(7)
        for beat in stale_beats:
            await stream_put(ctx, dut.i, beat)
        ctx.set(sync.rst, 1)
        await ctx.tick()
        ctx.set(sync.rst, 0)
        phase["reset"] = True
        for beat in beats.engine_beats(cfg, fresh):
            await stream_put(ctx, dut.i, beat, rng=rng, gap=GAP)

    async def consumer(ctx):
        rng = random.Random(8)
        while not phase["reset"]:                # hold stale results in the pipeline
            await ctx.tick()
        for _ in range(len(fresh) * cfg.out_beats):
            got.append(await stream_get(ctx, dut.o, rng=rng, stall=STALL))
        await expect_idle(ctx, dut.o, 16)

    run(top, producer, consumer, deadline=3 * dut.cycles(len(x)) + 40 * len(x) * cfg.beats + 1000)
    check_engine_outputs(cfg, fresh, w, M, B, S, got)


def test_engine_rejects_bad_parameters():
    cfg = ENGINE_CONFIGS[1]
    x, w, M, B, S = engine_problem(cfg, 1, 2)
    bad_w = w.copy()
    bad_w[1, 2] = cfg.w_max + 1
    with pytest.raises(golden.RangeError, match=r"weights\[1, 2\] = 8"):
        LayerEngine(cfg, bad_w, M, B, S)
    bad_S = S.copy()
    bad_S[3] = cfg.s_max + 1
    with pytest.raises(golden.RangeError, match=r"S\[3\] = 21"):
        LayerEngine(cfg, w, M, B, bad_S)


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS, ids=engine_id)
def test_engine_latency(cfg):
    x, w, M, B, S = engine_problem(cfg, 2, 1)
    dut = LayerEngine(cfg, w, M, B, S)
    assert measure_latency(dut, beats.engine_beats(cfg, x)) == dut.latency


def grid_engine_configs():
    configs = []
    for rows, cols, K, N in [(1, 1, 3, 2), (2, 3, 9, 4), (3, 2, 4, 9), (4, 4, 8, 8),
                             (8, 8, 16, 16), (2, 2, 2, 8)]:
        for a_bits, w_bits in [(2, 2), (4, 8), (8, 4), (8, 8)]:
            for a_signed in (False, True):
                for overflow, acc_extra in [("wrap", 0), ("saturate", 1), ("wrap", None)]:
                    acc_bits = 32 if acc_extra is None else a_bits + w_bits + acc_extra
                    for shared_shift in (False, True):
                        configs.append(engine_cfg(
                            in_features=K, out_features=N, rows=rows, cols=cols,
                            a_bits=a_bits, w_bits=w_bits, a_signed=a_signed, acc_bits=acc_bits,
                            overflow=overflow, shared_shift=shared_shift,
                            out_bits=a_bits, out_signed=a_signed, relu=a_signed and w_bits == 4))
    return configs


@pytest.mark.parametrize("cfg", grid(grid_engine_configs(), engine_id, every=10))
def test_engine_grid(cfg):
    check_engine(cfg, seed=cfg.rows * 100 + cfg.acc_bits, batch=6)


@pytest.mark.parametrize("toml, npz", [("layer.toml", "requant.npz"),
                                       ("layer_shared.toml", "requant_shared.npz")])
def test_engine_example_layer(toml, npz):
    """The example layer with its real weights and M, B, S (one requantizer lane over the 4
    rows, 4 digits per channel; the 11 shifts aligned, or the solver's one shared shift),
    bit-exact under stalls and at the exact cycle count."""
    from pathlib import Path
    examples = Path(__file__).parent.parent / "examples"
    cfg = LayerConfig.from_toml(examples / toml)
    w = np.load(examples / "weights.npy")
    params = np.load(examples / npz)
    x = np.load(examples / "inputs.npy")[:3]
    dut = LayerEngine(cfg, w, params["M"], params["B"], params["S"])
    assert cfg.requant_lanes == 1 and (dut._requant.groups, dut._requant.digits) == (4, 4)
    assert dut._requant.shift_style == ("select" if cfg.shared_shift else "align")
    got = stream_test(dut, beats.engine_beats(cfg, x), len(x) * cfg.out_beats, seed=11,
                      cycles=dut.cycles(len(x)))
    check_engine_outputs(cfg, x, w, params["M"], params["B"], params["S"], got)


@pytest.mark.parametrize("gap, stall", [(GAP, STALL), (0.0, 0.7), (0.7, 0.0), (0.0, 0.0)])
def test_skid_buffer(gap, stall):
    """The engine's output slice: every beat once, in order, with ``i.ready`` a register."""
    from amaranth.hdl import unsigned
    from qmac.hw.pipeline import SkidBuffer
    values = list(range(200))
    got = stream_test(SkidBuffer(unsigned(8)), values, len(values), seed=3, gap=gap,
                      stall=stall)
    assert [int(v) for v in got] == values


def test_engine_split_requant_product():
    """The 8×8 example shape (rows 8 over beats 8: one requantizer lane, one cycle per channel,
    so one digit of the whole ``M``): its ``acc·M`` in partial products of one MULT18X18D each
    (the behavioural RegisteredProduct, as with an ECP5 plan), the parameters through the
    memory's output register; extreme inputs, and ``M`` at both ends of its range on a quarter
    of the channels."""
    from qmac.hw.multiply import MulPlan
    cfg = LayerConfig(in_features=64, out_features=16, rows=8, cols=8, a_bits=8, a_signed=False,
                      w_bits=8, acc_bits=20, m_bits=25, b_bits=41, s_max=33, out_bits=8,
                      relu=True)
    plan = MulPlan(mac=(("dspreg",) * cfg.cols,) * cfg.rows, requant=("dsp",) * cfg.requant_lanes)
    x, w, M, B, S = engine_problem(cfg, 6, 4, "extreme")
    rng = random.Random(6)
    for c in range(0, cfg.N, 4):
        M[c] = rng.choice([cfg.m_min, cfg.m_max])
        B[c] = rng.randint(cfg.b_min, cfg.b_max) >> 8
    dut = LayerEngine(cfg, w, M, B, S, mul_plan=plan)
    rq = dut._requant
    assert (rq.lanes, rq.digits) == (1, 1) and rq.registered_products
    assert len(rq.acc_pieces) == 2 and len(rq.digit_pieces) >= 2
    got = stream_test(dut, beats.engine_beats(cfg, x), len(x) * cfg.out_beats, seed=6,
                      cycles=dut.cycles(len(x)))
    expected = check_engine_outputs(cfg, x, w, M, B, S, got)
    assert np.any((expected.y > cfg.y_min) & (expected.y < cfg.y_max))
    assert measure_latency(dut, beats.engine_beats(cfg, x[:1])) == dut.latency


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS[1:3], ids=engine_id)
def test_engine_logic_param_rom(cfg):
    """The requantizer's parameters in a ROM in logic (``param_rom="logic"``, the default on
    ECP5 for a shallow parameter memory): the same outputs and latency as the golden model and
    the block-RAM form."""
    x, w, M, B, S = engine_problem(cfg, 4, 4)
    dut = LayerEngine(cfg, w, M, B, S, param_rom="logic")
    assert dut.param_rom == "logic"
    got = stream_test(dut, beats.engine_beats(cfg, x), len(x) * cfg.out_beats, seed=4,
                      cycles=dut.cycles(len(x)))
    check_engine_outputs(cfg, x, w, M, B, S, got)
    block = LayerEngine(cfg, w, M, B, S)
    assert block.param_rom == "block" and block.latency == dut.latency
    # With the table in logic the requantizer has copies of its enable; with a block RAM (and
    # no iCE40 plan) not.
    assert dut._requant.enable_copies and not block._requant.enable_copies
    assert measure_latency(dut, beats.engine_beats(cfg, x[:1])) == dut.latency
    Fragment.get(block, None)               # used: no UnusedElaboratable warning


def test_engine_param_rom_default():
    """With a plan for ECP5 the parameter memory is in logic when it has at most
    ``LOGIC_PARAM_DEPTH`` words (the 8×8 example: 64), else in a block RAM (the 4×4 example:
    256); a bad ``param_rom`` is refused, naming it."""
    from pathlib import Path
    from qmac.hw.engine import LOGIC_PARAM_DEPTH
    from qmac.hw.multiply import plan_multipliers
    examples = Path(__file__).parent.parent / "examples"
    base = LayerConfig.from_toml(examples / "layer.toml")
    w = np.load(examples / "weights.npy")
    params = np.load(examples / "requant.npz")
    for size, depth, rom in ((8, 64, "logic"), (4, 256, "block")):
        cfg = base.replace(rows=size, cols=size)
        dut = LayerEngine(cfg, w, params["M"], params["B"], params["S"],
                          mul_plan=plan_multipliers(cfg, family="ecp5", dsp_budget=72))
        assert dut._requant.depth == depth and dut.param_rom == rom
        assert (depth <= LOGIC_PARAM_DEPTH) == (rom == "logic")
        Fragment.get(dut, None)             # used: no UnusedElaboratable warning
    cfg = base.replace(rows=8, cols=8)
    plain = LayerEngine(cfg, w, params["M"], params["B"], params["S"])
    assert plain.param_rom == "block"       # no ECP5 plan: the memory and a register
    Fragment.get(plain, None)
    with pytest.raises(ValueError, match=r"param_rom must be None, 'block' or 'logic', "
                                         r"not 'lut'"):
        LayerEngine(cfg, w, params["M"], params["B"], params["S"], param_rom="lut")


def dspreg_plan(cfg):
    """Every MAC product a registered MULT18X18D (behavioural model): a free-running array."""
    from qmac.hw.multiply import MulPlan
    return MulPlan(mac=(("dspreg",) * cfg.cols,) * cfg.rows, requant=("lut",) * cfg.requant_lanes)


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS[1:5], ids=engine_id)
def test_engine_free_running_mac(cfg):
    """The engine around a free-running MAC array (its reader's enable a flip-flop fed by the
    array's ``i_ready_next``): exact under random stalls on both streams, long enough on the
    output that the array's buffer fills and its ``i.ready`` falls while a beat is offered;
    and at full rate the last output beat comes in cycle ``cycles(batch) - 1``."""
    probe = LayerEngine(cfg, *engine_problem(cfg, 9, 1)[1:], mul_plan=dspreg_plan(cfg))
    Fragment.get(probe, None)               # used: no UnusedElaboratable warning
    batch = max(3, -(-(3 * probe._mac.buffer_depth + 8) // cfg.out_beats))
    x, w, M, B, S = engine_problem(cfg, 9, batch)
    dut = LayerEngine(cfg, w, M, B, S, mul_plan=dspreg_plan(cfg))
    mac = dut._mac
    assert mac.free_running
    got, refused = [], []

    async def stalled_producer(ctx):
        rng = random.Random(1)
        for beat in beats.engine_beats(cfg, x):
            await stream_put(ctx, dut.i, beat, rng=rng, gap=0.1)

    async def stalled_consumer(ctx):
        rng = random.Random(2)
        for _ in range(len(x) * cfg.out_beats):
            got.append(await stream_get(ctx, dut.o, rng=rng, stall=0.9))

    async def monitor(ctx):
        async for _, _, ready, valid in ctx.tick().sample(mac.i.ready, mac.i.valid):
            if valid and not ready:
                refused.append(1)

    run(dut, stalled_producer, stalled_consumer, ("background", monitor),
        deadline=200 * dut.cycles(len(x)))
    check_engine_outputs(cfg, x, w, M, B, S, got)
    assert refused, "the array's i.ready never fell while a beat was offered"

    dut = LayerEngine(cfg, w, M, B, S, mul_plan=dspreg_plan(cfg))
    got, cycles = run_full_rate(cfg, dut, x)
    check_engine_outputs(cfg, x, w, M, B, S, got)
    assert cycles == dut.cycles(len(x))
