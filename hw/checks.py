"""Range checks of integer operands and parameters against a layer configuration.

NumPy only. Shared by the generators (which refuse weights and parameters that do not fit) and
the golden model. Every error names the array, the index and the value.
"""

from __future__ import annotations

import numpy as np


__all__ = ["RangeError", "check_range", "check_inputs", "check_weights", "check_requant",
           "exact_array"]

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
    return exact_array(array, max(abs(lo), abs(hi)).bit_length() + 1)


def exact_array(array, bits):
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
