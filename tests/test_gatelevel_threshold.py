"""Gate level of the threshold requantizer: a small layer engine with ``requant_style =
"threshold"`` (MAC array, and the threshold unit: its per-level threshold memories, the binary
search's comparators and the output), synthesized as ``qmac synth`` does
(``synth_ice40 -dsp``; ``synth_ecp5``), written as Verilog and simulated under Verilator with
Yosys's cell models of the family; compared with the golden model's threshold form on random
vectors with stalls on both streams, at full rate, and across a reset in the middle of a vector.
"""

import numpy as np
import pytest

from qmac.hw import layouts
from qmac.hw.config import LayerConfig
from qmac.hw.engine import LayerEngine
from qmac.sim import beats, golden
from qmac.sim.runner import run_stream
from gatelevel import gate_level_build
from test_thresholds import engine_thresholds
from vectors import mac_inputs, mac_weights


# u4 x s4, 2x2 array, two folds, 15 thresholds per channel (out_bits 4, signed).
CFG = LayerConfig(name="dut", in_features=8, out_features=4, rows=2, cols=2, a_bits=4,
                  w_bits=4, acc_bits=12, out_bits=4, out_signed=True, overflow="saturate",
                  requant_style="threshold")


def engine_case(cfg, seed):
    rng = np.random.default_rng(seed)
    w = mac_weights(cfg, rng)
    x = mac_inputs(cfg, w, rng, n_random=10)
    table, _ = engine_thresholds(cfg, w, rng, rounding="half_even")
    return w, x, table


def expected_beats(cfg, x, w, table):
    """The engine's output beats, packed, from the golden model's threshold form."""
    result = golden.layer_thresholds(cfg, x, w, table.T, table.D)
    batch = len(x)
    folds = cfg.out_beats
    columns = {("last",): np.tile((np.arange(folds) == folds - 1).astype(int), batch)}
    y = np.asarray(result.y, dtype=object).reshape(batch * folds, cfg.rows)
    flags = np.asarray(result.overflow, dtype=int).reshape(batch * folds, cfg.rows)
    for r in range(cfg.rows):
        columns[("y", r)] = y[:, r]
        columns[("overflow", r)] = flags[:, r]
    return result, beats.pack_columns(layouts.engine_output_layout(cfg), columns,
                                      batch * folds)


def check_gate_level(cfg, target, folder, seed):
    w, x, table = engine_case(cfg, seed)
    dut = LayerEngine(cfg, w, thresholds=table)
    assert dut.requant_style == "threshold"
    built, cells, netlist = gate_level_build(dut, "engine_gate", folder, target)
    result, expected = expected_beats(cfg, x, w, table)
    # Every output level and both ends are exercised.
    assert (result.y == cfg.y_min).any() and (result.y == cfg.y_max).any()
    assert len(np.unique(result.y)) >= 8
    inputs = beats.engine_beats(cfg, x)
    width = layouts.engine_input_layout(cfg).size
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected,
                     stall=(0.3, 0.3), seed=seed, in_width=width, label="stalls")
    assert run.passed and run.outputs == expected and not run.extra
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=0.0,
                     seed=seed, in_width=width, label="full-rate")
    assert run.passed and run.cycles <= dut.cycles(len(x)) + 2
    prefix = inputs[:cfg.beats + max(cfg.beats // 2, 1)]
    run = run_stream(built, inputs[:cfg.beats * 3], n_outputs=3 * cfg.out_beats,
                     expected=expected[:3 * cfg.out_beats], stall=(0.3, 0.3), seed=seed + 1,
                     in_width=width, reset_prefix=prefix, label="reset")
    assert run.passed
    return cells, netlist


def test_gate_level_threshold_ice40(tmp_path):
    cells, _ = check_gate_level(CFG, "ice40-up5k", tmp_path, seed=4)
    assert cells.get("SB_LUT4", 0) > 0


# About 1 to 3 minutes per build (Verilator compiles the whole netlist): the ECP5 run is in the
# slow set, the iCE40 runs in the fast set.
@pytest.mark.slow
def test_gate_level_threshold_ecp5(tmp_path):
    cells, _ = check_gate_level(CFG, "ecp5-25k", tmp_path, seed=7)
    assert cells.get("LUT4", 0) > 0 and cells.get("CCU2C", 0) > 0   # comparators on carries


@pytest.mark.slow        # a second netlist build (58 s); the fast set keeps the ECP5 twin
def test_gate_level_catches_a_wrong_threshold(tmp_path):
    """The check can fail: the netlist of an engine built with one threshold moved by one
    differs from the golden model of the true table."""
    cfg = CFG
    w, x, table = engine_case(cfg, seed=4)
    result = golden.layer_thresholds(cfg, x, w, table.T, table.D)
    # Move the threshold that some accumulator sits exactly on, so that the output changes.
    T = table.T.copy()
    hits = [(v, c, j) for v in range(len(x)) for c in range(cfg.N)
            for j in range(T.shape[1]) if T[c, j] == result.acc[v, c]
            and (j + 1 == T.shape[1] or T[c, j + 1] > T[c, j])]
    assert hits, "no accumulator on a threshold: the stimulus cannot show the fault"
    _, c, j = hits[0]
    T[c, j] += 1
    wrong = type(table)(T=T, D=table.D)
    built, _, _ = gate_level_build(LayerEngine(cfg, w, thresholds=wrong), "engine_gate",
                                   tmp_path, "ice40-up5k")
    _, expected = expected_beats(cfg, x, w, table)
    run = run_stream(built, beats.engine_beats(cfg, x), n_outputs=len(expected),
                     expected=expected, stall=0.0, seed=4,
                     in_width=layouts.engine_input_layout(cfg).size, label="wrong")
    assert not run.passed
