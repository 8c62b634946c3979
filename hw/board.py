"""Boards, and the layer engine behind a UART: the board top.

The host protocol
-----------------
The link is a UART, 8 data bits, no parity, 1 stop bit, at the baud the top was built for
(115200 by default). Values travel least significant byte first, each in a whole number of bytes:

- **Request** (host to board): one input vector is ``in_features`` activations of
  ``ceil(a_bits/8)`` bytes each, in order ``x[0], x[1], ...``. A value is two's complement
  (sign-extended) when ``a_signed``, zero-extended otherwise; the board keeps the low ``a_bits``
  bits of each value. There is no header: every ``in_features·ceil(a_bits/8)`` bytes are one
  vector.
- **Response** (board to host): per vector, ``out_features`` results ``y[0], y[1], ...`` of
  ``ceil(out_bits/8)`` bytes each (sign-extended when ``out_signed``, zero-extended otherwise),
  then one **status byte** ``0b1010_00LO`` (:data:`STATUS_MARKER` in the high nibble):
  ``O`` (bit 0) is the OR of the accumulator overflow flags of the vector's ``out_features``
  channels; ``L`` (bit 1) says that the receiver dropped a byte (bad stop bit, or overrun)
  since the previous status byte, so this response and the ones after it may be misaligned.
  Responses come in request order.
- **Flow control**: none on the wire, so the host keeps **at most two vectors outstanding**
  (sent, and whose status byte has not arrived). The engine holds one vector in computation
  and a second one complete in its input buffer, so that rule guarantees the receiver is never
  overrun however slowly results leave (:func:`qmac.host.exchange` follows it).

A board powers up ready; nothing resets the link but reconfiguring the FPGA. :mod:`qmac.host`
holds the host's side (encode, decode, the sender); it reads the constants of this module.

Clock and reset of the top
--------------------------
When a component uses the ``sync`` domain without defining it, ``amaranth.back.rtlil.convert``
(and so ``qmac.hw.verilog.convert``) adds two ports for it, ``clk`` and ``rst``. The board
top defines its own ``sync`` domain instead (``m.domains.sync``, not local, so the engine and
the UART inside use it), drives its clock from the ``clk`` port of its signature, and drives
its reset from a power-on counter that counts in a second, reset-less, local domain ``por`` on
the same clock. The converted module therefore has exactly the ports ``clk``, ``rx``, ``tx``.
"""

import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path

from amaranth.hdl import Cat, ClockDomain, Module, Mux, Signal, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .engine import LayerEngine
from .uart import UartRx, UartTx, baud_divisor, is_value


__all__ = [
    "Board", "BOARDS", "TARGETS", "board_for_target",
    "STATUS_MARKER", "STATUS_OVERFLOW", "STATUS_LOST",
    "in_value_bytes", "out_value_bytes", "request_bytes", "response_bytes",
    "BytesToBeats", "BeatsToBytes", "UartEngineTop",
]


# -- boards ---------------------------------------------------------------------------------

def _constraints_folder():
    """The folder of the constraint files: the package data ``qmac.constraints`` (mapped from
    the repository's ``constraints/`` folder by ``pyproject.toml``), or, in an editable install
    made before that mapping existed, the repository's ``constraints/`` folder itself."""
    try:
        return Path(str(importlib.resources.files("qmac.constraints")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "constraints"


@dataclass(frozen=True)
class Board:
    """A development board: its FPGA, its clock, and its pin constraint file.

    Parameters
    ----------
    name : str
    family : {"ice40", "ecp5"}
    device : str
        nextpnr's device option without dashes: ``"up5k"`` (``--up5k``), ``"25k"`` (``--25k``).
    package : str
        nextpnr's ``--package``: ``"sg48"``, ``"CABGA381"``.
    clk_hz : int
        Frequency of the board's oscillator on the ``clk`` pin (the timing constraint).
    constraints : str
        Name of the pin file (``.pcf`` for iCE40, ``.lpf`` for ECP5) in ``constraints/``; it
        places exactly the ports of :class:`UartEngineTop`: ``clk``, ``rx``, ``tx``.
    """

    name: str
    family: str
    device: str
    package: str
    clk_hz: int
    constraints: str

    @property
    def target(self):
        """The synthesis target this board serves, e.g. ``"ice40-up5k"``."""
        return f"{self.family}-{self.device}"

    @property
    def constraints_path(self):
        """Absolute path of the constraint file.

        Raises
        ------
        FileNotFoundError
            The file is not installed (a broken install).
        """
        path = _constraints_folder() / self.constraints
        if not path.is_file():
            raise FileNotFoundError(f"constraint file {self.constraints!r} of board "
                                    f"{self.name!r} not found at {str(path)!r}")
        return path.resolve()


BOARDS = {
    "icebreaker": Board(name="icebreaker", family="ice40", device="up5k", package="sg48",
                        clk_hz=12_000_000, constraints="icebreaker.pcf"),
    "ulx3s": Board(name="ulx3s", family="ecp5", device="25k", package="CABGA381",
                   clk_hz=25_000_000, constraints="ulx3s.lpf"),
}

#: Synthesis target -> name of the board that ``--bitstream`` builds for.
TARGETS = {"ice40-up5k": "icebreaker", "ecp5-25k": "ulx3s"}


def board_for_target(target):
    """The board whose bitstream a synthesis ``target`` produces.

    Raises
    ------
    ValueError
        No board for ``target``; the message lists the targets and boards that exist.
    """
    try:
        return BOARDS[TARGETS[target]]
    except (KeyError, TypeError):
        known = ", ".join(f"{board} ({name})" for name, board in TARGETS.items())
        raise ValueError(f"no board for target {target!r}; the boards are: {known}") from None


# -- the protocol's sizes and constants -------------------------------------------------------

#: High nibble of every status byte.
STATUS_MARKER = 0xA0
#: Status bit: an accumulator of this vector overflowed.
STATUS_OVERFLOW = 0x01
#: Status bit: the receiver dropped a byte since the previous status byte.
STATUS_LOST = 0x02


def in_value_bytes(cfg):
    """Bytes per activation on the link, ``ceil(a_bits/8)``."""
    return -(-cfg.a_bits // 8)


def out_value_bytes(cfg):
    """Bytes per result on the link, ``ceil(out_bits/8)``."""
    return -(-cfg.out_bits // 8)


def request_bytes(cfg):
    """Bytes of one input vector."""
    return cfg.in_features * in_value_bytes(cfg)


def response_bytes(cfg):
    """Bytes of one response: the results and the status byte."""
    return cfg.out_features * out_value_bytes(cfg) + 1


# -- width adapters ---------------------------------------------------------------------------

class BytesToBeats(wiring.Component):
    """Bytes of the request into layer-engine input beats.

    Every ``cols·ceil(a_bits/8)`` bytes make one beat: ``cols`` activations, each the low
    ``a_bits`` bits of its ``ceil(a_bits/8)`` little-endian bytes.

    Parameters
    ----------
    cfg : LayerConfig

    Members
    -------
    i : In(stream.Signature(8))
    o : Out(stream.Signature(layouts.engine_input_layout(cfg)))

    Timing: the beat is offered the cycle after its last byte is taken. ``i`` takes a byte every
    cycle unless a finished beat waits for ``o.ready``; it never drops, adds or reorders one.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(8)),
            "o": Out(stream.Signature(layouts.engine_input_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        value_bytes = in_value_bytes(cfg)
        count = cfg.cols * value_bytes
        m = Module()

        shift = Signal(8 * count)                   # the oldest byte at the bottom
        taken = Signal(range(max(2, count)))        # bytes of the current beat so far
        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        for c in range(cfg.cols):
            lsb = 8 * value_bytes * c
            m.d.comb += self.o.p.x[c].eq(shift[lsb:lsb + cfg.a_bits])
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += shift.eq(Cat(shift[8:], self.i.payload))
            with m.If(is_value(taken, count - 1)):
                m.d.sync += [taken.eq(0), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += taken.eq(taken + 1)
        return m


class BeatsToBytes(wiring.Component):
    """Layer-engine output beats into the bytes of the response.

    Each beat becomes ``rows·ceil(out_bits/8)`` bytes: its results in order, each little endian,
    sign-extended when ``out_signed``. After the beat marked ``last`` comes the status byte
    (:data:`STATUS_MARKER`, :data:`STATUS_OVERFLOW`, :data:`STATUS_LOST`).

    Parameters
    ----------
    cfg : LayerConfig

    Members
    -------
    i : In(stream.Signature(layouts.engine_output_layout(cfg)))
    o : Out(stream.Signature(8))
    lost : In(1)
        A pulse for each byte the receiver dropped; reported in the next status byte whose
        sending begins after the pulse (or in the same cycle).

    Timing: a beat is held until its last byte (and status byte) is taken; the next beat is
    taken the cycle after, so ``o`` is busy all the time while beats wait. Nothing is dropped,
    added or reordered under any stall.
    """

    def __init__(self, cfg):
        self.cfg = cfg
        super().__init__({
            "i": In(stream.Signature(layouts.engine_output_layout(cfg))),
            "o": Out(stream.Signature(8)),
            "lost": In(1),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        value_bytes = out_value_bytes(cfg)
        count = cfg.rows * value_bytes
        m = Module()

        pending = Signal(8 * count)                 # the beat's result bytes, next at the bottom
        last = Signal()                             # the beat is the vector's last
        have = Signal()
        index = Signal(range(count + 1))            # `count` is the status byte
        overflow = Signal()                         # OR of the vector's flags so far
        lost = Signal()                             # sticky since the last status byte
        status = Signal(8)

        wide_shape = signed(8 * value_bytes) if cfg.out_signed else unsigned(8 * value_bytes)
        values = []
        for r in range(cfg.rows):
            value = Signal(wide_shape, name=f"result_{r}")
            m.d.comb += value.eq(self.i.payload.y[r])
            values.append(value)

        m.d.comb += [
            self.i.ready.eq(~have),
            self.o.valid.eq(have),
            self.o.payload.eq(Mux(index == count, status, pending[:8])),
        ]
        with m.If(self.lost):
            m.d.sync += lost.eq(1)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [pending.eq(Cat(*values)), last.eq(self.i.payload.last), have.eq(1),
                         index.eq(0),
                         overflow.eq(overflow | self.i.payload.overflow.as_value().any())]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += pending.eq(pending >> 8)
            with m.If(index == count):
                m.d.sync += [have.eq(0), overflow.eq(0)]
            with m.Elif(is_value(index, count - 1) & last):
                # The status byte is fixed when it becomes current, so it holds still.
                m.d.sync += [
                    index.eq(count),
                    status.eq(STATUS_MARKER | Mux(overflow, STATUS_OVERFLOW, 0) |
                              Mux(lost | self.lost, STATUS_LOST, 0)),
                    lost.eq(0),
                ]
            with m.Elif(is_value(index, count - 1)):
                m.d.sync += have.eq(0)
            with m.Else():
                m.d.sync += index.eq(index + 1)
        return m


# -- the board top ----------------------------------------------------------------------------

#: How long the power-on reset holds the design, in seconds (iCE40 block RAM is not readable
#: for a few microseconds after configuration).
POWER_ON_RESET_SECONDS = 20e-6


class UartEngineTop(wiring.Component):
    """A layer engine behind a UART: the top of a board's bitstream.

    The bytes the UART receives become engine input beats (:class:`BytesToBeats`); the engine's
    output beats become response bytes (:class:`BeatsToBytes`) that the UART sends. The protocol
    is in this module's docstring.

    Parameters
    ----------
    cfg : LayerConfig
    weights, M, B, S
        As for :class:`~qmac.hw.engine.LayerEngine`.
    clk_hz : int or float
        Frequency of the clock on ``clk``.
    baud : int or float
        Baud rate of the UART (see :func:`~qmac.hw.uart.baud_divisor` for what is refused).
    levels_per_stage : int
        Passed to the engine.

    Members
    -------
    clk : In(1)
        The clock of the whole design (the ``sync`` domain).
    rx : In(1)
        Serial line from the host (idle high).
    tx : Out(1)
        Serial line to the host (idle high).

    Timing: for ``ceil(clk_hz·20 µs)`` cycles after configuration the design is held in reset.
    The UART is the bottleneck: a vector's request takes ``10·divisor`` cycles per byte, its
    response likewise, and requests and responses overlap (full duplex).

    Raises
    ------
    ValueError
        A bad ``clk_hz`` or ``baud`` (the message names the value).
    hw.checks.RangeError
        Weights or requantization parameters out of range, as for the engine.
    """

    clk: In(1)
    rx: In(1, init=1)
    tx: Out(1, init=1)

    def __new__(cls, cfg, weights, M, B, S, *, clk_hz, baud=115200, levels_per_stage=1,
                mul_plan=None):
        # Refuse bad arguments before the component exists (no UnusedElaboratable warning).
        baud_divisor(clk_hz, baud)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, cfg, weights, M, B, S, *, clk_hz, baud=115200, levels_per_stage=1,
                 mul_plan=None):
        self.divisor = baud_divisor(clk_hz, baud)
        self.engine = LayerEngine(cfg, weights, M, B, S, levels_per_stage=levels_per_stage,
                                  mul_plan=mul_plan)
        self.cfg = cfg
        self.clk_hz = clk_hz
        self.baud = baud
        self.reset_cycles = max(4, math.ceil(clk_hz * POWER_ON_RESET_SECONDS))
        super().__init__()

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()

        m.domains.sync = sync = ClockDomain("sync")
        m.domains.por = por = ClockDomain("por", reset_less=True, local=True)
        power_on = Signal(range(self.reset_cycles + 1), name="power_on_count")
        m.d.comb += [
            sync.clk.eq(self.clk),
            por.clk.eq(self.clk),
            sync.rst.eq(power_on != self.reset_cycles),
        ]
        with m.If(power_on != self.reset_cycles):
            m.d.por += power_on.eq(power_on + 1)

        m.submodules.uart_rx = uart_rx = UartRx(divisor=self.divisor)
        m.submodules.uart_tx = uart_tx = UartTx(divisor=self.divisor)
        m.submodules.to_beats = to_beats = BytesToBeats(cfg)
        m.submodules.engine = engine = self.engine
        m.submodules.to_bytes = to_bytes = BeatsToBytes(cfg)

        m.d.comb += [
            uart_rx.rx.eq(self.rx),
            self.tx.eq(uart_tx.tx),
            to_bytes.lost.eq(uart_rx.framing_error | uart_rx.overrun),
        ]
        wiring.connect(m, uart_rx.o, to_beats.i)
        wiring.connect(m, to_beats.o, engine.i)
        wiring.connect(m, engine.o, to_bytes.i)
        wiring.connect(m, to_bytes.o, uart_tx.i)
        return m
