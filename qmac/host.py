"""The host's side of the board's UART protocol: encode input vectors, decode results, and a
sender for a real serial port.

The protocol itself (byte order, widths, the status byte, the two-vectors-outstanding rule) is
specified in :mod:`qmac.hw.board`, whose constants this module reads; the cocotb test of the
board top and the sender below both use :func:`encode_inputs` and :func:`decode_outputs`.

Command line (needs ``pyserial``: ``pip install 'qmac[board]'``)::

    python -m qmac.host CONFIG.toml --inputs X.npy -o Y.npy --port /dev/ttyUSB1 --baud 115200

With ``--weights W.npy --requant R.npz`` it also compares every result with the golden model
and exits 1 on the first difference.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np

from qmac.hw import board
from qmac.hw.config import ConfigError, LayerConfig
from qmac.sim import golden


__all__ = ["ProtocolError", "Response", "encode_inputs", "decode_outputs", "exchange",
           "open_serial", "main"]

#: Most vectors the host may have outstanding (see :mod:`qmac.hw.board`).
MAX_WINDOW = 2


class ProtocolError(ValueError):
    """Bytes from the board do not follow the protocol (usually: the stream is misaligned)."""


@dataclass
class Response:
    """Decoded responses of a batch.

    Attributes
    ----------
    y : ndarray, shape (batch, out_features)
        Results (``int64``; ``uint64`` for unsigned 64-bit outputs).
    overflow : ndarray of bool, shape (batch,)
        Some accumulator of the vector overflowed.
    lost : ndarray of bool, shape (batch,)
        The board's receiver dropped a byte before this response's status byte.
    """
    y: np.ndarray
    overflow: np.ndarray
    lost: np.ndarray


def encode_inputs(cfg, x):
    """The request bytes of a batch ``x`` of shape ``(batch, in_features)``.

    Raises
    ------
    qmac.hw.checks.RangeError
        ``x`` has the wrong shape or a value outside the activation range (named by index).
    """
    x = golden.check_inputs(cfg, x)
    width = board.in_value_bytes(cfg)
    mask = (1 << (8 * width)) - 1
    return b"".join((int(v) & mask).to_bytes(width, "little") for v in x.reshape(-1))


def decode_outputs(cfg, data):
    """Decode the response bytes of a whole batch.

    Raises
    ------
    ProtocolError
        The length is not a whole number of responses, a status byte is malformed, or a result
        lies outside the ``out_bits`` range (its padding bytes disagree with it); the message
        names the vector and the offending value.
    """
    data = bytes(data)
    size = board.response_bytes(cfg)
    if len(data) % size:
        raise ProtocolError(f"{len(data)} bytes is not a whole number of responses "
                            f"({size} bytes each)")
    batch = len(data) // size
    width = board.out_value_bytes(cfg)
    lo = -(1 << (cfg.out_bits - 1)) if cfg.out_signed else 0
    hi = (1 << (cfg.out_bits - 1)) - 1 if cfg.out_signed else (1 << cfg.out_bits) - 1
    y = np.zeros((batch, cfg.out_features), dtype=object)
    overflow = np.zeros(batch, dtype=bool)
    lost = np.zeros(batch, dtype=bool)
    for n in range(batch):
        chunk = data[n * size:(n + 1) * size]
        for c in range(cfg.out_features):
            value = int.from_bytes(chunk[c * width:(c + 1) * width], "little",
                                   signed=cfg.out_signed)
            if not lo <= value <= hi:
                raise ProtocolError(f"vector {n}, channel {c}: result {value} is outside the "
                                    f"{cfg.out_bits}-bit output range [{lo}, {hi}]; the byte "
                                    f"stream is misaligned")
            y[n, c] = value
        status = chunk[-1]
        known = board.STATUS_OVERFLOW | board.STATUS_LOST
        if status & ~known & 0xFF != board.STATUS_MARKER:
            raise ProtocolError(f"vector {n}: status byte {status:#04x} is not "
                                f"{board.STATUS_MARKER:#04x} plus flags; the byte stream is "
                                f"misaligned")
        overflow[n] = bool(status & board.STATUS_OVERFLOW)
        lost[n] = bool(status & board.STATUS_LOST)
    dtype = np.int64 if cfg.out_signed or cfg.out_bits <= 63 else np.uint64
    return Response(y.astype(dtype), overflow, lost)


def exchange(link, cfg, x, *, window=MAX_WINDOW):
    """Send a batch over ``link`` and return its decoded :class:`Response`.

    At most ``window`` vectors are outstanding: vector ``n + window`` is written only after the
    whole response of vector ``n`` was read.

    Parameters
    ----------
    link
        Any object with ``write(bytes)`` and ``read(count) -> bytes`` (returning fewer bytes on
        a timeout), such as a ``serial.Serial``.
    window : {1, 2}

    Raises
    ------
    ValueError
        ``window`` is not 1 or 2.
    TimeoutError
        A response did not arrive in full (the message says which and how much came).
    ProtocolError
        As for :func:`decode_outputs`.
    """
    if isinstance(window, bool) or window not in range(1, MAX_WINDOW + 1):
        raise ValueError(f"window must be 1 or {MAX_WINDOW} vectors, not {window!r}")
    x = golden.check_inputs(cfg, x)
    payload = encode_inputs(cfg, x)
    batch = len(x)
    request, size = board.request_bytes(cfg), board.response_bytes(cfg)
    received = bytearray()
    sent = 0
    for n in range(batch):
        while sent < batch and sent - n < window:
            link.write(payload[sent * request:(sent + 1) * request])
            sent += 1
        if hasattr(link, "flush"):
            link.flush()
        chunk = link.read(size)
        if len(chunk) < size:
            raise TimeoutError(f"vector {n}: got {len(chunk)} of {size} response bytes before "
                               f"the timeout; is the board configured with this layer and "
                               f"baud rate?")
        received += chunk
    return decode_outputs(cfg, received)


def open_serial(port, baud, *, timeout=2.0):
    """Open ``port`` as 8N1 at ``baud`` with ``pyserial``, emptying its input buffer.

    Raises
    ------
    RuntimeError
        ``pyserial`` is not installed.
    """
    try:
        import serial
    except ImportError:
        raise RuntimeError("the sender needs pyserial: pip install pyserial "
                           "(or pip install 'qmac[board]')") from None
    link = serial.Serial(port, baudrate=baud, bytesize=8, parity="N", stopbits=1,
                         timeout=timeout)
    link.reset_input_buffer()
    return link


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m qmac.host",
        description="Send input vectors to a board running qmac's UART layer top and save the "
                    "results.")
    parser.add_argument("config", metavar="CONFIG.toml", help="the layer configuration")
    parser.add_argument("--inputs", required=True, metavar="X.npy",
                        help="input vectors, shape (batch, in_features)")
    parser.add_argument("-o", "--output", required=True, metavar="Y.npy",
                        help="where to write the results, shape (batch, out_features)")
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB1")
    parser.add_argument("--baud", type=int, default=115200, help="baud rate (default 115200)")
    parser.add_argument("--timeout", type=float, default=2.0,
                        help="seconds to wait for each response (default 2)")
    parser.add_argument("--weights", metavar="W.npy",
                        help="with --requant: check every result against the golden model")
    parser.add_argument("--requant", metavar="R.npz", help="M, B, S (with --weights)")
    return parser


def main(argv=None):
    """Entry point of ``python -m qmac.host``; returns the exit status."""
    args = _parser().parse_args(argv)
    if (args.weights is None) != (args.requant is None):
        print("error: --weights and --requant go together", file=sys.stderr)
        return 2
    if args.baud <= 0:
        print(f"error: --baud must be positive, not {args.baud}", file=sys.stderr)
        return 2
    try:
        cfg = LayerConfig.from_toml(args.config)
        x = np.load(args.inputs, allow_pickle=False)
        golden.check_inputs(cfg, x)
        expected = None
        if args.weights is not None:
            w = np.load(args.weights, allow_pickle=False)
            with np.load(args.requant, allow_pickle=False) as params:
                M, B, S = (params[key] for key in ("M", "B", "S"))
            expected = golden.layer(cfg, x, w, M, B, S)
        link = open_serial(args.port, args.baud, timeout=args.timeout)
        try:
            response = exchange(link, cfg, x)
        finally:
            link.close()
    except (ConfigError, ValueError, OSError, RuntimeError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    np.save(args.output, response.y)
    status = 0
    print(f"{len(response.y)} vectors; {int(response.overflow.sum())} with an accumulator "
          f"overflow")
    if response.lost.any():
        print(f"error: the board dropped input bytes (first reported at vector "
              f"{int(np.argmax(response.lost))}); results may be misaligned", file=sys.stderr)
        status = 1
    if expected is not None:
        y = np.asarray(expected.y, dtype=object)
        diff = np.argwhere(response.y.astype(object) != y)
        if len(diff):
            n, c = (int(v) for v in diff[0])
            print(f"mismatch: vector {n}, channel {c}: expected {y[n, c]}, got "
                  f"{response.y[n, c]} ({len(diff)} results differ)", file=sys.stderr)
            status = 1
        else:
            print("all results equal the golden model")
    return status


if __name__ == "__main__":
    sys.exit(main())
