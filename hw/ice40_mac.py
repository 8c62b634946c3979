"""Two 8×8 products in one iCE40 ``SB_MAC16``: the DSP in ``MODE_8x8``, with its input and
product registers on (MARLANN's configuration).

Yosys infers ``SB_MAC16`` only in its 16×16 mode (one product per block), so the packed mode is
instantiated by hand. The same component has a behavioural body, with the same registers and the
same enable, which the Amaranth simulator and the RTL cocotb tests run; the instantiated netlist
is proven equal to it by a gate-level simulation (``tests/test_ice40_mac.py``: Yosys
``synth_ice40`` then Verilator with Yosys's ``share/ice40/cells_sim.v``).

In ``MODE_8x8`` the block holds two independent multipliers: ``A[15:8]·B[15:8]`` (the top
product, output ``O[31:16]``) and ``A[7:0]·B[7:0]`` (the bottom one, ``O[15:0]``). ``A_SIGNED``
and ``B_SIGNED`` apply to both halves of their operand, so the two products of one block share
their signedness: activations go to ``A`` (signed or not), weights to ``B`` (signed).
"""

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["DualProduct8x8", "OPERAND_BITS", "LATENCY", "fits_8x8", "PARAMETERS",
           "yosys_guard"]


#: Widest operand of one half of an ``SB_MAC16`` in ``MODE_8x8``.
OPERAND_BITS = 8

#: Register stages of the block as configured: input registers, then product registers.
LATENCY = 2


#: The ``SB_MAC16`` parameters as :class:`DualProduct8x8` sets them (``A_SIGNED`` and
#: ``B_SIGNED`` come from the operands): ``MODE_8x8``, input registers ``A_REG``/``B_REG``,
#: product registers ``TOP/BOT_8x8_MULT_REG``, outputs from those product registers (select 2).
PARAMETERS = {
    "NEG_TRIGGER": (0, 1), "C_REG": (0, 1), "A_REG": (1, 1), "B_REG": (1, 1), "D_REG": (0, 1),
    "TOP_8x8_MULT_REG": (1, 1), "BOT_8x8_MULT_REG": (1, 1),
    "PIPELINE_16x16_MULT_REG1": (0, 1), "PIPELINE_16x16_MULT_REG2": (0, 1),
    "TOPOUTPUT_SELECT": (2, 2), "TOPADDSUB_LOWERINPUT": (0, 2), "TOPADDSUB_UPPERINPUT": (0, 1),
    "TOPADDSUB_CARRYSELECT": (0, 2),
    "BOTOUTPUT_SELECT": (2, 2), "BOTADDSUB_LOWERINPUT": (0, 2), "BOTADDSUB_UPPERINPUT": (0, 1),
    "BOTADDSUB_CARRYSELECT": (0, 2),
    "MODE_8x8": (1, 1),
}

#: The cell type that hand-instantiated ``SB_MAC16`` cells carry through ``synth_ice40 -dsp``.
HIDDEN_TYPE = "QMAC_SB_MAC16"

_PORTS = """\
    input CLK, CE,
    input [15:0] C, A, B, D,
    input AHOLD, BHOLD, CHOLD, DHOLD,
    input IRSTTOP, IRSTBOT, ORSTTOP, ORSTBOT,
    input OLOADTOP, OLOADBOT, ADDSUBTOP, ADDSUBBOT, OHOLDTOP, OHOLDBOT,
    input CI, ACCUMCI, SIGNEXTIN,
    output [31:0] O,
    output CO, ACCUMCO, SIGNEXTOUT"""


def yosys_guard():
    """Yosys commands that keep hand-instantiated ``SB_MAC16`` cells as they are through
    ``synth_ice40 -dsp``: ``(before, after, files)``, to run ``before`` after reading the design,
    ``after`` after synthesis, with ``files`` (name to text) in the Yosys folder.

    Yosys's ``ice40_dsp`` pass (run by ``synth_ice40 -dsp``) also matches existing ``SB_MAC16``
    cells and rewrites them into its own 16×16 configuration, losing ``MODE_8x8`` and the
    register settings (measured with Yosys 0.70; the ``keep`` attribute does not stop it).
    So the cells are renamed to a black box of the same ports and parameters before synthesis
    and renamed back after it.
    """
    params = "".join(f"    parameter {name} = 0;\n"
                     for name in [*PARAMETERS, "A_SIGNED", "B_SIGNED"])
    stub = f"(* blackbox *)\nmodule {HIDDEN_TYPE} (\n{_PORTS}\n);\n{params}endmodule\n"
    name = "qmac_sb_mac16_blackbox.v"
    return ([f"read_verilog -lib {name}", f"chtype -map SB_MAC16 {HIDDEN_TYPE}"],
            [f"chtype -map {HIDDEN_TYPE} SB_MAC16", f"delete ={HIDDEN_TYPE}"], {name: stub})


def fits_8x8(a_bits, a_signed, b_bits, b_signed):
    """Whether an ``a_bits × b_bits`` product fits one half of a ``MODE_8x8`` block: each operand
    of at most 8 bits (an unsigned 8-bit operand fits, the block reads it unsigned), and the
    exact product within the 16 bits the half outputs (all but unsigned × unsigned 8×8)."""
    if not (1 <= a_bits <= OPERAND_BITS and 1 <= b_bits <= OPERAND_BITS):
        return False
    if a_signed or b_signed:
        return True                      # |product| <= 255·128 < 2^15: signed 16 bits hold it
    return a_bits + b_bits <= 15         # unsigned product read back as signed 16 bits


class DualProduct8x8(wiring.Component):
    """Two registered products ``p_top = a_top·b_top`` and ``p_bot = a_bot·b_bot``.

    Parameters
    ----------
    a_bits, b_bits : int
        Operand widths, at most 8 each.
    a_signed, b_signed : bool
        Signedness of the ``a`` operands (both halves) and of the ``b`` operands.
    primitive : bool
        ``True``: the body is an ``SB_MAC16`` instance (for synthesis on iCE40; the Amaranth
        simulator cannot run it). ``False``: the behavioural model of that instance.

    Members
    -------
    a_top, a_bot : In(a_bits, signed as ``a_signed``)
    b_top, b_bot : In(b_bits, signed as ``b_signed``)
    en : In(1)
        Clock enable of every register (the block's ``CE``).
    p_top, p_bot : Out(signed(16))
        The exact products.

    Timing: two register stages, both enabled by ``en``: the operands present in a cycle with
    ``en`` high give their products on ``p_top``/``p_bot`` after the second later cycle with
    ``en`` high (latency :data:`LATENCY` at full rate). The registers have no reset (the block's
    ``IRSTTOP``/``IRSTBOT`` are tied low): the surrounding pipeline tracks which data is valid.

    Raises
    ------
    ValueError
        An operand width is not 1 to 8, or the product does not fit 16 signed bits.
    """

    def __new__(cls, *, a_bits, a_signed, b_bits, b_signed, primitive=False):
        # Refuse bad arguments before the component exists (one never elaborated would make
        # Amaranth warn when it is collected).
        for name, value in (("a_bits", a_bits), ("b_bits", b_bits)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 1 <= value <= OPERAND_BITS:
                raise ValueError(f"{name} of an SB_MAC16 8x8 product must be 1 to "
                                 f"{OPERAND_BITS}, not {value!r}")
        if not fits_8x8(a_bits, a_signed, b_bits, b_signed):
            raise ValueError(f"an unsigned {a_bits}x{b_bits} product does not fit the 16 signed "
                             f"bits of an SB_MAC16 8x8 half")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, a_bits, a_signed, b_bits, b_signed, primitive=False):
        self.a_bits, self.a_signed = a_bits, bool(a_signed)
        self.b_bits, self.b_signed = b_bits, bool(b_signed)
        self.primitive = bool(primitive)
        a_shape = signed(a_bits) if a_signed else unsigned(a_bits)
        b_shape = signed(b_bits) if b_signed else unsigned(b_bits)
        super().__init__({
            "a_top": In(a_shape), "a_bot": In(a_shape),
            "b_top": In(b_shape), "b_bot": In(b_shape),
            "en": In(1),
            "p_top": Out(signed(16)), "p_bot": Out(signed(16)),
        })

    def elaborate(self, platform):
        m = Module()
        if self.primitive:
            self._instance(m)
        else:
            self._model(m)
        return m

    def _instance(self, m):
        a = Signal(16, name="mac16_a")
        b = Signal(16, name="mac16_b")
        o = Signal(32, name="mac16_o")
        m.d.comb += [
            a.eq(Cat(_extend8(self.a_bot, self.a_signed), _extend8(self.a_top, self.a_signed))),
            b.eq(Cat(_extend8(self.b_bot, self.b_signed), _extend8(self.b_top, self.b_signed))),
        ]
        zero16 = Const(0, 16)
        parameters = {f"p_{name}": Const(value, width)
                      for name, (value, width) in PARAMETERS.items()}
        m.submodules.mac16 = Instance(
            "SB_MAC16",
            **parameters,
            p_A_SIGNED=Const(int(self.a_signed), 1), p_B_SIGNED=Const(int(self.b_signed), 1),
            i_CLK=ClockSignal("sync"), i_CE=self.en,
            i_A=a, i_B=b, i_C=zero16, i_D=zero16,
            i_AHOLD=Const(0, 1), i_BHOLD=Const(0, 1), i_CHOLD=Const(0, 1), i_DHOLD=Const(0, 1),
            i_IRSTTOP=Const(0, 1), i_IRSTBOT=Const(0, 1),
            i_ORSTTOP=Const(0, 1), i_ORSTBOT=Const(0, 1),
            i_OLOADTOP=Const(0, 1), i_OLOADBOT=Const(0, 1),
            i_ADDSUBTOP=Const(0, 1), i_ADDSUBBOT=Const(0, 1),
            i_OHOLDTOP=Const(0, 1), i_OHOLDBOT=Const(0, 1),
            i_CI=Const(0, 1), i_ACCUMCI=Const(0, 1), i_SIGNEXTIN=Const(0, 1),
            o_O=o,
        )
        m.d.comb += [
            self.p_top.eq(o[16:].as_signed()),
            self.p_bot.eq(o[:16].as_signed()),
        ]

    def _model(self, m):
        # The same two register stages as the instance: operand registers (A_REG, B_REG), then
        # product registers (TOP_8x8_MULT_REG, BOT_8x8_MULT_REG), all enabled by CE, no reset.
        operands = {}
        for name in ("a_top", "a_bot", "b_top", "b_bot"):
            port = getattr(self, name)
            register = Signal(port.shape(), name=f"{name}_reg", reset_less=True)
            with m.If(self.en):
                m.d.sync += register.eq(port)
            operands[name] = register
        for half in ("top", "bot"):
            register = Signal(signed(16), name=f"p_{half}_reg", reset_less=True)
            with m.If(self.en):
                m.d.sync += register.eq(operands[f"a_{half}"] * operands[f"b_{half}"])
            m.d.comb += getattr(self, f"p_{half}").eq(register)


def _extend8(value, is_signed):
    """``value`` sign- or zero-extended (as ``is_signed`` says) to 8 bits."""
    fill = value[-1] if is_signed else Const(0, 1)
    return Cat(value, fill.replicate(OPERAND_BITS - len(value)))
