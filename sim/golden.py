"""The golden model: the arithmetic contract of DESIGN.md in executable, bit-exact form.

Plain NumPy; no Amaranth or cocotb import. Everything is vectorized over the batch and the output
channels. Where a width could overflow ``int64`` the model computes with Python integers (NumPy
``object`` arrays) instead, so every width the configuration allows is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmac.hw.checks import (RangeError, check_inputs, check_range, check_requant, check_weights,
                       exact_array)


__all__ = [
    "RangeError", "check_range", "check_weights", "check_requant", "check_inputs",
    "wrap", "saturate", "mac", "requantize", "layer", "LayerResult",
]


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
    x, w = exact_array(x, bits), exact_array(w, bits)
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
    acc, M, B = exact_array(acc, bits), exact_array(M, bits), exact_array(B, bits)
    S = S.astype(object) if acc.dtype == object else S.astype(np.int64)
    value = (acc * M + B) >> S
    if value.dtype == object:
        value = np.where(value < cfg.y_min, cfg.y_min, np.where(value > cfg.y_max, cfg.y_max,
                                                                   value))
        return exact_array(value, cfg.out_bits + 1)
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

