"""The exact BN-to-fixed-point requantization solver.

For each output channel the float layer collapses into one affine map on the integer accumulator
(DESIGN.md, "What the solver guarantees")::

    target(acc) = clamp(R(k·acc + b), y_min, y_max)          k, b float64; R a rounding rule
    h(acc)      = clamp(floor((acc·M + B) / 2^S), y_min, y_max)   the hardware, M, B, S integers

:func:`solve` returns, per channel, integers ``(M, B, S)`` with ``h(acc) == target(acc)`` for
**every** integer ``acc`` in the reachable range ``[acc_lo, acc_hi]``, with the smallest ``S`` for
which some ``M`` (``m_bits`` signed) and ``B`` (``b_bits`` signed) exist; or it names the channel
and says why none exists. It never returns an inexact channel silently.

How it works
------------
All arithmetic is on Python integers: a float64 is an exact dyadic rational, so
``k = kn / 2^D`` and ``b = bn / 2^D`` with integers ``kn``, ``bn`` and one ``D >= 1``
(``float.as_integer_ratio``). No float product takes part in any decision.

1. **Runs.** ``r(acc) = R(k·acc + b)`` is monotone in ``acc`` (non-decreasing for ``k > 0``,
   non-increasing for ``k < 0``, constant for ``k = 0``), so the range splits into at most
   ``y_max - y_min + 1`` *runs*: maximal intervals ``[p, q]`` on which the clamped target is one
   level ``y``. For ``k > 0`` the run boundaries are the thresholds ``T(y)`` = the smallest
   ``acc`` with ``r(acc) >= y``, in closed form: with ``c = (2y - 1)·2^(D-1) - bn``,
   ``T(y) = ceil(c / kn)`` when a tie at ``y - 1/2`` rounds up to ``y`` under ``R``, else
   ``floor(c / kn) + 1``. ``k < 0`` is solved on the mirrored axis ``acc' = -acc``. When there
   are more levels than accumulator values, each value is its own run. The cost is one integer
   division per level, independent of the width of the range.

2. **Constraints.** ``h == target`` on a run at level ``y`` means, for every ``acc`` of the run:

   - ``y_min < y < y_max``: ``y·2^S <= acc·M + B <= y·2^S + 2^S - 1`` (the floor is exactly ``y``);
   - ``y = y_min`` (the target clamps low): only ``acc·M + B <= (y_min + 1)·2^S - 1``;
   - ``y = y_max`` (the target clamps high): only ``acc·M + B >= y_max·2^S``.

   A run is labelled ``y_min`` exactly when ``r <= y_min``, so values whose rounded target equals
   a clamp bound also get the one-sided constraint: the hardware need only clamp to the same
   side. Each constraint is linear in ``acc``, and a linear function on an interval attains its
   extremes at the interval's ends, so **it holds on the whole run if and only if it holds at the
   run's two endpoints**, whatever the sign of ``M`` (no monotonicity of ``h`` is assumed; this is
   what makes clamp regions cost two points each). The problem is now at most
   ``2·(y_max - y_min + 1)`` inequalities ``Y_i·2^S <= a_i·M + B`` ("lower points" ``(a_i, Y_i)``)
   and ``a_j·M + B <= Y'_j·2^S - 1`` ("upper points" ``(a_j, Y'_j)``).

3. **Hulls.** For a fixed integer ``M`` the admissible ``B`` form the integer interval
   ``[max_i(Y_i·2^S - a_i·M), min_j(Y'_j·2^S - 1 - a_j·M)]``. The maximum is the support function
   of the lower points in the direction ``(-M, 1)``, attained on their *upper convex hull*; the
   minimum on the *lower convex hull* of the upper points. Scaling ``Y`` by ``2^S`` and shifting by
   ``-1`` preserves hulls, so the two hulls are computed once per channel, on integers, and are
   small (points in a band of width about 1 around a line have O(log range) hull vertices, as for
   continued fractions). Replacing the points by hull vertices leaves both envelopes identical for
   every real ``M``, so nothing is lost.

4. **Feasible M for one S** (Fourier-Motzkin, DESIGN notes §1.3). Eliminating ``B`` from every
   pair of a lower vertex ``p`` and an upper vertex ``q`` gives, with ``d = a_p - a_q`` and
   ``n = (Y_p - Y'_q)·2^S + 1``: ``M >= ceil(n / d)`` if ``d > 0``, ``M <= floor(n / d)`` if
   ``d < 0`` (and ``n <= 0`` if ``d = 0``). The width limits are more linear constraints: ``M`` in
   ``[-2^(m_bits-1), 2^(m_bits-1) - 1]``, and ``B`` inside its box for the envelope above becomes
   ``a_p·M >= Y_p·2^S - b_max`` and ``a_q·M <= Y'_q·2^S - 1 - b_min`` per vertex. The result is an
   exact integer interval of ``M``; every integer ``M`` in it has a non-empty integer ``B``
   interval (its bounds are integers, and the pairwise conditions are exactly "lower envelope <=
   upper envelope").

5. **Smallest S.** Without width limits feasibility is monotone in ``S`` (``(2M, 2B, S + 1)``
   computes the same floor as ``(M, B, S)``), so the smallest exact shift ``s_exact`` is found by
   doubling and bisection. Whether *any* ``S`` works is decided first, exactly: dividing the
   pairwise bounds by ``2^S`` and letting ``S`` grow, some ``S`` works if and only if the largest
   lower slope ``max_{d>0} (Y_p - Y'_q)/d`` is strictly below the smallest upper slope
   ``min_{d<0} (Y_p - Y'_q)/d``. (Round-half-even with ties, for example ``k = 1/2`` on
   ``acc = 1, 3, 5, 7``, is not of the form ``floor(affine)`` at any ``S``.) With width limits,
   feasibility need not be monotone (``2M`` may not fit), so the solver scans
   ``S = s_exact, s_exact + 1, ..., s_max`` and takes the first that fits; below ``s_exact``
   nothing works at any width.

6. **Tie break.** At the chosen ``S`` the feasible ``M`` form an integer interval: the solver
   takes the ``M`` of smallest magnitude (unique in an interval); for that ``M`` the ``B`` form an
   integer interval and it takes the ``B`` of smallest magnitude.

Shared shift: one ``S`` for every channel, the smallest ``S <= s_max`` at which every channel has
``(M, B)`` within the limits. It is at least the largest per-channel ``s_exact``, and the same
scan applies.

Complexity per channel: one division per output level reached, a linear hull pass over at most
``2·levels`` points, and ``O(h_lower·h_upper)`` integer operations per tried ``S``. A thousand
int8-output channels take about a second. (With very wide outputs, e.g. 32-bit, and ``|k| >= 1``
every accumulator value is its own run and the cost grows with the range.)

:func:`verify` re-checks a solution with a separate exact evaluation of the target (float64 where
a rigorous error bound proves the rounding, exact integers elsewhere) on every value of the
unclamped window, the clamp regions' ends, or every reachable value.

Baselines for :mod:`bench.bn_bits` are at the end of this module: naive rounding
(:func:`naive_requant`) and TFLite's double-rounding integer pipeline (:func:`tflite_requant`,
:func:`tflite_output`, :func:`tflite_mismatches`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np


__all__ = [
    "ROUNDINGS", "InfeasibleError", "ChannelReport", "Requant", "Verification",
    "solve", "solve_layer", "verify", "target", "target_runs", "hardware", "signed_bits",
    "NaiveRequant", "naive_requant", "TFLiteRequant", "tflite_requant", "tflite_output",
    "tflite_mismatches",
]


#: The rounding rules ``R`` of the target: ``half_up`` is ``floor(v + 1/2)``, ``half_even``
#: rounds ties to the even integer, ``half_away`` rounds ties away from zero.
ROUNDINGS = ("half_up", "half_even", "half_away")

# Values whose magnitude stays below 2**_INT64_SAFE_BITS are computed in int64.
_INT64_SAFE_BITS = 62
# Largest number of accumulator values evaluated in one NumPy chunk by :func:`verify`.
_CHUNK = 1 << 20
# Channels listed in the message of an InfeasibleError (all are in its .infeasible).
_LISTED = 20


class InfeasibleError(ValueError):
    """Some channels have no exact ``(M, B, S)`` within the limits.

    Attributes
    ----------
    infeasible : tuple of (int, str)
        ``(channel index, reason)`` for every such channel.
    """

    def __init__(self, infeasible):
        self.infeasible = tuple(infeasible)
        lines = [reason for _, reason in self.infeasible[:_LISTED]]
        if len(self.infeasible) > _LISTED:
            lines.append(f"... and {len(self.infeasible) - _LISTED} more (see .infeasible)")
        super().__init__(f"{len(self.infeasible)} channel(s) have no exact requantization:\n  "
                         + "\n  ".join(lines))


def signed_bits(value):
    """Return the fewest bits of a two's-complement signed integer that hold ``value``."""
    value = int(value)
    return (value if value >= 0 else -value - 1).bit_length() + 1


# -- input checking ---------------------------------------------------------------------------

def _check_rounding(rounding):
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDINGS))}, "
                         f"not {rounding!r}")


def _check_int_scalar(name, value, lo=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be at least {lo}, not {value}")
    return value


def _float_channels(name, values, count=None):
    """Return ``values`` as a list of finite Python floats, one per channel."""
    array = np.asarray(values)
    if array.dtype.kind not in "iuf" or array.dtype.kind == "b":
        raise ValueError(f"{name} must hold real numbers, not {array.dtype} values")
    array = np.atleast_1d(array.astype(np.float64))
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per channel (1-D), "
                         f"not shape {tuple(array.shape)}")
    if count is not None and array.shape[0] != count:
        if array.shape[0] == 1:
            array = np.repeat(array, count)
        else:
            raise ValueError(f"{name} has {array.shape[0]} values but k has {count} "
                             f"(one per output channel)")
    bad = ~np.isfinite(array)
    if np.any(bad):
        index = int(np.argmax(bad))
        raise ValueError(f"{name}[{index}] = {float(array[index])!r} must be finite")
    return array.tolist()


def _int_channels(name, values, count):
    """Return ``values`` as a list of Python ints, one per channel (a scalar is broadcast)."""
    array = np.asarray(values)
    if array.dtype.kind == "O":
        for index, value in np.ndenumerate(array):
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name}{list(index)} = {value!r} is not an integer")
    elif array.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integers, not {array.dtype} values")
    array = np.atleast_1d(array)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per channel (1-D), "
                         f"not shape {tuple(array.shape)}")
    if array.shape[0] != count:
        if array.shape[0] == 1:
            return [int(array[0])] * count
        raise ValueError(f"{name} has {array.shape[0]} values but k has {count} "
                         f"(one per output channel)")
    return [int(v) for v in array.tolist()]


def _check_channels(k, b, acc_lo, acc_hi, y_min, y_max, rounding):
    _check_rounding(rounding)
    k = _float_channels("k", k)
    b = _float_channels("b", b, len(k))
    acc_lo = _int_channels("acc_lo", acc_lo, len(k))
    acc_hi = _int_channels("acc_hi", acc_hi, len(k))
    for index, (lo, hi) in enumerate(zip(acc_lo, acc_hi)):
        if lo > hi:
            raise ValueError(f"acc_lo[{index}] = {lo} is greater than acc_hi[{index}] = {hi}")
    y_min = _check_int_scalar("y_min", y_min)
    y_max = _check_int_scalar("y_max", y_max)
    if y_min > y_max:
        raise ValueError(f"y_min = {y_min} is greater than y_max = {y_max}")
    return k, b, acc_lo, acc_hi, y_min, y_max


def _as_int_array(values):
    """Return a list of Python ints as int64 when every value fits, else as an object array."""
    if all(-(1 << 63) <= v < (1 << 63) for v in values):
        return np.array(values, dtype=np.int64)
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


# -- exact target -----------------------------------------------------------------------------

def _dyadic(k, b):
    """Return integers ``(kn, bn, D)`` with ``k = kn / 2^D``, ``b = bn / 2^D`` and ``D >= 1``."""
    kn, kd = float(k).as_integer_ratio()
    bn, bd = float(b).as_integer_ratio()
    ke, be = kd.bit_length() - 1, bd.bit_length() - 1
    D = max(ke, be, 1)
    return kn << (D - ke), bn << (D - be), D


def _round_num(N, D, rounding):
    """Return ``R(N / 2^D)`` exactly, for integers ``N`` and ``D >= 1``."""
    q = N >> D
    rem = N - (q << D)
    half = 1 << (D - 1)
    if rem > half:
        return q + 1
    if rem < half:
        return q
    if rounding == "half_up":
        return q + 1
    if rounding == "half_even":
        return q + (q & 1)
    return q + 1 if q >= 0 else q                        # half_away: q + 1/2 > 0 iff q >= 0


def _tie_rounds_up(y, rounding):
    """Whether a tie at ``y - 1/2`` rounds to ``y`` (rather than ``y - 1``) under ``rounding``."""
    if rounding == "half_up":
        return True
    if rounding == "half_even":
        return y % 2 == 0
    return y >= 1                                        # half_away: y - 1/2 > 0


def _clamp(value, lo, hi):
    return lo if value < lo else hi if value > hi else value


def _runs(k, b, lo, hi, y_min, y_max, rounding):
    """Return the runs of the clamped target as ascending lists ``(starts, ends, levels)``."""
    kn, bn, D = _dyadic(k, b)
    if kn < 0:
        starts, ends, levels = _runs_increasing(-kn, bn, D, -hi, -lo, y_min, y_max, rounding)
        return ([-e for e in reversed(ends)], [-s for s in reversed(starts)],
                list(reversed(levels)))
    if kn == 0:
        return [lo], [hi], [_clamp(_round_num(bn, D, rounding), y_min, y_max)]
    return _runs_increasing(kn, bn, D, lo, hi, y_min, y_max, rounding)


def _runs_increasing(kn, bn, D, lo, hi, y_min, y_max, rounding):
    e_lo = _clamp(_round_num(kn * lo + bn, D, rounding), y_min, y_max)
    e_hi = _clamp(_round_num(kn * hi + bn, D, rounding), y_min, y_max)
    if e_lo == e_hi:
        return [lo], [hi], [e_lo]
    if e_hi - e_lo <= hi - lo:
        # One threshold per level: T(y), the first acc with r(acc) >= y.
        half = 1 << (D - 1)
        thresholds = []
        for y in range(e_lo + 1, e_hi + 1):
            c = (2 * y - 1) * half - bn
            thresholds.append(-(-c // kn) if _tie_rounds_up(y, rounding) else c // kn + 1)
        starts = [lo] + thresholds
        ends = [t - 1 for t in thresholds] + [hi]
        levels = list(range(e_lo, e_hi + 1))
        keep = [i for i in range(len(levels)) if starts[i] <= ends[i]]
        return [starts[i] for i in keep], [ends[i] for i in keep], [levels[i] for i in keep]
    # More levels than values (|k| > 1): every value is evaluated.
    starts, ends, levels = [], [], []
    for acc in range(lo, hi + 1):
        y = _clamp(_round_num(kn * acc + bn, D, rounding), y_min, y_max)
        if levels and levels[-1] == y:
            ends[-1] = acc
        else:
            starts.append(acc)
            ends.append(acc)
            levels.append(y)
    return starts, ends, levels


def target_runs(k, b, acc_lo, acc_hi, *, y_min, y_max, rounding="half_up"):
    """Return the runs of one channel's target: maximal intervals of constant output.

    Parameters
    ----------
    k, b : float
        The channel's affine map (float64).
    acc_lo, acc_hi : int
        The reachable accumulator range.
    y_min, y_max : int
        The output clamp.
    rounding : str
        One of :data:`ROUNDINGS`.

    Returns
    -------
    starts, ends, levels : ndarray
        ``target(acc) == levels[i]`` for every ``acc`` in ``[starts[i], ends[i]]``; the runs are
        ascending, disjoint and cover ``[acc_lo, acc_hi]``.
    """
    (k,), (b,), (lo,), (hi,), y_min, y_max = _check_channels(k, b, acc_lo, acc_hi, y_min,
                                                             y_max, rounding)
    starts, ends, levels = _runs(k, b, lo, hi, y_min, y_max, rounding)
    return _as_int_array(starts), _as_int_array(ends), _as_int_array(levels)


# -- the solver -------------------------------------------------------------------------------

def _upper_hull(points):
    """Vertices of the upper convex hull of ``points`` (sorted by ``a``, ties allowed)."""
    hull = []
    for a, y in points:
        if hull and hull[-1][0] == a:
            if hull[-1][1] >= y:
                continue
            hull.pop()
        while len(hull) >= 2:
            (a1, y1), (a2, y2) = hull[-2], hull[-1]
            if (y2 - y1) * (a - a1) <= (y - y1) * (a2 - a1):     # hull[-1] not above the chord
                hull.pop()
            else:
                break
        hull.append((a, y))
    return hull


def _lower_hull(points):
    return [(a, -y) for a, y in _upper_hull([(a, -y) for a, y in points])]


@dataclass(frozen=True)
class _Limits:
    m_lo: int
    m_hi: int
    b_lo: int
    b_hi: int


class _Channel:
    """One channel's constraints, reduced to two small convex hulls of integer points."""

    __slots__ = ("lower", "upper", "runs", "window", "s_exact", "never")

    def __init__(self, k, b, lo, hi, y_min, y_max, rounding):
        starts, ends, levels = _runs(k, b, lo, hi, y_min, y_max, rounding)
        self.runs = len(levels)
        inside = [i for i, y in enumerate(levels) if y_min < y < y_max]
        self.window = (starts[inside[0]], ends[inside[-1]]) if inside else None
        lower, upper = [], []                  # Y·2^S <= a·M + B;  a·M + B <= Y'·2^S - 1
        for s, e, y in zip(starts, ends, levels):
            ends_of_run = (s,) if s == e else (s, e)
            if y > y_min:
                lower.extend((a, y) for a in ends_of_run)
            if y < y_max:
                upper.extend((a, y + 1) for a in ends_of_run)
        self.lower = _upper_hull(lower)
        self.upper = _lower_hull(upper)
        self.never = self._never_exact()
        self.s_exact = None if self.never else self._smallest_exact_shift()

    def _never_exact(self):
        """Return ``None`` if some shift makes the channel exact, else the reason it cannot."""
        steepest_lower = shallowest_upper = None           # (slope, a_p, a_q)
        for ap, yp in self.lower:
            for aq, yq in self.upper:
                d = ap - aq
                if d == 0:
                    if yp >= yq:
                        return f"acc = {ap} needs floor >= {yp} and <= {yq - 1}"
                    continue
                slope = Fraction(yp - yq, d)
                if d > 0 and (steepest_lower is None or slope > steepest_lower[0]):
                    steepest_lower = (slope, aq, ap)
                if d < 0 and (shallowest_upper is None or slope < shallowest_upper[0]):
                    shallowest_upper = (slope, ap, aq)
        if steepest_lower is None or shallowest_upper is None:
            return None
        if steepest_lower[0] < shallowest_upper[0]:
            return None
        (lo_slope, a1, a2), (hi_slope, a3, a4) = steepest_lower, shallowest_upper
        return (f"the target is not floor(affine) at any shift: the outputs at acc = {a1} and "
                f"{a2} need M/2^S > {lo_slope}, those at acc = {a3} and {a4} need "
                f"M/2^S < {hi_slope}")

    def interval(self, S, limits=None):
        """Return the integer interval ``(M_lo, M_hi)`` of feasible ``M`` at shift ``S``.

        ``None`` for an empty interval; an unbounded end is ``None`` too (only without limits).
        """
        m_lo = m_hi = None
        if limits is not None:
            m_lo, m_hi = limits.m_lo, limits.m_hi
        upper = [(aq, (yq << S) - 1) for aq, yq in self.upper]
        for ap, yp in self.lower:
            low = yp << S
            for aq, high in upper:
                d = ap - aq
                n = low - high
                if d > 0:
                    bound = -(-n // d)
                    if m_lo is None or bound > m_lo:
                        m_lo = bound
                elif d < 0:
                    bound = n // d
                    if m_hi is None or bound < m_hi:
                        m_hi = bound
                elif n > 0:
                    return None
            if limits is not None:                     # low - a_p·M <= b_hi
                n = low - limits.b_hi
                if ap > 0:
                    m_lo = max(m_lo, -(-n // ap))
                elif ap < 0:
                    m_hi = min(m_hi, n // ap)
                elif n > 0:
                    return None
        if limits is not None:
            for aq, high in upper:                      # high - a_q·M >= b_lo
                n = high - limits.b_lo
                if aq > 0:
                    m_hi = min(m_hi, n // aq)
                elif aq < 0:
                    m_lo = max(m_lo, -(-n // aq))
                elif n < 0:
                    return None
        if m_lo is not None and m_hi is not None and m_lo > m_hi:
            return None
        return m_lo, m_hi

    def choose(self, S, interval, limits=None):
        """Return ``(M, B)`` of smallest magnitudes at shift ``S`` in a non-empty interval."""
        m_lo, m_hi = interval
        M = 0
        if m_lo is not None and M < m_lo:
            M = m_lo
        if m_hi is not None and M > m_hi:
            M = m_hi
        b_lo = max(((y << S) - a * M for a, y in self.lower), default=None)
        b_hi = min((((y << S) - 1 - a * M for a, y in self.upper)), default=None)
        if limits is not None:
            b_lo = limits.b_lo if b_lo is None else max(b_lo, limits.b_lo)
            b_hi = limits.b_hi if b_hi is None else min(b_hi, limits.b_hi)
        B = 0
        if b_lo is not None and B < b_lo:
            B = b_lo
        if b_hi is not None and B > b_hi:
            B = b_hi
        assert (b_lo is None or b_lo <= B) and (b_hi is None or B <= b_hi)
        return M, B

    def _smallest_exact_shift(self):
        if self.interval(0) is not None:
            return 0
        bad, good = 0, 1
        while self.interval(good) is None:          # terminates: _never_exact() said so
            bad, good = good, 2 * good
        while good - bad > 1:
            middle = (bad + good) // 2
            if self.interval(middle) is None:
                bad = middle
            else:
                good = middle
        return good


@dataclass(frozen=True)
class ChannelReport:
    """What the solver found for one channel.

    Attributes
    ----------
    index : int
    feasible : bool
        Whether ``(M, B, S)`` below are exact and within the limits.
    M, B, S : int or None
        The solution (``None`` when infeasible).
    m_bits, b_bits : int or None
        Fewest signed bits holding this ``M`` and ``B``.
    s_exact : int or None
        Smallest shift that is exact without width limits; ``None`` if no shift is.
    m_bits_exact, b_bits_exact : int or None
        Widths of the smallest-magnitude ``M``, ``B`` at ``s_exact``.
    runs : int
        Number of runs (intervals of constant target) over the reachable range.
    window : tuple of int or None
        ``(first, last)`` accumulator value whose target is strictly inside ``(y_min, y_max)``.
    reason : str or None
        Why the channel is infeasible, starting ``"channel <index>: "``.
    """

    index: int
    feasible: bool
    M: int | None
    B: int | None
    S: int | None
    m_bits: int | None
    b_bits: int | None
    s_exact: int | None
    m_bits_exact: int | None
    b_bits_exact: int | None
    runs: int
    window: tuple | None
    reason: str | None


@dataclass(frozen=True)
class Requant:
    """Per-channel requantization parameters and the solver's report.

    Attributes
    ----------
    M, B, S : ndarray
        One entry per channel: int64, or Python ints in an object array when a value does not fit
        int64. **Entries of infeasible channels are 0 and must not be used**; check
        :attr:`feasible` (or call :meth:`raise_if_infeasible`, as :func:`solve` does by default).
    feasible : ndarray of bool
    channels : tuple of ChannelReport
    m_bits, b_bits : int
        Fewest signed bits that hold every chosen ``M`` / ``B`` of the feasible channels.
    s_needed : int
        Largest chosen ``S``.
    shared_shift : bool
    """

    M: np.ndarray
    B: np.ndarray
    S: np.ndarray
    feasible: np.ndarray
    channels: tuple
    m_bits: int
    b_bits: int
    s_needed: int
    shared_shift: bool

    @property
    def ok(self):
        return bool(np.all(self.feasible))

    @property
    def infeasible(self):
        """``(index, reason)`` of every infeasible channel."""
        return tuple((c.index, c.reason) for c in self.channels if not c.feasible)

    def raise_if_infeasible(self):
        if not self.ok:
            raise InfeasibleError(self.infeasible)
        return self


def _limits_text(limits, m_bits, b_bits, s_max):
    return (f"M in [{limits.m_lo}, {limits.m_hi}] (m_bits = {m_bits}), B in [{limits.b_lo}, "
            f"{limits.b_hi}] (b_bits = {b_bits}) and S <= {s_max}")


def solve(k, b, acc_lo, acc_hi, *, y_min, y_max, rounding="half_up", m_bits=16, b_bits=32,
          s_max=31, shared_shift=False, strict=True):
    """Find exact integer requantization parameters ``(M, B, S)`` for every channel.

    Parameters
    ----------
    k, b : array_like of float, shape (C,)
        The per-channel affine map of the accumulator (float64; see :mod:`qmac.fold`).
    acc_lo, acc_hi : int or array_like of int, shape (C,)
        The reachable accumulator range of each channel (inclusive).
    y_min, y_max : int
        The output clamp.
    rounding : {"half_up", "half_even", "half_away"}
        The rounding rule ``R`` of the target.
    m_bits, b_bits : int
        Signed widths of ``M`` and ``B``.
    s_max : int
        Largest shift.
    shared_shift : bool
        One ``S`` for all channels: the smallest that works for every channel.
    strict : bool
        Raise :class:`InfeasibleError` if any channel is infeasible (the default). With
        ``strict=False`` the result lists them in :attr:`Requant.infeasible` instead.

    Returns
    -------
    Requant

    Raises
    ------
    ValueError
        Bad input: non-finite ``k``/``b``, ``acc_lo > acc_hi``, ``y_min > y_max``, an unknown
        rounding, bad widths; the message names the parameter, the index and the value.
    InfeasibleError
        With ``strict``, when some channel has no exact ``(M, B, S)`` within the limits; the
        message lists every such channel and why.
    """
    k, b, acc_lo, acc_hi, y_min, y_max = _check_channels(k, b, acc_lo, acc_hi, y_min, y_max,
                                                         rounding)
    m_bits = _check_int_scalar("m_bits", m_bits, 1)
    b_bits = _check_int_scalar("b_bits", b_bits, 1)
    s_max = _check_int_scalar("s_max", s_max, 0)
    limits = _Limits(-(1 << (m_bits - 1)), (1 << (m_bits - 1)) - 1,
                     -(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1)
    count = len(k)

    if y_min == y_max:                          # the clamp alone decides: any (M, B, S) works
        reports = tuple(ChannelReport(c, True, 0, 0, 0, 1, 1, 0, 1, 1, 1, None, None)
                        for c in range(count))
        return _result(reports, shared_shift, strict)

    channels = [_Channel(k[c], b[c], acc_lo[c], acc_hi[c], y_min, y_max, rounding)
                for c in range(count)]
    exact_widths = []
    for ch in channels:
        if ch.s_exact is None:
            exact_widths.append((None, None))
        else:
            M, B = ch.choose(ch.s_exact, ch.interval(ch.s_exact))
            exact_widths.append((signed_bits(M), signed_bits(B)))
    text = _limits_text(limits, m_bits, b_bits, s_max)

    def report(c, S=None, reason=None):
        ch = channels[c]
        mb, bb = exact_widths[c]
        if reason is None:
            interval = ch.interval(S, limits)
            if interval is not None:
                M, B = ch.choose(S, interval, limits)
                return ChannelReport(c, True, M, B, S, signed_bits(M), signed_bits(B),
                                     ch.s_exact, mb, bb, ch.runs, ch.window, None)
            reason = (f"channel {c}: no (M, B) with {text} matches the target at the shared "
                      f"shift S = {S}; its own smallest exact S = {ch.s_exact} needs "
                      f"m_bits = {mb}, b_bits = {bb}")
        return ChannelReport(c, False, None, None, None, None, None, ch.s_exact, mb, bb,
                             ch.runs, ch.window, reason)

    def own_reason(c):
        ch = channels[c]
        if ch.never is not None:
            return f"channel {c}: no (M, B, S) of any width matches the target; {ch.never}"
        mb, bb = exact_widths[c]
        if ch.s_exact > s_max:
            return (f"channel {c}: no (M, B) with {text} matches the target; the smallest "
                    f"exact S = {ch.s_exact} exceeds s_max (with m_bits = {mb}, "
                    f"b_bits = {bb})")
        return (f"channel {c}: no (M, B) with {text} matches the target; the smallest exact "
                f"S = {ch.s_exact} would need m_bits = {mb}, b_bits = {bb}")

    def first_shift(ch):
        if ch.s_exact is None:
            return None
        for S in range(ch.s_exact, s_max + 1):
            if ch.interval(S, limits) is not None:
                return S
        return None

    if not shared_shift:
        reports = []
        for c, ch in enumerate(channels):
            S = first_shift(ch)
            reports.append(report(c, S) if S is not None else report(c, reason=own_reason(c)))
        return _result(tuple(reports), shared_shift, strict)

    # Shared shift: the smallest S at which every (solvable) channel fits the limits.
    solvable = [c for c, ch in enumerate(channels)
                if ch.s_exact is not None and ch.s_exact <= s_max]
    start = min(max((channels[c].s_exact for c in solvable), default=0), s_max)
    best = None                                   # (failures, S)
    for S in range(start, s_max + 1):
        failures = sum(1 for c in solvable if channels[c].interval(S, limits) is None)
        if best is None or failures < best[0]:
            best = (failures, S)
        if failures == 0:
            break
    S = best[1]
    reports = tuple(report(c, S) if c in set(solvable) else report(c, reason=own_reason(c))
                    for c in range(count))
    return _result(reports, shared_shift, strict)


def _result(reports, shared_shift, strict):
    feasible = np.array([r.feasible for r in reports], dtype=bool)
    M = _as_int_array([r.M if r.feasible else 0 for r in reports])
    B = _as_int_array([r.B if r.feasible else 0 for r in reports])
    S = _as_int_array([r.S if r.feasible else 0 for r in reports])
    ok = [r for r in reports if r.feasible]
    result = Requant(M=M, B=B, S=S, feasible=feasible, channels=reports,
                     m_bits=max((r.m_bits for r in ok), default=1),
                     b_bits=max((r.b_bits for r in ok), default=1),
                     s_needed=max((r.S for r in ok), default=0),
                     shared_shift=bool(shared_shift))
    if strict:
        result.raise_if_infeasible()
    return result


def solve_layer(cfg, k, b, acc_lo, acc_hi, *, rounding="half_up", strict=True):
    """:func:`solve` with the clamp, widths and shift mode of a layer configuration.

    ``cfg`` is a :class:`hw.config.LayerConfig` (anything with ``y_min``, ``y_max``, ``m_bits``,
    ``b_bits``, ``s_max`` and ``shared_shift``).
    """
    return solve(k, b, acc_lo, acc_hi, y_min=cfg.y_min, y_max=cfg.y_max, rounding=rounding,
                 m_bits=cfg.m_bits, b_bits=cfg.b_bits, s_max=cfg.s_max,
                 shared_shift=cfg.shared_shift, strict=strict)


# -- exact evaluation and verification --------------------------------------------------------

def _object(array):
    out = np.empty(np.shape(array), dtype=object)
    out.ravel()[:] = [int(v) for v in np.asarray(array).ravel()]
    return out


def _acc_array(acc):
    acc = np.asarray(acc)
    if acc.dtype.kind not in "iuO":
        raise ValueError(f"acc must hold integers, not {acc.dtype} values")
    return acc


def target(k, b, acc, *, y_min, y_max, rounding="half_up"):
    """Return ``clamp(R(k·acc + b), y_min, y_max)`` exactly, vectorized over ``acc``.

    Independent of the solver's run computation. When ``k``, ``b`` and ``acc`` are small dyadics
    the evaluation is exact int64 arithmetic. Otherwise ``v = k·acc + b`` is evaluated in float64
    with the rigorous error bound ``|v - exact| <= 2^-50·(|k·acc| + |b|) + 2^-1000``; where the
    nearest half-integer (the only place the rounding can change) is farther than that bound,
    the float result is the exact one, and every other element is recomputed with Python
    integers.
    """
    _check_rounding(rounding)
    acc = _acc_array(acc)
    k, b = float(k), float(b)
    y_min, y_max = int(y_min), int(y_max)
    kn, bn, D = _dyadic(k, b)
    if acc.size == 0:
        return np.zeros(acc.shape, dtype=np.int64)
    a_max = max(abs(int(acc.min())), abs(int(acc.max())))
    small_y = max(abs(y_min), abs(y_max)) < (1 << 50)
    if (D <= _INT64_SAFE_BITS and small_y and abs(kn) < (1 << _INT64_SAFE_BITS)
            and abs(kn) * a_max + abs(bn) < (1 << _INT64_SAFE_BITS)):
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
        flat = [_clamp(_round_num(kn * int(a) + bn, D, rounding), y_min, y_max)
                for a in acc.ravel()]
        return _as_int_array(flat).reshape(acc.shape)
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
            flat[i] = _clamp(_round_num(kn * int(acc.ravel()[i]) + bn, D, rounding),
                             y_min, y_max)
        r = flat.reshape(acc.shape)
    return r


def hardware(acc, M, B, S, *, y_min, y_max):
    """Return ``clamp(floor((acc·M + B) / 2^S), y_min, y_max)`` exactly for one channel."""
    acc = _acc_array(acc)
    M, B, S, y_min, y_max = int(M), int(B), int(S), int(y_min), int(y_max)
    if acc.size == 0:
        return np.zeros(acc.shape, dtype=np.int64)
    a_max = max(abs(int(acc.min())), abs(int(acc.max())))
    fits = max(abs(y_min), abs(y_max)).bit_length() < _INT64_SAFE_BITS
    if fits and S <= _INT64_SAFE_BITS and a_max * abs(M) + abs(B) < (1 << _INT64_SAFE_BITS):
        value = (acc.astype(np.int64) * np.int64(M) + np.int64(B)) >> np.int64(S)
        return np.clip(value, y_min, y_max)
    value = (_object(acc) * M + B) >> S
    value = np.where(value < y_min, y_min, np.where(value > y_max, y_max, value))
    if fits:
        return value.astype(np.int64)
    return value


def _target_scalar(k, b, acc, y_min, y_max, rounding):
    """Exact target of one value with :class:`fractions.Fraction` (verification path)."""
    v = Fraction(k) * acc + Fraction(b)
    if rounding == "half_up":
        r = math.floor(v + Fraction(1, 2))
    elif rounding == "half_even":
        r = round(v)
    else:
        r = math.floor(abs(v) + Fraction(1, 2)) * (1 if v >= 0 else -1)
    return _clamp(r, y_min, y_max)


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
        :func:`target_runs` (exact by the same argument; fast, but shares the run computation
        with the solver). ``"auto"``: exhaustive when the range holds at most ``exhaustive_limit``
        values, else window.

    Returns
    -------
    Verification
    """
    k, b, acc_lo, acc_hi, y_min, y_max = _check_channels(k, b, acc_lo, acc_hi, y_min, y_max,
                                                         rounding)
    if mode not in ("auto", "exhaustive", "window", "runs"):
        raise ValueError(f"mode must be 'auto', 'exhaustive', 'window' or 'runs', "
                         f"not {mode!r}")
    count = len(k)
    M = _int_channels("M", M, count)
    B = _int_channels("B", B, count)
    S = _int_channels("S", S, count)
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
        chunks = [np.arange(s, e + 1, dtype=np.int64) if max(abs(s), abs(e)) < (1 << 62)
                  else _object(range(s, e + 1))
                  for start, end in spans for s in range(start, end + 1, _CHUNK)
                  for e in (min(s + _CHUNK - 1, end),)]
        if points:
            chunks.append(_as_int_array(sorted(set(points))))
        for acc in chunks:
            want = target(k[c], b[c], acc, y_min=y_min, y_max=y_max, rounding=rounding)
            got = hardware(acc, M[c], B[c], S[c], y_min=y_min, y_max=y_max)
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
        starts, ends, _ = _runs(k, b, lo, hi, y_min, y_max, rounding)
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


# -- baselines (for the benchmark; not used by the solver) ------------------------------------

@dataclass(frozen=True)
class NaiveRequant:
    """Naive rounding: ``M = round(k·2^S)``, ``B = floor((b + 1/2)·2^S)``, smallest exact ``S``.

    Attributes
    ----------
    M, B, S : ndarray
        Entries of channels with no exact ``S <= s_limit`` are 0 (see ``exact``).
    exact : ndarray of bool
    m_bits, b_bits : ndarray of int
        Per channel, signed widths of ``M``, ``B`` (0 where not exact).
    """

    M: np.ndarray
    B: np.ndarray
    S: np.ndarray
    exact: np.ndarray
    m_bits: np.ndarray
    b_bits: np.ndarray


def naive_requant(k, b, acc_lo, acc_hi, *, y_min, y_max, rounding="half_up", s_limit=64):
    """The naive baseline: round the constants, take the smallest ``S`` that happens to be exact.

    ``M = round(k·2^S)`` (exact rational, ties to even) and ``B = floor((b + 1/2)·2^S)`` (the
    half-up rounding constant folded into ``B``, whatever ``rounding`` the target uses). Each
    ``S = 0, 1, ..., s_limit`` is checked exactly against the target (at both ends of every run,
    see :func:`verify`); there is no width limit.
    """
    k, b, acc_lo, acc_hi, y_min, y_max = _check_channels(k, b, acc_lo, acc_hi, y_min, y_max,
                                                         rounding)
    Ms, Bs, Ss, exact = [], [], [], []
    for c in range(len(k)):
        if y_min == y_max:
            Ms.append(0), Bs.append(0), Ss.append(0), exact.append(True)
            continue
        ch = _Channel(k[c], b[c], acc_lo[c], acc_hi[c], y_min, y_max, rounding)
        kf, bf = Fraction(k[c]), Fraction(b[c]) + Fraction(1, 2)
        found = None
        for S in range(s_limit + 1):
            M = round(kf * (1 << S))
            B = math.floor(bf * (1 << S))
            low = max(((y << S) - a * M for a, y in ch.lower), default=B)
            high = min((((y << S) - 1 - a * M for a, y in ch.upper)), default=B)
            if low <= B <= high:
                found = (M, B, S)
                break
        exact.append(found is not None)
        M, B, S = found if found is not None else (0, 0, 0)
        Ms.append(M), Bs.append(B), Ss.append(S)
    m_bits = [signed_bits(M) if e else 0 for M, e in zip(Ms, exact)]
    b_bits = [signed_bits(B) if e else 0 for B, e in zip(Bs, exact)]
    return NaiveRequant(M=_as_int_array(Ms), B=_as_int_array(Bs), S=_as_int_array(Ss),
                        exact=np.array(exact, dtype=bool), m_bits=np.array(m_bits),
                        b_bits=np.array(b_bits))


@dataclass(frozen=True)
class TFLiteRequant:
    """TFLite's per-channel integer output stage for ``k·acc + b`` (DESIGN notes §5).

    Attributes
    ----------
    M0 : ndarray of int64
        Q0.31 multipliers in ``[2^30, 2^31)`` (0 for ``k = 0``): ``QuantizeMultiplier(|k|)``.
    shift : ndarray of int64
        The ``frexp`` exponent; negative is a right shift.
    bias : ndarray
        ``bias_int = round_half_away(b / |k|)``, added to the accumulator before the multiplier.
    offset : ndarray of int64
        Output offset added after the multiplier: ``round_half_away(b)`` when ``k = 0``, else 0.
    negate : ndarray of bool
        ``k < 0``: TFLite's multiplier is positive, so the sign goes into the weights and the
        accumulator is ``-acc``.
    """

    M0: np.ndarray
    shift: np.ndarray
    bias: np.ndarray
    offset: np.ndarray
    negate: np.ndarray


def _round_half_away(value):
    return math.floor(abs(value) + Fraction(1, 2)) * (1 if value >= 0 else -1)


def tflite_requant(k, b):
    """Encode ``k``, ``b`` as TFLite does (``QuantizeMultiplier``; double rounding default).

    ``(q, e) = frexp(|k|)``, ``M0 = round_half_away(q·2^31)``; ``M0 = 2^31`` becomes ``2^30``
    with ``e + 1``; ``e < -31`` flushes to ``M0 = 0``. The bias is rounded exactly from the
    rationals (TFLite's converter rounds a float quotient; the difference is immaterial here).
    """
    k = _float_channels("k", k)
    b = _float_channels("b", b, len(k))
    M0s, shifts, biases, offsets, negate = [], [], [], [], []
    for kc, bc in zip(k, b):
        q, e = math.frexp(abs(kc))
        M0 = _round_half_away(Fraction(q) * (1 << 31))
        if M0 == 1 << 31:
            M0, e = 1 << 30, e + 1
        if e < -31:
            M0, e = 0, 0
        M0s.append(M0)
        shifts.append(e)
        if kc == 0:
            biases.append(0)
            offsets.append(_round_half_away(Fraction(bc)))
        else:
            biases.append(_round_half_away(Fraction(bc) / Fraction(abs(kc))))
            offsets.append(0)
        negate.append(kc < 0)
    return TFLiteRequant(M0=np.array(M0s, dtype=np.int64), shift=np.array(shifts, dtype=np.int64),
                         bias=_as_int_array(biases), offset=np.array(offsets, dtype=np.int64),
                         negate=np.array(negate, dtype=bool))


def tflite_output(acc, M0, shift, bias, offset=0, negate=False, *, y_min, y_max):
    """Return TFLite's output for one channel, vectorized over ``acc``, exactly.

    ``clamp(RDBPOT(SRDHM((±acc + bias)·2^L, M0), R) + offset, y_min, y_max)`` with
    ``L = max(shift, 0)``, ``R = max(-shift, 0)``, ``SRDHM(x, M0) = floor((x·M0 + 2^30) / 2^31)``
    and ``RDBPOT(x, R) = round_half_away(x / 2^R)`` (the closed forms of gemmlowp's functions,
    DESIGN notes §5). Intermediate values are exact: int32 wrap-around of ``acc + bias`` or of
    the left shift is not modelled (it would only add mismatches).
    """
    acc = _object(_acc_array(acc))
    M0, shift, bias, offset = int(M0), int(shift), int(bias), int(offset)
    x = (-acc if negate else acc) + bias
    left, right = max(shift, 0), max(-shift, 0)
    x = (x * (1 << left) * M0 + (1 << 30)) >> 31
    if right:
        magnitude = (np.abs(x) + (1 << (right - 1))) >> right
        x = np.where(x < 0, -magnitude, magnitude)
    x = x + offset
    x = np.where(x < y_min, y_min, np.where(x > y_max, y_max, x))
    return x.astype(np.int64)


def tflite_mismatches(k, b, acc_lo, acc_hi, *, y_min, y_max, rounding="half_up"):
    """Count, per channel, the reachable ``acc`` where TFLite's output differs from the target.

    Exact over the whole range without evaluating every value: the target is constant on each
    run (:func:`target_runs`) and TFLite's output is monotone in ``acc`` (every stage is
    non-decreasing in its input; ``negate`` reverses it), so on a run at level ``y`` the values
    below ``y`` form a prefix (or suffix) and those above a suffix (or prefix): two bisections
    per run, done for all runs at once.

    Returns
    -------
    encoding : TFLiteRequant
    mismatches : ndarray of int64
    """
    k, b, acc_lo, acc_hi, y_min, y_max = _check_channels(k, b, acc_lo, acc_hi, y_min, y_max,
                                                         rounding)
    encoding = tflite_requant(k, b)
    counts = []
    for c in range(len(k)):
        starts, ends, levels = _runs(k[c], b[c], acc_lo[c], acc_hi[c], y_min, y_max, rounding)
        negate = bool(encoding.negate[c])
        if negate:                            # rising in acc' = -acc
            starts, ends = [-e for e in ends], [-s for s in starts]

        def f(acc, c=c, negate=negate):
            return tflite_output(-acc if negate else acc, encoding.M0[c], encoding.shift[c],
                                 encoding.bias[c], encoding.offset[c], negate,
                                 y_min=y_min, y_max=y_max)

        p = np.array(starts, dtype=object)
        q = np.array(ends, dtype=object)
        y = np.array(levels, dtype=np.int64)
        below = _first_at_least(f, p, q + 1, y) - p             # f < y: a prefix
        above = q + 1 - _first_at_least(f, p, q + 1, y + 1)    # f > y: a suffix
        counts.append(int(np.sum(below + above)))
    return encoding, np.array(counts, dtype=np.int64)


def _first_at_least(f, lo, hi, y):
    """Per element, the first ``x`` in ``[lo, hi)`` with ``f(x) >= y`` (``hi`` if none)."""
    lo, hi = lo.copy(), hi.copy()
    while True:
        active = lo < hi
        if not np.any(active):
            return lo
        middle = (lo + hi) // 2
        at_least = f(middle) >= y
        hi = np.where(active & at_least, middle, hi)
        lo = np.where(active & ~at_least, middle + 1, lo)
