"""The golden model: the arithmetic contract of ``docs/arithmetic.md`` in executable, bit-exact
form.

Plain NumPy; no Amaranth or cocotb import. Everything is vectorized over the batch and the output
channels. Where a width could overflow ``int64`` the model computes with Python integers (NumPy
``object`` arrays) instead, so every width the configuration allows is exact.

:func:`requantize_values` is the one place the requantization formula is written; the layer
functions, the stream-beat predictions of :mod:`qmac.sim.beats`, the solver's verification and
the benchmarks all call it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmac.hw.checks import (INT64_SAFE_BITS, RangeError, check_inputs, check_integers,
                            check_range, check_requant, check_requant_values,
                            check_weights, exact_array)
from qmac.hw.config import signed_range
from qmac.hw.threshold_table import check_thresholds


__all__ = [
    "RangeError", "check_range", "check_weights", "check_requant", "check_requant_values",
    "check_inputs",
    "wrap", "saturate", "clamp", "mac", "requantize_values", "requantize", "layer", "LayerResult",
    "check_thresholds", "requantize_thresholds", "layer_thresholds",
]


def wrap(value, bits):
    """Keep the low ``bits`` bits of ``value`` as a two's-complement number."""
    half = 1 << (bits - 1)
    return (value + half) % (1 << bits) - half


def saturate(value, bits):
    """Clamp ``value`` to the ``bits``-bit signed range."""
    return clamp(value, *signed_range(bits))


def clamp(value, lo, hi):
    """Clamp ``value`` to ``[lo, hi]`` element-wise, exactly (Python ints in ``object`` arrays
    stay Python ints)."""
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


def requantize_values(acc, M, B, S, *, y_min, y_max):
    """Return ``clamp(floor((acc·M + B) / 2^S), y_min, y_max)`` exactly, element-wise.

    The requantization formula of ``docs/arithmetic.md``, and the only place it is written.
    ``acc``, ``M``, ``B`` and ``S`` broadcast against each other as NumPy arrays do: one
    parameter set per channel (shape ``(N,)`` against ``acc`` of shape ``(batch, N)``), one per
    element, or scalars. No width is checked here (:func:`requantize` checks against a layer).

    Returns
    -------
    ndarray
        int64 when every value fits it (see :func:`qmac.hw.checks.exact_array`), else Python
        ints in an ``object`` array.

    Raises
    ------
    ValueError
        A non-integer argument, or a negative ``S``; the message names it.
    """
    acc, M, B, S = (check_integers(name, value)
                    for name, value in (("acc", acc), ("M", M), ("B", B), ("S", S)))
    y_min, y_max = int(y_min), int(y_max)
    if S.size and int(S.min()) < 0:
        index = tuple(int(i) for i in np.argwhere(S < 0)[0])
        raise RangeError(f"S{list(index)} = {int(S[index])} must not be negative")
    if 0 in np.broadcast_shapes(acc.shape, M.shape, B.shape, S.shape):
        return np.zeros(np.broadcast_shapes(acc.shape, M.shape, B.shape, S.shape), np.int64)
    reach = _magnitude(acc) * _magnitude(M) + _magnitude(B)       # bounds |acc·M + B|
    if reach < (1 << INT64_SAFE_BITS):
        value = (acc.astype(np.int64) * M.astype(np.int64) + B.astype(np.int64)) \
            >> S.astype(np.int64)
        return np.clip(value, max(y_min, -(1 << 63)), min(y_max, (1 << 63) - 1))
    acc, M, B, S = (exact_array(v, reach.bit_length() + 1) for v in (acc, M, B, S))
    value = (acc * M + B) >> S
    return exact_array(clamp(value, y_min, y_max), max(abs(y_min), abs(y_max)).bit_length() + 1)


def _magnitude(array):
    """The largest ``|v|`` of a non-empty integer array, as a Python int."""
    return max(abs(int(array.min())), abs(int(array.max())))


def requantize(cfg, acc, M, B, S):
    """Requantize a layer's accumulators: :func:`requantize_values` with the layer's clamp,
    after checking every value against the layer's widths.

    ``acc`` has shape ``(batch, out_features)``; ``M``, ``B``, ``S`` have shape
    ``(out_features,)``.
    """
    M, B, S = check_requant(cfg, M, B, S)
    acc = check_range("acc", acc, cfg.acc_min, cfg.acc_max)
    return requantize_values(acc, M, B, S, y_min=cfg.y_min, y_max=cfg.y_max)


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



# -- requantization by thresholds (docs/arithmetic.md, "Requantization by thresholds") -----------

def requantize_thresholds(acc, T, D, *, y_min, y_max):
    """Return ``y`` of the threshold form, exactly, for accumulators ``acc`` of shape
    ``(..., channels)``.

    With ``count = #{j : T[c, j] <= acc}`` (the thresholds at or below ``acc``):
    ``y = y_min + count`` where ``D[c] = +1`` and ``y = y_max - count`` where ``D[c] = -1``.
    Arguments as :func:`check_thresholds` checks them.
    """
    T, D = check_thresholds(T, D, y_min=y_min, y_max=y_max)
    acc = check_integers("acc", acc)
    if acc.shape[-1:] != (T.shape[0],):
        raise RangeError(f"acc must have shape (..., {T.shape[0]}) (one column per channel), "
                         f"not {tuple(acc.shape)}")
    if acc.dtype == object or T.dtype == object:
        acc, T = exact_array(acc, 200), exact_array(T, 200)        # both Python ints
    count = np.empty(acc.shape, dtype=np.int64)
    for c in range(T.shape[0]):
        count[..., c] = np.searchsorted(T[c], acc[..., c], side="right")
    y = np.where(np.asarray(D, dtype=np.int64) > 0, int(y_min) + count, int(y_max) - count)
    return exact_array(y)


def layer_thresholds(cfg, x, w, T, D):
    """Run a batch through one layer whose requantizer is the threshold form."""
    acc, overflow = mac(cfg, x, w)
    y = requantize_thresholds(acc, T, D, y_min=cfg.y_min, y_max=cfg.y_max)
    return LayerResult(y=y, acc=acc, overflow=overflow)
