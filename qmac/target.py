"""The target of requantization, its arguments and its runs.

For each output channel a float layer collapses into one affine map on the integer accumulator
(``docs/arithmetic.md``, "What the solver guarantees")::

    target(acc) = clamp(R(k·acc + b), y_min, y_max)          k, b float64; R a rounding rule

This module is what the solver (:mod:`qmac.solver`), its independent check (:mod:`qmac.verify`)
and the baselines (:mod:`qmac.baselines`) share: the rounding rules, the checks of their
per-channel arguments (every error names the parameter, the index and the value), the exact
rounding of a dyadic or rational value, and the *runs* of the target: the maximal intervals of
``acc`` on which it is constant, computed with one integer division per output level (see
:func:`runs`).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np

from qmac.hw.checks import check_integers, exact_array


__all__ = ["ROUNDINGS", "target_runs", "runs", "check_channels", "check_rounding",
           "check_int_scalar", "float_channels", "int_channels", "dyadic", "round_dyadic",
           "round_fraction", "clamp_int"]


#: The rounding rules ``R`` of the target: ``half_up`` is ``floor(v + 1/2)``, ``half_even``
#: rounds ties to the even integer, ``half_away`` rounds ties away from zero.
ROUNDINGS = ("half_up", "half_even", "half_away")


# -- input checking ---------------------------------------------------------------------------

def check_rounding(rounding):
    """Raise ``ValueError`` unless ``rounding`` is one of :data:`ROUNDINGS`."""
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {', '.join(map(repr, ROUNDINGS))}, "
                         f"not {rounding!r}")


def check_int_scalar(name, value, lo=None):
    """Return ``value`` as a Python int, or raise naming ``name`` (and ``lo``, if it is below)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, not {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be at least {lo}, not {value}")
    return value


def float_channels(name, values, count=None):
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


def int_channels(name, values, count):
    """Return ``values`` as a list of Python ints, one per channel (a scalar is broadcast)."""
    array = np.atleast_1d(check_integers(name, values))
    if array.ndim != 1:
        raise ValueError(f"{name} must be one value per channel (1-D), "
                         f"not shape {tuple(array.shape)}")
    if array.shape[0] != count:
        if array.shape[0] == 1:
            return [int(array[0])] * count
        raise ValueError(f"{name} has {array.shape[0]} values but k has {count} "
                         f"(one per output channel)")
    return [int(v) for v in array.tolist()]


def check_channels(k, b, acc_lo, acc_hi, y_min, y_max, rounding):
    """Check the arguments of a target and return them as Python floats and ints.

    Returns ``(k, b, acc_lo, acc_hi, y_min, y_max)``: lists of one value per channel (a single
    ``b``, ``acc_lo`` or ``acc_hi`` is broadcast to every channel of ``k``) and two ints.

    Raises
    ------
    ValueError
        Non-finite ``k``/``b``, non-integer bounds, ``acc_lo > acc_hi``, ``y_min > y_max``, an
        unknown rounding, or lengths that do not match; naming the parameter, index and value.
    """
    check_rounding(rounding)
    k = float_channels("k", k)
    b = float_channels("b", b, len(k))
    acc_lo = int_channels("acc_lo", acc_lo, len(k))
    acc_hi = int_channels("acc_hi", acc_hi, len(k))
    for index, (lo, hi) in enumerate(zip(acc_lo, acc_hi)):
        if lo > hi:
            raise ValueError(f"acc_lo[{index}] = {lo} is greater than acc_hi[{index}] = {hi}")
    y_min = check_int_scalar("y_min", y_min)
    y_max = check_int_scalar("y_max", y_max)
    if y_min > y_max:
        raise ValueError(f"y_min = {y_min} is greater than y_max = {y_max}")
    return k, b, acc_lo, acc_hi, y_min, y_max


# -- exact target -----------------------------------------------------------------------------

def dyadic(k, b):
    """Return integers ``(kn, bn, D)`` with ``k = kn / 2^D``, ``b = bn / 2^D`` and ``D >= 1``."""
    kn, kd = float(k).as_integer_ratio()
    bn, bd = float(b).as_integer_ratio()
    ke, be = kd.bit_length() - 1, bd.bit_length() - 1
    D = max(ke, be, 1)
    return kn << (D - ke), bn << (D - be), D


def round_dyadic(N, D, rounding):
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


def round_fraction(value, rounding):
    """Return ``R(value)`` for an exact rational ``value`` (a :class:`fractions.Fraction`).

    The plain definition, one value at a time: the verification's reference and the baselines'
    rounding. :func:`round_dyadic` is the fast form the runs use.
    """
    if rounding == "half_up":
        return math.floor(value + Fraction(1, 2))
    if rounding == "half_even":
        return round(value)
    return math.floor(abs(value) + Fraction(1, 2)) * (1 if value >= 0 else -1)


def clamp_int(value, lo, hi):
    """Clamp one Python integer to ``[lo, hi]``."""
    return lo if value < lo else hi if value > hi else value


def runs(k, b, lo, hi, y_min, y_max, rounding):
    """Return the runs of the clamped target as ascending lists ``(starts, ends, levels)``.

    Arguments as returned by :func:`check_channels`, for one channel. ``r(acc) = R(k·acc + b)``
    is monotone in ``acc``, so the range splits into at most ``y_max - y_min + 1`` runs. For
    ``k > 0`` the run boundaries are the thresholds ``T(y)``, the smallest ``acc`` with
    ``r(acc) >= y``, in closed form: with ``k = kn / 2^D``, ``b = bn / 2^D`` and
    ``c = (2y - 1)·2^(D-1) - bn``, ``T(y) = ceil(c / kn)`` when a tie at ``y - 1/2`` rounds up to
    ``y`` under ``R``, else ``floor(c / kn) + 1``. ``k < 0`` is solved on the mirrored axis
    ``acc' = -acc``. When there are more levels than accumulator values, each value is its own
    run.
    """
    kn, bn, D = dyadic(k, b)
    if kn < 0:
        starts, ends, levels = _runs_increasing(-kn, bn, D, -hi, -lo, y_min, y_max, rounding)
        return ([-e for e in reversed(ends)], [-s for s in reversed(starts)],
                list(reversed(levels)))
    if kn == 0:
        return [lo], [hi], [clamp_int(round_dyadic(bn, D, rounding), y_min, y_max)]
    return _runs_increasing(kn, bn, D, lo, hi, y_min, y_max, rounding)


def _runs_increasing(kn, bn, D, lo, hi, y_min, y_max, rounding):
    e_lo = clamp_int(round_dyadic(kn * lo + bn, D, rounding), y_min, y_max)
    e_hi = clamp_int(round_dyadic(kn * hi + bn, D, rounding), y_min, y_max)
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
        y = clamp_int(round_dyadic(kn * acc + bn, D, rounding), y_min, y_max)
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
    (k,), (b,), (lo,), (hi,), y_min, y_max = check_channels(k, b, acc_lo, acc_hi, y_min,
                                                             y_max, rounding)
    starts, ends, levels = runs(k, b, lo, hi, y_min, y_max, rounding)
    return exact_array(starts), exact_array(ends), exact_array(levels)

