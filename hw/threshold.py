"""The threshold requantizer: ``rows`` lanes that count the channel's thresholds at or below the
accumulator (``docs/arithmetic.md``, "Requantization by thresholds")."""

import math

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .checks import RangeError
from .config import signed_width
from .pipeline import global_enable, stage, register_side_band
from .threshold_table import check_thresholds


__all__ = ["ThresholdRequantizer", "threshold_count", "threshold_input_layout",
           "threshold_param_layout", "threshold_param_words", "threshold_bits",
           "check_engine_thresholds", "requant_style"]


def threshold_count(cfg):
    """Thresholds per channel, ``y_max - y_min``."""
    return cfg.y_max - cfg.y_min


def threshold_bits(cfg, T=None):
    """Signed width of a threshold: ``acc_bits + 1`` (every threshold of an ``acc_bits``
    accumulator lies in ``[acc_min, acc_max + 1]``), or the fewest bits that hold ``T``."""
    if T is None or T.size == 0:
        return cfg.acc_bits + 1
    return max(2, signed_width(int(T.min()), int(T.max())))


def threshold_input_layout(cfg, t_bits=None):
    """One beat into the threshold requantizer: ``rows`` accumulators, each with its channel's
    ``y_max - y_min`` thresholds ``t`` (ascending) and direction ``d`` (1 for a decreasing
    channel, ``D = -1``); ``overflow`` and ``last`` pass through."""
    t_bits = threshold_bits(cfg) if t_bits is None else t_bits
    return data.StructLayout({
        "acc":      data.ArrayLayout(signed(cfg.acc_bits), cfg.rows),
        "t":        data.ArrayLayout(data.ArrayLayout(signed(t_bits), threshold_count(cfg)),
                                     cfg.rows),
        "d":        data.ArrayLayout(unsigned(1), cfg.rows),
        "overflow": data.ArrayLayout(unsigned(1), cfg.rows),
        "last":     unsigned(1),
    })


def threshold_param_layout(cfg, t_bits):
    """One word of a layer engine's threshold memory: ``t`` and ``d`` of a fold's channels."""
    fields = threshold_input_layout(cfg, t_bits)
    return data.StructLayout({"t": fields["t"].shape, "d": fields["d"].shape})


def threshold_param_words(cfg, T, D):
    """The threshold memory image: word ``j`` holds ``t`` and ``d`` of fold ``j``."""
    words = []
    for j in range(cfg.out_beats):
        span = range(j * cfg.rows, (j + 1) * cfg.rows)
        words.append({"t": [[int(v) for v in T[c]] for c in span],
                      "d": [int(D[c] < 0) for c in span]})
    return words


def check_engine_thresholds(cfg, thresholds):
    """Check a layer's ``(T, D)`` against ``cfg`` and return them as exact arrays.

    Raises
    ------
    RangeError
        Not a pair ``(T, D)``, a wrong shape, a ``D`` other than ``±1``, a row that decreases,
        or a threshold outside ``[acc_min, acc_max + 1]``; the message names the value.
    """
    try:
        T, D = thresholds
    except (TypeError, ValueError):
        raise RangeError(f"thresholds must be a pair (T, D), not {thresholds!r}") from None
    return check_thresholds(T, D, y_min=cfg.y_min, y_max=cfg.y_max, channels=cfg.out_features,
                            lo=cfg.acc_min, hi=cfg.acc_max + 1)


def requant_style(cfg, M, B, S, thresholds):
    """Which requantizer a layer engine builds from the parameters it is given.

    ``requant_style = "multiply"`` needs ``M``, ``B``, ``S``; ``"threshold"`` needs
    ``thresholds``; ``"auto"`` builds the form it is given (exactly one of the two).

    Raises
    ------
    ValueError
        Parameters that do not match ``cfg.requant_style``, or both forms or neither.
    """
    given_mbs = not (M is None and B is None and S is None)
    given_t = thresholds is not None
    style = cfg.requant_style
    if given_mbs and given_t:
        raise ValueError("give either M, B, S or thresholds, not both")
    if style == "multiply" and not given_mbs:
        raise ValueError("requant_style = 'multiply' needs M, B and S")
    if style == "threshold" and not given_t:
        raise ValueError("requant_style = 'threshold' needs thresholds (T, D), not M, B, S")
    if style == "auto" and not (given_mbs or given_t):
        raise ValueError("requant_style = 'auto' needs M, B, S or thresholds (T, D)")
    return "threshold" if given_t else "multiply"


class ThresholdRequantizer(wiring.Component):
    """``rows`` lanes of ``y = y_min + #{j : t[j] <= acc}`` (``y_max - #{...}`` for a decreasing
    channel).

    Stage 1 compares the accumulator with each of the ``n = y_max - y_min`` thresholds at once
    (one comparator each) and registers the ``n`` bits, each inverted for a decreasing channel
    (``#{acc < t} = n - #{t <= acc}``, so ``y_max - count = y_min + #{acc < t}``). A binary adder
    tree counts the bits, registered every ``levels_per_stage`` levels, and the output register
    holds ``y_min + count``, which lies in ``[y_min, y_max]`` by construction: no clamp, no
    multiply, no shift. ``overflow`` and ``last`` pass through unchanged.

    Parameters
    ----------
    cfg : LayerConfig
        Uses ``rows``, ``acc_bits``, ``out_bits``, ``out_signed``, ``relu``.
    t_bits : int, optional
        Signed width of the thresholds (default ``acc_bits + 1``).
    levels_per_stage : int
        Adder-tree levels between pipeline registers (at least 1).

    Members
    -------
    i : In(stream.Signature(threshold_input_layout(cfg, t_bits)))
        Accumulators with their thresholds, directions, overflow flags and ``last``.
    o : Out(stream.Signature(layouts.requant_output_layout(cfg)))
        One output beat per input beat, in order.

    Timing: a beat transferred on ``i`` in cycle ``t`` makes ``o.valid`` high in cycle
    ``t + latency`` without stalls, ``latency = 2 + ceil(ceil(log2 n) / levels_per_stage)``
    (4 for ``n = 3``, 6 for ``n = 15``, 10 for ``n = 255``); one beat per cycle. One global
    enable ``en = ~o.valid | o.ready`` (``i.ready = en``) freezes every stage while ``o``
    stalls, so nothing is lost, duplicated or reordered; ``o.valid`` never depends on
    ``o.ready``.

    Raises
    ------
    ValueError
        ``t_bits`` below 2 or ``levels_per_stage`` below 1, naming the value.
    """

    def __new__(cls, cfg, *, t_bits=None, levels_per_stage=1):
        cls._check(cfg, t_bits, levels_per_stage)
        return super().__new__(cls, src_loc_at=1)

    @staticmethod
    def _check(cfg, t_bits, levels_per_stage):
        if t_bits is not None and (isinstance(t_bits, bool) or not isinstance(t_bits, int)
                                   or not 2 <= t_bits <= cfg.acc_bits + 1):
            raise ValueError(f"t_bits must be an integer in [2, acc_bits + 1 = "
                             f"{cfg.acc_bits + 1}], not {t_bits!r}")
        if isinstance(levels_per_stage, bool) or not isinstance(levels_per_stage, int) \
                or levels_per_stage < 1:
            raise ValueError(f"levels_per_stage must be an integer of at least 1, "
                             f"not {levels_per_stage!r}")

    def __init__(self, cfg, *, t_bits=None, levels_per_stage=1):
        self.cfg = cfg
        self.t_bits = threshold_bits(cfg) if t_bits is None else t_bits
        self.levels_per_stage = levels_per_stage
        self.count = threshold_count(cfg)
        self.tree_levels = math.ceil(math.log2(self.count)) if self.count > 1 else 0
        #: Cycles from the transfer of a beat on ``i`` to ``o.valid``, without stalls.
        self.latency = 2 + math.ceil(self.tree_levels / levels_per_stage)
        super().__init__({
            "i": In(stream.Signature(threshold_input_layout(cfg, self.t_bits))),
            "o": Out(stream.Signature(layouts.requant_output_layout(cfg))),
        })

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()
        en = global_enable(m, self.i, self.o)

        # Stage 1: one comparator per threshold, inverted for a decreasing channel.
        lanes = []
        for r in range(cfg.rows):
            bits = Signal(self.count, name=f"at_or_below_{r}")
            with m.If(en):
                m.d.sync += bits.eq(Cat(
                    (self.i.p.acc[r] >= self.i.p.t[r][j]) ^ self.i.p.d[r]
                    for j in range(self.count)))
            lanes.append([bits[j] for j in range(self.count)])
        side = stage(m, en, "compare", valid=self.i.valid, overflow=self.i.p.overflow,
                     last=self.i.p.last)

        # Adder tree: each level sums neighbours; registered every `levels_per_stage` levels.
        for level in range(self.tree_levels):
            registered = (level + 1) % self.levels_per_stage == 0 \
                or level == self.tree_levels - 1
            for r in range(cfg.rows):
                terms = lanes[r]
                sums = []
                for k in range(0, len(terms), 2):
                    pair = terms[k:k + 2]
                    bound = self._bound(level + 1, k // 2)
                    total = Signal(range(bound + 1), name=f"count_{r}_l{level + 1}_{k // 2}")
                    value = pair[0] + pair[1] if len(pair) == 2 else pair[0]
                    if registered:
                        with m.If(en):
                            m.d.sync += total.eq(value)
                    else:
                        m.d.comb += total.eq(value)
                    sums.append(total)
                lanes[r] = sums
            if registered:
                side = stage(m, en, f"tree{level + 1}", valid=side[0], overflow=side[1],
                             last=side[2])

        # Output register: y = y_min + count.
        valid, overflow, last = side
        register_side_band(m, en, self.o, valid=valid, overflow=overflow, last=last)
        with m.If(en):
            for r in range(cfg.rows):
                m.d.sync += self.o.p.y[r].eq(lanes[r][0] + cfg.y_min)
        return m

    def _bound(self, level, index):
        """The largest count of node ``index`` at tree ``level`` (the bits it covers)."""
        first = index << level
        return max(0, min(self.count, first + (1 << level)) - first)
