"""A fair-timing harness: the design under test with every port behind a register, fed and
observed through two pins, so that place and route measure the core and not the pins."""

from amaranth.hdl import Cat, ClockDomain, ClockSignal, DomainRenamer, Module, ResetSignal, \
    Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["FairTimingHarness"]


class FairTimingHarness(wiring.Component):
    """``dut`` with registered inputs from a shift register and registered outputs folded into
    one pin by a pipelined XOR tree.

    Every input bit of ``dut`` (stream payloads, ``valid``, ``ready``: every ``In`` member of its
    signature) is one flip-flop of a shift register whose serial input is ``din`` XOR the output
    of a 31-bit LFSR (x^31 + x^28 + 1), so it toggles whatever ``din`` does. Every output bit of
    ``dut`` is registered, then reduced by a tree of registered 4-input XORs into ``dout``. Each
    core bit thus reaches a pin, so synthesis keeps all of the core, and every path that starts
    or ends at a core port starts or ends at a flip-flop next to it: the critical path the tools
    report is the core's own (or the harness's, a 4-input XOR between two registers).

    The reset pin is registered once before it resets ``dut`` (which runs in a domain ``core``
    with the harness's clock and that registered reset), and the harness's own data registers
    have no reset, so that no path starts at the reset pin: a reset pin wired to every
    flip-flop would make its input buffer and fan-out the critical path of a large core (the
    LFSR starts from its power-up value).

    Parameters
    ----------
    dut : wiring.Component
        The design under test, in domain ``sync``; clocked by the harness's clock and reset by
        its reset one cycle late.

    Members
    -------
    din : In(1)
        Serial input, mixed into the input shift register.
    dout : Out(1)
        The XOR of all of ``dut``'s outputs, ``depth`` cycles late.

    Timing: ``dout`` follows the ``dut`` outputs after ``1 + depth`` cycles (``depth`` =
    :attr:`xor_levels`).
    """

    def __init__(self, dut):
        self.dut = dut
        self.inputs = []
        self.outputs = []
        for path, member, value in dut.signature.flatten(dut):
            value = Value.cast(value)
            (self.inputs if member.flow == In else self.outputs).append(value)
        self.input_bits = sum(len(v) for v in self.inputs)
        self.output_bits = sum(len(v) for v in self.outputs)
        levels, width = 0, self.output_bits
        while width > 1:
            width = -(-width // 4)
            levels += 1
        #: Registered XOR levels between the output registers and ``dout``.
        self.xor_levels = levels
        super().__init__({"din": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.domains.core = ClockDomain("core", local=True)
        core_reset = Signal(init=1, name="core_reset")
        m.d.sync += core_reset.eq(ResetSignal("sync"))
        m.d.comb += [ClockSignal("core").eq(ClockSignal("sync")),
                     ResetSignal("core").eq(core_reset)]
        m.submodules.dut = DomainRenamer("core")(self.dut)

        lfsr = Signal(31, init=1, reset_less=True)      # its power-up value is enough
        m.d.sync += lfsr.eq(Cat(lfsr[30] ^ lfsr[27], lfsr[:30]))

        shift = Signal(max(1, self.input_bits), name="input_shift", reset_less=True)
        m.d.sync += shift.eq(Cat(self.din ^ lfsr[30], shift[:-1]))
        offset = 0
        for value in self.inputs:
            m.d.comb += value.eq(shift[offset:offset + len(value)])
            offset += len(value)

        level = Signal(max(1, self.output_bits), name="output_reg", reset_less=True)
        m.d.sync += level.eq(Cat(*self.outputs) if self.outputs else 0)
        bits = list(level)
        depth = 0
        while len(bits) > 1:
            depth += 1
            groups = [bits[k:k + 4] for k in range(0, len(bits), 4)]
            reduced = Signal(len(groups), name=f"xor_l{depth}", reset_less=True)
            m.d.sync += reduced.eq(Cat(*[_xor(group) for group in groups]))
            bits = list(reduced)
        m.d.comb += self.dout.eq(bits[0])
        return m


def _xor(bits):
    value = bits[0]
    for bit in bits[1:]:
        value = value ^ bit
    return value
