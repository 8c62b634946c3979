"""One registered product in an ECP5 ``MULT18X18D``: the DSP with its input registers and its
output (or pipeline) register used.

Yosys infers ``MULT18X18D`` only as a combinational multiplier (every ``REG_*`` left at
``NONE``), so a MAC product then costs the DSP's 3.9 ns plus the routing to and from the DSP
column in one cycle. This component instantiates the block by hand with its registers on. The
same component has a behavioural body, with the same register stages and the same enable, which
the Amaranth simulator and the RTL cocotb tests run; the instantiated netlist is proven equal to
it by a gate-level simulation (``tests/test_ecp5_mac.py``: Yosys ``synth_ecp5``, then Verilator
with Yosys's ``share/ecp5/cells_sim.v`` and qmac's own ``MULT18X18D`` model,
:func:`model_path`, since Yosys ships only a black box of it).

Register modes (:data:`REGISTER_MODES`), each stage clocked by ``CLK0`` and enabled by ``CE0``:

- ``"output"``: input registers on ``A`` and ``B``, then the output register on ``P``
  (2 stages). nextpnr times the block as ``REGS_ALL`` (A setup 0.08 ns, clock to P 0.74 ns
  at speed grade 6; the internal multiply is not modelled).
- ``"pipeline"``: input registers, then the pipeline register (2 stages). nextpnr's packer
  reads only ``REG_INPUT*_CLK`` and ``REG_OUTPUT_CLK``, so it times this as ``REGS_INPUT``
  (clock to P 3.86 ns): the mode that is faster in silicon looks slower to nextpnr.
- ``"all"``: input, pipeline and output registers (3 stages), ``REGS_ALL`` timing.
"""

from pathlib import Path

from amaranth.hdl import Cat, ClockSignal, Const, Instance, Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["RegisteredProduct", "OPERAND_BITS", "PRODUCT_BITS", "REGISTER_MODES",
           "DEFAULT_REGISTERS", "fits_mult18", "product_bits", "model_path"]


#: Width of each operand port of a ``MULT18X18D``.
OPERAND_BITS = 18

#: Width of the product port ``P``.
PRODUCT_BITS = 36

#: The register stages of each mode, in order from the operands to ``P``.
REGISTER_MODES = {
    "output": ("INPUT", "OUTPUT"),
    "pipeline": ("INPUT", "PIPELINE"),
    "all": ("INPUT", "PIPELINE", "OUTPUT"),
}

#: The mode the MAC array uses unless told otherwise (the best Fmax measured with nextpnr).
DEFAULT_REGISTERS = "output"


def model_path():
    """The behavioural Verilog model of ``MULT18X18D`` shipped with qmac (for gate-level
    simulation of netlists that hold the primitive)."""
    return Path(__file__).resolve().parent / "models" / "mult18x18d.v"


def product_bits(a_bits, a_signed, b_bits, b_signed):
    """Width of the exact product as a signed value (an unsigned × unsigned product gains a
    sign bit)."""
    return a_bits + b_bits + (0 if a_signed or b_signed else 1)


def fits_mult18(a_bits, a_signed, b_bits, b_signed):
    """Whether an ``a_bits × b_bits`` product fits one ``MULT18X18D``: each operand of at most 18
    bits (the block reads an operand unsigned when its ``SIGNED*`` input is low) and the exact
    product, as a signed value, within the 36 bits of ``P``."""
    return (1 <= a_bits <= OPERAND_BITS and 1 <= b_bits <= OPERAND_BITS
            and product_bits(a_bits, a_signed, b_bits, b_signed) <= PRODUCT_BITS)


def latency(registers):
    """Register stages of ``registers`` (a key of :data:`REGISTER_MODES`)."""
    return len(REGISTER_MODES[registers])


def check_registers(registers):
    if registers not in REGISTER_MODES:
        raise ValueError(f"registers of a MULT18X18D product must be one of "
                         f"{', '.join(map(repr, REGISTER_MODES))}, not {registers!r}")


class RegisteredProduct(wiring.Component):
    """A registered product ``p = a·b``.

    Parameters
    ----------
    a_bits, b_bits : int
        Operand widths, 1 to 18 each.
    a_signed, b_signed : bool
        Signedness of ``a`` and of ``b`` (the block's ``SIGNEDA``/``SIGNEDB``, tied).
    registers : {"output", "pipeline", "all"}
        The register stages used (:data:`REGISTER_MODES`).
    primitive : bool
        ``True``: the body is a ``MULT18X18D`` instance (for synthesis on ECP5; the Amaranth
        simulator cannot run it). ``False``: the behavioural model of that instance.

    Members
    -------
    a : In(a_bits, signed as ``a_signed``)
    b : In(b_bits, signed as ``b_signed``)
    en : In(1)
        Clock enable of every register (the block's ``CE0``).
    p : Out(signed(product_bits))
        The exact product.

    Timing: :attr:`latency` register stages, all enabled by ``en``: the operands present in a
    cycle with ``en`` high give their product on ``p`` after the ``latency``-th later cycle with
    ``en`` high. The registers have no reset (``RST0`` is tied low, ``GSR`` disabled): the
    surrounding pipeline tracks which data is valid.

    Raises
    ------
    ValueError
        An operand width is not 1 to 18, the product does not fit 36 signed bits, or
        ``registers`` is unknown.
    """

    def __new__(cls, *, a_bits, a_signed, b_bits, b_signed, registers=DEFAULT_REGISTERS,
                primitive=False):
        # Refuse bad arguments before the component exists (one never elaborated would make
        # Amaranth warn when it is collected).
        for name, value in (("a_bits", a_bits), ("b_bits", b_bits)):
            if isinstance(value, bool) or not isinstance(value, int) or \
                    not 1 <= value <= OPERAND_BITS:
                raise ValueError(f"{name} of a MULT18X18D product must be 1 to {OPERAND_BITS}, "
                                 f"not {value!r}")
        if not fits_mult18(a_bits, a_signed, b_bits, b_signed):
            raise ValueError(f"an unsigned {a_bits}x{b_bits} product does not fit the "
                             f"{PRODUCT_BITS} signed bits of a MULT18X18D")
        check_registers(registers)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, a_bits, a_signed, b_bits, b_signed, registers=DEFAULT_REGISTERS,
                 primitive=False):
        self.a_bits, self.a_signed = a_bits, bool(a_signed)
        self.b_bits, self.b_signed = b_bits, bool(b_signed)
        self.registers = registers
        self.primitive = bool(primitive)
        #: Register stages from the operands to ``p``.
        self.latency = latency(registers)
        self.p_bits = product_bits(a_bits, a_signed, b_bits, b_signed)
        a_shape = signed(a_bits) if a_signed else unsigned(a_bits)
        b_shape = signed(b_bits) if b_signed else unsigned(b_bits)
        super().__init__({"a": In(a_shape), "b": In(b_shape), "en": In(1),
                          "p": Out(signed(self.p_bits))})

    def parameters(self):
        """The ``MULT18X18D`` parameters of the instance (name to string)."""
        stages = REGISTER_MODES[self.registers]
        params = {}
        for register in ("INPUTA", "INPUTB", "INPUTC", "PIPELINE", "OUTPUT"):
            # C feeds only the cascade/ALU outputs: its register stays off.
            used = "INPUT" in stages if register in ("INPUTA", "INPUTB") else register in stages
            params[f"REG_{register}_CLK"] = "CLK0" if used else "NONE"
            params[f"REG_{register}_CE"] = "CE0"
            params[f"REG_{register}_RST"] = "RST0"
        params.update({"CLK0_DIV": "ENABLED", "CLK1_DIV": "ENABLED", "CLK2_DIV": "ENABLED",
                       "CLK3_DIV": "ENABLED", "HIGHSPEED_CLK": "NONE", "GSR": "DISABLED",
                       "CAS_MATCH_REG": "FALSE", "SOURCEB_MODE": "B_SHIFT",
                       "MULT_BYPASS": "DISABLED", "RESETMODE": "SYNC"})
        return params

    def elaborate(self, platform):
        m = Module()
        if self.primitive:
            self._instance(m)
        else:
            self._model(m)
        return m

    def _instance(self, m):
        a = Signal(OPERAND_BITS, name="mult18_a")
        b = Signal(OPERAND_BITS, name="mult18_b")
        p = Signal(PRODUCT_BITS, name="mult18_p")
        m.d.comb += [a.eq(_extend(self.a, self.a_signed)), b.eq(_extend(self.b, self.b_signed))]
        ports = {}
        for k in range(OPERAND_BITS):
            ports[f"i_A{k}"] = a[k]
            ports[f"i_B{k}"] = b[k]
            ports[f"i_C{k}"] = Const(0, 1)
        for k in range(PRODUCT_BITS):
            ports[f"o_P{k}"] = p[k]
        # SRIA/SRIB are left unconnected (tied to 0 they make nextpnr fail to route its
        # $PACKER_GND_NET, nextpnr #208); CLK1..3, CE1..3 and RST1..3 are not selected.
        m.submodules.mult18 = Instance(
            "MULT18X18D",
            **{f"p_{name}": value for name, value in self.parameters().items()},
            i_SIGNEDA=Const(int(self.a_signed), 1), i_SIGNEDB=Const(int(self.b_signed), 1),
            i_SOURCEA=Const(0, 1), i_SOURCEB=Const(0, 1),
            i_CLK0=ClockSignal("sync"), i_CE0=self.en, i_RST0=Const(0, 1),
            **ports,
        )
        m.d.comb += self.p.eq(p[:self.p_bits].as_signed())

    def _model(self, m):
        # The same register stages as the instance, all enabled by CE0, no reset: operand
        # registers, then the product in the pipeline and/or output register.
        a_reg = Signal(self.a.shape(), name="a_reg", reset_less=True)
        b_reg = Signal(self.b.shape(), name="b_reg", reset_less=True)
        with m.If(self.en):
            m.d.sync += [a_reg.eq(self.a), b_reg.eq(self.b)]
        value = a_reg * b_reg           # each register below extends or cuts it exactly
        for stage in REGISTER_MODES[self.registers][1:]:
            register = Signal(signed(self.p_bits), name=f"p_{stage.lower()}", reset_less=True)
            with m.If(self.en):
                m.d.sync += register.eq(value)
            value = register
        m.d.comb += self.p.eq(value)


def _extend(value, is_signed):
    """``value`` sign- or zero-extended (as ``is_signed`` says) to 18 bits."""
    fill = value[-1] if is_signed else Const(0, 1)
    return Cat(value, fill.replicate(OPERAND_BITS - len(value)))
