"""Registered MAC products in ECP5 MULT18X18D blocks (style ``"dspreg"``): the block on its own,
qmac's Verilog model of ``MULT18X18D`` on its own (cocotb under Verilator against Python
products), the plan that picks the style, the MAC array and the engine with it (Amaranth
simulator, behavioural body), and the gate level: the netlist that ``synth_ecp5`` makes of the
instantiated ``MULT18X18D`` cells, simulated under Verilator with Yosys's ``share/ecp5`` cell
models plus qmac's ``MULT18X18D`` model, compared with the golden model on random vectors with
stalls; a model with the wrong sign control makes it fail.
"""

import json
import random
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.sim import Simulator

from qmac.hw import layouts
from qmac.hw.config import LayerConfig
from qmac.hw.ecp5_mac import REGISTER_MODES, RegisteredProduct, fits_mult18, model_path
from qmac.hw.mac_array import MacArray
from qmac.hw.multiply import MulPlan, plan_multipliers
from qmac.sim import beats, golden
from qmac.sim.runner import lint, run_stream, verilator_environment
import gatelevel
from harness import cfg_id, measure_latency, stream_test
from vectors import dot_config, dot_product_beats, mac_inputs, mac_stimulus, mac_weights


TESTS = Path(__file__).resolve().parent
EXAMPLE = LayerConfig.from_toml(TESTS.parent / "examples/layer.toml")


def ecp5_plan(cfg, budget=72, registers="output"):
    return plan_multipliers(cfg, family="ecp5", dsp_budget=budget, dsp_registers=registers)


def behavioural(plan):
    """The same plan without a target family: ``"dspreg"`` products as the behavioural model."""
    return MulPlan(mac=plan.mac, requant=plan.requant, dsp_registers=plan.dsp_registers)


# -- the block ---------------------------------------------------------------------------------

@pytest.mark.parametrize("registers", list(REGISTER_MODES))
@pytest.mark.parametrize("a_bits, a_signed, b_bits, b_signed",
                         [(8, False, 8, True), (8, True, 8, True), (18, True, 18, True),
                          (18, False, 17, False), (1, False, 3, True)])
def test_registered_product_model(registers, a_bits, a_signed, b_bits, b_signed):
    """Exact over the corners and random operands, ``latency`` enabled cycles late, frozen
    while ``en`` is low."""
    dut = RegisteredProduct(a_bits=a_bits, a_signed=a_signed, b_bits=b_bits, b_signed=b_signed,
                            registers=registers)
    assert dut.latency == len(REGISTER_MODES[registers])

    def limits(bits, is_signed):
        return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)
    (a_lo, a_hi), (b_lo, b_hi) = limits(a_bits, a_signed), limits(b_bits, b_signed)
    rng = random.Random(a_bits * 100 + b_bits)
    pairs = [(a, b) for a in (a_lo, a_hi, 0) for b in (b_lo, b_hi, 0)]
    pairs += [(rng.randint(a_lo, a_hi), rng.randint(b_lo, b_hi)) for _ in range(40)]
    checked = []

    async def bench(ctx):
        pending = list(pairs)
        history = []
        while pending or len(history) < len(pairs) + dut.latency:
            en = rng.random() < 0.7
            a, b = pending[0] if pending else (0, 0)
            ctx.set(dut.a, a)
            ctx.set(dut.b, b)
            ctx.set(dut.en, en)
            before = ctx.get(dut.p)
            await ctx.tick()
            if not en:
                assert ctx.get(dut.p) == before, "moved without en"
                continue
            history.append((a, b))
            if pending:
                pending.pop(0)
            if len(history) >= dut.latency:
                a, b = history[-dut.latency]
                assert ctx.get(dut.p) == a * b, f"operands {(a, b)}"
                checked.append(a * b)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(checked) >= len(pairs)


@pytest.mark.parametrize("registers", list(REGISTER_MODES))
def test_registered_product_instance(registers):
    """The instance: the chosen registers on CLK0 with CE0 as the enable, signedness from the
    operands, SOURCEA/B tied low, SRIA/SRIB unconnected."""
    dut = RegisteredProduct(a_bits=8, a_signed=False, b_bits=8, b_signed=True,
                            registers=registers, primitive=True)
    text = rtlil.convert(dut, name="product", emit_src=False)
    cell = text[text.index("cell \\MULT18X18D"):]
    cell = cell[:cell.index("  end")]
    params = dict(re.findall(r'parameter \\(\w+) "(\w+)"', cell))
    stages = REGISTER_MODES[registers]
    assert params["REG_INPUTA_CLK"] == params["REG_INPUTB_CLK"] == "CLK0"
    assert params["REG_PIPELINE_CLK"] == ("CLK0" if "PIPELINE" in stages else "NONE")
    assert params["REG_OUTPUT_CLK"] == ("CLK0" if "OUTPUT" in stages else "NONE")
    assert params["REG_INPUTC_CLK"] == "NONE"
    assert all(params[f"REG_{r}_CE"] == "CE0" for r in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT"))
    assert "connect \\SIGNEDA 1'0" in cell and "connect \\SIGNEDB 1'1" in cell
    assert "connect \\SOURCEA 1'0" in cell and "connect \\SOURCEB 1'0" in cell
    assert "connect \\CE0 \\en" in cell and "connect \\CLK0 \\clk" in cell
    assert "SRIA" not in cell and "SRIB" not in cell


def test_registered_product_rejects_bad_arguments():
    with pytest.raises(ValueError, match="a_bits of a MULT18X18D product must be 1 to 18, not 19"):
        RegisteredProduct(a_bits=19, a_signed=True, b_bits=8, b_signed=True)
    with pytest.raises(ValueError, match="b_bits .* not 0"):
        RegisteredProduct(a_bits=8, a_signed=True, b_bits=0, b_signed=True)
    with pytest.raises(ValueError, match="unsigned 18x18 product does not fit"):
        RegisteredProduct(a_bits=18, a_signed=False, b_bits=18, b_signed=False)
    with pytest.raises(ValueError, match="registers of a MULT18X18D product must be one of "
                                         "'output', 'pipeline', 'all', not 'input'"):
        RegisteredProduct(a_bits=8, a_signed=True, b_bits=8, b_signed=True, registers="input")
    assert fits_mult18(18, True, 18, True) and fits_mult18(18, False, 17, False)
    assert not fits_mult18(19, True, 8, True)


# -- qmac's MULT18X18D model on its own ---------------------------------------------------------

#: Register configurations of the model under test: stage name to (CE index, RST index).
MODEL_CONFIGS = [
    {"name": "comb", "stages": {}, "async": False, "clock": 0},
    {"name": "output", "stages": {"a": [0, 0], "b": [0, 0], "output": [0, 0]}, "async": False,
     "clock": 0},
    {"name": "pipeline", "stages": {"a": [0, 0], "b": [0, 0], "pipeline": [0, 0]},
     "async": False, "clock": 0},
    {"name": "all", "stages": {"a": [0, 0], "b": [0, 0], "pipeline": [0, 0], "output": [0, 0]},
     "async": False, "clock": 0},
    # Every stage on CLK1 (CLK0 tied low), each with another clock enable and reset.
    {"name": "select", "stages": {"a": [1, 2], "b": [2, 1], "pipeline": [3, 3],
                                  "output": [1, 0]}, "async": False, "clock": 1},
    {"name": "async", "stages": {"a": [0, 0], "b": [0, 0], "output": [2, 1]}, "async": True,
     "clock": 0},
]


def model_wrapper(configs):
    """A Verilog top with one MULT18X18D per configuration, sharing the operands, sign controls,
    the four clock enables and the four resets; the test clock on the configuration's CLKn."""
    stage_names = {"a": "INPUTA", "b": "INPUTB", "pipeline": "PIPELINE", "output": "OUTPUT"}
    ports = ["input clk", "input [17:0] a", "input [17:0] b", "input signeda",
             "input signedb", "input [3:0] ce", "input [3:0] rst"]
    body = []
    zero = "1'b0"
    for config in configs:
        name = config["name"]
        ports += [f"output [35:0] p_{name}", f"output signedp_{name}"]
        params = []
        for stage, reg in stage_names.items():
            if stage in config["stages"]:
                ce, rst = config["stages"][stage]
                params += [f'.REG_{reg}_CLK("CLK{config["clock"]}")', f'.REG_{reg}_CE("CE{ce}")',
                           f'.REG_{reg}_RST("RST{rst}")']
        params.append(f'.RESETMODE("{"ASYNC" if config["async"] else "SYNC"}")')
        clocks = ", ".join(f".CLK{k}({'clk' if k == config['clock'] else zero})"
                           for k in range(4))
        bits = ", ".join([f".A{k}(a[{k}]), .B{k}(b[{k}]), .C{k}(1'b0)" for k in range(18)] +
                         [f".P{k}(p_{name}[{k}])" for k in range(36)])
        body.append(f"    MULT18X18D #({', '.join(params)}) m_{name} (\n"
                    f"        .SIGNEDA(signeda), .SIGNEDB(signedb), .SOURCEA(1'b0), "
                    f".SOURCEB(1'b0),\n        {clocks},\n"
                    f"        .CE0(ce[0]), .CE1(ce[1]), .CE2(ce[2]), .CE3(ce[3]),\n"
                    f"        .RST0(rst[0]), .RST1(rst[1]), .RST2(rst[2]), .RST3(rst[3]),\n"
                    f"        {bits}, .SIGNEDP(signedp_{name}));")
    return ("module mult18_tb (\n    " + ",\n    ".join(ports) + "\n);\n" + "\n".join(body)
            + "\nendmodule\n")


def failures(results_xml):
    tree = ET.parse(results_xml)
    cases = tree.findall(".//testcase")
    return len(cases), sum(1 for c in cases if c.find("failure") is not None
                           or c.find("error") is not None)


def run_model_test(folder, model_text=None, cycles=600):
    from cocotb_tools.runner import get_runner
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    wrapper = folder / "mult18_tb.v"
    wrapper.write_text(model_wrapper(MODEL_CONFIGS))
    model = model_path()
    if model_text is not None:
        model = folder / "mult18x18d.v"
        model.write_text(model_text)
    with verilator_environment():
        runner = get_runner("verilator")
        runner.build(sources=[model, wrapper], hdl_toplevel="mult18_tb",
                     build_dir=folder / "sim_build", build_args=["-Wno-fatal"], always=True,
                     timescale=("1ns", "1ps"), log_file=folder / "build.log")
        results = runner.test(
            test_module="ecp5_model_tb", hdl_toplevel="mult18_tb", hdl_toplevel_lang="verilog",
            build_dir=folder / "sim_build", test_dir=folder,
            extra_env={"QMAC_MULT18_CONFIGS": json.dumps(MODEL_CONFIGS),
                       "QMAC_CYCLES": str(cycles), "PYTHONPATH": str(TESTS)},
            timescale=("1ns", "1ps"), results_xml=str(folder / "results.xml"),
            log_file=folder / "test.log")
    return failures(results)


def test_mult18x18d_model_lints():
    assert lint(model_path()) == ""
    assert model_path().exists()


def test_mult18x18d_model(tmp_path):
    """The model against Python products in every register mode qmac uses (and without
    registers), with random clock enables (low about 30% of cycles) and resets, signed and
    unsigned corners, sign controls fixed per phase then random, and clock, enable and reset
    selection (CLK1, CE1..3, RST1..3)."""
    assert run_model_test(tmp_path) == (1, 0)


def test_mult18x18d_model_test_fails_on_a_wrong_model(tmp_path):
    """The model test can fail: with SIGNEDB ignored (B always unsigned), it does."""
    text = model_path().read_text()
    wrong = text.replace("{{18{b_reg[18] & b_reg[17]}}, b_reg[17:0]}", "{18'b0, b_reg[17:0]}")
    assert wrong != text
    assert run_model_test(tmp_path, wrong, cycles=200) == (1, 1)


# -- the plan ----------------------------------------------------------------------------------

def test_auto_registers_products_on_ecp5():
    """``auto`` on ECP5 gives every MAC product that fits a MULT18X18D the registered style and
    records the family; explicit ``dsp`` stays the inferred multiply; no target, no DSP block."""
    plan = ecp5_plan(EXAMPLE, budget=28)
    assert plan.family == "ecp5" and plan.primitives and plan.registered and not plan.packed
    assert plan.counts()["mac_dspreg"] == 16 and plan.product_stages == 2
    assert ecp5_plan(EXAMPLE, registers="all").product_stages == 3
    assert not plan_multipliers(EXAMPLE).registered
    assert not ecp5_plan(EXAMPLE.replace(mul_style="dsp")).registered
    assert not plan_multipliers(EXAMPLE, family="ice40", dsp_budget=8).registered
    # The 8x8 example-shaped engine on the 45k: all 64 products on DSPs (its one requantizer
    # lane beside them), the MAC blocks keep their DSPs before the requantizer does.
    big = EXAMPLE.replace(rows=8, cols=8)
    assert ecp5_plan(big).counts()["mac_dspreg"] == 64
    tight = ecp5_plan(big, budget=64)
    assert tight.counts()["mac_dspreg"] == 64 and tight.requant[:big.requant_lanes] == ("lut",)
    small = ecp5_plan(big, budget=28)
    assert small.counts()["mac_dspreg"] == 28
    assert all(style == "lut" for row in small.mac for style in row[4:])


def test_plan_rejects_bad_dspreg():
    cfg = LayerConfig(rows=1, cols=2, in_features=2, out_features=1)
    with pytest.raises(ValueError, match="requantizer lane cannot be 'dspreg'"):
        MulPlan(mac=(("dspreg", "dspreg"),), requant=("dspreg",))
    with pytest.raises(ValueError, match="'dspreg' MAC products need operands of at most 18 "
                                         "bits, not a_bits=19"):
        MulPlan(mac=(("dspreg", "lut"),), requant=("lut",)).check(
            cfg.replace(a_bits=19, a_signed=True, acc_bits=32))
    with pytest.raises(ValueError, match="exist only on 'ecp5', not on family 'ice40'"):
        MulPlan(mac=(("dspreg", "lut"),), requant=("lut",), family="ice40").check(cfg)
    with pytest.raises(ValueError, match="cannot mix 'dsp2' and 'dspreg'"):
        MulPlan(mac=(("dspreg", "dsp2"),), requant=("lut",)).check(cfg)
    with pytest.raises(ValueError, match="registers of a MULT18X18D product must be one of .* "
                                         "not 'none'"):
        MulPlan(mac=(("dspreg", "lut"),), requant=("lut",), dsp_registers="none")


# -- the MAC array and the engine, behavioural model --------------------------------------------

REG_CONFIGS = [
    LayerConfig(rows=4, cols=4, a_bits=8, w_bits=8, acc_bits=18, overflow="wrap"),
    LayerConfig(rows=3, cols=3, in_features=9, out_features=6, a_bits=8, a_signed=True,
                w_bits=8, acc_bits=17, overflow="saturate"),
]


def check_registered_mac(cfg, plan, seed=1, count=12, free_running=None):
    dots = mac_stimulus(cfg, seed, count)
    dut = MacArray(cfg, mul_plan=plan, free_running=free_running)
    got = stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=seed)
    for k, ((x, w), out) in enumerate(zip(dots, got)):
        acc, overflow = golden.mac(dot_config(cfg, x), x[None, :], w)
        assert list(out.acc) == [int(v) for v in acc[0]], f"dot product {k}"
        assert list(out.overflow) == [int(v) for v in overflow[0]], f"dot product {k}"
    return dut


@pytest.mark.parametrize("registers", list(REGISTER_MODES))
@pytest.mark.parametrize("cfg", REG_CONFIGS, ids=cfg_id)
def test_registered_mac_array(cfg, registers):
    plan = behavioural(ecp5_plan(cfg, registers=registers))
    assert plan.registered and not plan.primitives
    dut = check_registered_mac(cfg, plan)
    stages = len(REGISTER_MODES[registers])
    one = dot_product_beats(cfg, mac_stimulus(cfg, 7, 1)[:1])
    assert measure_latency(MacArray(cfg, mul_plan=plan), one) == dut.latency
    # The DSP's register stages, plus one for the output buffer of the free-running data path,
    # its route registers, one before each tree level and the accumulators, and its operand
    # registers (all on by default with "dspreg").
    tree = (cfg.cols - 1).bit_length()
    assert dut.free_running and dut.route_registers and dut.route_stages == tree + 1
    assert dut.operand_registers
    assert dut.latency == 1 + 1 + stages + tree + 1 + (tree + 1)
    assert measure_latency(MacArray(cfg), one) == \
        dut.latency - 1 - (stages - 1) - 1 - (tree + 1)
    plain = MacArray(cfg, mul_plan=plan, free_running=False)
    assert not plain.free_running and not plain.route_registers and plain.buffer_depth == 0
    assert not plain.operand_registers
    assert measure_latency(plain, one) == plain.latency == dut.latency - 1 - 1 - (tree + 1)
    check_registered_mac(cfg, plan, seed=2, count=6)
    check_registered_mac(cfg, plan, seed=3, count=6, free_running=False)


def test_registered_mac_array_mixed_styles():
    """``dspreg`` products beside ``dsp`` and ``lut`` ones (those get delay registers)."""
    cfg = REG_CONFIGS[1]
    plan = MulPlan(mac=(("dspreg", "lut", "dspreg"), ("dsp", "dspreg", "lut"),
                        ("dspreg", "lut", "dsp")), requant=("lut",) * cfg.requant_lanes,
                   dsp_registers="all")
    check_registered_mac(cfg, plan, seed=3)


@pytest.fixture
def registered_engine(monkeypatch):
    """Make every engine built in the test use the behavioural ``dspreg`` plan of its config."""
    from qmac.hw import mac_array, requant

    def plan(cfg):
        return behavioural(ecp5_plan(cfg, budget=156))

    monkeypatch.setattr(mac_array, "plan_multipliers", plan)
    monkeypatch.setattr(requant, "plan_multipliers", plan)


ENGINE_CONFIG = LayerConfig(name="dut", in_features=6, out_features=4, rows=2, cols=3, a_bits=8,
                            w_bits=8, acc_bits=20, m_bits=12, b_bits=24, s_max=15)


def test_registered_engine(registered_engine):
    from qmac.hw import mac_array
    from test_engine import check_engine, test_engine_cycles, test_engine_latency
    cfg = ENGINE_CONFIG
    assert mac_array.plan_multipliers(cfg).registered
    check_engine(cfg, batch=4)
    test_engine_cycles(cfg)              # cycles(batch) exact at full rate
    test_engine_latency(cfg)             # the measured latency is the property


# -- gate level: synth_ecp5 netlist with Yosys's cell models and qmac's MULT18X18D model ------

def gate_level_build(component, name, folder, model=None):
    """:func:`gatelevel.gate_level_build` for ECP5 with the MULT18X18D model (``model``: another
    model file, for the negative test)."""
    return gatelevel.gate_level_build(component, name, folder, "ecp5-25k",
                                      models=[model or model_path()])


GATE_CONFIG = LayerConfig(name="dut", rows=2, cols=2, in_features=6, out_features=4, a_bits=8,
                          w_bits=8, acc_bits=17, overflow="wrap")


def gate_vectors(cfg, n_random=16):
    rng = np.random.default_rng(21)
    w = mac_weights(cfg, rng)
    x = mac_inputs(cfg, w, rng, n_random=n_random)
    return x, w


# Each gate-level build takes 1-3 minutes (Verilator compiles the whole netlist): the mode with
# all three registers runs with ``-m slow``.
@pytest.mark.parametrize("registers", ["output",
                                       pytest.param("all", marks=pytest.mark.slow)])
def test_gate_level_mac_array(registers, tmp_path):
    cfg = GATE_CONFIG
    plan = ecp5_plan(cfg, registers=registers)
    assert plan.primitives and plan.counts()["mac_dspreg"] == cfg.rows * cfg.cols
    dut = MacArray(cfg, mul_plan=plan)
    built, cells, netlist = gate_level_build(dut, "mac_gate", tmp_path)
    # Every product is in a MULT18X18D as instantiated, registers on; no multiplier in LUTs.
    blocks = cfg.rows * cfg.cols
    assert cells.get("MULT18X18D") == blocks
    assert netlist.count('.REG_INPUTA_CLK("CLK0")') == blocks
    assert netlist.count('.REG_OUTPUT_CLK("CLK0")') == blocks
    assert netlist.count('.REG_PIPELINE_CLK("CLK0")') == (blocks if registers == "all" else 0)
    # No product in LUTs: a soft 8x8 product alone is about 100-230 LUT4 (note section 1.2).
    assert cells.get("LUT4", 0) < 50 * cfg.rows * cfg.cols
    x, w = gate_vectors(cfg)
    inputs = beats.mac_beats(cfg, x, w)
    expected = beats.mac_expected(cfg, x, w)
    _, flags = golden.mac(cfg, x, w)
    assert flags.any() and not flags.all()      # the stimulus overflows some accumulators
    width = layouts.mac_input_layout(cfg).size
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected,
                     stall=(0.3, 0.3), seed=5, in_width=width, label="stalls")
    assert run.passed and run.outputs == expected and not run.extra
    # Long output stalls: the output buffer fills and `i.ready` (the credits) goes low.
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected,
                     stall=(0.1, 0.8), seed=7, in_width=width, label="long stalls")
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


def test_gate_level_catches_a_wrong_model(tmp_path):
    """The gate-level check can fail: with a MULT18X18D model whose register stages pass their
    input straight through (the products two cycles early), the netlist's outputs under long
    output stalls (the stimulus the real model passes in :func:`test_gate_level_mac_array`)
    differ from the golden model. (The array's data path runs free, with every ``CE0`` tied
    high, so a model that ignored its clock enable would not be seen.)

    (A wrong sign control cannot be seen here: the instance sign-extends both operands to 18 bits
    and the array keeps only the low ``a_bits + w_bits`` bits of ``P``, which are the same for
    either reading of ``SIGNEDA``/``SIGNEDB``. The model test above catches that error.)"""
    cfg = GATE_CONFIG
    text = model_path().read_text()
    wrong = text.replace("assign q = value;", "assign q = d;")
    assert wrong.count("assign q = d;") == 2
    model = tmp_path / "wrong_mult18x18d.v"
    model.write_text(wrong)
    dut = MacArray(cfg, mul_plan=ecp5_plan(cfg))
    built, _, _ = gate_level_build(dut, "mac_gate", tmp_path, model=model)
    x, w = gate_vectors(cfg)
    expected = beats.mac_expected(cfg, x, w)
    run = run_stream(built, beats.mac_beats(cfg, x, w), n_outputs=len(expected),
                     expected=expected, stall=(0.1, 0.8), seed=7,
                     in_width=layouts.mac_input_layout(cfg).size, label="wrong")
    assert not run.passed


# -- synth: the bound for what nextpnr does not time ---------------------------------------------

def test_registered_mult18_bound(tmp_path):
    """With input and output registers (nextpnr's REGS_ALL) the multiply inside the block is not
    timed: the reported bound caps the Fmax at the internal stage; no registered block, no
    bound."""
    from qmac.synth import MULT18_INTERNAL_MHZ, _registered_mult18_bound

    def netlist(**params):
        path = tmp_path / "netlist.json"
        path.write_text(json.dumps({"modules": {"top": {"cells": {
            "m": {"type": "MULT18X18D", "parameters": params}}}}}))
        return path

    both = netlist(REG_INPUTA_CLK="CLK0", REG_INPUTB_CLK="CLK0", REG_OUTPUT_CLK="CLK0")
    bound = _registered_mult18_bound(both, 400.0)
    assert bound["fmax_mhz"] == MULT18_INTERNAL_MHZ and bound["modes"] == {"REGS_ALL": 1}
    assert _registered_mult18_bound(both, 150.0)["fmax_mhz"] == 150.0
    pipeline = netlist(REG_INPUTA_CLK="CLK0", REG_INPUTB_CLK="CLK0", REG_PIPELINE_CLK="CLK0")
    assert _registered_mult18_bound(pipeline, 400.0)["modes"] == {"REGS_INPUT": 1}
    assert _registered_mult18_bound(pipeline, 400.0)["fmax_mhz"] == 400.0
    assert _registered_mult18_bound(netlist(), 400.0) is None


def test_report_shows_the_mult18_bound():
    from qmac.synth import format_report
    result = {"name": "x", "target": "ecp5-45k", "seed": 1, "freq_target_mhz": 100,
              "available": {"luts": 1, "ffs": 1, "carries": 1, "dsps": 1, "brams": 1},
              "luts": 1, "ffs": 1, "carries": 1, "dsps": 1, "brams": 0, "family": "ecp5",
              "fits": True, "fmax_mhz": 400.0, "fmax_mult18_bound_mhz": 290.0, "clock": "clk"}
    assert "Fmax 290.0 MHz at most" in format_report(result)
    assert "at most" not in format_report({**result, "fmax_mult18_bound_mhz": 400.0})
