"""The exact BN-to-fixed-point requantization solver.

For each output channel the float layer collapses into one affine map on the integer accumulator
(``docs/arithmetic.md``, "What the solver guarantees")::

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
   division per level, independent of the width of the range (:func:`qmac.target.runs`).

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

4. **Feasible M for one S** (Fourier-Motzkin elimination of ``B``). Eliminating ``B`` from every
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

The layout keeps the check apart from the solver: :mod:`qmac.target` holds what both share (the
rounding rules, the argument checks, the runs), this module the solver, :mod:`qmac.verify` an
independent exact re-check of any solution (it does not import this module), and
:mod:`qmac.baselines` the naive and TFLite encodings the benchmark compares with.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from qmac.hw.checks import exact_array
from qmac.hw.config import signed_range, signed_width
from .target import check_channels, check_int_scalar, runs


__all__ = ["InfeasibleError", "ChannelReport", "RequantSolution", "ChannelConstraints", "solve",
           "solve_layer"]


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


class ChannelConstraints:
    """One channel's constraints (steps 1 to 3 above), reduced to two small convex hulls.

    ``lower`` holds the points ``(a, Y)`` of ``Y·2^S <= a·M + B``, ``upper`` the points
    ``(a, Y')`` of ``a·M + B <= Y'·2^S - 1``; :meth:`interval` and :meth:`b_interval` give the
    feasible ``M`` and ``B`` at a shift. Arguments as for :func:`qmac.target.runs`.
    """

    __slots__ = ("lower", "upper", "runs", "window", "s_exact", "never_reason")

    def __init__(self, k, b, lo, hi, y_min, y_max, rounding):
        starts, ends, levels = runs(k, b, lo, hi, y_min, y_max, rounding)
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
        self.never_reason = self._never_exact()
        self.s_exact = None if self.never_reason else self._smallest_exact_shift()

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
        b_lo, b_hi = self.b_interval(S, M)
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

    def b_interval(self, S, M):
        """Return ``(B_lo, B_hi)``, the integers ``B`` that meet every constraint at ``S`` and
        ``M``, without width limits; an unbounded end is ``None``."""
        b_lo = max(((y << S) - a * M for a, y in self.lower), default=None)
        b_hi = min((((y << S) - 1 - a * M for a, y in self.upper)), default=None)
        return b_lo, b_hi

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
class RequantSolution:
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
        ``strict=False`` the result lists them in :attr:`RequantSolution.infeasible` instead.

    Returns
    -------
    RequantSolution

    Raises
    ------
    ValueError
        Bad input: non-finite ``k``/``b``, ``acc_lo > acc_hi``, ``y_min > y_max``, an unknown
        rounding, bad widths; the message names the parameter, the index and the value.
    InfeasibleError
        With ``strict``, when some channel has no exact ``(M, B, S)`` within the limits; the
        message lists every such channel and why.
    """
    k, b, acc_lo, acc_hi, y_min, y_max = check_channels(k, b, acc_lo, acc_hi, y_min, y_max,
                                                         rounding)
    m_bits = check_int_scalar("m_bits", m_bits, 1)
    b_bits = check_int_scalar("b_bits", b_bits, 1)
    s_max = check_int_scalar("s_max", s_max, 0)
    limits = _Limits(*signed_range(m_bits), *signed_range(b_bits))
    count = len(k)

    if y_min == y_max:                          # the clamp alone decides: any (M, B, S) works
        reports = tuple(ChannelReport(c, True, 0, 0, 0, 1, 1, 0, 1, 1, 1, None, None)
                        for c in range(count))
        return _result(reports, shared_shift, strict)

    channels = [ChannelConstraints(k[c], b[c], acc_lo[c], acc_hi[c], y_min, y_max, rounding)
                for c in range(count)]
    exact_widths = []
    for ch in channels:
        if ch.s_exact is None:
            exact_widths.append((None, None))
        else:
            M, B = ch.choose(ch.s_exact, ch.interval(ch.s_exact))
            exact_widths.append((signed_width(M), signed_width(B)))
    text = _limits_text(limits, m_bits, b_bits, s_max)

    def report(c, S=None, reason=None):
        ch = channels[c]
        mb, bb = exact_widths[c]
        if reason is None:
            interval = ch.interval(S, limits)
            if interval is not None:
                M, B = ch.choose(S, interval, limits)
                return ChannelReport(c, True, M, B, S, signed_width(M), signed_width(B),
                                     ch.s_exact, mb, bb, ch.runs, ch.window, None)
            reason = (f"channel {c}: no (M, B) with {text} matches the target at the shared "
                      f"shift S = {S}; its own smallest exact S = {ch.s_exact} needs "
                      f"m_bits = {mb}, b_bits = {bb}")
        return ChannelReport(c, False, None, None, None, None, None, ch.s_exact, mb, bb,
                             ch.runs, ch.window, reason)

    def own_reason(c):
        ch = channels[c]
        if ch.never_reason is not None:
            return f"channel {c}: no (M, B, S) of any width matches the target; {ch.never_reason}"
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
    M = exact_array([r.M if r.feasible else 0 for r in reports])
    B = exact_array([r.B if r.feasible else 0 for r in reports])
    S = exact_array([r.S if r.feasible else 0 for r in reports])
    ok = [r for r in reports if r.feasible]
    result = RequantSolution(M=M, B=B, S=S, feasible=feasible, channels=reports,
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

