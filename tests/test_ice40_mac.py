"""Two 8×8 MAC products per iCE40 SB_MAC16 (style ``"dsp2"``): the block on its own, the plan
that picks it, the MAC array and the engine with it (Amaranth simulator and RTL cocotb, on the
behavioural model), and the gate level: the netlist that ``synth_ice40`` makes of the
instantiated ``SB_MAC16`` cells, simulated under Verilator with Yosys's own cell models
(``share/ice40/cells_sim.v``) and compared with the golden model on random vectors with stalls.
"""

import random
import re
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from qmac.hw import layouts
from qmac.hw.config import LayerConfig
from qmac.hw.ice40_mac import DualProduct8x8, fits_8x8
from qmac.hw.mac_array import MacArray
from qmac.hw.multiply import MulPlan, packs_8x8, plan_multipliers
from qmac.sim import beats, golden
from qmac.sim.runner import run_stream
from gatelevel import gate_level_build
from harness import cfg_id, measure_latency, stream_test
from vectors import dot_config, dot_product_beats, mac_inputs, mac_stimulus, mac_weights


def behavioural(plan):
    """The same plan without a target family: ``"dsp2"`` pairs as the behavioural model."""
    return MulPlan(mac=plan.mac, requant=plan.requant)


def ice40_plan(cfg, budget=8):
    return plan_multipliers(cfg, family="ice40", dsp_budget=budget)


# -- the block ---------------------------------------------------------------------------------

@pytest.mark.parametrize("a_bits, a_signed, b_bits", [(8, False, 8), (8, True, 8), (3, True, 5),
                                                      (1, False, 2)])
def test_dual_product_model(a_bits, a_signed, b_bits):
    """Both products exact over the corners and random operands, two stages late, and frozen
    while ``en`` is low."""
    dut = DualProduct8x8(a_bits=a_bits, a_signed=a_signed, b_bits=b_bits, b_signed=True)
    a_lo, a_hi = (-(1 << (a_bits - 1)), (1 << (a_bits - 1)) - 1) if a_signed else \
        (0, (1 << a_bits) - 1)
    b_lo, b_hi = -(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1
    rng = random.Random(a_bits * 100 + b_bits)
    corners = [(a, b) for a in (a_lo, a_hi, 0) for b in (b_lo, b_hi, 0)]
    pairs = corners + [(rng.randint(a_lo, a_hi), rng.randint(b_lo, b_hi)) for _ in range(60)]
    sent = []

    async def bench(ctx):
        pending = list(zip(pairs, reversed(pairs)))
        history = []         # operands of each cycle with en high, in order
        while pending or len(history) < len(pairs) + 2:
            en = rng.random() < 0.7
            (at, bt), (ab, bb) = pending[0] if pending else ((0, 0), (0, 0))
            ctx.set(dut.a_top, at)
            ctx.set(dut.b_top, bt)
            ctx.set(dut.a_bot, ab)
            ctx.set(dut.b_bot, bb)
            ctx.set(dut.en, en)
            before = (ctx.get(dut.p_top), ctx.get(dut.p_bot))
            await ctx.tick()
            if not en:
                assert (ctx.get(dut.p_top), ctx.get(dut.p_bot)) == before, "moved without en"
                continue
            history.append(((at, bt), (ab, bb)))
            if pending:
                pending.pop(0)
            if len(history) >= 2:
                (at, bt), (ab, bb) = history[-2]
                got = (ctx.get(dut.p_top), ctx.get(dut.p_bot))
                assert got == (at * bt, ab * bb), f"operands {history[-2]}: got {got}"
                sent.append(got)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(sent) >= len(pairs)


def test_dual_product_instance_parameters():
    """The instance is SB_MAC16 in MODE_8x8 with input and product registers on, outputs from
    the product registers, signedness from the operands."""
    dut = DualProduct8x8(a_bits=8, a_signed=False, b_bits=8, b_signed=True, primitive=True)
    text = rtlil.convert(dut, name="dual", emit_src=False)
    cell = text[text.index("cell \\SB_MAC16"):]
    cell = cell[:cell.index("  end")]
    params = dict(re.findall(r"parameter \\(\w+) \d+'(\d+)", cell))
    expected = {"MODE_8x8": "1", "A_REG": "1", "B_REG": "1", "TOP_8x8_MULT_REG": "1",
                "BOT_8x8_MULT_REG": "1", "TOPOUTPUT_SELECT": "10", "BOTOUTPUT_SELECT": "10",
                "A_SIGNED": "0", "B_SIGNED": "1", "PIPELINE_16x16_MULT_REG1": "0",
                "PIPELINE_16x16_MULT_REG2": "0", "C_REG": "0", "D_REG": "0"}
    assert {k: params.get(k) for k in expected} == expected
    assert "connect \\CE \\en" in cell


def test_dual_product_rejects_bad_operands():
    with pytest.raises(ValueError, match="a_bits of an SB_MAC16 8x8 product must be 1 to 8, "
                                         "not 9"):
        DualProduct8x8(a_bits=9, a_signed=True, b_bits=8, b_signed=True)
    with pytest.raises(ValueError, match="b_bits .* not 0"):
        DualProduct8x8(a_bits=8, a_signed=True, b_bits=0, b_signed=True)
    with pytest.raises(ValueError, match="unsigned 8x8 product does not fit"):
        DualProduct8x8(a_bits=8, a_signed=False, b_bits=8, b_signed=False)
    assert fits_8x8(8, False, 8, True) and fits_8x8(7, False, 8, False)
    assert not fits_8x8(9, False, 8, True)


# -- the plan ----------------------------------------------------------------------------------

EXAMPLE = LayerConfig.from_toml(Path(__file__).resolve().parent.parent / "examples/layer.toml")


def test_auto_packs_example_on_up5k():
    """The example layer (4×4, u8 × s8): 16 products in 8 SB_MAC16, the requantizer moved off the
    DSPs first; without a target nothing is packed."""
    plan = ice40_plan(EXAMPLE)
    assert plan.family == "ice40" and plan.primitives
    assert plan.counts() == {"mac_dsp": 0, "mac_lut": 0, "mac_dsp2": 16, "requant_dsp": 0,
                             "requant_lut": EXAMPLE.requant_lanes}
    assert plan.dsp_estimate(EXAMPLE, "ice40") == 8
    pairs = plan.pairs()
    assert len(pairs) == 8 and sorted(p for pair in pairs for p in pair) == \
        [(r, c) for r in range(4) for c in range(4)]
    assert not plan_multipliers(EXAMPLE).packed
    assert not plan_multipliers(EXAMPLE, family="ecp5", dsp_budget=28).packed
    # Explicit styles are kept as they are.
    assert not ice40_plan(EXAMPLE.replace(mul_style="dsp")).packed


def test_auto_packed_budget():
    small = LayerConfig(rows=2, cols=2, in_features=4, out_features=4, a_bits=8, w_bits=8,
                        acc_bits=18, m_bits=16)
    # 4 products in 2 blocks, and the 18x16 requantizer lane (2 blocks) fits beside them.
    assert ice40_plan(small).counts() == {"mac_dsp": 0, "mac_lut": 0, "mac_dsp2": 4,
                                          "requant_dsp": 1, "requant_lut": 0}
    assert ice40_plan(small, budget=4).counts()["requant_dsp"] == 1
    # A budget below the packed MAC array moves products, the last column first.
    plan = ice40_plan(small, budget=1)
    assert plan.mac == (("dsp2", "lut"), ("dsp2", "lut")) and plan.requant == ("lut",)
    assert plan.dsp_estimate(small, "ice40") == 1
    # Operands wider than 8 bits are not packed.
    wide = small.replace(a_bits=9, a_signed=True)
    assert not packs_8x8(wide) and not ice40_plan(wide).packed


def test_plan_rejects_bad_dsp2():
    cfg = LayerConfig(rows=1, cols=2, in_features=2, out_features=1)
    with pytest.raises(ValueError, match="requantizer lane cannot be 'dsp2'"):
        MulPlan(mac=(("dsp2", "dsp2"),), requant=("dsp2",))
    with pytest.raises(ValueError, match="'dsp2' MAC products need operands of at most 8 bits, "
                                         "not a_bits=9"):
        MulPlan(mac=(("dsp2", "dsp2"),), requant=("lut",)).check(cfg.replace(a_bits=9))
    with pytest.raises(ValueError, match="exist only on 'ice40', not on family 'ecp5'"):
        MulPlan(mac=(("dsp2", "lut"),), requant=("lut",), family="ecp5").check(cfg)
    with pytest.raises(ValueError, match="family must be None or one of .* not 'xilinx'"):
        MulPlan(mac=(("lut", "lut"),), requant=("lut",), family="xilinx")


# -- the MAC array and the engine, behavioural model --------------------------------------------

PACKED_CONFIGS = [
    LayerConfig(rows=4, cols=4, a_bits=8, w_bits=8, acc_bits=18, overflow="wrap"),
    LayerConfig(rows=3, cols=3, in_features=9, out_features=6, a_bits=8, a_signed=True,
                w_bits=8, acc_bits=17, overflow="saturate"),
    LayerConfig(rows=1, cols=1, a_bits=5, w_bits=3, acc_bits=9, a_signed=True,
                overflow="saturate"),
]


def check_packed_mac(cfg, plan, seed=1, count=12, **options):
    dots = mac_stimulus(cfg, seed, count)
    dut = MacArray(cfg, mul_plan=plan, **options)
    got = stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=seed)
    for k, ((x, w), out) in enumerate(zip(dots, got)):
        acc, overflow = golden.mac(dot_config(cfg, x), x[None, :], w)
        assert list(out.acc) == [int(v) for v in acc[0]], f"dot product {k}"
        assert list(out.overflow) == [int(v) for v in overflow[0]], f"dot product {k}"
    return dut


@pytest.mark.parametrize("cfg", PACKED_CONFIGS, ids=cfg_id)
def test_packed_mac_array(cfg):
    plan = behavioural(ice40_plan(cfg))
    assert plan.packed and not plan.primitives
    dut = check_packed_mac(cfg, plan)
    # Two product stages; free-running by default when dot products are longer than its
    # latency (an output buffer of two results; one stage more, no route registers). The latency property and its formula
    # stay true in both modes, and both are exact.
    free = MacArray(cfg, mul_plan=plan, free_running=True)
    stalling = MacArray(cfg, mul_plan=plan, free_running=False)
    assert dut.free_running == (free.buffer_depth <= 2) == (free.latency < cfg.beats)
    assert not free.route_registers
    other = check_packed_mac(cfg, plan, seed=2, free_running=not dut.free_running)
    one = dot_product_beats(cfg, mac_stimulus(cfg, 7, 1)[:1])
    for array in (dut, other, free, stalling):
        assert measure_latency(array, one) == array.latency
    assert stalling.latency == 1 + 2 + (cfg.cols - 1).bit_length() == free.latency - 1
    assert measure_latency(MacArray(cfg), one) == stalling.latency - 1     # one product stage


def test_packed_mac_array_mixed_styles():
    """``dsp2`` pairs beside ``dsp`` and ``lut`` products (an odd one out in its own block)."""
    cfg = PACKED_CONFIGS[1]
    plan = MulPlan(mac=(("dsp2", "lut", "dsp2"), ("dsp", "dsp2", "lut"), ("dsp2", "lut", "dsp2")),
                   requant=("lut",) * cfg.requant_lanes)
    assert [len(pair) for pair in plan.pairs()] == [2, 2, 1]
    check_packed_mac(cfg, plan, seed=3)


@pytest.fixture
def packed_engine(monkeypatch):
    """Make every engine built in the test use the behavioural ``dsp2`` plan of its config."""
    from qmac.hw import mac_array, requant

    def plan(cfg):
        return behavioural(ice40_plan(cfg, budget=64))

    monkeypatch.setattr(mac_array, "plan_multipliers", plan)
    monkeypatch.setattr(requant, "plan_multipliers", plan)


ENGINE_CONFIG = LayerConfig(name="dut", in_features=6, out_features=4, rows=2, cols=3, a_bits=8,
                            w_bits=8, acc_bits=20, m_bits=12, b_bits=24, s_max=15)


def test_packed_engine(packed_engine):
    from qmac.hw import mac_array
    from test_engine import check_engine, test_engine_cycles, test_engine_latency
    cfg = ENGINE_CONFIG
    assert mac_array.plan_multipliers(cfg).packed
    check_engine(cfg, batch=4)
    test_engine_cycles(cfg)              # cycles(batch) exact at full rate
    test_engine_latency(cfg)             # the measured latency is the property


def test_packed_engine_cocotb(packed_engine, verilator_build):
    """The RTL of the behavioural model under Verilator: lint-clean, exact with stalls, full-rate
    cycle count, reset in the middle of a vector."""
    from test_cocotb import _check_engine
    _check_engine(ENGINE_CONFIG, verilator_build, seed=6, batch=6)


# -- gate level: synth_ice40 netlist with Yosys's SB_MAC16 model --------------------------------

# ``cells_sim`` and ``gate_level_build`` live in ``gatelevel.py`` (shared with the threshold
# requantizer's gate-level test); the default target is the UP5K.


GATE_CONFIGS = [
    # u8 x s8 as in the example layer; 2x2: two blocks, each with two rows of one column.
    LayerConfig(name="dut", rows=2, cols=2, in_features=6, out_features=4, a_bits=8, w_bits=8,
                acc_bits=17, overflow="wrap"),
    # s6 x s7, saturating, an odd number of products (one block half used).
    LayerConfig(name="dut", rows=3, cols=1, in_features=3, out_features=6, a_bits=6,
                a_signed=True, w_bits=7, acc_bits=13, overflow="saturate"),
]
# Each gate-level build takes about a minute (Verilator compiles the whole netlist): the
# second configuration runs with ``-m slow``.
# The first one free-running (the mode of the example engine on the UP5K; its dot products of
# 3 beats would get the global enable by default), the second one in its default mode (the
# global enable).
GATE_PARAMS = [pytest.param(GATE_CONFIGS[0], True, id=cfg_id(GATE_CONFIGS[0]) + "-free"),
               pytest.param(GATE_CONFIGS[1], None, id=cfg_id(GATE_CONFIGS[1]),
                            marks=pytest.mark.slow)]


@pytest.mark.parametrize("cfg, free_running", GATE_PARAMS)
def test_gate_level_mac_array(cfg, free_running, tmp_path):
    plan = ice40_plan(cfg)
    assert plan.primitives and plan.counts()["mac_dsp2"] == cfg.rows * cfg.cols
    dut = MacArray(cfg, mul_plan=plan, free_running=free_running)
    assert dut.free_running == bool(free_running)
    built, cells, netlist = gate_level_build(dut, "mac_gate", tmp_path)
    # Every product is in a packed SB_MAC16 as instantiated; the fabric holds no multiplier.
    blocks = -(-cfg.rows * cfg.cols // 2)
    assert cells.get("SB_MAC16") == blocks
    assert netlist.count(".MODE_8x8(1'h1)") == blocks
    assert netlist.count(".A_REG(1'h1)") == blocks
    assert netlist.count(".TOP_8x8_MULT_REG(1'h1)") == blocks
    # A soft 8x8 product alone is ~100 LUTs; the accumulators, the adder tree and (free
    # running) the output buffer of flip-flops and its credits take about 170 on the 2x2 array.
    assert cells.get("SB_LUT4", 0) < (100 * blocks if dut.free_running else 40 * cfg.rows)
    rng = np.random.default_rng(21)
    w = mac_weights(cfg, rng)
    x = mac_inputs(cfg, w, rng)
    inputs = beats.mac_beats(cfg, x, w)
    expected = beats.mac_expected(cfg, x, w)
    _, flags = golden.mac(cfg, x, w)
    assert flags.any() and not flags.all()      # the stimulus overflows some accumulators
    width = layouts.mac_input_layout(cfg).size
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected,
                     stall=(0.3, 0.3), seed=5, in_width=width, label="stalls")
    assert run.passed and run.outputs == expected and not run.extra
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=0.0,
                     seed=5, in_width=width, label="full-rate")
    assert run.passed and run.cycles <= len(inputs) + dut.latency + 1
    # Reset in the middle of a dot product.
    prefix = inputs[:cfg.beats * 2 + max(cfg.beats - 1, 1)]
    run = run_stream(built, inputs[:cfg.beats * 4], n_outputs=4, expected=expected[:4],
                     stall=(0.3, 0.3), seed=6, in_width=width, reset_prefix=prefix,
                     label="reset")
    assert run.passed and run.outputs == expected[:4]


@pytest.mark.slow        # a second netlist build (40 s); the fast set keeps the ECP5 twin
def test_gate_level_catches_a_wrong_block(tmp_path, monkeypatch):
    """The gate-level check can fail: with the weights' signedness wrong in the instance
    (``B_SIGNED`` 0), the netlist's outputs differ from the golden model."""
    from qmac.hw import ice40_mac
    cfg = GATE_CONFIGS[0]
    real = ice40_mac.DualProduct8x8._instance

    def wrong(self, m):
        self.b_signed = False
        return real(self, m)

    monkeypatch.setattr(ice40_mac.DualProduct8x8, "_instance", wrong)
    dut = MacArray(cfg, mul_plan=ice40_plan(cfg))
    built, _, netlist = gate_level_build(dut, "mac_gate", tmp_path)
    assert ".B_SIGNED(1'h0)" in netlist
    rng = np.random.default_rng(21)
    w = mac_weights(cfg, rng)
    x = mac_inputs(cfg, w, rng, n_random=4)
    expected = beats.mac_expected(cfg, x, w)
    run = run_stream(built, beats.mac_beats(cfg, x, w), n_outputs=len(expected),
                     expected=expected, stall=0.0, seed=5,
                     in_width=layouts.mac_input_layout(cfg).size, label="wrong")
    assert not run.passed
