"""mul_style, the Booth LUT multiplier, the fair-timing harness and ``qmac synth``.

The synthesis tests run Yosys and nextpnr on tiny layers (seconds each); larger ones are slow.
"""

import json

import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from qmac.cli import main
from qmac.hw import multiply
from qmac.hw.config import ConfigError, LayerConfig
from qmac.hw.multiply import MulPlan, dsp_cost, plan_multipliers, soft_product
from qmac.synth import TARGETS, SynthError, synthesize, synthesize_rtlil


# -- the Booth multiplier ---------------------------------------------------------------------

def _range(shape):
    if shape.signed:
        return range(-(1 << (shape.width - 1)), 1 << (shape.width - 1))
    return range(1 << shape.width)


@pytest.mark.parametrize("a_shape, b_shape", [
    (signed(4), signed(4)), (unsigned(4), signed(3)), (signed(5), unsigned(3)),
    (unsigned(3), unsigned(5)), (signed(2), signed(6)), (unsigned(1), signed(4)),
    (signed(7), signed(6)), (unsigned(8), signed(2)), (signed(3), signed(2)),
], ids=str)
def test_soft_product_exhaustive(a_shape, b_shape):
    m = Module()
    a, b = Signal(a_shape), Signal(b_shape)
    value = soft_product(a, b)
    assert value.shape() == (a * b).shape()
    y = Signal(value.shape())
    m.d.comb += y.eq(value)
    wrong = []

    async def bench(ctx):
        for va in _range(a_shape):
            for vb in _range(b_shape):
                ctx.set(a, va)
                ctx.set(b, vb)
                if ctx.get(y) != va * vb:
                    wrong.append((va, vb, ctx.get(y)))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert wrong == [], f"first wrong products (a, b, got): {wrong[:4]}"


def test_soft_product_has_no_multiply():
    from amaranth.back import rtlil
    m = Module()
    a, b, y = Signal(signed(8)), Signal(unsigned(8)), Signal(signed(17))
    m.d.comb += y.eq(soft_product(a, b))
    text = rtlil.convert(m, ports=[a, b, y])
    assert "$mul" not in text
    m = Module()
    m.d.comb += y.eq(a * b)
    assert "$mul" in rtlil.convert(m, ports=[a, b, y])     # the check can fail


# -- configuration and plans ------------------------------------------------------------------

def test_mul_style_config():
    assert LayerConfig().mul_style == "auto"
    for style in ("auto", "dsp", "lut"):
        assert LayerConfig(mul_style=style).mul_style == style
    with pytest.raises(ConfigError, match=r"mul_style must be one of .*not 'booth'"):
        LayerConfig(mul_style="booth")
    with pytest.raises(ConfigError, match=r"mul_style .* not 3"):
        LayerConfig(mul_style=3)


def test_plan_uniform_styles():
    cfg = LayerConfig(rows=2, cols=3, in_features=6, out_features=4)
    for style in ("dsp", "lut"):
        plan = plan_multipliers(cfg.replace(mul_style=style), family="ice40", dsp_budget=8)
        # One requantizer lane: cfg.requant_lanes = ceil(rows / beats) = ceil(2 / 2).
        assert plan.counts() == {"mac_dsp": 6 * (style == "dsp"), "mac_lut": 6 * (style == "lut"),
                                 "requant_dsp": 1 * (style == "dsp"),
                                 "requant_lut": 1 * (style == "lut")}


def test_plan_auto_without_target():
    # 8-bit unsigned activation x 8-bit weight: a 9x8 signed multiply -> DSP.
    plan = plan_multipliers(LayerConfig(a_bits=8, w_bits=8, m_bits=16))
    assert plan.counts()["mac_dsp"] == 1 and plan.counts()["requant_dsp"] == 1
    # 4x4 and 4x5: below 5x6 -> LUT.
    plan = plan_multipliers(LayerConfig(a_bits=4, a_signed=True, w_bits=4, acc_bits=12,
                                        m_bits=4))
    assert plan.counts()["mac_lut"] == 1 and plan.counts()["requant_lut"] == 1
    # The boundary: 5x6 is the smallest DSP product.
    assert plan_multipliers(LayerConfig(a_bits=5, a_signed=True, w_bits=6)).mac == (("dsp",),)
    assert plan_multipliers(LayerConfig(a_bits=5, a_signed=True, w_bits=5)).mac == (("lut",),)


@pytest.mark.parametrize("target", list(TARGETS))
def test_plan_auto_fits_budget(target):
    cfg = LayerConfig.from_toml("examples/layer.toml")
    family, budget = TARGETS[target].family, TARGETS[target].available["dsps"]
    # Everything on DSPs, counted as the auto plan counts (an unlimited budget).
    full = plan_multipliers(cfg, family=family, dsp_budget=10**6).dsp_estimate(cfg, family)
    plan = plan_multipliers(cfg, family=family, dsp_budget=budget)
    estimate = plan.dsp_estimate(cfg, family)
    assert estimate <= budget
    if full <= budget:
        assert plan.counts()["mac_lut"] == plan.counts()["requant_lut"] == 0
    else:
        # Only as many moved as needed: one more DSP multiplier would not fit.
        assert estimate > budget - max(dsp_cost(*multiply.mac_operands(cfg), family),
                                       dsp_cost(*multiply.requant_operands(cfg), family))


def test_plan_errors():
    cfg = LayerConfig(rows=2, cols=2, in_features=4, out_features=4)
    with pytest.raises(ValueError, match="family must be one of"):
        plan_multipliers(cfg, family="xilinx", dsp_budget=4)
    with pytest.raises(ValueError, match="give both family and dsp_budget"):
        plan_multipliers(cfg, family="ice40")
    with pytest.raises(ValueError, match="style must be 'dsp' or 'lut', not 'soft'"):
        MulPlan(mac=(("soft",),), requant=("lut",))
    with pytest.raises(ValueError, match=r"must be 2×2, not 1×1"):
        MulPlan(mac=(("lut",),), requant=("lut", "lut")).check(cfg)


def test_dsp_cost_rules():
    assert dsp_cost(9, 8, "ice40") == 1
    assert dsp_cost(5, 5, "ice40") == 0          # A + B <= 10 stays in LUTs on iCE40
    assert dsp_cost(20, 25, "ice40") == 4
    assert dsp_cost(3, 3, "ecp5") == 1           # every multiply of 2x2 and wider on ECP5
    assert dsp_cost(20, 25, "ecp5") == 4
    assert dsp_cost(1, 8, "ecp5") == 0


# -- the RTL with LUT and mixed multipliers, against the golden model --------------------------

LUT_CONFIGS = [
    LayerConfig(name="dut", in_features=6, out_features=4, rows=2, cols=3, a_bits=8, w_bits=8,
                acc_bits=20, m_bits=12, b_bits=24, s_max=15, mul_style="lut"),
    LayerConfig(name="dut", in_features=4, out_features=6, rows=3, cols=2, a_bits=6,
                a_signed=True, w_bits=7, acc_bits=18, overflow="saturate", m_bits=9, b_bits=20,
                s_max=12, out_signed=True, relu=True, mul_style="lut"),
]


@pytest.mark.parametrize("cfg", LUT_CONFIGS, ids=["u8xs8", "s6xs7-sat"])
def test_lut_style_amaranth_sim(cfg):
    from test_engine import check_engine
    from test_mac_array import check_mac
    from test_requantizer import check_requant
    check_mac(cfg)
    check_requant(cfg, count=12)
    check_engine(cfg, batch=3)


def test_mixed_plan_engine(monkeypatch):
    """A plan that mixes DSP and LUT products (what ``auto`` with a target gives)."""
    from qmac.hw import mac_array, requant
    from test_engine import check_engine
    cfg = LUT_CONFIGS[0].replace(mul_style="auto")
    mixed = MulPlan(mac=(("dsp", "lut", "dsp"), ("lut", "lut", "dsp")), requant=("lut",))
    monkeypatch.setattr(mac_array, "plan_multipliers", lambda cfg: mixed)
    monkeypatch.setattr(requant, "plan_multipliers", lambda cfg: mixed)
    check_engine(cfg, batch=3)


def test_lut_style_cocotb(verilator_build):
    from test_cocotb import _check_engine
    cfg = LayerConfig(name="dut", in_features=4, out_features=2, rows=1, cols=2, a_bits=8,
                      w_bits=8, acc_bits=18, m_bits=10, b_bits=20, s_max=12, mul_style="lut")
    _check_engine(cfg, verilator_build, seed=5, batch=6)


@pytest.mark.slow
def test_lut_style_cocotb_larger(verilator_build):
    from test_cocotb import _check_engine
    _check_engine(LUT_CONFIGS[0], verilator_build, seed=5, batch=6)


# -- synthesis --------------------------------------------------------------------------------

def tiny(rows, cols, **changes):
    base = dict(name="tiny", in_features=8, out_features=4, rows=rows, cols=cols, a_bits=8,
                w_bits=8, acc_bits=16, m_bits=8, b_bits=20, s_max=12)
    base.update(changes)
    return LayerConfig(**base)


def run_synth(tmp_path, cfg, target, *extra):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = tmp_path / f"{cfg.name}.toml"
    config.write_text(cfg.to_toml())
    out = tmp_path / "out.json"
    code = main(["synth", str(config), "--target", target, "--json", str(out),
                 "--build-dir", str(tmp_path / "run"), *extra])
    return code, json.loads(out.read_text()) if out.exists() else None


KEYS = ("luts", "ffs", "carries", "dsps", "brams", "fmax_mhz", "target", "seed", "fits",
        "available", "critical_path", "tools", "multipliers")


@pytest.mark.parametrize("target, shapes", [("ice40-up5k", ((1, 2), (2, 2))),
                                           ("ecp5-25k", ((1, 2), (2, 4)))])
def test_synth_small_arrays(tmp_path, target, shapes, capsys):
    results = {}
    for rows, cols in shapes:
        # The same memory depth (8 weight words, 2 folds) for both shapes: only the array grows.
        cfg = tiny(rows, cols, in_features=4 * cols, out_features=2 * rows, mul_style="dsp")
        extra = [] if (rows, cols) == shapes[1] else ["--no-blocks"]
        code, result = run_synth(tmp_path / f"{rows}x{cols}", cfg, target, "--seed", "2",
                                 *extra)
        assert code == 0
        for key in KEYS:
            assert key in result, key
        assert result["target"] == target and result["seed"] == 2 and result["fits"] is True
        assert 5 < result["fmax_mhz"] < 500
        assert result["available"]["dsps"] == TARGETS[target].available["dsps"]
        assert result["critical_path"]["kind"] in ("DSP", "memory", "soft multiplier",
                                                   "carry chain", "routing", "logic")
        assert result["tools"]["yosys"] and result["tools"][f"nextpnr-{TARGETS[target].family}"]
        # Nothing of the core optimized away: one DSP per MAC product and requantizer lane
        # (9x8 products and the lane's digit products take one DSP each on both families) and
        # at least one register per accumulator bit.
        assert result["dsps"] == rows * cols + cfg.requant_lanes
        assert result["ffs"] >= rows * 16
        results[rows, cols] = result
    small, large = results[shapes[0]], results[shapes[1]]
    assert large["luts"] > small["luts"] and large["ffs"] > small["ffs"]
    blocks = large["blocks"]
    macs = shapes[1][0] * shapes[1][1]
    assert blocks["mac_array"]["dsps"] == macs and blocks["mac_array"]["ffs"] >= macs * 15
    assert blocks["requantizer"]["dsps"] == -(-shapes[1][0] // 4)     # lanes: rows / beats
    out = capsys.readouterr().out
    assert "critical path:" in out and "Fmax" in out and "mac_array" in out


def test_synth_lut_style_has_no_dsp(tmp_path):
    for style, expect_dsps in (("lut", False), ("dsp", True)):     # the check can fail
        result = synthesize(tiny(1, 2, mul_style=style), "ecp5-25k", tmp_path / style,
                            blocks=False, place=False, progress=lambda message: None)
        assert (result["dsps"] > 0) == expect_dsps
        assert result["multipliers"]["mac_lut"] == (2 if style == "lut" else 0)


def test_synth_too_large_names_the_resource(tmp_path, capsys):
    cfg = tiny(2, 4, mul_style="dsp")
    code, result = run_synth(tmp_path, cfg, "ice40-up5k")
    assert code == 1
    needs = 8 + cfg.requant_lanes
    err = capsys.readouterr().err
    assert f"needs {needs} DSPs, ice40-up5k has 8" in err
    assert "Traceback" not in err
    assert result["fits"] is False and result["dsps"] == needs


def test_synth_auto_fits_where_dsp_does_not(tmp_path):
    cfg = tiny(2, 4)
    result = synthesize(cfg, "ice40-up5k", tmp_path, blocks=False, place=False,
                        progress=lambda message: None)
    assert result["dsps"] <= 8 and result["fits"] is not False
    # Either multipliers moved to LUTs, or (iCE40, 8-bit operands) products packed two per DSP.
    mul = result["multipliers"]
    assert mul["mac_lut"] + mul["requant_lut"] > 0 or mul.get("mac_dsp2", 0) > 0


def test_failed_tool_shows_its_error(tmp_path):
    with pytest.raises(SynthError, match=r"(?s)yosys .*failed.*ERROR"):
        synthesize_rtlil("this is not RTLIL\n", TARGETS["ice40-up5k"], tmp_path,
                         progress=lambda message: None)


def test_abc_mapper_fallback_flow(tmp_path):
    """The ECP5 flow with abc instead of abc9 (what qmac.synth falls back to when Yosys 0.70's
    abc9 fails) maps the same engine to the same DSPs and block RAMs, places and routes, and
    says so; it exists for ECP5 only, and a failure of both flows is still an error."""
    from amaranth.back import rtlil
    from qmac.hw.harness import FairTimingHarness
    from qmac.hw.engine import LayerEngine
    from qmac.synth import _random_parameters
    cfg = tiny(1, 2, mul_style="dsp")
    text = rtlil.convert(FairTimingHarness(LayerEngine(cfg, *_random_parameters(cfg))),
                         name="top", emit_src=False)
    quiet = lambda message: None   # noqa: E731
    flows = {mapper: synthesize_rtlil(text, TARGETS["ecp5-25k"], tmp_path / mapper,
                                      progress=quiet, mapper=mapper)[0]
             for mapper in ("abc9", "abc")}
    assert flows["abc"]["mapper"] == "abc" and flows["abc9"]["mapper"] == "abc9"
    assert "abc -lut 4" in (tmp_path / "abc" / "synth.ys").read_text()
    cells = {mapper: stat["modules"]["\\top"]["num_cells_by_type"]
             for mapper, stat in flows.items()}
    for kind in ("MULT18X18D", "DP16KD"):
        assert cells["abc"].get(kind) == cells["abc9"].get(kind), kind
    assert cells["abc"].get("LUT4", 0) > 0
    with pytest.raises(ValueError, match="for ECP5 only, not ice40"):
        synthesize_rtlil(text, TARGETS["ice40-up5k"], tmp_path / "ice", progress=quiet,
                         mapper="abc")
    with pytest.raises(SynthError, match="with abc failed"):
        synthesize_rtlil("this is not RTLIL\n", TARGETS["ecp5-25k"], tmp_path / "bad",
                         progress=quiet)


def test_synth_bad_arguments(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(tiny(1, 2).to_toml())
    with pytest.raises(SystemExit):
        main(["synth", str(config), "--target", "ice40-hx8k"])
    assert "invalid choice: 'ice40-hx8k'" in capsys.readouterr().err
    assert main(["synth", str(config), "--target", "ecp5-25k", "--freq", "-5"]) == 2
    assert "--freq must be a positive number of MHz, not -5" in capsys.readouterr().err
    for bad in ("0", "-3", "nan"):
        assert main(["synth", str(config), "--target", "ecp5-25k", "--pnr-timeout", bad]) == 2
        assert f"--pnr-timeout must be a positive number of seconds, not {float(bad):g}" in \
            capsys.readouterr().err
    assert main(["synth", str(config), "--target", "ecp5-25k", "--weights", "w.npy"]) == 2
    assert "give both --weights and --requant" in capsys.readouterr().err
    config.write_text(tiny(1, 2).to_toml().replace('mul_style = "auto"', 'mul_style = "fast"'))
    assert main(["synth", str(config), "--target", "ecp5-25k"]) == 2
    assert "mul_style must be one of 'auto', 'dsp', 'lut', 'pack', not 'fast'" in \
        capsys.readouterr().err


def test_pnr_timeout_stops_nextpnr(tmp_path, capsys):
    """``--pnr-timeout`` stops a nextpnr run that takes longer and says so; the synthesis
    before it ran (its log is there), and a limit it keeps to changes nothing."""
    config = tmp_path / "tiny.toml"
    config.write_text(tiny(1, 2).to_toml())
    common = ["synth", str(config), "--target", "ice40-up5k", "--no-blocks"]
    assert main([*common, "--pnr-timeout", "0.05", "--build-dir", str(tmp_path / "a")]) == 1
    err = capsys.readouterr().err
    assert "nextpnr-ice40 (seed 1, 50 MHz target) did not finish in 0.05 s and was stopped" \
        in err
    assert "Traceback" not in err and (tmp_path / "a" / "run0" / "yosys.log").exists()
    assert main([*common, "--pnr-timeout", "600", "--build-dir", str(tmp_path / "b")]) == 0
    assert "Fmax" in capsys.readouterr().out


def test_harness_registers_the_reset():
    """The fair-timing harness feeds its design from the input shift register, resets it one
    cycle after its own reset (a registered reset, so that no path starts at the reset pin), and
    its data registers keep their values through a reset."""
    from amaranth.hdl import ClockDomain
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from qmac.hw.harness import FairTimingHarness

    class Counter(wiring.Component):
        step: In(1)
        count: Out(4)

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.count.eq(self.count + self.step)
            return m

    dut = Counter()
    top = FairTimingHarness(dut)
    m = Module()
    m.domains.sync = sync = ClockDomain()
    m.submodules.top = top
    seen = []

    async def bench(ctx):
        ctx.set(top.din, 1)                  # din XOR the LFSR: the design's step toggles
        await ctx.tick().repeat(40)
        seen.append(ctx.get(dut.count))
        ctx.set(sync.rst, 1)
        await ctx.tick()
        seen.append(ctx.get(dut.count))
        ctx.set(sync.rst, 0)
        await ctx.tick()
        seen.append(ctx.get(dut.count))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    counted, during, after = seen
    assert counted > 0
    assert during != 0                       # the reset edge itself: the design not reset yet
    assert after == 0                        # one cycle later it is
