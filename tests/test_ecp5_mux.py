"""The ECP5 slice multiplexer (``hw/ecp5_mux.py``): ``LUT4`` + ``PFUMX`` instances proven equal
(Yosys SAT, with Yosys's own ECP5 cell models) to the plain multiplexer tree, for every shape it
takes: four values, fewer (padded), more (several slices and a tree above them)."""

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qmac.hw import ecp5_mux
from qmac.hw.verilog import YosysError, run_yosys


class Choice(wiring.Component):
    """``values[index]`` of ``count`` inputs of ``width`` bits, by :func:`ecp5_mux.lut_mux`."""

    def __init__(self, count, width, primitive):
        self.count, self.width, self.primitive = count, width, primitive
        super().__init__({"values": In(count * width),
                          "index": In(max(1, (count - 1).bit_length())),
                          "out": Out(width)})

    def elaborate(self, platform):
        m = Module()
        values = [self.values[k * self.width:(k + 1) * self.width] for k in range(self.count)]
        # Indices past the end (where the two may differ) are mapped to 0 in both designs.
        index = Mux(self.index < self.count, self.index, 0)
        m.d.comb += self.out.eq(ecp5_mux.lut_mux(m, "choice", values, index,
                                                 primitive=self.primitive))
        return m


def proves_equal(count, width, init=ecp5_mux.MUX2_INIT):
    """Whether Yosys proves the slice multiplexer (its LUTs' ``INIT`` replaced by ``init``)
    equal to :func:`ecp5_mux.mux_tree`, with Yosys's ECP5 cell models."""
    gold = rtlil.convert(Choice(count, width, False), name="gold_design", emit_src=False)
    gate = rtlil.convert(Choice(count, width, True), name="gate_design", emit_src=False)
    gold, gate = ("\n".join(line for line in text.splitlines()
                            if line.strip() != "attribute \\top 1") for text in (gold, gate))
    slices = width * -(-count // 4)
    assert gate.count("cell \\LUT4 ") == 2 * slices and gate.count("cell \\PFUMX ") == slices
    default = f"16'{ecp5_mux.MUX2_INIT:016b}"
    assert default in gate
    gate = gate.replace(default, f"16'{init:016b}")
    script = "\n".join([
        "read_verilog +/ecp5/common_sim.vh",      # LUT4, PFUMX (cells_sim.v includes it)
        "read_rtlil gate.il",
        # Derive the cells with their INIT, then flatten them (they are white boxes).
        "hierarchy -top gate_design; proc; flatten -wb",
        "read_rtlil gold.il",
        "proc; opt_clean",
        "miter -equiv -flatten -make_assert gold_design gate_design miter",
        "hierarchy -top miter",
        "sat -verify -prove-asserts miter",
    ])
    try:
        run_yosys(script, {"gold.il": gold, "gate.il": gate})
    except YosysError as error:
        assert "proof did fail" in str(error), str(error)
        return False
    return True


@pytest.mark.parametrize("count", [3, 4, 6, 9])
def test_slice_mux_equals_mux_tree(count):
    assert proves_equal(count, 3)


def test_wrong_lut_is_caught():
    # A LUT that picks by B instead of A (the select on the wrong pin).
    wrong = ecp5_mux._lut_init(lambda a, b, c, d: a if b else c)
    assert wrong != ecp5_mux.MUX2_INIT
    assert not proves_equal(4, 2, init=wrong)


def test_mux2_init():
    # Z = A ? C : B over the 16 input combinations {D, C, B, A}.
    for i in range(16):
        a, b, c = i & 1, i >> 1 & 1, i >> 2 & 1
        assert ecp5_mux.MUX2_INIT >> i & 1 == (c if a else b)


def test_two_values_and_no_primitive_stay_plain():
    m = Module()
    a, b = Signal(4), Signal(4)
    sel = Signal(1)
    ecp5_mux.lut_mux(m, "two", [a, b], sel, primitive=True)
    ecp5_mux.lut_mux(m, "plain", [a, b, a, b], Signal(2), primitive=False)
    assert not m._anon_submodules and not m._named_submodules
    Fragment.get(m, None)               # used (no UnusedElaboratable warning)
