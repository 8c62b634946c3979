"""An exact check of requantization parameters against the target, independent of the solver.

:func:`verify` compares, per channel, the hardware's ``clamp(floor((acc·M + B) / 2^S))`` (the
golden model's :func:`qmac.sim.golden.requantize_values`) with the target
``clamp(R(k·acc + b))`` of ``docs/arithmetic.md``, evaluated here by :func:`target`: exact int64
arithmetic on the dyadic values where it fits, float64 where a rigorous error bound proves the
rounding, exact integers elsewhere. Nothing here imports :mod:`qmac.solver`: the check does not
share the solver's thresholds, hulls or elimination. It checks every value of the reachable range
(``"exhaustive"``), or every value of the unclamped window found by bisection on an exact
:class:`~fractions.Fraction` evaluation plus the clamp regions' ends (``"window"``). Only the
``"runs"`` mode shares the run computation of :mod:`qmac.target` with the solver.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from qmac.hw.checks import INT64_SAFE_BITS, check_integers, exact_array
from qmac.sim.golden import requantize_values
from .target import (check_channels, check_rounding, clamp_int, dyadic, int_channels, round_dyadic,
                     round_fraction, runs)


__all__ = ["Verification", "verify", "target"]


# Largest number of accumulator values evaluated in one NumPy chunk by :func:`verify`.
_CHUNK = 1 << 20


def target(k, b, acc, *, y_min, y_max, rounding="half_up"):
    """Return ``clamp(R(k·acc + b), y_min, y_max)`` exactly, vectorized over ``acc``.

    Independent of the solver's run computation. When ``k``, ``b`` and ``acc`` are small dyadics
    the evaluation is exact int64 arithmetic. Otherwise ``v = k·acc + b`` is evaluated in float64
    with the rigorous error bound ``|v - exact| <= 2^-50·(|k·acc| + |b|) + 2^-1000``; where the
    nearest half-integer (the only place the rounding can change) is farther than that bound,
    the float result is the exact one, and every other element is recomputed with Python
    integers.
    """
    check_rounding(rounding)
    acc = check_integers("acc", acc)
    k, b = float(k), float(b)
    y_min, y_max = int(y_min), int(y_max)
    kn, bn, D = dyadic(k, b)
    if acc.size == 0:
        return np.zeros(acc.shape, dtype=np.int64)
    a_max = max(abs(int(acc.min())), abs(int(acc.max())))
    small_y = max(abs(y_min), abs(y_max)) < (1 << 50)
    if (D <= INT64_SAFE_BITS and small_y and abs(kn) < (1 << INT64_SAFE_BITS)
            and abs(kn) * a_max + abs(bn) < (1 << INT64_SAFE_BITS)):
        N = np.int64(kn) * acc.astype(np.int64) + np.int64(bn)
        q = N >> D
        rem = N & np.int64((1 << D) - 1)
        half = np.int64(1 << (D - 1))
        tie = rem == half
        if rounding == "half_up":
            up = tie
        elif rounding == "half_even":
            up = tie & ((q & 1) == 1)
        else:
            up = tie & (q >= 0)
        r = q + ((rem > half) | up)
        return np.clip(r, y_min, y_max)
    if not small_y or a_max >= (1 << 52):
        flat = [clamp_int(round_dyadic(kn * int(a) + bn, D, rounding), y_min, y_max)
                for a in acc.ravel()]
        return exact_array(flat).reshape(acc.shape)
    a = acc.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        v = k * a + b
        err = 2.0 ** -50 * (abs(k) * np.abs(a) + abs(b)) + 2.0 ** -1000
        floor = np.floor(v)
        frac = v - floor
        sure = np.abs(frac - 0.5) > err
        high = (v - err) > (y_max + 1)
        low = (v + err) < (y_min - 1)
    sure &= np.isfinite(v)
    r = np.where(sure, floor + (frac > 0.5), 0.0)
    r = np.clip(r, y_min, y_max)
    r = np.where(high, y_max, np.where(low, y_min, r)).astype(np.int64)
    unsure = ~(sure | high | low)
    if np.any(unsure):
        flat = r.ravel()
        for i in np.flatnonzero(unsure.ravel()):
            flat[i] = clamp_int(round_dyadic(kn * int(acc.ravel()[i]) + bn, D, rounding),
                                y_min, y_max)
        r = flat.reshape(acc.shape)
    return r


def _target_scalar(k, b, acc, y_min, y_max, rounding):
    """Exact target of one value with :class:`fractions.Fraction` (verification path)."""
    return clamp_int(round_fraction(Fraction(k) * acc + Fraction(b), rounding), y_min, y_max)


def _last_where(predicate, lo, hi):
    """Last ``x`` in ``[lo, hi]`` with ``predicate(x)``, for a predicate true on a prefix."""
    if not predicate(lo):
        return lo - 1
    while lo < hi:
        middle = (lo + hi + 1) // 2
        if predicate(middle):
            lo = middle
        else:
            hi = middle - 1
    return lo


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify`.

    Attributes
    ----------
    ok : ndarray of bool
        Per channel: the solution matches the target on every value checked.
    checked : ndarray of int
        Per channel: how many accumulator values were compared.
    modes : tuple of str
        Per channel: ``"exhaustive"``, ``"window"`` or ``"runs"``.
    counterexamples : tuple of (int, int, int, int)
        ``(channel, acc, target, hardware)``: the first mismatch of every failing channel.
    """

    ok: np.ndarray
    checked: np.ndarray
    modes: tuple
    counterexamples: tuple

    def __bool__(self):
        return bool(np.all(self.ok))


def verify(k, b, acc_lo, acc_hi, M, B, S, *, y_min, y_max, rounding="half_up", mode="auto",
           exhaustive_limit=1 << 20):
    """Check exactly that ``(M, B, S)`` reproduces the target on the reachable range.

    Parameters
    ----------
    k, b, acc_lo, acc_hi, y_min, y_max, rounding
        As for :func:`solve`.
    M, B, S : array_like of int, shape (C,) (``S`` may be a scalar)
        The solution to check.
    mode : {"auto", "exhaustive", "window", "runs"}
        ``"exhaustive"``: every value of ``[acc_lo, acc_hi]``. ``"window"``: every value whose
        target is strictly inside ``(y_min, y_max)`` (found by bisection on the exact
        :class:`~fractions.Fraction` target, which is monotone), plus both ends of each clamp
        region; a clamp region needs only its ends because ``acc·M + B`` is linear, so its
        extremes over an interval are at the ends. ``"runs"``: both ends of every run of
        :func:`qmac.target.target_runs` (exact by the same argument; fast, but shares the run
        computation with the solver). ``"auto"``: exhaustive when the range holds at most
        ``exhaustive_limit`` values, else window.

    Returns
    -------
    Verification
    """
    k, b, acc_lo, acc_hi, y_min, y_max = check_channels(k, b, acc_lo, acc_hi, y_min, y_max,
                                                         rounding)
    if mode not in ("auto", "exhaustive", "window", "runs"):
        raise ValueError(f"mode must be 'auto', 'exhaustive', 'window' or 'runs', "
                         f"not {mode!r}")
    count = len(k)
    M = int_channels("M", M, count)
    B = int_channels("B", B, count)
    S = int_channels("S", S, count)
    for c, s in enumerate(S):
        if s < 0:
            raise ValueError(f"S[{c}] = {s} must not be negative")
    ok, checked, modes, counterexamples = [], [], [], []
    for c in range(count):
        lo, hi = acc_lo[c], acc_hi[c]
        mode_c = mode
        if mode == "auto":
            mode_c = "exhaustive" if hi - lo + 1 <= exhaustive_limit else "window"
        spans, points = _verification_set(k[c], b[c], lo, hi, y_min, y_max, rounding, mode_c)
        first, n = None, 0
        chunks = [np.arange(s, e + 1, dtype=np.int64)
                  if max(abs(s), abs(e)) < (1 << INT64_SAFE_BITS)
                  else np.array(range(s, e + 1), dtype=object)
                  for start, end in spans for s in range(start, end + 1, _CHUNK)
                  for e in (min(s + _CHUNK - 1, end),)]
        if points:
            chunks.append(exact_array(sorted(set(points))))
        for acc in chunks:
            want = target(k[c], b[c], acc, y_min=y_min, y_max=y_max, rounding=rounding)
            got = requantize_values(acc, M[c], B[c], S[c], y_min=y_min, y_max=y_max)
            n += len(acc)
            bad = np.flatnonzero(want != got)
            if first is None and bad.size:
                i = bad[0]
                first = (c, int(acc[i]), int(want[i]), int(got[i]))
        ok.append(first is None)
        checked.append(n)
        modes.append(mode_c)
        if first is not None:
            counterexamples.append(first)
    return Verification(ok=np.array(ok, dtype=bool), checked=np.array(checked, dtype=np.int64),
                        modes=tuple(modes), counterexamples=tuple(counterexamples))


def _verification_set(k, b, lo, hi, y_min, y_max, rounding, mode):
    """Return ``(spans, points)``: intervals to check value by value, and single values."""
    if mode == "exhaustive":
        return [(lo, hi)], []
    if mode == "runs":
        starts, ends, _ = runs(k, b, lo, hi, y_min, y_max, rounding)
        return [], starts + ends

    def t(acc):
        return _target_scalar(k, b, acc, y_min, y_max, rounding)

    if k < 0:                                # work on acc' = -acc, where the target rises
        def rising(acc):
            return t(-acc)
        first, last = -hi, -lo
    else:
        rising, first, last = t, lo, hi
    # Low clamp region: a prefix (t == y_min); high clamp region: a suffix (t == y_max).
    low_end = _last_where(lambda a: rising(a) <= y_min, first, last)
    high_start = _last_where(lambda a: rising(a) < y_max, first, last) + 1
    if y_min == y_max:
        low_end, high_start = last, last + 1
    window = (low_end + 1, high_start - 1)
    points = []
    if low_end >= first:
        points += [first, low_end]
    if high_start <= last:
        points += [high_start, last]
    spans = [window] if window[0] <= window[1] else []
    if k < 0:
        spans = [(-e, -s) for s, e in spans]
        points = [-a for a in points]
    return spans, points

