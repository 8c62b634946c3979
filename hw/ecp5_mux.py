"""A 4:1 multiplexer in one ECP5 slice per bit: two ``LUT4`` and the slice's ``PFUMX``.

A 4:1 choice is a function of six inputs, and Yosys's ``synth_ecp5`` maps every six-input
function as a wide LUT: four ``LUT4``, two ``PFUMX`` and an ``L6MUX21`` per bit (80 ``LUT4`` for
a 4:1 choice of 20 bits, with ``abc`` or ``abc9`` alike). The multiplexer needs only half:
each ``LUT4`` picks one of two values by the low select bit, and the ``PFUMX`` (the slice's
own 2:1 multiplexer of its two LUT outputs) picks between them by the high one.
:func:`lut_mux` builds that structure from instances, which Yosys keeps as they are;
``tests/test_ecp5_mux.py`` proves it equal to the plain multiplexer with Yosys's own cell
models (``share/ecp5/cells_sim.v``). The Amaranth simulator cannot run the instances: designs
use it for ECP5 synthesis only (``primitive``), the plain :func:`mux_tree` elsewhere.
"""

from amaranth.hdl import Cat, Const, Instance, Mux, Signal, Value


__all__ = ["mux_tree", "lut_mux", "MUX2_INIT"]


def _lut_init(function):
    """The ``INIT`` of a ``LUT4`` computing ``function(a, b, c, d)``: bit ``{D,C,B,A}`` is the
    output for those inputs (Yosys's ``LUT4`` model)."""
    return sum(function(i & 1, i >> 1 & 1, i >> 2 & 1, i >> 3 & 1) << i for i in range(16))


#: ``Z = A ? C : B`` (``D`` unused): a 2:1 multiplexer with its select on ``A``.
MUX2_INIT = _lut_init(lambda a, b, c, d: c if a else b)


def mux_tree(values, index):
    """``values[index]`` as a tree of 2:1 multiplexers on the bits of ``index`` (an index past
    the end gives one of the values). Unlike an ``Array`` proxy, it converts to Verilog without
    overlapping ``casez`` arms (Verilator's CASEOVERLAP)."""
    values = list(values)
    bit = 0
    while len(values) > 1:
        values = [Mux(index[bit], values[k + 1], values[k]) if k + 1 < len(values) else values[k]
                  for k in range(0, len(values), 2)]
        bit += 1
    return values[0]


def _mux4_bit(m, name, bits, sel):
    """One bit of a 4:1 choice of ``bits`` (four 1-bit values) by ``sel`` (2 bits)."""
    low, high, out = Signal(name=f"{name}_lo"), Signal(name=f"{name}_hi"), Signal(name=name)
    for half, (b, c) in ((low, bits[:2]), (high, bits[2:])):
        m.submodules[f"{half.name}_lut"] = Instance(
            "LUT4", p_INIT=Const(MUX2_INIT, 16),
            i_A=sel[0], i_B=b, i_C=c, i_D=Const(0, 1), o_Z=half)
    m.submodules[f"{name}_pfumx"] = Instance(
        "PFUMX", i_ALUT=high, i_BLUT=low, i_C0=sel[1], o_Z=out)    # Z = C0 ? ALUT : BLUT
    return out


def lut_mux(m, name, values, index, *, primitive):
    """``values[index]`` as an unsigned value as wide as the widest (an index past the end
    gives zero or one of the values): with ``primitive`` (ECP5 synthesis) the two low bits of
    ``index`` choose through ``LUT4`` + ``PFUMX`` slices (four values per slice and bit; fewer
    are padded with zeros), the rest through :func:`mux_tree`; else :func:`mux_tree` alone."""
    values = [Value.cast(v) for v in values]
    if not primitive or len(values) <= 2:
        return mux_tree(values, index)
    width = max(len(v) for v in values)
    values = values + [Const(0, width)] * (-len(values) % 4)
    quads = []
    for q in range(len(values) // 4):
        four = [values[4 * q + k] for k in range(4)]
        quads.append(Cat(*(_mux4_bit(m, f"{name}_{q}_{bit}",
                                     [v[bit] if bit < len(v) else Const(0, 1) for v in four],
                                     index[:2])
                           for bit in range(width))))
    return mux_tree(quads, index[2:]) if len(quads) > 1 else quads[0]
