"""The Verilog conversion (:mod:`hw.verilog`) means exactly what Amaranth's netlist means.

Each test builds a Yosys miter of the design as Amaranth emits it (RTLIL) against our
lint-clean Verilog, and proves with SAT that no input (and, for designs with state, no input
sequence of ``seq`` cycles from reset values) makes them differ. A mutated Verilog must fail the
same proof, so the check itself can fail.
"""

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qmac.hw.config import LayerConfig
from qmac.hw.engine import LayerEngine
from qmac.hw.mac_array import MacArray
from qmac.hw.requant import Requantizer
from qmac.hw.verilog import YosysError, convert, run_yosys
from vectors import engine_params, mac_weights


class Cells(wiring.Component):
    """Every cell kind the conversion rewrites, with operands narrower and wider than results,
    mixed signedness, and shifts whose result is narrower than the shifted value."""
    a: In(signed(5))
    b: In(unsigned(7))
    c: In(unsigned(3))
    d: In(signed(9))
    lt: Out(1)
    le: Out(1)
    eq: Out(1)
    add: Out(signed(12))
    sub: Out(signed(12))
    subu: Out(12)
    mul: Out(signed(6))
    mulw: Out(signed(20))
    notx: Out(signed(10))
    neg: Out(signed(10))
    negu: Out(10)
    shr: Out(signed(3))
    sshr: Out(signed(14))
    shru: Out(3)
    shl: Out(4)
    xorx: Out(signed(12))
    zero: Out(1)
    both: Out(1)
    either: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [
            self.lt.eq(self.a < self.b), self.le.eq(self.d <= self.c),
            self.eq.eq(self.a == self.b), self.add.eq(self.a + self.b),
            self.sub.eq(self.a - self.b), self.subu.eq(self.c - self.b),
            self.mul.eq(self.a * self.b), self.mulw.eq(self.a * self.b),
            self.notx.eq(~self.a), self.neg.eq(-self.a), self.negu.eq(-self.c),
            self.shr.eq(self.d >> self.c), self.sshr.eq(self.a >> self.c),
            self.shru.eq(self.b >> self.c), self.shl.eq(self.b << self.c),
            self.xorx.eq(self.a ^ self.b),
            # Logical operators on multi-bit operands (lowered to gates).
            self.zero.eq(self.b == 0), self.both.eq(self.b.bool() & self.c.bool()),
            self.either.eq(self.a.any() | (self.d != 0)),
        ]
        return m


def prove_equivalent(component, *, seq=0, mutate=None):
    """Prove (SAT) that ``convert(component)`` equals Amaranth's RTLIL of it; return whether the
    proof succeeded. ``mutate`` edits the Verilog text first."""
    gold = rtlil.convert(component(), name="gold_design", emit_src=False)
    # Without its `top` mark, `flatten` keeps both designs as separate modules.
    gold = "\n".join(line for line in gold.splitlines() if line.strip() != "attribute \\top 1")
    gate = convert(component(), name="gate_design")
    if mutate is not None:
        gate = mutate(gate)
    if seq:
        sat = f"sat -verify -prove-asserts -set-init-zero -seq {seq} miter"
    else:
        sat = "sat -verify -prove-asserts miter"
    script = "\n".join([
        "read_rtlil gold.il",
        "read_verilog gate.v",
        "proc; flatten; memory; opt_clean",
        "async2sync",
        "miter -equiv -flatten -make_assert gold_design gate_design miter",
        "hierarchy -top miter",
        sat,
    ])
    try:
        run_yosys(script, {"gold.il": gold, "gate.v": gate})
    except YosysError as error:
        assert "proof did fail" in str(error), str(error)
        return False
    return True


def first_plus_to_minus(text):
    index = text.index(" + ")
    return text[:index] + " - " + text[index + 3:]


def test_cells_are_equivalent():
    assert prove_equivalent(Cells)


def test_mutated_cells_are_not():
    assert not prove_equivalent(Cells, mutate=first_plus_to_minus)


SMALL = dict(name="top", a_bits=2, w_bits=2)


@pytest.mark.parametrize("component", [
    pytest.param(lambda: Requantizer(LayerConfig(
        in_features=2, out_features=2, rows=2, cols=1, acc_bits=4, m_bits=3, b_bits=5, s_max=9,
        out_bits=2, out_signed=True, **SMALL)), id="requant-signed"),
    pytest.param(lambda: Requantizer(LayerConfig(
        in_features=1, out_features=1, acc_bits=5, m_bits=3, b_bits=2, s_max=3, out_bits=3,
        relu=True, shared_shift=True, **SMALL)), id="requant-relu-shared"),
    pytest.param(lambda: MacArray(LayerConfig(
        in_features=3, out_features=1, cols=3, a_signed=True, acc_bits=4, overflow="saturate",
        **SMALL)), id="mac-saturate"),
    pytest.param(lambda: MacArray(LayerConfig(
        in_features=5, out_features=1, cols=5, acc_bits=4, overflow="wrap", **SMALL),
        levels_per_stage=2), id="mac-wrap-2-levels"),
])
def test_blocks_are_equivalent(component):
    assert prove_equivalent(component, seq=6)


def small_engine():
    cfg = LayerConfig(in_features=2, out_features=2, acc_bits=4, m_bits=3, b_bits=4, s_max=2,
                      out_bits=2, **SMALL)
    rng = np.random.default_rng(0)
    w = mac_weights(cfg, rng)
    M, B, S = engine_params(cfg, w, rng)
    return LayerEngine(cfg, w, M, B, S)


# Enough cycles for a change anywhere to reach the outputs (the engine's latency is 14).
ENGINE_SEQ = 18


def test_engine_is_equivalent():
    assert prove_equivalent(small_engine, seq=ENGINE_SEQ)


def accumulator_plus_to_minus(text):
    """The MAC array's accumulator add (``acc + beat_sum``) made a subtraction. (The engine's
    first ``+`` is a 1-bit counter increment, where ``+ 1`` and ``- 1`` agree.)"""
    index = text.index(" + ", text.index("\\mac.acc_0  }) + ") - 1)
    return text[:index] + " - " + text[index + 3:]


def test_mutated_engine_is_not():
    assert not prove_equivalent(small_engine, seq=ENGINE_SEQ, mutate=accumulator_plus_to_minus)
