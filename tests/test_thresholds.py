"""Requantization by thresholds: the exact table (``qmac.thresholds``), its golden model
(``golden.requantize_thresholds``), the threshold requantizer (``hw.threshold``) under the
Amaranth simulator and under Verilator, and the layer engine built with it.

References: the threshold form is compared with an independent per-value :class:`Fraction`
evaluation of the target and with ``qmac.verify.target``, and with the multiply form
``(M, B, S)`` of the solver; the hardware is compared with the golden model, with random stalls.
"""

import math
import json
import re
import random
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Fragment, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from qmac import solver, verify
from qmac.accumulator import reachable_range
from qmac.hw import layouts
from qmac.hw.checks import RangeError
from qmac.hw.config import ConfigError, LayerConfig, signed_width
from qmac.hw.engine import LayerEngine
from qmac.hw.pipeline import SkidBuffer
from qmac.hw.threshold import ThresholdRequantizer, requant_style, threshold_count
from qmac.sim import beats, golden
from qmac.target import round_fraction
from qmac.thresholds import (Thresholds, choose_style, layer_thresholds, load_thresholds,
                             save_thresholds, thresholds_from_requant)
from harness import measure_latency, stream_test
from vectors import mac_inputs, mac_weights


ROUNDINGS = ("half_up", "half_even", "half_away")


def fraction_target(k, b, acc, y_min, y_max, rounding):
    """The target of one value, from the definition with exact rationals."""
    value = round_fraction(Fraction(k) * acc + Fraction(b), rounding)
    return min(max(value, y_min), y_max)


def random_channels(rng, count, *, dyadic=False):
    """Channels ``(k, b, lo, hi)`` with small reachable ranges (so every value is checked)."""
    if dyadic:      # k, b on a coarse dyadic grid: exact ties of the rounding are reachable
        k = rng.integers(-12, 13, count) / 16
        b = rng.integers(-32, 33, count) / 32
    else:
        k = rng.normal(0, 0.05, count) * rng.choice([1, -1], count)
        b = rng.normal(0, 4, count)
    lo = rng.integers(-400, 1, count)
    hi = lo + rng.integers(0, 700, count)
    return k, b, lo, hi


# -- the table and its golden model ---------------------------------------------------------------

@pytest.mark.parametrize("rounding", ROUNDINGS)
@pytest.mark.parametrize("y_min, y_max", [(0, 1), (0, 3), (-8, 7), (0, 15), (-2, 1)])
def test_thresholds_equal_target(rounding, y_min, y_max):
    """On every reachable acc: thresholds == qmac.verify.target == the Fraction reference."""
    rng = np.random.default_rng(y_max - y_min)
    for dyadic in (False, True):
        k, b, lo, hi = random_channels(rng, 12, dyadic=dyadic)
        table = layer_thresholds(k, b, lo, hi, y_min=y_min, y_max=y_max, rounding=rounding)
        assert table.T.shape == (12, y_max - y_min)
        for c in range(12):
            acc = np.arange(lo[c], hi[c] + 1)
            got = golden.requantize_thresholds(acc[:, None], table.T[c:c + 1],
                                               table.D[c:c + 1], y_min=y_min, y_max=y_max)[:, 0]
            expected = verify.target(k[c], b[c], acc, y_min=y_min, y_max=y_max,
                                     rounding=rounding)
            assert np.array_equal(got, expected), f"channel {c}: k {k[c]!r} b {b[c]!r}"
            for a in acc[::37]:
                assert got[a - lo[c]] == fraction_target(k[c], b[c], int(a), y_min, y_max,
                                                         rounding)
            # Canonical: every threshold in [lo, hi + 1], ascending.
            assert table.T[c].min() >= lo[c] and table.T[c].max() <= hi[c] + 1
            assert np.all(np.diff(table.T[c]) >= 0)


def test_half_even_ties_refused_by_solver_exact_as_thresholds():
    """k = 1/2 on acc = 1, 3, 5, 7: half_even ties alternate; no (M, B, S) exists, thresholds
    are exact, and auto falls back to them."""
    k, b, lo, hi = [0.5], [0.0], [0], [12]
    result = solver.solve(k, b, lo, hi, y_min=0, y_max=15, rounding="half_even", strict=False)
    assert not result.ok
    table = layer_thresholds(k, b, lo, hi, y_min=0, y_max=15, rounding="half_even")
    acc = np.arange(0, 13)
    got = golden.requantize_thresholds(acc[:, None], table.T, table.D, y_min=0, y_max=15)[:, 0]
    expected = [fraction_target(0.5, 0.0, int(a), 0, 15, "half_even") for a in acc]
    assert got.tolist() == expected == [0, 0, 1, 2, 2, 2, 3, 4, 4, 4, 5, 6, 6]
    cfg = LayerConfig(out_bits=4, requant_style="auto")
    assert choose_style(cfg, multiply_exact=result.ok) == "threshold"
    with pytest.raises(ValueError, match="no exact"):
        choose_style(cfg.replace(requant_style="multiply"), multiply_exact=False)


@pytest.mark.parametrize("rounding", ROUNDINGS)
def test_thresholds_equal_multiply_form(rounding):
    """Where the solver finds (M, B, S): the multiply form, its own thresholds and the target's
    thresholds agree on every reachable acc (and the tables are identical where the channel
    is not constant)."""
    rng = np.random.default_rng(7)
    y_min, y_max = -8, 7
    refused = compared = 0
    for dyadic in (False, True):
        k, b, lo, hi = random_channels(rng, 40, dyadic=dyadic)
        result = solver.solve(k, b, lo, hi, y_min=y_min, y_max=y_max, rounding=rounding,
                              strict=False)
        table = layer_thresholds(k, b, lo, hi, y_min=y_min, y_max=y_max, rounding=rounding)
        from_mbs = thresholds_from_requant(result.M, result.B, result.S, lo, hi, y_min=y_min,
                                           y_max=y_max)
        for c in range(40):
            if not result.feasible[c]:
                refused += 1
                continue
            acc = np.arange(lo[c], hi[c] + 1)
            multiply = golden.requantize_values(acc, result.M[c], result.B[c], result.S[c],
                                                y_min=y_min, y_max=y_max)
            for form in (table, from_mbs):
                y = golden.requantize_thresholds(acc[:, None], form.T[c:c + 1],
                                                 form.D[c:c + 1], y_min=y_min,
                                                 y_max=y_max)[:, 0]
                assert np.array_equal(y, multiply), f"channel {c}"
            if len(set(multiply.tolist())) > 1:
                assert np.array_equal(table.T[c], from_mbs.T[c]) and \
                    table.D[c] == from_mbs.D[c]
            compared += 1
    assert compared > 40
    if rounding == "half_even":
        assert refused > 0          # the dyadic channels reach ties the solver cannot do


def test_thresholds_from_requant_wide_and_negative():
    """Random (M, B, S) of any sign over a whole accumulator width, exhaustively."""
    rng = np.random.default_rng(3)
    M = rng.integers(-300, 301, 30)
    M[:3] = [0, 1, -1]
    B = rng.integers(-5000, 5001, 30)
    S = rng.integers(0, 9, 30)
    lo, hi = -512, 511
    table = thresholds_from_requant(M, B, S, lo, hi, y_min=-4, y_max=3)
    acc = np.arange(lo, hi + 1)
    for c in range(30):
        y = golden.requantize_thresholds(acc[:, None], table.T[c:c + 1], table.D[c:c + 1],
                                         y_min=-4, y_max=3)[:, 0]
        h = golden.requantize_values(acc, M[c], B[c], S[c], y_min=-4, y_max=3)
        assert np.array_equal(y, h), f"M {M[c]} B {B[c]} S {S[c]}"


def test_golden_thresholds_wide_values():
    """Python-int accumulators and thresholds beyond int64 are exact."""
    T = np.array([[-(1 << 70), 1 << 65, (1 << 65) + 1]], dtype=object)
    acc = np.array([[-(1 << 71)], [1 << 65], [1 << 66], [0]], dtype=object)
    y = golden.requantize_thresholds(acc, T, [1], y_min=0, y_max=3)
    assert y[:, 0].tolist() == [0, 2, 3, 1]
    y = golden.requantize_thresholds(acc, T, [-1], y_min=0, y_max=3)
    assert y[:, 0].tolist() == [3, 1, 0, 2]


@pytest.mark.parametrize("T, D, match", [
    ([[1, 2]], [1], r"T must have shape \(channels, 3\)"),
    ([[1, 2, 3]], [2], r"D\[0\] = 2 must be \+1 or -1"),
    ([[1, 3, 2]], [1], r"T\[0\] must be non-decreasing, but T\[0, 2\] = 2 < T\[0, 1\] = 3"),
    ([[1.5, 2, 3]], [1], "T must hold integers"),
    ([[1, 2, 3]], [1, 1], r"D must have shape \(1,\)"),
])
def test_golden_thresholds_refuse(T, D, match):
    with pytest.raises(RangeError, match=match):
        golden.requantize_thresholds([[0]], T, D, y_min=0, y_max=3)


def test_thresholds_file_roundtrip(tmp_path):
    cfg = LayerConfig(in_features=4, out_features=3, out_bits=2)
    rng = np.random.default_rng(1)
    k, b, lo, hi = random_channels(rng, 3)
    table = layer_thresholds(k, b, lo, hi, y_min=cfg.y_min, y_max=cfg.y_max)
    path = tmp_path / "t.npz"
    save_thresholds(path, table)
    back = load_thresholds(cfg, path)
    assert np.array_equal(back.T, table.T) and np.array_equal(back.D, table.D)
    np.savez(tmp_path / "bad.npz", T=table.T)
    with pytest.raises(ValueError, match="lacks array 'D'"):
        load_thresholds(cfg, tmp_path / "bad.npz")
    with pytest.raises(RangeError, match=r"T must have shape \(4, 15\)"):
        load_thresholds(cfg.replace(out_features=4, out_bits=4), path)


def test_config_requant_style():
    assert LayerConfig().requant_style == "multiply"
    for style in ("multiply", "threshold", "auto"):
        assert LayerConfig(requant_style=style).requant_style == style
    with pytest.raises(ConfigError, match="requant_style must be one of 'multiply', "
                                          "'threshold', 'auto', not 'lut'"):
        LayerConfig(requant_style="lut")
    with pytest.raises(ConfigError, match="out_bits = 16 gives y_max - y_min = 65535"):
        LayerConfig(out_bits=16, requant_style="threshold")
    assert LayerConfig(out_bits=16, requant_style="auto").requant_style == "auto"


# The measured rule (bench/requant_style.py, README "Threshold requantizer"): the smaller engine
# per family and out_bits (unsigned outputs: 3, 15 and 255 thresholds per channel).
MEASURED_SMALLER = {("ice40", 2): "threshold", ("ice40", 4): "multiply", ("ice40", 8): "multiply",
                    ("ecp5", 2): "threshold", ("ecp5", 4): "multiply", ("ecp5", 8): "multiply"}


def test_choose_style_rule():
    for (family, out_bits), expected in MEASURED_SMALLER.items():
        cfg = LayerConfig(out_bits=out_bits, requant_style="auto")
        assert choose_style(cfg, family=family) == expected, (family, out_bits)
        both = {MEASURED_SMALLER[(f, out_bits)] for f in ("ice40", "ecp5")}
        if len(both) == 1:
            assert choose_style(cfg) == expected
        assert choose_style(cfg.replace(requant_style="multiply"), family=family) == "multiply"
        assert choose_style(cfg.replace(requant_style="threshold"), family=family) == \
            "threshold"
    # No exact (M, B, S): thresholds whatever the size.
    assert choose_style(LayerConfig(out_bits=8, requant_style="auto"),
                        multiply_exact=False) == "threshold"
    with pytest.raises(ValueError, match="family must be None or one of 'ice40', 'ecp5', "
                                         "not 'xilinx'"):
        choose_style(LayerConfig(requant_style="auto"), family="xilinx")


# -- the threshold requantizer ---------------------------------------------------------------------

# -- the threshold requantizer (a binary search) ---------------------------------------------------

def th_cfg(**changes):
    base = dict(in_features=4, out_features=4, rows=1, a_bits=1, w_bits=2,
                requant_style="threshold")
    base.update(changes)
    return LayerConfig(**base)


def search_table(cfg, rng):
    """A random table for every channel: ascending rows with repeats, some thresholds at
    ``acc_min`` and at ``acc_max + 1`` (a level never reached), both directions."""
    n = threshold_count(cfg)
    T = np.zeros((cfg.N, n), dtype=object)
    for c in range(cfg.N):
        if c % 3 == 0:                          # a narrow band: every level reachable
            centre = rng.randint(cfg.acc_min, cfg.acc_max)
            row = [min(max(centre + rng.randint(-n, n), cfg.acc_min), cfg.acc_max + 1)
                   for _ in range(n)]
        else:
            row = [rng.randint(cfg.acc_min, cfg.acc_max + 1) for _ in range(n)]
        if c % 4 == 1:
            row[: n // 3] = [cfg.acc_min] * (n // 3)
            row[n - n // 3:] = [cfg.acc_max + 1] * (n // 3)
        T[c] = sorted(row)
    D = np.array([rng.choice([1, -1]) for _ in range(cfg.N)], dtype=object)
    return T, D


def search_accumulators(cfg, T, rng, vectors):
    """Accumulators ``(vectors, N)``: on a threshold, one below it, random, and both ends."""
    acc = np.zeros((vectors, cfg.N), dtype=object)
    for v in range(vectors):
        for c in range(cfg.N):
            pick = (v + c) % 4
            if pick == 0:
                a = rng.randint(cfg.acc_min, cfg.acc_max)
            elif pick == 3:
                a = rng.choice([cfg.acc_min, cfg.acc_max])
            else:
                a = int(rng.choice(list(T[c]))) - (pick == 1)
            acc[v, c] = min(max(a, cfg.acc_min), cfg.acc_max)
    return acc


def search_beats(cfg, acc, flags):
    """MAC result beats (fold order) of the accumulators ``(vectors, N)``."""
    folds = acc.reshape(-1, cfg.rows)
    flags = flags.reshape(-1, cfg.rows)
    columns = {}
    for r in range(cfg.rows):
        columns[("acc", r)] = folds[:, r]
        columns[("overflow", r)] = flags[:, r]
    return beats.pack_columns(layouts.mac_output_layout(cfg), columns, len(folds))


SEARCH_CONFIGS = [
    # (cfg, what it covers): lanes = ceil(rows / beats), groups = ceil(rows / lanes)
    (th_cfg(acc_bits=3, out_bits=1), "1 level, 1 lane"),
    (th_cfg(in_features=8, out_features=6, rows=3, cols=2, acc_bits=12, out_bits=2),
     "3 rows in 3 groups of 1 lane"),
    (th_cfg(in_features=4, out_features=6, rows=3, cols=2, acc_bits=10, out_bits=4,
            out_signed=True), "2 lanes, 2 groups, the second half empty"),
    (th_cfg(in_features=4, out_features=8, rows=4, cols=4, acc_bits=20, out_bits=4,
            out_signed=True, relu=True), "4 lanes in 1 group, relu: 3 levels"),
    (th_cfg(in_features=16, out_features=4, rows=2, cols=2, acc_bits=16, out_bits=8),
     "8 levels"),
    (th_cfg(in_features=4, out_features=4, rows=2, cols=2, acc_bits=64, out_bits=3,
            out_signed=True), "64-bit accumulators"),
]


class SkidHarness(wiring.Component):
    """A :class:`ThresholdRequantizer` with a registered enable behind a skid buffer, as the
    layer engine builds it."""

    def __init__(self, unit):
        self.unit = unit
        super().__init__({"i": In(stream.Signature(layouts.mac_output_layout(unit.cfg))),
                          "o": Out(stream.Signature(layouts.requant_output_layout(unit.cfg)))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = self.unit
        m.submodules.skid = skid = SkidBuffer(layouts.requant_output_layout(unit.cfg))
        wiring.connect(m, wiring.flipped(self.i), unit.i)
        wiring.connect(m, unit.o, skid.i)
        wiring.connect(m, wiring.flipped(self.o), skid.o)
        m.d.comb += unit.o_ready_next.eq(skid.ready_next)
        return m


@pytest.mark.parametrize("registered", [False, True], ids=["enable", "registered-enable"])
@pytest.mark.parametrize("case", SEARCH_CONFIGS, ids=[c[1] for c in SEARCH_CONFIGS])
def test_search_requantizer(case, registered):
    """Every output equals the golden threshold form, under random stalls on both streams,
    with the global enable as logic or as a flip-flop (behind a skid buffer)."""
    cfg, _ = case
    rng = random.Random(cfg.acc_bits + cfg.rows)
    T, D = search_table(cfg, rng)
    vectors = max(3, 48 // cfg.N)
    acc = search_accumulators(cfg, T, rng, vectors)
    flags = np.array([[rng.randint(0, 1) for _ in range(cfg.N)] for _ in range(vectors)])
    unit = ThresholdRequantizer(cfg, T, D, registered_enable=registered)
    assert unit.lanes == -(-cfg.rows // cfg.beats) and unit.groups <= cfg.beats
    dut = SkidHarness(unit) if registered else unit
    got = stream_test(dut, search_beats(cfg, acc, flags), vectors * cfg.out_beats,
                      seed=cfg.acc_bits)
    y = golden.requantize_thresholds(acc, T, D, y_min=cfg.y_min, y_max=cfg.y_max)
    seen = set()
    for k, out in enumerate(got):
        v, fold = divmod(k, cfg.out_beats)
        assert out.last == (fold == cfg.out_beats - 1), f"beat {k}: last"
        for r in range(cfg.rows):
            c = fold * cfg.rows + r
            assert (out.y[r], out.overflow[r]) == (y[v, c], flags[v, c]), \
                f"vector {v}, channel {c}: acc {acc[v, c]}, D {D[c]}, T {list(T[c])}"
            seen.add(int(y[v, c]))
    assert {cfg.y_min, cfg.y_max} <= seen


@pytest.mark.parametrize("case", SEARCH_CONFIGS[1:4], ids=[c[1] for c in SEARCH_CONFIGS[1:4]])
def test_search_requantizer_latency(case):
    cfg, _ = case
    rng = random.Random(1)
    T, D = search_table(cfg, rng)
    dut = ThresholdRequantizer(cfg, T, D)
    acc = search_accumulators(cfg, T, rng, 1)
    flags = np.zeros(acc.shape, dtype=int)
    assert dut.latency == dut.groups + 2 * threshold_count(cfg).bit_length() + 2
    assert measure_latency(dut, search_beats(cfg, acc, flags)[:1]) == dut.latency


def test_search_requantizer_memories():
    """Level k of the search compares, for each prefix of earlier results, the threshold the
    binary search needs; the padding (a level count that is not 2^k - 1) is never counted."""
    cfg = th_cfg(in_features=4, out_features=4, rows=2, cols=2, acc_bits=8, out_bits=2,
                 out_signed=True, relu=True)          # y in [0, 1]: one threshold
    T = np.array([[5], [-3], [0], [7]], dtype=object)
    dut = ThresholdRequantizer(cfg, T, np.array([1, -1, 1, 1]))
    Fragment.get(dut, None)                 # used: no UnusedElaboratable warning
    assert dut.levels == 1 and dut.t_bits == signed_width(-3, 7)
    cfg = th_cfg(in_features=4, out_features=2, rows=2, cols=2, acc_bits=8, out_bits=2)
    T = np.array([[-4, 0, 9], [1, 2, 3]], dtype=object)
    dut = ThresholdRequantizer(cfg, T, np.array([1, -1]))
    Fragment.get(dut, None)
    assert (dut.lanes, dut.groups, dut.levels) == (1, 2, 2)
    # Level 0 compares the middle threshold, level 1 the first or the last one (step 0:
    # channel 0, step 1: channel 1, whose D = -1).
    assert dut.memory_image(0, 0) == [(0, 0), (2, 1)]
    assert dut.memory_image(0, 1) == [(-4, 0), (9, 0), (1, 1), (3, 1)]


# -- the layer engine with thresholds --------------------------------------------------------------

def engine_thresholds(cfg, w, rng, rounding="half_up"):
    """A threshold table from random (k, b) spread over each channel's reachable range."""
    lo, hi = reachable_range(w, cfg.x_min, cfg.x_max)
    lo = np.maximum(lo, cfg.acc_min)
    hi = np.minimum(hi, cfg.acc_max)
    span = np.maximum(hi - lo, 1)
    levels = cfg.y_max - cfg.y_min + 1
    k = 1.3 * levels / span * rng.choice([1, -1], cfg.N) * rng.uniform(0.8, 1.2, cfg.N)
    centre = (lo + hi) / 2
    b = (cfg.y_min + cfg.y_max) / 2 - k * centre
    return layer_thresholds(k, b, lo, hi, y_min=cfg.y_min, y_max=cfg.y_max,
                            rounding=rounding), (k, b)


ENGINE_CONFIGS = [
    LayerConfig(in_features=6, out_features=4, rows=2, cols=3, a_bits=4, w_bits=4, acc_bits=9,
                out_bits=2, requant_style="threshold"),
    LayerConfig(in_features=8, out_features=6, rows=3, cols=2, a_bits=4, a_signed=True,
                w_bits=4, acc_bits=12, overflow="saturate", out_bits=4, out_signed=True,
                requant_style="auto"),
]


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS, ids=["y2u-threshold", "y4s-auto"])
def test_engine_thresholds(cfg):
    rng = np.random.default_rng(5)
    w = mac_weights(cfg, rng)
    x = mac_inputs(cfg, w, rng, n_random=6)
    table, _ = engine_thresholds(cfg, w, rng, rounding="half_even")
    dut = LayerEngine(cfg, w, thresholds=table)
    assert dut.requant_style == "threshold"
    got = stream_test(dut, beats.engine_beats(cfg, x), len(x) * cfg.out_beats, seed=5,
                      cycles=dut.cycles(len(x)))
    expected = golden.layer_thresholds(cfg, x, w, table.T, table.D)
    assert (expected.y == cfg.y_min).any() and (expected.y == cfg.y_max).any()
    for k, out in enumerate(got):
        vector, fold = divmod(k, cfg.out_beats)
        assert out.last == (fold == cfg.out_beats - 1)
        for r in range(cfg.rows):
            c = fold * cfg.rows + r
            assert (out.y[r], out.overflow[r]) == \
                (int(expected.y[vector, c]), int(expected.overflow[vector, c])), \
                f"vector {vector}, channel {c}: acc {expected.acc[vector, c]}"


def test_engine_style_selection():
    cfg = ENGINE_CONFIGS[0]
    rng = np.random.default_rng(0)
    w = mac_weights(cfg, rng)
    table, _ = engine_thresholds(cfg, w, rng)
    zeros = np.zeros(cfg.N, dtype=int)
    with pytest.raises(ValueError, match="requant_style = 'threshold' needs thresholds"):
        LayerEngine(cfg, w, zeros, zeros, zeros)
    with pytest.raises(ValueError, match="requant_style = 'multiply' needs M, B and S"):
        LayerEngine(cfg.replace(requant_style="multiply"), w, thresholds=table)
    with pytest.raises(ValueError, match="not both"):
        LayerEngine(cfg.replace(requant_style="auto"), w, zeros, zeros, zeros,
                    thresholds=table)
    auto = cfg.replace(requant_style="auto")
    assert requant_style(auto, zeros, zeros, zeros, None) == "multiply"
    assert requant_style(auto, None, None, None, table) == "threshold"
    with pytest.raises(ValueError, match="'auto' needs M, B, S or thresholds"):
        requant_style(auto, None, None, None, None)
    bad = Thresholds(T=np.full_like(table.T, cfg.acc_max + 2), D=table.D)
    with pytest.raises(RangeError, match=r"T\[0, 0\] = 257 does not fit \[-256, 256\]"):
        LayerEngine(cfg, w, thresholds=bad)


# -- cocotb on the generated Verilog ---------------------------------------------------------------

COCOTB_CONFIGS = [
    th_cfg(name="dut", rows=2, acc_bits=12, out_bits=2),
    th_cfg(name="dut", rows=3, out_features=6, acc_bits=20, out_bits=4, out_signed=True),
]


@pytest.mark.parametrize("cfg", COCOTB_CONFIGS, ids=["y2u", "y4s"])
def test_threshold_requantizer_verilator(cfg, verilator_build):
    from qmac.sim.runner import run_stream
    rng = random.Random(9)
    T, D = search_table(cfg, rng)
    vectors = 60 // cfg.N
    acc = search_accumulators(cfg, T, rng, vectors)
    flags = np.array([[rng.randint(0, 1) for _ in range(cfg.N)] for _ in range(vectors)])
    dut = ThresholdRequantizer(cfg, T, D)
    built = verilator_build(dut, "threshold")
    inputs = search_beats(cfg, acc, flags)
    y = golden.requantize_thresholds(acc, T, D, y_min=cfg.y_min, y_max=cfg.y_max)
    assert (y == cfg.y_min).any() and (y == cfg.y_max).any()
    folds = y.reshape(-1, cfg.rows)
    columns = {("last",): [(k + 1) % cfg.out_beats == 0 for k in range(len(folds))]}
    for r in range(cfg.rows):
        columns[("y", r)] = folds[:, r]
        columns[("overflow", r)] = flags.reshape(-1, cfg.rows)[:, r]
    expected = list(beats.pack_columns(layouts.requant_output_layout(cfg), columns, len(folds)))
    width = layouts.mac_output_layout(cfg).size
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected,
                     stall=(0.3, 0.3), seed=9, in_width=width, label="stalls")
    assert run.passed and run.outputs == expected
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=0.0,
                     seed=9, in_width=width, label="full-rate")
    assert run.passed and run.cycles <= len(inputs) * dut.groups + dut.latency + 1
    # A reset between whole layers (the unit counts folds, so a layer starts again at fold 0).
    n = cfg.out_beats
    run = run_stream(built, inputs[2 * n:4 * n], n_outputs=2 * n, expected=expected[2 * n:4 * n],
                     stall=(0.3, 0.3), seed=10, in_width=width, reset_prefix=inputs[:n],
                     label="reset")
    assert run.passed and run.prefix_outputs == expected[:len(run.prefix_outputs)]


def test_engine_thresholds_verilator(verilator_build):
    from qmac.sim.runner import run_stream
    cfg = LayerConfig(name="dut", in_features=8, out_features=4, rows=2, cols=2, a_bits=4,
                      w_bits=4, acc_bits=12, out_bits=4, out_signed=True,
                      requant_style="threshold")
    rng = np.random.default_rng(4)
    w = mac_weights(cfg, rng)
    x = mac_inputs(cfg, w, rng, n_random=10)
    table, _ = engine_thresholds(cfg, w, rng)
    dut = LayerEngine(cfg, w, thresholds=table)
    built = verilator_build(dut, "engine_threshold")
    result = golden.layer_thresholds(cfg, x, w, table.T, table.D)
    assert (result.y == cfg.y_min).any() and (result.y == cfg.y_max).any()
    batch = len(x)
    columns = {("last",): np.tile((np.arange(cfg.out_beats) == cfg.out_beats - 1).astype(int), batch)}
    y = np.asarray(result.y, dtype=object).reshape(batch * cfg.out_beats, cfg.rows)
    flags = np.asarray(result.overflow, dtype=int).reshape(batch * cfg.out_beats, cfg.rows)
    for r in range(cfg.rows):
        columns[("y", r)] = y[:, r]
        columns[("overflow", r)] = flags[:, r]
    expected = beats.pack_columns(layouts.engine_output_layout(cfg), columns,
                                  batch * cfg.out_beats)
    inputs = beats.engine_beats(cfg, x)
    width = layouts.engine_input_layout(cfg).size
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected,
                     stall=(0.3, 0.3), seed=4, in_width=width, label="stalls")
    assert run.passed and run.outputs == expected
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=0.0,
                     seed=4, in_width=width, label="full-rate")
    assert run.passed and run.cycles <= dut.cycles(batch) + 2


# -- the command line ------------------------------------------------------------------------------

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def small_layer_files(tmp_path, out_bits=4):
    """A small layer (K=8, N=4, 2x2 array, u4 x s4, out_bits 4 unsigned) with its files."""
    cfg = LayerConfig(name="fc_small", in_features=8, out_features=4, rows=2, cols=2, a_bits=4,
                      w_bits=4, acc_bits=12, m_bits=8, b_bits=16, s_max=8, out_bits=out_bits)
    rng = np.random.default_rng(5)
    paths = {"config": tmp_path / "small.toml", "weights": tmp_path / "w.npy",
             "requant": tmp_path / "r.npz", "inputs": tmp_path / "x.npy"}
    paths["config"].write_text(cfg.to_toml())
    w = rng.integers(cfg.w_min, cfg.w_max, (cfg.N, cfg.K), endpoint=True)
    np.save(paths["weights"], w)
    np.savez(paths["requant"], M=np.array([3, -5, 7, 1]), B=np.array([100, 900, -50, 8]),
             S=np.array([4, 3, 5, 0]))
    np.save(paths["inputs"], rng.integers(0, 15, (20, cfg.K), endpoint=True))
    return cfg, paths


def cli_args(paths, *names):
    out = []
    for name in names:
        out += [f"--{name}", str(paths[name])]
    return out


def test_cli_fold_writes_exact_thresholds(tmp_path, capsys):
    """``qmac fold --thresholds-out`` on the example's float layer: the threshold form gives the
    same outputs as the ``M, B, S`` that fold solves for the same target, on the example inputs
    and on every threshold and its neighbours."""
    from qmac import cli
    w_out, r_out, t_out = tmp_path / "w.npy", tmp_path / "r.npz", tmp_path / "t.npz"
    assert cli.main(["fold", str(EXAMPLES / "layer.toml"), "--layer",
                     str(EXAMPLES / "float_layer.npz"), "--weights-out", str(w_out),
                     "--requant-out", str(r_out), "--thresholds-out", str(t_out)]) == 0
    assert "thresholds exact" in capsys.readouterr().out
    cfg = LayerConfig.from_toml(EXAMPLES / "layer.toml")
    table = load_thresholds(cfg, t_out)
    r = np.load(r_out)
    x = np.load(EXAMPLES / "inputs.npy")
    w = np.load(w_out)
    by_thresholds = golden.layer_thresholds(cfg, x, w, table.T, table.D).y
    by_multiply = golden.layer(cfg, x, w, r["M"], r["B"], r["S"]).y
    assert np.array_equal(by_thresholds, by_multiply)
    assert len(np.unique(by_multiply)) > 20
    lo, hi = reachable_range(w, cfg.x_min, cfg.x_max)
    for c in range(cfg.N):
        acc = np.array(sorted({int(min(max(t + d, lo[c]), hi[c]))
                               for t in table.T[c] for d in (-1, 0, 1)}), dtype=object)
        acc_all = np.zeros((len(acc), cfg.N), dtype=object)
        acc_all[:, c] = acc
        y_t = golden.requantize_thresholds(acc_all, table.T, table.D, y_min=cfg.y_min,
                                           y_max=cfg.y_max)[:, c]
        y_m = golden.requantize(cfg, acc_all, r["M"], r["B"], r["S"])[:, c]
        assert list(y_t) == list(y_m), f"channel {c}"


def test_cli_fold_thresholds_alone_half_even(tmp_path, capsys):
    """``--thresholds-out`` alone needs no ``(M, B, S)``: ``half_even`` works even where the
    solver refuses."""
    from qmac import cli
    w_out, t_out = tmp_path / "w.npy", tmp_path / "t.npz"
    assert cli.main(["fold", str(EXAMPLES / "layer.toml"), "--layer",
                     str(EXAMPLES / "float_layer.npz"), "--weights-out", str(w_out),
                     "--thresholds-out", str(t_out), "--rounding", "half_even"]) == 0
    out = capsys.readouterr().out
    assert "thresholds exact" in out and "requantization exact" not in out
    assert not (tmp_path / "r.npz").exists()
    cfg = LayerConfig.from_toml(EXAMPLES / "layer.toml")
    assert load_thresholds(cfg, t_out).T.shape == (cfg.N, 255)
    assert cli.main(["fold", str(EXAMPLES / "layer.toml"), "--layer",
                     str(EXAMPLES / "float_layer.npz"), "--weights-out", str(w_out)]) == 2
    assert "give --requant-out (M, B, S), --thresholds-out (T, D) or both" in \
        capsys.readouterr().err


def test_cli_simulate_threshold_style(tmp_path, capsys):
    """``qmac simulate --requant-style threshold`` with ``M, B, S``: the threshold engine's
    Verilog (thresholds made from ``M, B, S``) gives the multiply form's golden outputs; and
    the same with a thresholds file."""
    from qmac import cli
    cfg, paths = small_layer_files(tmp_path)
    y_path = tmp_path / "y.npy"
    build = tmp_path / "build"
    assert cli.main(["simulate", str(paths["config"]),
                     *cli_args(paths, "weights", "requant", "inputs"), "--requant-style",
                     "threshold", "-o", str(y_path), "--check", "--stall", "0.3", "--seed",
                     "2", "--build-dir", str(build)]) == 0
    err = capsys.readouterr().err
    assert "requantizer: threshold (thresholds from M, B, S)" in err and "check passed" in err
    x = np.load(paths["inputs"])
    w = np.load(paths["weights"])
    r = np.load(paths["requant"])
    want = golden.layer(cfg, x, w, r["M"], r["B"], r["S"]).y
    assert len(np.unique(want)) > 3
    assert np.array_equal(np.load(y_path), want)
    manifest = tmp_path / "rtl"
    assert cli.main(["generate", str(paths["config"]), *cli_args(paths, "weights", "requant"),
                     "--requant-style", "threshold", "-o", str(manifest)]) == 0
    document = json.loads((manifest / "manifest.json").read_text())
    parameters = document["modules"][0]["parameters"]
    assert parameters["thresholds_source"] == "from M, B, S"
    assert document["config"]["requant_style"] == "threshold"
    # auto at out_bits 4 (15 thresholds per channel) is the multiply unit by the measured rule.
    assert cli.main(["generate", str(paths["config"]), *cli_args(paths, "weights", "requant"),
                     "--requant-style", "auto", "-o", str(tmp_path / "auto")]) == 0
    auto = json.loads((tmp_path / "auto" / "manifest.json").read_text())
    assert auto["config"]["requant_style"] == "multiply" and "M" in \
        auto["modules"][0]["parameters"]
    lo, hi = reachable_range(w, cfg.x_min, cfg.x_max)
    table = thresholds_from_requant(r["M"], r["B"], r["S"], lo, hi, y_min=cfg.y_min,
                                    y_max=cfg.y_max)
    assert parameters["T"] == [[int(v) for v in row] for row in table.T]


@pytest.mark.parametrize("change, message", [
    ("multiply+thresholds", "requant_style 'multiply' needs M, B, S; thresholds"),
    ("both", r"give either --requant \(M, B, S\) or --thresholds \(T, D\), not both"),
    ("bare", "requant_style 'threshold' needs a layer engine"),
    ("wide", "out_bits = 16 gives y_max - y_min = 65535 thresholds per channel"),
    ("missing-D", "lacks array 'D'"),
    ("shape", r"T must have shape \(4, 15\)"),
    ("network", "--requant-style applies to a layer configuration, not to a network"),
])
def test_cli_requant_style_bad_input(tmp_path, capsys, change, message):
    from qmac import cli
    cfg, paths = small_layer_files(tmp_path, out_bits=16 if change == "wide" else 4)
    out = ["-o", str(tmp_path / "rtl")]
    thresholds = tmp_path / "t.npz"
    n = cfg.y_max - cfg.y_min
    T = np.tile(np.arange(n), (cfg.N, 1)) if change != "shape" else np.zeros((cfg.N, 3), int)
    if change == "missing-D":
        np.savez(thresholds, T=T)
    else:
        np.savez(thresholds, T=T, D=np.ones(cfg.N, dtype=int))
    base = ["generate", str(paths["config"])]
    argv = {
        "multiply+thresholds": [*base, "--weights", str(paths["weights"]), "--thresholds",
                                str(thresholds), "--requant-style", "multiply", *out],
        "both": [*base, *cli_args(paths, "weights", "requant"), "--thresholds",
                 str(thresholds), *out],
        "bare": [*base, "--requant-style", "threshold", *out],
        "wide": [*base, *cli_args(paths, "weights", "requant"), "--requant-style",
                 "threshold", *out],
        "missing-D": [*base, "--weights", str(paths["weights"]), "--thresholds",
                      str(thresholds), *out],
        "shape": [*base, "--weights", str(paths["weights"]), "--thresholds", str(thresholds),
                  *out],
        "network": ["generate", str(tmp_path / "network.json"), "--requant-style", "threshold",
                    *out],
    }[change]
    if change == "network":
        (tmp_path / "network.json").write_text(json.dumps({"format": "qmac-network",
                                                           "layers": []}))
    assert cli.main(argv) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "rtl" / "manifest.json").exists()


@pytest.mark.parametrize("target", ["ecp5-25k", "ice40-up5k"])
def test_cli_synth_threshold_engine(tmp_path, capsys, target):
    """``qmac synth --requant-style threshold`` places and routes a small threshold engine on
    both families without any other flag (random thresholds, no given parameters)."""
    from qmac import cli
    cfg, paths = small_layer_files(tmp_path)
    out = tmp_path / "synth.json"
    assert cli.main(["synth", str(paths["config"]), "--requant-style", "threshold", "--target",
                     target, "--no-blocks", "--json", str(out), "--build-dir",
                     str(tmp_path / "run")]) == 0
    result = json.loads(out.read_text())
    assert result["config"]["requant_style"] == "threshold"
    assert result["fits"] is True and result["fmax_mhz"] > 0
    # No multiply requantizer: only the MAC products may use DSPs.
    mul = result["multipliers"]
    assert result["dsps"] <= mul["mac_dsp"] + sum(mul.get(f"mac_{style}", 0)
                                                  for style in ("dsp2", "dspreg", "pack"))
