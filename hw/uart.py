"""A UART receiver and transmitter (8 data bits, no parity, 1 stop bit, LSB first) with
``amaranth.lib.stream`` byte ports.

Both count ``divisor`` clock cycles per bit; :func:`baud_divisor` turns a clock frequency and a
baud rate into that divisor and refuses a rate the clock cannot make closely enough.
"""

from amaranth.hdl import Module, Signal, Cat
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out


__all__ = ["BAUD_TOLERANCE", "baud_divisor", "UartRx", "UartTx"]


#: Largest relative difference between the requested baud rate and ``clk_hz / divisor``. A
#: receiver that samples in the middle of each bit tolerates a total mismatch of about 5% between
#: the two ends over a 10-bit frame (half a bit in 9.5 bits); each end gets less than half of it.
BAUD_TOLERANCE = 0.02

# Receiver states.
_IDLE, _START, _DATA, _BREAK = range(4)


def is_value(signal, value):
    """``signal == value``, written as ``~signal.any()`` for zero: Yosys turns a comparison with
    zero into a logical not, which `verilator -Wall` reports on a vector."""
    return ~signal.any() if value == 0 else signal == value


def _check_divisor(divisor):
    if isinstance(divisor, bool) or not isinstance(divisor, int) or divisor < 2:
        raise ValueError(f"divisor must be an integer of at least 2 clock cycles per bit, "
                         f"not {divisor!r}")
    return divisor


def baud_divisor(clk_hz, baud):
    """Clock cycles per bit for a UART at ``baud`` on a ``clk_hz`` clock.

    Returns ``round(clk_hz / baud)``.

    Raises
    ------
    ValueError
        ``clk_hz`` or ``baud`` is not a positive number, ``clk_hz / baud`` is below 2 (a bit
        must last at least two cycles), or ``clk_hz / divisor`` differs from ``baud`` by more
        than :data:`BAUD_TOLERANCE` (2%); the message names the value.
    """
    for name, value in (("clk_hz", clk_hz), ("baud", baud)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, not {value!r}")
    ratio = clk_hz / baud
    if ratio < 2:
        raise ValueError(f"baud {baud!r} is too fast for a {clk_hz!r} Hz clock: clk_hz / baud "
                         f"= {ratio:.3g} cycles per bit, at least 2 are needed")
    divisor = round(ratio)
    error = abs(clk_hz / divisor - baud) / baud
    if error > BAUD_TOLERANCE:
        raise ValueError(f"baud {baud!r} cannot be made from a {clk_hz!r} Hz clock: the nearest "
                         f"divisor {divisor} gives {clk_hz / divisor:.6g} baud, "
                         f"{100 * error:.2f}% off (at most {100 * BAUD_TOLERANCE:g}%)")
    return divisor


class _Uart(wiring.Component):
    """What the receiver and the transmitter share: a checked ``divisor`` (cycles per bit)."""

    def __new__(cls, *, divisor):
        # Refuse a bad divisor before the component exists (no UnusedElaboratable warning).
        _check_divisor(divisor)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, divisor):
        self.divisor = _check_divisor(divisor)
        super().__init__()


class UartRx(_Uart):
    """UART receiver: the ``rx`` line in, received bytes out on a stream.

    ``rx`` passes through a two-flip-flop synchronizer (idle high). A low level after idle starts
    a frame; it is checked again half a bit later (a shorter pulse is ignored), then each data
    bit and the stop bit are sampled every ``divisor`` cycles, i.e. near the middle of each bit.
    The receiver looks for the next start bit right after sampling the stop bit, so frames may
    follow each other back to back.

    Parameters: ``divisor``, clock cycles per bit, at least 2 (see :func:`baud_divisor`).

    Members
    -------
    rx : In(1)
        The serial line, asynchronous to the clock.
    o : Out(stream.Signature(8))
        Received bytes. A byte waits in ``o`` until it is taken.
    framing_error : Out(1)
        One-cycle pulse: a frame's stop bit was low; its byte is dropped, and the receiver waits
        for the line to go high before it looks for a start bit.
    overrun : Out(1)
        One-cycle pulse: a byte arrived while the previous one still waited in ``o``; the new
        byte is dropped (the waiting one is kept, so ``o`` obeys the stream rules).

    Timing: ``o.valid`` rises ``2 + 9.5·divisor`` cycles (give or take one) after the falling
    edge of the start bit. The line cannot be stalled, so ``o`` must take each byte within one
    frame time (``10·divisor`` cycles), or bytes are dropped with ``overrun``.

    Raises
    ------
    ValueError
        ``divisor`` below 2 or not an integer.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        divisor = self.divisor
        m = Module()

        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(divisor))
        bit = Signal(range(10))             # bits sampled so far after the start bit
        shift = Signal(8)

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        # If/Elif chains on a state register rather than m.FSM: Yosys writes an FSM's
        # parallel case as an overlapping casez, which `verilator -Wall` reports.
        state = Signal(range(4))
        with m.If(is_value(state, _IDLE)):
            with m.If(~line):
                m.d.sync += [timer.eq(divisor // 2 - 1), state.eq(_START)]
        with m.Elif(state == _START):
            with m.If(timer.any()):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(line):
                m.d.sync += state.eq(_IDLE)         # a glitch, not a start bit
            with m.Else():
                m.d.sync += [timer.eq(divisor - 1), bit.eq(0), state.eq(_DATA)]
        with m.Elif(state == _DATA):
            with m.If(timer.any()):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(bit != 8):
                m.d.sync += [shift.eq(Cat(shift[1:], line)), bit.eq(bit + 1),
                             timer.eq(divisor - 1)]
            with m.Elif(line):
                # Stop bit high: deliver, unless the previous byte still waits.
                with m.If(self.o.valid & ~self.o.ready):
                    m.d.comb += self.overrun.eq(1)
                with m.Else():
                    m.d.sync += [self.o.payload.eq(shift), self.o.valid.eq(1)]
                m.d.sync += state.eq(_IDLE)
            with m.Else():
                m.d.comb += self.framing_error.eq(1)
                m.d.sync += state.eq(_BREAK)
        with m.Else():                              # _BREAK: wait for the line to go high
            with m.If(line):
                m.d.sync += state.eq(_IDLE)
        return m


class UartTx(_Uart):
    """UART transmitter: bytes in on a stream, the ``tx`` line out.

    Each byte becomes a frame of ``10·divisor`` cycles: a low start bit, the 8 data bits LSB
    first, a high stop bit. ``tx`` comes straight from a flip-flop and is high when idle.

    Parameters: ``divisor``, as for :class:`UartRx`.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send.
    tx : Out(1)
        The serial line.

    Timing: the start bit begins the cycle after a byte is taken. ``i.ready`` is high when idle
    and in the last cycle of a stop bit, so bytes offered back to back leave with no gap
    (one frame every ``10·divisor`` cycles).

    Raises
    ------
    ValueError
        ``divisor`` below 2 or not an integer.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)

    def elaborate(self, platform):
        divisor = self.divisor
        m = Module()

        timer = Signal(range(divisor))
        bits = Signal(range(11))            # bits of the frame still to finish, start included
        frame = Signal(9, init=0x1FF)       # data bits then the stop bit, shifted out LSB first

        m.d.comb += self.i.ready.eq(~bits.any() | ((bits == 1) & ~timer.any()))
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), frame.eq(Cat(self.i.payload, 1)), bits.eq(10),
                         timer.eq(divisor - 1)]
        with m.Elif(bits.any()):
            with m.If(timer.any()):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [self.tx.eq(frame[0]), frame.eq(Cat(frame[1:], 1)),
                             bits.eq(bits - 1), timer.eq(divisor - 1)]
        return m

