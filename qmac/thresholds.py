"""Exact requantization thresholds: the threshold form of a layer's target, its file, and the
choice between the multiply and the threshold requantizer.

The threshold form (``docs/arithmetic.md``, "Requantization by thresholds") stores per channel
``c`` the ``n = y_max - y_min`` thresholds ``T[c, 0] <= ... <= T[c, n-1]`` and a direction
``D[c]``; with ``count = #{j : T[c, j] <= acc}``::

    y = y_min + count        D[c] = +1 (an increasing channel, k >= 0)
    y = y_max - count        D[c] = -1 (a decreasing channel, k < 0)

:func:`layer_thresholds` computes ``T`` and ``D`` from the target ``clamp(R(k·acc + b), y_min,
y_max)`` over the reachable range ``[acc_lo, acc_hi]``, exactly, from the target's runs
(:func:`qmac.target.target_runs`: one integer division per level); the thresholds are the run
boundaries. :func:`thresholds_from_requant` computes them from ``(M, B, S)`` instead, so that the
two forms can be compared and a multiply-form layer can be built as thresholds.

Canonical thresholds: ``T[c, j]`` is the smallest ``acc`` of ``[acc_lo, acc_hi + 1]`` at which
``g(acc) >= j + 1``, with ``g = target - y_min`` (``D = +1``) or ``g = y_max - target``
(``D = -1``), and ``g(acc_hi + 1)`` taken as infinite: a level reached at ``acc_lo`` already gets
``acc_lo``, a level never reached gets ``acc_hi + 1``. Every threshold lies in
``[acc_lo, acc_hi + 1]``.

File format: an ``.npz`` with an integer array ``T`` of shape ``(out_features, y_max - y_min)``
and an integer array ``D`` of shape ``(out_features,)`` holding ``+1``/``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmac.hw.checks import check_integers, exact_array
from qmac.hw.config import MAX_THRESHOLDS
from qmac.sim import golden
from qmac.target import check_channels, int_channels, target_runs


__all__ = ["Thresholds", "channel_thresholds", "layer_thresholds", "thresholds_from_requant",
           "choose_style", "EngineRequant", "engine_requant", "random_thresholds",
           "save_thresholds", "load_thresholds", "MAX_THRESHOLDS"]



@dataclass(frozen=True)
class Thresholds:
    """A layer's threshold table: ``T`` (channels, levels - 1) and ``D`` (channels,)."""

    T: np.ndarray
    D: np.ndarray

    def __iter__(self):
        # ``T, D = thresholds`` and ``LayerEngine(..., thresholds=thresholds)`` both work.
        return iter((self.T, self.D))


def _canonical(starts, levels, lo, hi, y_min, y_max, direction):
    """Thresholds of one channel from its ascending runs (``starts``, ``levels``)."""
    g = [(level - y_min) if direction > 0 else (y_max - level) for level in levels]
    thresholds = []
    run = 0
    for j in range(1, y_max - y_min + 1):
        while run < len(g) and g[run] < j:
            run += 1
        thresholds.append(starts[run] if run < len(g) else hi + 1)
    return thresholds


def channel_thresholds(k, b, acc_lo, acc_hi, *, y_min, y_max, rounding="half_up"):
    """The thresholds ``T`` (a list) and direction ``D`` of one channel's target.

    Exact for every ``k``, ``b`` and rounding rule, ``half_even`` with reachable ties included:
    the run boundaries come from :func:`qmac.target.target_runs`.
    """
    if y_max - y_min > MAX_THRESHOLDS:
        raise ValueError(f"the threshold form holds at most {MAX_THRESHOLDS} thresholds per "
                         f"channel, not y_max - y_min = {y_max - y_min}")
    starts, _ends, levels = target_runs(k, b, acc_lo, acc_hi, y_min=y_min, y_max=y_max,
                                        rounding=rounding)
    direction = -1 if float(k) < 0 else 1
    starts = [int(v) for v in starts]
    levels = [int(v) for v in levels]
    return _canonical(starts, levels, int(acc_lo), int(acc_hi), y_min, y_max, direction), \
        direction


def layer_thresholds(k, b, acc_lo, acc_hi, *, y_min, y_max, rounding="half_up"):
    """The exact threshold table of a layer's target.

    Parameters
    ----------
    k, b : array_like of float, shape (C,)
        Each channel's affine map (float64), as :func:`qmac.solver.solve` takes them.
    acc_lo, acc_hi : int or array_like of int, shape (C,)
        The reachable accumulator range of each channel (inclusive).
    y_min, y_max : int
        The output clamp.
    rounding : {"half_up", "half_even", "half_away"}

    Returns
    -------
    Thresholds
        ``requantize_thresholds(acc, T, D) == target(acc)`` for every ``acc`` in the range.

    Raises
    ------
    ValueError
        Bad arguments (naming the parameter, index and value), or more than
        :data:`MAX_THRESHOLDS` levels.
    """
    k, b, lo, hi, y_min, y_max = check_channels(k, b, acc_lo, acc_hi, y_min, y_max, rounding)
    table, directions = [], []
    for c in range(len(k)):
        thresholds, direction = channel_thresholds(k[c], b[c], lo[c], hi[c], y_min=y_min,
                                                   y_max=y_max, rounding=rounding)
        table.append(thresholds)
        directions.append(direction)
    T = exact_array(np.array(table, dtype=object).reshape(len(k), y_max - y_min))
    return Thresholds(T=T, D=exact_array(directions))


def _ceil_div(n, d):
    return -(-n // d)


def thresholds_from_requant(M, B, S, acc_lo, acc_hi, *, y_min, y_max):
    """The threshold table equal to ``clamp(floor((acc·M + B) / 2^S), y_min, y_max)`` on every
    ``acc`` of ``[acc_lo, acc_hi]`` (canonical, as :func:`layer_thresholds` makes them).

    ``M > 0`` is increasing: ``floor((acc·M + B) / 2^S) >= y`` iff ``acc >= ceil((y·2^S - B) /
    M)``. ``M < 0`` is decreasing: the output is at most ``y`` iff ``acc·M + B <= (y + 1)·2^S -
    1``. ``M = 0`` is constant.
    """
    M = [int(v) for v in np.ravel(check_integers("M", M))]
    count = len(M)
    B = int_channels("B", B, count)
    S = int_channels("S", S, count)
    lo = int_channels("acc_lo", acc_lo, count)
    hi = int_channels("acc_hi", acc_hi, count)
    y_min, y_max = int(y_min), int(y_max)
    if y_max - y_min > MAX_THRESHOLDS:
        raise ValueError(f"the threshold form holds at most {MAX_THRESHOLDS} thresholds per "
                         f"channel, not y_max - y_min = {y_max - y_min}")
    table, directions = [], []
    for c in range(count):
        m, b, s, a, z = M[c], B[c], S[c], lo[c], hi[c]
        if s < 0:
            raise ValueError(f"S[{c}] = {s} must not be negative")
        if a > z:
            raise ValueError(f"acc_lo[{c}] = {a} is greater than acc_hi[{c}] = {z}")
        row = []
        for j in range(1, y_max - y_min + 1):
            if m > 0:       # first acc with floor(...) >= y_min + j
                t = _ceil_div(((y_min + j) << s) - b, m)
            elif m < 0:     # first acc with floor(...) <= y_max - j
                t = _ceil_div(b - ((y_max - j + 1) << s) + 1, -m)
            else:
                level = min(max(b >> s, y_min), y_max)
                t = a if j <= level - y_min else z + 1
            row.append(min(max(t, a), z + 1))
        table.append(row)
        directions.append(-1 if m < 0 else 1)
    T = exact_array(np.array(table, dtype=object).reshape(count, y_max - y_min))
    return Thresholds(T=T, D=exact_array(directions))


def choose_style(cfg, *, multiply_exact=True, family=None):
    """Resolve ``cfg.requant_style`` to ``"multiply"`` or ``"threshold"``.

    ``"auto"`` picks the threshold form where no exact ``(M, B, S)`` exists
    (``multiply_exact`` false: the solver refused, e.g. ``half_even`` with reachable ties), and
    otherwise the smaller engine by the rule measured with ``bench/requant_style.py`` (README,
    "Threshold requantizer"; Yosys 0.70, nextpnr 0.11.1, 2026-11-27): thresholds for at most
    ``AUTO_THRESHOLD_LEVELS[family]`` thresholds per channel, the multiply unit above.
    Measured at ``out_bits`` 2, 4 and 8 (unsigned: 3, 15 and 255 thresholds) on the UP5K and
    the ECP5-25k, engine totals: at 3 thresholds the threshold engine is smaller on iCE40
    (fewer logic cells and FFs) and on ECP5 ties in logic (LUT4 + 2·CCU2C within 1%) with fewer
    FFs, DSPs and block RAMs; at 15 and 255 the multiply engine is (the threshold unit's memories hold 15 or 255 thresholds per
    channel, against one ``M``, ``B`` word). 7 thresholds (``out_bits`` 3) were not measured and
    get the multiply unit. The rule is the same on both families; ``family`` keeps it per family
    should a measurement split them. Without a ``family`` the rule is the one that holds on both.

    Raises
    ------
    ValueError
        ``requant_style = "multiply"`` with ``multiply_exact`` false, or an unknown
        ``family``.
    """
    if family not in AUTO_THRESHOLD_LEVELS and family is not None:
        raise ValueError(f"family must be None or one of "
                         f"{', '.join(repr(f) for f in AUTO_THRESHOLD_LEVELS)}, not {family!r}")
    style = cfg.requant_style
    if style != "auto":
        if style == "multiply" and not multiply_exact:
            raise ValueError("requant_style = 'multiply' but no exact (M, B, S) exists; "
                             "use requant_style = 'threshold' or 'auto'")
        return style
    if not multiply_exact:
        return "threshold"
    limit = min(AUTO_THRESHOLD_LEVELS.values()) if family is None else \
        AUTO_THRESHOLD_LEVELS[family]
    return "threshold" if cfg.y_max - cfg.y_min <= limit else "multiply"


#: ``auto`` builds thresholds up to this many thresholds per channel (``y_max - y_min``), per
#: FPGA family (see :func:`choose_style`).
AUTO_THRESHOLD_LEVELS = {"ice40": 3, "ecp5": 3}


@dataclass(frozen=True)
class EngineRequant:
    """The requantizer a layer engine gets: ``cfg`` with ``requant_style`` resolved to
    ``"multiply"`` or ``"threshold"``, and its parameters (``M, B, S`` or ``thresholds``)."""

    cfg: object
    M: object = None
    B: object = None
    S: object = None
    thresholds: Thresholds = None
    #: How the thresholds were made: ``"given"``, ``"from M, B, S"`` or ``None`` (multiply).
    source: str = None

    @property
    def style(self):
        return self.cfg.requant_style

    def engine_kwargs(self):
        """Keyword arguments of :class:`~qmac.hw.engine.LayerEngine` after ``weights``."""
        if self.thresholds is not None:
            return {"thresholds": self.thresholds}
        return {"M": self.M, "B": self.B, "S": self.S}


def engine_requant(cfg, style=None, *, M=None, B=None, S=None, thresholds=None, acc_lo=None,
                   acc_hi=None, family=None):
    """Resolve the requantizer of a layer engine from a style and the parameters at hand.

    ``style`` (default ``cfg.requant_style``) is ``"multiply"``, ``"threshold"`` or
    ``"auto"`` (:func:`choose_style` for ``family``). Given ``M, B, S`` and a threshold style, the thresholds
    are :func:`thresholds_from_requant` over ``[acc_lo, acc_hi]`` (each clipped to the
    ``acc_bits`` range; default the whole range), so the threshold unit equals the multiply
    unit on every accumulator value there. Given ``thresholds`` (``T, D``), the style must
    not be ``"multiply"``: ``M, B, S`` cannot be made from thresholds.

    Raises
    ------
    ValueError
        An unknown style, both forms or neither, or thresholds with ``"multiply"``; the
        message names the style and the parameters.
    """
    from qmac.hw.config import REQUANT_STYLES
    style = cfg.requant_style if style is None else style
    if style not in REQUANT_STYLES:
        raise ValueError(f"requant_style must be one of "
                         f"{', '.join(repr(s) for s in REQUANT_STYLES)}, not {style!r}")
    given_mbs = not (M is None and B is None and S is None)
    if given_mbs and thresholds is not None:
        raise ValueError("give either M, B, S or thresholds (T, D), not both")
    if not given_mbs and thresholds is None:
        raise ValueError(f"requant_style {style!r} needs M, B, S or thresholds (T, D)")
    if thresholds is not None:
        if style == "multiply":
            raise ValueError("requant_style 'multiply' needs M, B, S; thresholds (T, D) "
                             "cannot be turned into them (use requant_style 'threshold' or "
                             "'auto')")
        T, D = thresholds
        return EngineRequant(cfg=cfg.replace(requant_style="threshold"),
                             thresholds=Thresholds(T=T, D=D), source="given")
    if choose_style(cfg.replace(requant_style=style), family=family) == "multiply":
        return EngineRequant(cfg=cfg.replace(requant_style="multiply"), M=M, B=B, S=S)
    threshold_cfg = cfg.replace(requant_style="threshold")   # checks the level count
    count = threshold_cfg.N
    lo = np.full(count, cfg.acc_min, dtype=object) if acc_lo is None else \
        np.asarray([max(int(v), cfg.acc_min) for v in np.broadcast_to(acc_lo, (count,))],
                   dtype=object)
    hi = np.full(count, cfg.acc_max, dtype=object) if acc_hi is None else \
        np.asarray([min(int(v), cfg.acc_max) for v in np.broadcast_to(acc_hi, (count,))],
                   dtype=object)
    table = thresholds_from_requant(M, B, S, lo, hi, y_min=cfg.y_min, y_max=cfg.y_max)
    return EngineRequant(cfg=threshold_cfg, thresholds=table, source="from M, B, S")


def random_thresholds(cfg, acc_lo, acc_hi, seed=0):
    """A random ascending threshold table over each channel's ``[acc_lo, acc_hi + 1]`` (one
    decreasing channel in four): parameters for sizing a threshold engine when the layer's own
    are not given."""
    rng = np.random.default_rng(seed)
    n = cfg.y_max - cfg.y_min
    table = []
    for c in range(cfg.N):
        lo = max(int(np.broadcast_to(acc_lo, (cfg.N,))[c]), cfg.acc_min)
        hi = min(int(np.broadcast_to(acc_hi, (cfg.N,))[c]), cfg.acc_max)
        table.append(sorted(int(v) for v in rng.integers(lo, hi + 2, size=n)))
    D = [-1 if c % 4 == 3 else 1 for c in range(cfg.N)]
    return Thresholds(T=exact_array(np.array(table, dtype=object).reshape(cfg.N, n)),
                      D=exact_array(D))


def save_thresholds(path, thresholds):
    """Write ``T`` and ``D`` into an ``.npz`` archive at exactly ``path``."""
    T, D = thresholds
    T = np.asarray(T)
    if T.dtype == object:
        raise ValueError("T holds values wider than int64; the .npz format stores int64")
    with open(path, "wb") as file:
        np.savez(file, T=T.astype(np.int64), D=np.asarray(D).astype(np.int64))


def load_thresholds(cfg, path):
    """Read and check a threshold table for the layer ``cfg`` from an ``.npz`` file."""
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in ("T", "D") if key not in archive.files]
        if missing:
            raise ValueError(f"{path}: lacks array {missing[0]!r} "
                             f"(it holds {', '.join(archive.files) or 'nothing'})")
        T, D = archive["T"], archive["D"]
    T, D = golden.check_thresholds(T, D, y_min=cfg.y_min, y_max=cfg.y_max,
                                   channels=cfg.out_features)
    return Thresholds(T=T, D=D)

