"""The golden model: the arithmetic contract of DESIGN.md in executable, bit-exact form.

Plain NumPy; no Amaranth or cocotb import. Everything is vectorized over the batch and the output
channels. Where a width could overflow ``int64`` the model computes with Python integers (NumPy
``object`` arrays) instead, so every width the configuration allows is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


__all__ = [
    "RangeError", "check_range", "check_weights", "check_requant", "check_inputs",
    "wrap", "saturate", "mac", "requantize", "layer", "LayerResult",
]

# Values whose magnitude stays below 2**_INT64_SAFE_BITS are computed in int64.
_INT64_SAFE_BITS = 62


class RangeError(ValueError):
    """An integer array holds a value outside the range its width allows."""


def check_range(name, array, lo, hi):
    """Return ``array`` as an exact integer array, or raise naming the first bad element.

    Parameters
    ----------
    name : str
        What the array is, for the message (``"weights"``, ``"M"``...).
    array : array_like
        Integers (any integer dtype, or Python ints in an object array).
    lo, hi : int
        Inclusive bounds.

    Raises
    ------
    RangeError
        A non-integer array, or an element outside ``[lo, hi]``; the message gives the index and
        the value.
    """
    array = np.asarray(array)
    if array.dtype.kind == "b" or (array.dtype.kind not in "iuO"):
        raise RangeError(f"{name} must hold integers, not {array.dtype} values")
    if array.dtype.kind == "O":
        for index, value in np.ndenumerate(array):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise RangeError(f"{name}{list(index)} = {value!r} is not an integer")
    if array.size:
        bad = (array < lo) | (array > hi)
        if np.any(bad):
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise RangeError(f"{name}{list(index)} = {int(array[index])} does not fit "
                             f"[{lo}, {hi}]")
    return _exact(array, max(abs(lo), abs(hi)).bit_length() + 1)


def _exact(array, bits):
    """Return ``array`` as int64 when ``bits`` is small enough, else as Python ints."""
    if bits <= _INT64_SAFE_BITS:
        return np.asarray(array).astype(np.int64)
    out = np.empty(np.shape(array), dtype=object)
    flat = np.asarray(array).ravel()
    out.ravel()[:] = [int(v) for v in flat]
    return out


def check_inputs(cfg, x):
    """Check a batch of input vectors ``(batch, in_features)`` against ``a_bits``/``a_signed``."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != cfg.in_features:
        raise RangeError(f"inputs must have shape (batch, {cfg.in_features}), "
                         f"not {tuple(x.shape)}")
    return check_range("inputs", x, cfg.x_min, cfg.x_max)


def check_weights(cfg, w):
    """Check integer weights ``(out_features, in_features)`` against ``w_bits``."""
    w = np.asarray(w)
    if w.shape != (cfg.out_features, cfg.in_features):
        raise RangeError(f"weights must have shape ({cfg.out_features}, {cfg.in_features}), "
                         f"not {tuple(w.shape)}")
    return check_range("weights", w, cfg.w_min, cfg.w_max)


def check_requant(cfg, M, B, S):
    """Check per-channel requantization parameters against ``m_bits``, ``b_bits``, ``s_max``.

    With ``cfg.shared_shift`` every ``S`` must be the same.
    """
    out = []
    for name, array, lo, hi in (("M", M, cfg.m_min, cfg.m_max), ("B", B, cfg.b_min, cfg.b_max),
                                ("S", S, 0, cfg.s_max)):
        array = np.asarray(array)
        if array.shape != (cfg.out_features,):
            raise RangeError(f"{name} must have shape ({cfg.out_features},), "
                             f"not {tuple(array.shape)}")
        out.append(check_range(name, array, lo, hi))
    M, B, S = out
    if cfg.shared_shift and np.any(S != S[0]):
        index = int(np.argmax(S != S[0]))
        raise RangeError(f"shared_shift is set but S[{index}] = {int(S[index])} differs from "
                         f"S[0] = {int(S[0])}")
    return M, B, S


def wrap(value, bits):
    """Keep the low ``bits`` bits of ``value`` as a two's-complement number."""
    half = 1 << (bits - 1)
    return (value + half) % (1 << bits) - half


def saturate(value, bits):
    """Clamp ``value`` to the ``bits``-bit signed range."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if isinstance(value, np.ndarray) and value.dtype == object:
        return np.where(value < lo, lo, np.where(value > hi, hi, value))
    return np.clip(value, lo, hi)


def mac(cfg, x, w):
    """Accumulate dot products exactly as the MAC array does.

    Parameters
    ----------
    cfg : LayerConfig
    x : array_like, shape (batch, in_features)
    w : array_like, shape (out_features, in_features)

    Returns
    -------
    acc : ndarray, shape (batch, out_features)
        The accumulator after the last beat (``acc_bits`` signed).
    overflow : ndarray of bool, shape (batch, out_features)
        Sticky flag: the overflow mode changed a value during this dot product.
    """
    x = check_inputs(cfg, x)
    w = check_weights(cfg, w)
    bits = max(cfg.acc_bits, cfg.beat_sum_bits) + 2
    x, w = _exact(x, bits), _exact(w, bits)
    overflow_mode = wrap if cfg.overflow == "wrap" else saturate
    acc = None
    flags = np.zeros((x.shape[0], cfg.out_features), dtype=bool)
    for beat in range(cfg.beats):
        span = slice(beat * cfg.cols, (beat + 1) * cfg.cols)
        beat_sum = x[:, span] @ w[:, span].T
        exact = beat_sum if acc is None else acc + beat_sum
        acc = overflow_mode(exact, cfg.acc_bits)
        flags |= np.asarray(acc != exact, dtype=bool)
    return acc, flags


def requantize(cfg, acc, M, B, S):
    """Apply ``clamp(floor((acc·M + B) / 2^S), y_min, y_max)`` per output channel.

    ``acc`` has shape ``(batch, out_features)``; ``M``, ``B``, ``S`` have shape
    ``(out_features,)``.
    """
    M, B, S = check_requant(cfg, M, B, S)
    acc = check_range("acc", acc, cfg.acc_min, cfg.acc_max)
    bits = max(cfg.acc_bits + cfg.m_bits, cfg.b_bits) + 2
    acc, M, B = _exact(acc, bits), _exact(M, bits), _exact(B, bits)
    if acc.dtype == object:
        S = _exact(S, _INT64_SAFE_BITS + 1)
    else:
        S = S.astype(np.int64)
    value = (acc * M + B) >> S
    if value.dtype == object:
        value = np.where(value < cfg.y_min, cfg.y_min, np.where(value > cfg.y_max, cfg.y_max,
                                                                   value))
        return _exact(value, cfg.out_bits + 1)
    return np.clip(value, cfg.y_min, cfg.y_max)


@dataclass(frozen=True)
class LayerResult:
    """What a whole layer computes for a batch."""
    y: np.ndarray
    acc: np.ndarray
    overflow: np.ndarray


def layer(cfg, x, w, M, B, S):
    """Run a batch of integer input vectors through one layer: MAC array, then requantization."""
    acc, overflow = mac(cfg, x, w)
    return LayerResult(y=requantize(cfg, acc, M, B, S), acc=acc, overflow=overflow)

