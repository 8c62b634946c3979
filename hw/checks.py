"""Range checks of integer operands and parameters against a layer configuration, and the one
converter to exact integer arrays.

NumPy only. Shared by the generators (which refuse weights and parameters that do not fit), the
golden model and the solver. Every error names the array, the index and the value. The ranges
are those of ``docs/arithmetic.md`` ("Operands", "Requantization").
"""

from __future__ import annotations

import numpy as np


__all__ = ["RangeError", "INT64_SAFE_BITS", "check_integers", "check_range", "check_inputs",
           "check_weights", "check_requant", "check_requant_values", "exact_array"]

#: Computations whose values stay below ``2**INT64_SAFE_BITS`` in magnitude run in int64; wider
#: ones run on Python integers (NumPy ``object`` arrays).
INT64_SAFE_BITS = 62


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
    array = check_integers(name, array)
    if array.size:
        bad = (array < lo) | (array > hi)
        if np.any(bad):
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise RangeError(f"{name}{list(index)} = {int(array[index])} does not fit "
                             f"[{lo}, {hi}]")
    return exact_array(array, max(abs(lo), abs(hi)).bit_length() + 1)


def check_integers(name, array):
    """Return ``array`` as a NumPy array, or raise if it does not hold integers only.

    Raises
    ------
    RangeError
        A non-integer dtype (booleans included), or an ``object`` array with a non-integer
        element; the message names the array (and the index).
    """
    array = np.asarray(array)
    if array.dtype.kind == "b" or (array.dtype.kind not in "iuO"):
        raise RangeError(f"{name} must hold integers, not {array.dtype} values")
    if array.dtype.kind == "O":
        for index, value in np.ndenumerate(array):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise RangeError(f"{name}{list(index)} = {value!r} is not an integer")
    return array


def exact_array(array, bits=None):
    """Return integers as an exact NumPy array: int64 where that is safe, else Python ints.

    Parameters
    ----------
    array : array_like of int
        Integers (NumPy integers, or Python ints of any size).
    bits : int, optional
        The signed width of the computation the caller will do with the values: int64 when it
        is at most :data:`INT64_SAFE_BITS`. Without ``bits`` the values are only stored: int64
        when every value fits int64.
    """
    values = np.asarray(array)
    if bits is None:
        int64 = values.size == 0 or (-(1 << 63) <= int(values.min())
                                     and int(values.max()) < (1 << 63))
    else:
        int64 = bits <= INT64_SAFE_BITS
    if int64:
        return values.astype(np.int64)
    out = np.empty(values.shape, dtype=object)
    out.ravel()[:] = [int(v) for v in values.ravel()]
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

    Each of ``M``, ``B``, ``S`` has shape ``(out_features,)``. With ``cfg.shared_shift`` every
    ``S`` must be the same.
    """
    M, B, S = check_requant_values(cfg, M, B, S, shape=(cfg.out_features,))
    if cfg.shared_shift and np.any(S != S[0]):
        index = int(np.argmax(S != S[0]))
        raise RangeError(f"shared_shift is set but S[{index}] = {int(S[index])} differs from "
                         f"S[0] = {int(S[0])}")
    return M, B, S


def check_requant_values(cfg, M, B, S, *, shape=None):
    """Check requantization parameters against ``m_bits``, ``b_bits``, ``s_max``.

    Without ``shape`` the arrays may have any shape (the requantizer's input beats carry one set
    per lane and beat); :func:`check_requant` checks a layer's per-channel arrays.
    """
    out = []
    for name, array, lo, hi in (("M", M, cfg.m_min, cfg.m_max), ("B", B, cfg.b_min, cfg.b_max),
                                ("S", S, 0, cfg.s_max)):
        array = np.asarray(array)
        if shape is not None and array.shape != shape:
            raise RangeError(f"{name} must have shape {shape}, not {tuple(array.shape)}")
        out.append(check_range(name, array, lo, hi))
    return tuple(out)
