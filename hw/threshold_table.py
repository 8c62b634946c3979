"""The threshold table of a layer, checked: NumPy only (the golden model imports it).

A table is ``T`` of shape ``(channels, y_max - y_min)``, each row non-decreasing, and ``D`` of
shape ``(channels,)`` holding ``+1`` (an increasing channel) or ``-1`` (a decreasing one); see
``docs/arithmetic.md``, "Requantization by thresholds".
"""

from __future__ import annotations

import numpy as np

from .checks import RangeError, check_integers, check_range, exact_array


__all__ = ["check_thresholds"]


def check_thresholds(T, D, *, y_min, y_max, channels=None, lo=None, hi=None):
    """Check a threshold table and return ``(T, D)`` as exact integer arrays.

    ``T`` has shape ``(channels, y_max - y_min)``, each row non-decreasing; ``D`` has shape
    ``(channels,)`` and holds ``+1`` (an increasing channel) or ``-1`` (a decreasing one).
    ``lo``/``hi``, when given, bound every threshold (the hardware's threshold width).

    Raises
    ------
    RangeError
        A wrong shape, a non-integer, a ``D`` other than ``±1``, a threshold out of
        ``[lo, hi]`` or a row that decreases; the message names the array, index and value.
    """
    y_min, y_max = int(y_min), int(y_max)
    if y_min > y_max:
        raise RangeError(f"y_min = {y_min} is greater than y_max = {y_max}")
    T = check_integers("T", T)
    D = check_integers("D", D)
    levels = y_max - y_min
    if T.ndim != 2 or T.shape[1] != levels or (channels is not None and T.shape[0] != channels):
        rows = "channels" if channels is None else channels
        raise RangeError(f"T must have shape ({rows}, {levels}) (one threshold per output "
                         f"level above y_min = {y_min}), not {tuple(T.shape)}")
    if D.shape != (T.shape[0],):
        raise RangeError(f"D must have shape ({T.shape[0]},) (one direction per channel), "
                         f"not {tuple(D.shape)}")
    bad = (D != 1) & (D != -1)
    if np.any(bad):
        index = int(np.argmax(bad))
        raise RangeError(f"D[{index}] = {int(D[index])} must be +1 or -1")
    if lo is not None:
        T = check_range("T", T, lo, hi)
    else:
        T = exact_array(T)
    if levels > 1:
        falls = T[:, 1:] < T[:, :-1]
        if np.any(falls):
            c, j = (int(i) for i in np.argwhere(falls)[0])
            raise RangeError(f"T[{c}] must be non-decreasing, but T[{c}, {j + 1}] = "
                             f"{int(T[c, j + 1])} < T[{c}, {j}] = {int(T[c, j])}")
    return T, exact_array(D)
