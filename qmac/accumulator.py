"""Accumulator analysis: the exact reachable range of every channel, and the bounds beside it.

For integer weights ``w[c, :]`` and inputs in ``[x_min, x_max]`` with ``x_min <= 0 <= x_max``,
let ``P = Σ max(w, 0)`` and ``Q = Σ min(w, 0)`` (``docs/arithmetic.md``, "The reachable
accumulator range"). Then

    max = x_max·P + x_min·Q        min = x_min·P + x_max·Q

are reached (choose ``x = x_max`` where ``w > 0`` and ``x = x_min`` where ``w < 0``, or the
reverse), and no dot product leaves them. Each product ``x_i·w_i`` lies in an interval that holds
0, so every partial sum, in any order and any grouping into beats, lies in ``[min, max]`` too:
the bound covers ``saturate`` as well as ``wrap``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmac.hw.config import signed_range, signed_width
from qmac.sim.golden import check_weights


__all__ = ["AccumulatorOverflowError", "AccumulatorReport", "reachable_range", "analyze",
           "check_accumulator", "extreme_inputs"]


class AccumulatorOverflowError(ValueError):
    """The weights can drive an accumulator out of its ``acc_bits`` range."""


def reachable_range(w, x_min, x_max):
    """Exact ``(lo, hi)`` per channel of ``Σ w[c, i]·x[i]`` over ``x[i] ∈ [x_min, x_max]``.

    Parameters
    ----------
    w : array_like of int, shape (channels, K)
    x_min, x_max : int
        Input range; must hold 0.

    Returns
    -------
    lo, hi : list of int
        Python integers, exact for any width.
    """
    x_min, x_max = int(x_min), int(x_max)
    if not x_min <= 0 <= x_max:
        raise ValueError(f"the input range [{x_min}, {x_max}] must hold 0")
    w = np.asarray(w)
    if w.ndim != 2:
        raise ValueError(f"weights must be a 2-D array (channels, K), not shape {w.shape}")
    # Sums of object (Python int) arrays are exact at any width.
    exact = w.astype(object)
    positive = np.where(w > 0, exact, 0).sum(axis=1)
    negative = np.where(w < 0, exact, 0).sum(axis=1)
    hi = [x_max * int(p) + x_min * int(n) for p, n in zip(positive, negative)]
    lo = [x_min * int(p) + x_max * int(n) for p, n in zip(positive, negative)]
    return lo, hi


def extreme_inputs(w, x_min, x_max):
    """Input vectors that reach each channel's maximum and minimum exactly.

    Returns ``(x_hi, x_lo)``, each of shape ``(channels, K)``: row ``c`` of ``x_hi`` drives
    channel ``c`` to its maximum.
    """
    w = np.asarray(w)
    x_hi = np.where(w > 0, x_max, np.where(w < 0, x_min, 0))
    x_lo = np.where(w > 0, x_min, np.where(w < 0, x_max, 0))
    return x_hi, x_lo


@dataclass(frozen=True)
class AccumulatorReport:
    """Per-channel reachable ranges and the accumulator widths they need.

    Attributes
    ----------
    lo, hi : list of int
        Exact reachable range of each channel.
    channel_bits : list of int
        Fewest signed bits that hold ``[lo, hi]``, per channel.
    min_acc_bits : int
        The minimal safe ``acc_bits`` for the layer (the widest channel).
    datatype_bits : int
        The data-type bound ``a_bits + w_bits + ceil(log2 K)``.
    l1_bits : int
        Width that holds ``±||w||_1·max|x|`` for the widest channel (the A2Q-style bound).
    """
    lo: list
    hi: list
    channel_bits: list
    min_acc_bits: int
    datatype_bits: int
    l1_bits: int
    acc_bits: int

    @property
    def safe(self):
        return self.min_acc_bits <= self.acc_bits

    def unsafe_channels(self):
        limit_lo, limit_hi = signed_range(self.acc_bits)
        return [c for c, (lo, hi) in enumerate(zip(self.lo, self.hi))
                if lo < limit_lo or hi > limit_hi]

    def summary(self):
        return (f"acc_bits {self.acc_bits}: exact minimum {self.min_acc_bits}, "
                f"L1 bound {self.l1_bits}, data-type bound {self.datatype_bits}")


def analyze(cfg, w):
    """Accumulator report of integer weights ``w`` (``out_features × in_features``) for ``cfg``."""
    w = check_weights(cfg, w)
    lo, hi = reachable_range(w, cfg.x_min, cfg.x_max)
    channel_bits = [signed_width(a, b) for a, b in zip(lo, hi)]
    max_abs_x = max(abs(cfg.x_min), abs(cfg.x_max))
    l1 = int(np.abs(np.asarray(w, dtype=object)).sum(axis=1).max()) * max_abs_x
    return AccumulatorReport(
        lo=lo, hi=hi, channel_bits=channel_bits, min_acc_bits=max(channel_bits),
        datatype_bits=cfg.datatype_acc_bits,
        l1_bits=signed_width(-l1, l1), acc_bits=cfg.acc_bits)


def check_accumulator(cfg, w, *, allow_overflow=False, source=None):
    """Return the report, or raise if some channel can leave the ``acc_bits`` range.

    Parameters
    ----------
    cfg : LayerConfig
    w : array_like of int, shape (out_features, in_features)
    allow_overflow : bool
        Return the report of unsafe weights instead of raising.
    source : str, optional
        What the weights are, for the message: ``"the quantized weights"`` gives
        ``"channel 3 of the quantized weights reaches ..."``.

    Raises
    ------
    AccumulatorOverflowError
        Names the first unsafe channel, its reachable range and the width it needs; not raised
        when ``allow_overflow`` is set.
    """
    report = analyze(cfg, w)
    if not report.safe and not allow_overflow:
        bad = report.unsafe_channels()
        c = bad[0]
        of = "" if source is None else f" of {source}"
        raise AccumulatorOverflowError(
            f"acc_bits = {cfg.acc_bits} can overflow: channel {c}{of} reaches "
            f"[{report.lo[c]}, {report.hi[c]}], which needs {report.channel_bits[c]} bits "
            f"({len(bad)} channel(s) unsafe; the layer needs acc_bits >= "
            f"{report.min_acc_bits})")
    return report
