"""Baselines the exact solver is compared with in ``bench/bn_bits.py``; the solver does not use
them.

- Naive rounding (:func:`naive_requant`): ``M = round(k·2^S)``, ``B = floor((b + 1/2)·2^S)`` at
  the smallest ``S`` that happens to be exact.
- TFLite's double-rounding integer output stage (:func:`tflite_requant`, :func:`tflite_output`,
  :func:`tflite_mismatches`): a Q0.31 multiplier, the bias rounded to accumulator units, and how
  many reachable accumulator values it gets wrong.

Both are measured against the same target as the solver (:mod:`qmac.target`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from qmac.hw.checks import check_integers, exact_array
from qmac.hw.config import signed_width
from qmac.sim.golden import clamp
from .solver import ChannelConstraints
from .target import check_channels, float_channels, round_fraction, runs


__all__ = ["NaiveRequant", "naive_requant", "TFLiteRequant", "tflite_requant", "tflite_output",
           "tflite_mismatches"]


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
    k, b, acc_lo, acc_hi, y_min, y_max = check_channels(k, b, acc_lo, acc_hi, y_min, y_max,
                                                         rounding)
    Ms, Bs, Ss, exact = [], [], [], []
    for c in range(len(k)):
        if y_min == y_max:
            Ms.append(0), Bs.append(0), Ss.append(0), exact.append(True)
            continue
        ch = ChannelConstraints(k[c], b[c], acc_lo[c], acc_hi[c], y_min, y_max, rounding)
        kf, bf = Fraction(k[c]), Fraction(b[c]) + Fraction(1, 2)
        found = None
        for S in range(s_limit + 1):
            M = round(kf * (1 << S))
            B = math.floor(bf * (1 << S))
            low, high = ch.b_interval(S, M)
            if (low is None or low <= B) and (high is None or B <= high):
                found = (M, B, S)
                break
        exact.append(found is not None)
        M, B, S = found if found is not None else (0, 0, 0)
        Ms.append(M), Bs.append(B), Ss.append(S)
    m_bits = [signed_width(M) if e else 0 for M, e in zip(Ms, exact)]
    b_bits = [signed_width(B) if e else 0 for B, e in zip(Bs, exact)]
    return NaiveRequant(M=exact_array(Ms), B=exact_array(Bs), S=exact_array(Ss),
                        exact=np.array(exact, dtype=bool), m_bits=np.array(m_bits),
                        b_bits=np.array(b_bits))


@dataclass(frozen=True)
class TFLiteRequant:
    """TFLite's per-channel integer output stage for ``k·acc + b`` (TFLite's
    ``QuantizeMultiplier``, gemmlowp's fixed-point functions).

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


def tflite_requant(k, b):
    """Encode ``k``, ``b`` as TFLite does (``QuantizeMultiplier``; double rounding default).

    ``(q, e) = frexp(|k|)``, ``M0 = round_half_away(q·2^31)``; ``M0 = 2^31`` becomes ``2^30``
    with ``e + 1``; ``e < -31`` flushes to ``M0 = 0``. The bias is rounded exactly from the
    rationals (TFLite's converter rounds a float quotient; the difference is immaterial here).
    """
    k = float_channels("k", k)
    b = float_channels("b", b, len(k))
    M0s, shifts, biases, offsets, negate = [], [], [], [], []
    for kc, bc in zip(k, b):
        q, e = math.frexp(abs(kc))
        M0 = round_fraction(Fraction(q) * (1 << 31), "half_away")
        if M0 == 1 << 31:
            M0, e = 1 << 30, e + 1
        if e < -31:
            M0, e = 0, 0
        M0s.append(M0)
        shifts.append(e)
        if kc == 0:
            biases.append(0)
            offsets.append(round_fraction(Fraction(bc), "half_away"))
        else:
            biases.append(round_fraction(Fraction(bc) / Fraction(abs(kc)), "half_away"))
            offsets.append(0)
        negate.append(kc < 0)
    return TFLiteRequant(M0=np.array(M0s, dtype=np.int64), shift=np.array(shifts, dtype=np.int64),
                         bias=exact_array(biases), offset=np.array(offsets, dtype=np.int64),
                         negate=np.array(negate, dtype=bool))


def tflite_output(acc, M0, shift, bias, offset=0, negate=False, *, y_min, y_max):
    """Return TFLite's output for one channel, vectorized over ``acc``, exactly.

    ``clamp(RDBPOT(SRDHM((±acc + bias)·2^L, M0), R) + offset, y_min, y_max)`` with
    ``L = max(shift, 0)``, ``R = max(-shift, 0)``, ``SRDHM(x, M0) = floor((x·M0 + 2^30) / 2^31)``
    and ``RDBPOT(x, R) = round_half_away(x / 2^R)`` (the closed forms of gemmlowp's
    ``SaturatingRoundingDoublingHighMul`` and ``RoundingDivideByPOT``). Intermediate values are
    exact: int32 wrap-around of ``acc + bias`` or of the left shift is not modelled (it would
    only add mismatches).
    """
    acc = check_integers("acc", acc).astype(object)
    M0, shift, bias, offset = int(M0), int(shift), int(bias), int(offset)
    x = (-acc if negate else acc) + bias
    left, right = max(shift, 0), max(-shift, 0)
    x = (x * (1 << left) * M0 + (1 << 30)) >> 31
    if right:
        magnitude = (np.abs(x) + (1 << (right - 1))) >> right
        x = np.where(x < 0, -magnitude, magnitude)
    x = x + offset
    x = clamp(x, y_min, y_max)
    return x.astype(np.int64)


def tflite_mismatches(k, b, acc_lo, acc_hi, *, y_min, y_max, rounding="half_up"):
    """Count, per channel, the reachable ``acc`` where TFLite's output differs from the target.

    Exact over the whole range without evaluating every value: the target is constant on each
    run (:func:`qmac.target.target_runs`) and TFLite's output is monotone in ``acc`` (every stage is
    non-decreasing in its input; ``negate`` reverses it), so on a run at level ``y`` the values
    below ``y`` form a prefix (or suffix) and those above a suffix (or prefix): two bisections
    per run, done for all runs at once.

    Returns
    -------
    encoding : TFLiteRequant
    mismatches : ndarray of int64
    """
    k, b, acc_lo, acc_hi, y_min, y_max = check_channels(k, b, acc_lo, acc_hi, y_min, y_max,
                                                         rounding)
    encoding = tflite_requant(k, b)
    counts = []
    for c in range(len(k)):
        starts, ends, levels = runs(k[c], b[c], acc_lo[c], acc_hi[c], y_min, y_max, rounding)
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
