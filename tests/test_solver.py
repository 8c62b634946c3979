"""Tests of the exact requantization solver against independent references in this file.

The references never call the solver's internals:

- ``ref_target``: the target straight from its definition, with :class:`fractions.Fraction`.
- ``ref_runs``: the runs of constant target, found by bisection on ``ref_target`` (which is
  monotone in ``acc``).
- ``ref_interval``: for one ``S``, the exact set of integer ``M`` (and then ``B``) that satisfy
  every constraint, found by maximizing the concave function
  ``g(M) = min_upper(...) - max_lower(...)`` by bisection on its slope, over *all* accumulator
  values when the range is small and over the run endpoints otherwise (a linear function of
  ``acc`` is bounded on an interval iff it is bounded at both ends). No hulls, no pairwise
  elimination: a different algorithm from the solver's.
- ``brute_force``: every ``(M, B)`` of tiny widths, for tiny ranges.
"""

import math
import random
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from qmac import solver
from qmac.baselines import naive_requant, tflite_mismatches, tflite_requant
from qmac.hw.config import signed_width
from qmac.solver import InfeasibleError, solve
from qmac.target import ROUNDINGS, target_runs
from qmac.verify import target, verify


HALF = Fraction(1, 2)
SMALL_RANGE = 512          # ranges up to this many values are used value by value
EXHAUSTIVE = 1 << 12       # ranges up to this many values are compared exhaustively


# -- independent references -------------------------------------------------------------------

def ref_round(v, rounding):
    if rounding == "half_up":
        return math.floor(v + HALF)
    if rounding == "half_even":
        r = math.floor(v)
        frac = v - r
        if frac > HALF or (frac == HALF and r % 2 == 1):
            r += 1
        return r
    assert rounding == "half_away"
    magnitude = math.floor(abs(v) + HALF)
    return magnitude if v >= 0 else -magnitude


def ref_target(k, b, acc, y_min, y_max, rounding):
    r = ref_round(Fraction(k) * acc + Fraction(b), rounding)
    return min(max(r, y_min), y_max)


def ref_hardware(acc, M, B, S, y_min, y_max):
    return min(max((acc * int(M) + int(B)) >> int(S), y_min), y_max)


def ref_runs(k, b, lo, hi, y_min, y_max, rounding):
    """Runs ``(start, end, level)`` by bisection on the monotone reference target."""
    runs = []
    start = lo
    while start <= hi:
        level = ref_target(k, b, start, y_min, y_max, rounding)
        low, high = start, hi
        while low < high:
            middle = (low + high + 1) // 2
            if ref_target(k, b, middle, y_min, y_max, rounding) == level:
                low = middle
            else:
                high = middle - 1
        runs.append((start, low, level))
        start = low + 1
    return runs


def ref_points(k, b, lo, hi, y_min, y_max, rounding):
    """``(acc, target)`` for every value of a small range, else for every run endpoint."""
    if hi - lo + 1 <= SMALL_RANGE:
        return [(a, ref_target(k, b, a, y_min, y_max, rounding)) for a in range(lo, hi + 1)]
    points = []
    for start, end, level in ref_runs(k, b, lo, hi, y_min, y_max, rounding):
        points.append((start, level))
        if end != start:
            points.append((end, level))
    return points


def ref_interval(points, S, y_min, y_max, m_bits, b_bits):
    """Exact feasible ``(M_lo, M_hi)`` at shift ``S`` within the limits, or ``None``.

    Constraint per point: ``floor((a·M + B)/2^S)`` equals the target, or lies on the same side of
    the clamp. ``B`` is boxed by ``b_bits``.
    """
    m_lo, m_hi = -(1 << (m_bits - 1)), (1 << (m_bits - 1)) - 1
    b_lo, b_hi = -(1 << (b_bits - 1)), (1 << (b_bits - 1)) - 1
    one = 1 << S
    lower = [(a, t * one) for a, t in points if t > y_min]
    upper = [(a, (t + 1) * one - 1) for a, t in points if t < y_max]

    def g(M):
        low = max([y - a * M for a, y in lower] + [b_lo])
        high = min([y - a * M for a, y in upper] + [b_hi])
        return high - low

    # g is concave: its forward difference is non-increasing. Find the maximum.
    low, high = m_lo, m_hi
    while low < high:
        middle = (low + high) // 2
        if g(middle + 1) - g(middle) > 0:
            low = middle + 1
        else:
            high = middle
    best = low
    if g(best) < 0:
        return None
    low, high = m_lo, best                       # g non-decreasing on [m_lo, best]
    while low < high:
        middle = (low + high) // 2
        if g(middle) >= 0:
            high = middle
        else:
            low = middle + 1
    first = low
    low, high = best, m_hi                       # g non-increasing on [best, m_hi]
    while low < high:
        middle = (low + high + 1) // 2
        if g(middle) >= 0:
            low = middle
        else:
            high = middle - 1
    return first, low


def ref_choice(points, S, interval, y_min, y_max, b_bits):
    """The smallest-magnitude ``M`` of the interval, then the smallest-magnitude ``B``."""
    M = min(max(0, interval[0]), interval[1])
    one = 1 << S
    b_lo = max([t * one - a * M for a, t in points if t > y_min] + [-(1 << (b_bits - 1))])
    b_hi = min([(t + 1) * one - 1 - a * M for a, t in points if t < y_max]
               + [(1 << (b_bits - 1)) - 1])
    assert b_lo <= b_hi
    return M, min(max(0, b_lo), b_hi)


def ref_mismatch(k, b, lo, hi, M, B, S, y_min, y_max, rounding, seed=0):
    """First ``acc`` where the hardware differs from the reference target, or ``None``.

    Exhaustive up to ``EXHAUSTIVE`` values. Larger ranges: exhaustive over the unclamped window
    when it is small, else every run endpoint plus 2000 random values of the window; and both
    ends of every clamp region.
    """
    def bad(a):
        return ref_hardware(a, M, B, S, y_min, y_max) != ref_target(k, b, a, y_min, y_max,
                                                                    rounding)

    if hi - lo + 1 <= EXHAUSTIVE:
        return next((a for a in range(lo, hi + 1) if bad(a)), None)
    runs = ref_runs(k, b, lo, hi, y_min, y_max, rounding)
    candidates = [a for start, end, _ in runs for a in (start, end)]
    inside = [(s, e) for s, e, y in runs if y_min < y < y_max]
    if inside:
        w_lo, w_hi = inside[0][0], inside[-1][1]
        if w_hi - w_lo + 1 <= EXHAUSTIVE:
            candidates += range(w_lo, w_hi + 1)
        else:
            rng = random.Random(seed)
            candidates += [rng.randint(w_lo, w_hi) for _ in range(2000)]
    return next((a for a in candidates if bad(a)), None)


def brute_force(k, b, lo, hi, y_min, y_max, rounding, m_bits, b_bits, s_max):
    """Every ``(M, B)`` of the limits for ``S = 0, 1, ...``: the first ``S`` and its best pair."""
    acc = np.arange(lo, hi + 1, dtype=np.int64)
    want = np.array([ref_target(k, b, int(a), y_min, y_max, rounding) for a in acc])
    Bs = np.arange(-(1 << (b_bits - 1)), 1 << (b_bits - 1), dtype=np.int64)
    for S in range(s_max + 1):
        found = []
        for M in range(-(1 << (m_bits - 1)), 1 << (m_bits - 1)):
            got = np.clip((acc[None, :] * M + Bs[:, None]) >> S, y_min, y_max)
            for B in Bs[np.all(got == want[None, :], axis=1)]:
                found.append((abs(M), abs(int(B)), M, int(B)))
        if found:
            _, _, M, B = min(found)
            return M, B, S
    return None


def check_solution(k, b, lo, hi, y_min, y_max, rounding, m_bits, b_bits, s_max, result, c=0):
    """The solver's channel ``c`` is exact, minimal in ``S``, and tie-broken as documented."""
    report = result.channels[c]
    points = ref_points(k, b, lo, hi, y_min, y_max, rounding)
    if not report.feasible:
        # No S <= s_max works within the limits.
        for S in range(s_max + 1):
            assert ref_interval(points, S, y_min, y_max, m_bits, b_bits) is None, (S, report)
        assert report.reason.startswith(f"channel {c}: ")
        return
    M, B, S = int(result.M[c]), int(result.B[c]), int(result.S[c])
    assert (M, B, S) == (report.M, report.B, report.S)
    assert -(1 << (m_bits - 1)) <= M < (1 << (m_bits - 1))
    assert -(1 << (b_bits - 1)) <= B < (1 << (b_bits - 1))
    assert 0 <= S <= s_max
    assert ref_mismatch(k, b, lo, hi, M, B, S, y_min, y_max, rounding) is None
    interval = ref_interval(points, S, y_min, y_max, m_bits, b_bits)
    assert interval is not None
    assert (M, B) == ref_choice(points, S, interval, y_min, y_max, b_bits)
    # Minimal: every smaller S fails within the limits. Without limits feasibility is monotone
    # in S ((M, B, S) -> (2M, 2B, S + 1)), so below s_exact one check covers all.
    s_exact = report.s_exact
    assert s_exact is not None and s_exact <= S
    unbounded = (S + 100, S + 140)
    assert ref_interval(points, s_exact, y_min, y_max, *unbounded) is not None
    if s_exact > 0:
        assert ref_interval(points, s_exact - 1, y_min, y_max, *unbounded) is None
    for smaller in range(s_exact, S):
        assert ref_interval(points, smaller, y_min, y_max, m_bits, b_bits) is None


# -- hand-derived cases -----------------------------------------------------------------------

WIDE = dict(y_min=-1000, y_max=1000)


@pytest.mark.parametrize("k, b, lo, hi, rounding, expected", [
    # floor(a/2 + 1/2) = floor((a + 1)/2); S = 0 cannot halve.
    (0.5, 0.0, -8, 8, "half_up", (1, 1, 1)),
    # floor(a/4 + 1) = floor((a + 4)/4); B = 4 is the only offset at M = 1.
    (0.25, 0.5, -16, 16, "half_up", (1, 4, 2)),
    # floor((1 - a)/2).
    (-0.5, 0.0, -8, 8, "half_up", (-1, 1, 1)),
    # half_even on 0, 1/2, 1 gives 0, 0, 1 = floor(a/2).
    (0.5, 0.0, 0, 2, "half_even", (1, 0, 1)),
    # half_away on -3..3: -2 -1 -1 0 1 1 2; needs 1/2 < M/2^S < 3/4, so M = 5, S = 3, and
    # B in {3, 4}.
    (0.5, 0.0, -3, 3, "half_away", (5, 3, 3)),
    # Constant targets: R(2.5) is 3, 2, 3.
    (0.0, 2.5, -100, 100, "half_up", (0, 3, 0)),
    (0.0, 2.5, -100, 100, "half_even", (0, 2, 0)),
    (0.0, 2.5, -100, 100, "half_away", (0, 3, 0)),
    (0.0, -2.5, -100, 100, "half_away", (0, -3, 0)),
    (0.0, -2.5, -100, 100, "half_up", (0, -2, 0)),
])
def test_hand_derived(k, b, lo, hi, rounding, expected):
    result = solve([k], [b], lo, hi, rounding=rounding, m_bits=16, b_bits=16, s_max=16, **WIDE)
    assert (int(result.M[0]), int(result.B[0]), int(result.S[0])) == expected
    assert result.m_bits == signed_width(expected[0])


def test_clamp_needs_only_the_same_side():
    # k = 0.3 on [-5, 5] into [0, 1]: 0 for acc <= 1, 1 from acc = 2 on. The hardware only has to
    # clamp, so a unit step floor(acc - 1) is exact although 0.3 is nowhere near 1.
    result = solve([0.3], [0.0], -5, 5, y_min=0, y_max=1)
    assert (int(result.M[0]), int(result.B[0]), int(result.S[0])) == (1, -1, 0)
    assert result.channels[0].window is None


def test_clamp_identity():
    result = solve([1.0], [0.0], -10, 10, y_min=0, y_max=3)
    assert (int(result.M[0]), int(result.B[0]), int(result.S[0])) == (1, 0, 0)
    assert result.channels[0].window == (1, 2)


def test_single_output_level():
    result = solve([0.7, -3.0], [1e6, -1e6], -10, 10, y_min=5, y_max=5)
    assert list(result.M) == [0, 0] and list(result.S) == [0, 0]
    assert verify([0.7, -3.0], [1e6, -1e6], -10, 10, result.M, result.B, result.S,
                  y_min=5, y_max=5)


@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("k, b", [
    (0.5, 0.0), (-0.5, 0.0), (0.25, 0.5), (0.25, -0.5), (0.75, 0.25), (1.5, 0.5), (0.125, 0.375),
])
def test_tie_cases(k, b, rounding):
    """Dyadic constants put ties on many accumulator values; half_even and half_away may not be
    of the form floor(affine), and then the solver must say so."""
    lo, hi = -40, 40
    result = solve([k], [b], lo, hi, rounding=rounding, y_min=-128, y_max=127, m_bits=12,
                   b_bits=16, s_max=10, strict=False)
    check_solution(k, b, lo, hi, -128, 127, rounding, 12, 16, 10, result)


def test_half_even_ties_are_never_exact():
    # k = 1/2 on 1, 3, 5, 7 gives 0, 2, 2, 4: slopes > 1/2 and < 1/2 at once.
    result = solve([0.5], [0.0], 0, 7, rounding="half_even", strict=False, **WIDE)
    assert not result.ok
    (index, reason), = result.infeasible
    assert index == 0
    assert "any" in reason
    assert result.channels[0].s_exact is None
    points = ref_points(0.5, 0.0, 0, 7, -1000, 1000, "half_even")
    for S in (0, 5, 30, 80):
        assert ref_interval(points, S, -1000, 1000, S + 60, S + 80) is None


# -- infeasible channels are reported by index ------------------------------------------------

def test_infeasible_channels_are_listed():
    k = [0.5, 1 / 3, 0.25, 1 / 3]
    with pytest.raises(InfeasibleError, match=r"channel 1: .*m_bits") as info:
        solve(k, [0.0] * 4, 0, 300, m_bits=4, b_bits=16, s_max=4, **WIDE)
    assert [index for index, _ in info.value.infeasible] == [1, 3]
    assert "channel 3: " in str(info.value)
    result = solve(k, [0.0] * 4, 0, 300, m_bits=4, b_bits=16, s_max=4, strict=False, **WIDE)
    assert list(result.feasible) == [True, False, True, False]
    for c in (1, 3):
        check_solution(k[c], 0.0, 0, 300, -1000, 1000, "half_up", 4, 16, 4, result, c=c)
        report = result.channels[c]
        assert report.M is None and report.s_exact > 4
        assert f"S = {report.s_exact}" in report.reason
        assert f"m_bits = {report.m_bits_exact}" in report.reason
    with pytest.raises(InfeasibleError):
        result.raise_if_infeasible()


def test_b_width_limits():
    # floor(a/4 + 1) needs B = 4 at S = 2 (3 signed bits would hold it only up to 3).
    result = solve([0.25], [0.5], -16, 16, b_bits=3, m_bits=8, s_max=8, strict=False, **WIDE)
    check_solution(0.25, 0.5, -16, 16, -1000, 1000, "half_up", 8, 3, 8, result)
    assert not result.ok
    assert "b_bits = 3" in result.infeasible[0][1]


def test_narrow_b_moves_to_a_larger_shift():
    # Both values of [-28, -27] must give -18. B has 2 bits ([-2, 1]) so B = -18 (S = 0) is out,
    # and |M| <= 2^S - 1 keeps M = 0 at S = 1. At S = 2 no M fits; at S = 3, M = 5 puts
    # -28·5 + B and -27·5 + B inside [-144, -137] exactly for B = -2.
    k, b, lo, hi = 0.001475504220305721, -17.89786751185133, -28, -27
    result = solve([k], [b], lo, hi, m_bits=4, b_bits=2, s_max=20, **WIDE)
    assert (int(result.M[0]), int(result.B[0]), int(result.S[0])) == (5, -2, 3)
    assert result.channels[0].s_exact == 0
    check_solution(k, b, lo, hi, -1000, 1000, "half_up", 4, 2, 20, result)


# -- tiny widths: brute force over every (M, B) -----------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_brute_force_tiny(seed):
    rng = random.Random(seed)
    for _ in range(25):
        rounding = rng.choice(ROUNDINGS)
        m_bits, b_bits, s_max = rng.randint(2, 5), rng.randint(2, 7), rng.randint(0, 5)
        k = rng.choice([-1, 1]) * rng.randint(1, 40) / 2 ** rng.randint(0, 5)
        if rng.random() < 0.3:
            k = rng.choice([-1, 1]) * rng.uniform(0.01, 3)
        b = rng.randint(-40, 40) / 2 ** rng.randint(0, 3)
        lo = rng.randint(-20, 10)
        hi = lo + rng.randint(0, 24)
        y_min = rng.randint(-8, 0)
        y_max = y_min + rng.randint(1, 10)
        expected = brute_force(k, b, lo, hi, y_min, y_max, rounding, m_bits, b_bits, s_max)
        result = solve([k], [b], lo, hi, y_min=y_min, y_max=y_max, rounding=rounding,
                       m_bits=m_bits, b_bits=b_bits, s_max=s_max, strict=False)
        got = ((int(result.M[0]), int(result.B[0]), int(result.S[0])) if result.ok else None)
        assert got == expected, (k, b, lo, hi, y_min, y_max, rounding, m_bits, b_bits, s_max)


# -- random channels --------------------------------------------------------------------------

CLAMPS = [(-128, 127), (0, 255), (-8, 7), (0, 15), (-32768, 32767)]


@st.composite
def random_channels(draw, max_log_size=24):
    """``k`` log-uniform in ±[1e-6, 1e2]; ranges of 2^4 to 2^max_log_size values (log-uniform);
    ``|b|`` up to 1e6.

    Three times in four the range holds the accumulator ``center`` where ``k·acc + b`` crosses
    the output range, so the unclamped window is inside the range; otherwise ``b`` is uniform in
    ``[-1e6, 1e6]`` and the range is anywhere in ``±2^24``. The numbers come from a
    Hypothesis-seeded :class:`random.Random`, so they follow these distributions.
    """
    rng = draw(st.randoms(use_true_random=False))
    k = rng.choice([-1.0, 1.0]) * 10.0 ** rng.uniform(-6, 2)
    size = int(2 ** rng.uniform(4, max_log_size))
    y_min, y_max = draw(st.sampled_from(CLAMPS[:4]))
    if rng.random() < 0.75:
        reach = min(1 << 24, int(1e6 / abs(k)))
        center = rng.randint(-reach, reach)
        lo = center - rng.randint(0, size - 1)
        b = -k * center + rng.uniform(y_min - 1, y_max + 1)
    else:
        lo = rng.randint(-(1 << 24), (1 << 24) - size)
        b = rng.uniform(-1e6, 1e6)
    rounding = draw(st.sampled_from(ROUNDINGS))
    return k, b, lo, lo + size - 1, y_min, y_max, rounding


@st.composite
def dyadic_channels(draw):
    """Small dyadic ``k`` and ``b``: exact ties on many accumulator values."""
    k = draw(st.integers(-64, 64)) / 2 ** draw(st.integers(0, 8))
    b = draw(st.integers(-512, 512)) / 2 ** draw(st.integers(0, 4))
    lo = draw(st.integers(-300, 300))
    hi = lo + draw(st.integers(0, 600))
    if draw(st.integers(0, 3)):
        b = b / 16 - k * draw(st.integers(lo, hi))       # still exact: small dyadics
    y_min, y_max = draw(st.sampled_from(CLAMPS[:4]))
    rounding = draw(st.sampled_from(ROUNDINGS))
    return k, b, lo, hi, y_min, y_max, rounding


FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


@settings(FAST, max_examples=120)
@given(random_channels())
def test_random_channels_exact_and_minimal(channel):
    k, b, lo, hi, y_min, y_max, rounding = channel
    m_bits, b_bits, s_max = 40, 64, 60
    result = solve([k], [b], lo, hi, y_min=y_min, y_max=y_max, rounding=rounding,
                   m_bits=m_bits, b_bits=b_bits, s_max=s_max, strict=False)
    check_solution(k, b, lo, hi, y_min, y_max, rounding, m_bits, b_bits, s_max, result)
    report = result.channels[0]
    event(f"runs: {'1' if report.runs == 1 else '2-16' if report.runs <= 16 else '>16'}")
    event(f"window: {'none' if report.window is None else 'yes'}")
    assert not result.ok or verify([k], [b], lo, hi, result.M, result.B, result.S, y_min=y_min, y_max=y_max,
                  rounding=rounding, mode="runs")


@settings(FAST, max_examples=150)
@given(dyadic_channels(), st.integers(3, 20), st.integers(4, 24), st.integers(0, 12))
def test_dyadic_channels_with_limits(channel, m_bits, b_bits, s_max):
    k, b, lo, hi, y_min, y_max, rounding = channel
    result = solve([k], [b], lo, hi, y_min=y_min, y_max=y_max, rounding=rounding,
                   m_bits=m_bits, b_bits=b_bits, s_max=s_max, strict=False)
    check_solution(k, b, lo, hi, y_min, y_max, rounding, m_bits, b_bits, s_max, result)
    report = result.channels[0]
    event("feasible" if report.feasible else
          "never exact" if report.s_exact is None else "infeasible within limits")
    event(f"runs: {'1' if report.runs == 1 else '2-16' if report.runs <= 16 else '>16'}")


@FAST
@given(st.lists(random_channels(max_log_size=16), min_size=2, max_size=5),
       st.sampled_from(ROUNDINGS))
def test_many_channels_at_once(channels, rounding):
    """A vector of channels gives the same answers as one channel at a time."""
    y_min, y_max = -128, 127
    k = [c[0] for c in channels]
    b = [c[1] for c in channels]
    lo = [c[2] for c in channels]
    hi = [c[3] for c in channels]
    together = solve(k, b, lo, hi, y_min=y_min, y_max=y_max, rounding=rounding, m_bits=40,
                     b_bits=64, s_max=60, strict=False)
    for c in range(len(k)):
        alone = solve([k[c]], [b[c]], lo[c], hi[c], y_min=y_min, y_max=y_max, rounding=rounding,
                      m_bits=40, b_bits=64, s_max=60, strict=False)
        assert together.feasible[c] == alone.feasible[0]
        assert (together.M[c], together.B[c], together.S[c]) == (alone.M[0], alone.B[0],
                                                                 alone.S[0])
        if not alone.ok:
            assert together.infeasible[[i for i, _ in together.infeasible].index(c)][1] == \
                alone.infeasible[0][1].replace("channel 0:", f"channel {c}:", 1)
    if not together.ok:
        return
    assert together.m_bits == max(signed_width(m) for m in together.M)
    assert together.b_bits == max(signed_width(v) for v in together.B)
    assert together.s_needed == max(together.S)


# -- shared shift -----------------------------------------------------------------------------

def test_shared_shift_hand_derived():
    # Alone: k = 1/2 needs S = 1 (M = 1); k = 1/8 with b = 0 needs S = 3 (floor((a + 4)/8)).
    k, b = [0.5, 0.125], [0.0, 0.0]
    alone = solve(k, b, -8, 8, m_bits=4, b_bits=8, s_max=8, **WIDE)
    assert list(alone.S) == [1, 3]
    shared = solve(k, b, -8, 8, m_bits=4, b_bits=8, s_max=8, shared_shift=True, **WIDE)
    # At S = 3 channel 0 is floor((4a + B)/8) with B in [4, 7].
    assert list(shared.M) == [4, 1] and list(shared.B) == [4, 4] and list(shared.S) == [3, 3]
    # With 3-bit M, channel 0 cannot reach S = 3 (M = 4 does not fit).
    with pytest.raises(InfeasibleError, match="channel 0: .*shared shift S = 3"):
        solve(k, b, -8, 8, m_bits=3, b_bits=8, s_max=8, shared_shift=True, **WIDE)


@settings(FAST, max_examples=30)
@given(st.lists(random_channels(max_log_size=14), min_size=2, max_size=4),
       st.integers(16, 40))
def test_shared_shift_random(channels, m_bits):
    y_min, y_max, rounding, b_bits, s_max = -128, 127, "half_up", 64, 48
    k = [c[0] for c in channels]
    b = [c[1] for c in channels]
    lo = [c[2] for c in channels]
    hi = [c[3] for c in channels]
    result = solve(k, b, lo, hi, y_min=y_min, y_max=y_max, rounding=rounding, m_bits=m_bits,
                   b_bits=b_bits, s_max=s_max, shared_shift=True, strict=False)
    points = [ref_points(k[c], b[c], lo[c], hi[c], y_min, y_max, rounding)
              for c in range(len(k))]

    def all_fit(S):
        return all(ref_interval(p, S, y_min, y_max, m_bits, b_bits) is not None for p in points)

    if result.ok:
        S = int(result.S[0])
        assert all(int(s) == S for s in result.S)
        assert all_fit(S)
        for smaller in range(S):
            assert not all_fit(smaller)
        for c in range(len(k)):
            M, B = int(result.M[c]), int(result.B[c])
            assert ref_mismatch(k[c], b[c], lo[c], hi[c], M, B, S, y_min, y_max,
                                rounding) is None
            interval = ref_interval(points[c], S, y_min, y_max, m_bits, b_bits)
            assert (M, B) == ref_choice(points[c], S, interval, y_min, y_max, b_bits)
    else:
        for S in range(s_max + 1):
            assert not all_fit(S)
        assert result.infeasible


# -- with a layer configuration and the golden model -------------------------------------------

@pytest.mark.parametrize("shared_shift, relu", [(False, False), (True, True)])
def test_solve_layer_feeds_the_golden_model(shared_shift, relu):
    """The solved parameters, run through the golden model's requantization, give the target."""
    from qmac.hw.config import LayerConfig
    from qmac.sim import golden
    from qmac.fold import fold_layer

    rng = np.random.default_rng(7)
    cfg = LayerConfig(in_features=16, out_features=6, a_bits=8, a_signed=False, w_bits=8,
                      acc_bits=24, m_bits=24, b_bits=40, s_max=40, out_bits=8, out_signed=True,
                      relu=relu, shared_shift=shared_shift)
    layer = fold_layer(rng.normal(size=(6, 16)), rng.normal(size=6), rng.normal(size=6),
                       rng.normal(size=6), rng.normal(size=6), rng.uniform(0.5, 2, size=6),
                       1e-5, s_x=1 / 255, s_y=0.02, w_bits=8)
    positive = np.where(layer.q > 0, layer.q, 0).sum(axis=1)
    negative = np.where(layer.q < 0, layer.q, 0).sum(axis=1)
    acc_lo, acc_hi = cfg.x_max * negative, cfg.x_max * positive
    result = solver.solve_layer(cfg, layer.k, layer.b, acc_lo, acc_hi)
    assert result.shared_shift == shared_shift
    x = rng.integers(0, 256, size=(200, 16))
    x[0], x[1] = np.where(layer.q[0] > 0, 255, 0), np.where(layer.q[0] < 0, 255, 0)
    out = golden.layer(cfg, x, layer.q, result.M, result.B, result.S)
    for c in range(6):
        want = [ref_target(layer.k[c], layer.b[c], int(a), cfg.y_min, cfg.y_max, "half_up")
                for a in out.acc[:, c]]
        assert out.y[:, c].tolist() == want


# -- verify, target, runs ---------------------------------------------------------------------

def test_verify_catches_an_off_by_one():
    k, b, lo, hi = 0.1234567, 3.3, -5000, 5000
    result = solve([k], [b], lo, hi, y_min=-128, y_max=127)
    M, B, S = int(result.M[0]), int(result.B[0]), int(result.S[0])
    for mode in ("exhaustive", "window", "runs", "auto"):
        assert verify([k], [b], lo, hi, [M], [B], [S], y_min=-128, y_max=127, mode=mode)
    # One LSB of B too little: some acc lands one step lower.
    check = verify([k], [b], lo, hi, [M], [B - 1], [S], y_min=-128, y_max=127,
                   mode="exhaustive")
    assert not check and not check.ok[0]
    (c, acc, want, got), = check.counterexamples
    assert c == 0
    assert want == ref_target(k, b, acc, -128, 127, "half_up")
    assert got == ref_hardware(acc, M, B - 1, S, -128, 127) != want
    assert check.checked[0] == hi - lo + 1
    for mode in ("window", "runs"):
        assert not verify([k], [b], lo, hi, [M], [B - 1], [S], y_min=-128, y_max=127,
                          mode=mode)


def test_verify_window_mode_checks_clamp_edges():
    # k = 0.001 into [0, 1]: 0 below acc = 500, 1 from 500 on, so the window is empty and all
    # that window mode can check is the clamp regions' ends. A constant 0 fails at the high one.
    k, b, lo, hi = 0.001, 0.0, -100_000, 100_000
    assert verify([k], [b], lo, hi, [1], [-499], [0], y_min=0, y_max=1, mode="window")
    check = verify([k], [b], lo, hi, [0], [0], [0], y_min=0, y_max=1, mode="window")
    assert not check
    assert check.counterexamples[0][1] in (500, hi)
    assert check.checked[0] == 4


@FAST
@given(st.floats(-6, 2), st.sampled_from([-1.0, 1.0]), st.floats(-1e6, 1e6),
       st.integers(-(1 << 30), 1 << 30), st.sampled_from(ROUNDINGS))
def test_target_matches_fractions(log_k, sign, b, start, rounding):
    k = sign * 10.0 ** log_k
    acc = np.arange(start, start + 200, dtype=np.int64)
    # Also the accumulator values nearest to the ties k·acc + b = n + 1/2.
    n = math.floor(k * start + b)
    ties = [round((n + j + 0.5 - b) / k) for j in range(-3, 4)]
    acc = np.concatenate([acc, np.array(ties, dtype=np.int64)])
    got = target(k, b, acc, y_min=-(1 << 40), y_max=1 << 40, rounding=rounding)
    want = [ref_target(k, b, int(a), -(1 << 40), 1 << 40, rounding) for a in acc]
    assert list(got) == want


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_target_dyadic_ties(rounding):
    acc = np.arange(-1000, 1001)
    for k, b in [(0.5, 0.0), (-0.25, 0.5), (1.5, -0.5), (2.0 ** -40, 0.5)]:
        got = target(k, b, acc, y_min=-10_000, y_max=10_000, rounding=rounding)
        want = [ref_target(k, b, int(a), -10_000, 10_000, rounding) for a in acc]
        assert list(got) == want


@FAST
@given(random_channels(max_log_size=20))
def test_target_runs_match_reference(channel):
    k, b, lo, hi, y_min, y_max, rounding = channel
    starts, ends, levels = target_runs(k, b, lo, hi, y_min=y_min, y_max=y_max,
                                       rounding=rounding)
    assert list(zip(starts.tolist(), ends.tolist(), levels.tolist())) == \
        ref_runs(k, b, lo, hi, y_min, y_max, rounding)


# -- baselines --------------------------------------------------------------------------------

@FAST
@given(random_channels(max_log_size=12))
def test_naive_baseline(channel):
    k, b, lo, hi, y_min, y_max, _ = channel
    result = naive_requant([k], [b], lo, hi, y_min=y_min, y_max=y_max, s_limit=48)
    if not result.exact[0]:
        return
    S = int(result.S[0])
    M, B = int(result.M[0]), int(result.B[0])
    assert M == round(Fraction(k) * 2 ** S)
    assert B == math.floor((Fraction(b) + HALF) * 2 ** S)
    assert ref_mismatch(k, b, lo, hi, M, B, S, y_min, y_max, "half_up") is None
    if S > 0:
        M1 = round(Fraction(k) * 2 ** (S - 1))
        B1 = math.floor((Fraction(b) + HALF) * 2 ** (S - 1))
        assert ref_mismatch(k, b, lo, hi, M1, B1, S - 1, y_min, y_max, "half_up") is not None
    # The solver is never worse.
    exact = solve([k], [b], lo, hi, y_min=y_min, y_max=y_max, m_bits=64, b_bits=80, s_max=60)
    assert int(exact.S[0]) <= S


def srdhm(a, b):
    """gemmlowp SaturatingRoundingDoublingHighMul, transcribed from the C++ (int32 in)."""
    if a == b == -(1 << 31):
        return (1 << 31) - 1
    ab = a * b
    nudge = (1 << 30) if ab >= 0 else 1 - (1 << 30)
    quotient = abs(ab + nudge) >> 31              # C++ int64 division truncates toward zero
    return quotient if ab + nudge >= 0 else -quotient


def rdbpot(x, exponent):
    """gemmlowp RoundingDivideByPOT, transcribed from the C++."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


def tflite_reference(acc, k, b, y_min, y_max):
    q, e = math.frexp(abs(k))
    M0 = math.floor(q * (1 << 31) + 0.5)
    if M0 == 1 << 31:
        M0, e = 1 << 30, e + 1
    if e < -31:
        M0, e = 0, 0
    bias = Fraction(b) / Fraction(abs(k))
    bias = math.floor(abs(bias) + HALF) * (1 if bias >= 0 else -1)
    x = (-acc if k < 0 else acc) + bias
    x = srdhm(x * (1 << max(e, 0)), M0)
    x = rdbpot(x, max(-e, 0))
    return min(max(x, y_min), y_max)


@pytest.mark.parametrize("seed", range(4))
def test_tflite_baseline_against_transcribed_gemmlowp(seed):
    rng = random.Random(seed)
    k = [rng.choice([-1, 1]) * 10 ** rng.uniform(-4, 0) for _ in range(6)]
    b = [rng.uniform(-64, 64) for _ in range(6)]
    lo, hi = -3000, 3000
    encoding, counts = tflite_mismatches(k, b, lo, hi, y_min=-128, y_max=127)
    assert np.array_equal(encoding.M0, tflite_requant(k, b).M0)
    for c in range(6):
        mismatches = sum(
            tflite_reference(a, k[c], b[c], -128, 127) != ref_target(k[c], b[c], a, -128, 127,
                                                                     "half_up")
            for a in range(lo, hi + 1))
        assert counts[c] == mismatches


# -- input checking ---------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    (dict(k=[1.0, float("nan")]), r"k\[1\] = nan must be finite"),
    (dict(b=[0.0, float("inf")]), r"b\[1\] = inf must be finite"),
    (dict(acc_lo=[0, 5], acc_hi=[10, 3]), r"acc_lo\[1\] = 5 is greater than acc_hi\[1\] = 3"),
    (dict(y_min=5, y_max=3), r"y_min = 5 is greater than y_max = 3"),
    (dict(rounding="nearest"), r"rounding must be one of .*'nearest'"),
    (dict(b=[0.0, 1.0, 2.0]), r"b has 3 values but k has 2"),
    (dict(acc_lo=[0.5, 1.0]), r"acc_lo must hold integers"),
    (dict(m_bits=0), r"m_bits must be at least 1, not 0"),
    (dict(s_max=-1), r"s_max must be at least 0, not -1"),
])
def test_bad_input(kwargs, message):
    args = dict(k=[1.0, 0.5], b=[0.0, 0.0], acc_lo=0, acc_hi=10, y_min=-128, y_max=127)
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        solve(**args)


def test_bad_verify_mode():
    with pytest.raises(ValueError, match="mode must be"):
        verify([0.5], [0.0], 0, 1, [1], [1], [1], y_min=0, y_max=1, mode="fast")


# -- slow: big ranges, wide outputs, exhaustive windows ---------------------------------------

@pytest.mark.slow
@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(random_channels())
def test_random_channels_slow(channel):
    k, b, lo, hi, y_min, y_max, rounding = channel
    result = solve([k], [b], lo, hi, y_min=y_min, y_max=y_max, rounding=rounding,
                   m_bits=40, b_bits=64, s_max=60, strict=False)
    check_solution(k, b, lo, hi, y_min, y_max, rounding, 40, 64, 60, result)
    assert not result.ok or verify([k], [b], lo, hi, result.M, result.B, result.S, y_min=y_min, y_max=y_max,
                  rounding=rounding, mode="window")


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(3))
def test_full_24_bit_range_exhaustive(seed):
    """Every one of 2^24 accumulator values, on channels whose window covers the range."""
    rng = random.Random(seed)
    lo, hi = -(1 << 23), (1 << 23) - 1
    k = rng.choice([-1, 1]) * rng.uniform(2e-6, 1.5e-5)
    b = rng.uniform(-10, 10)
    result = solve([k], [b], lo, hi, y_min=-128, y_max=127, m_bits=48, b_bits=64, s_max=62)
    check = verify([k], [b], lo, hi, result.M, result.B, result.S, y_min=-128, y_max=127,
                   mode="exhaustive")
    assert check and check.checked[0] == 1 << 24


@pytest.mark.slow
def test_wide_output_many_runs():
    """16-bit outputs with |k| > 1: every accumulator value is its own run."""
    rng = random.Random(1)
    k = [rng.choice([-1, 1]) * rng.uniform(1, 30) for _ in range(4)]
    b = [rng.uniform(-1000, 1000) for _ in range(4)]
    result = solve(k, b, -3000, 3000, y_min=-32768, y_max=32767, m_bits=48, b_bits=64,
                   s_max=60)
    for c in range(4):
        check_solution(k[c], b[c], -3000, 3000, -32768, 32767, "half_up", 48, 64, 60, result,
                       c=c)
