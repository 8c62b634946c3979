"""cocotb on the generated Verilog under Verilator: MAC array, requantization unit, layer engine.

Every test converts the block to Verilog, checks that ``verilator --lint-only -Wall`` is clean,
builds it, and streams random and corner-case beats through it with random stalls on both sides
(and once without stalls, to check the full-rate cycle count), comparing every output beat with
the golden model bit for bit. A reset pulse in the middle of a stream must leave no stale state.
"""

import numpy as np
import pytest

from qmac.hw import layouts
from qmac.hw.config import LayerConfig
from qmac.sim import beats, golden
from qmac.sim.runner import run_stream
from harness import cfg_id, shift_id
from vectors import engine_params, mac_inputs, mac_weights, requant_cases


def verilog_id(cfg):
    """A readable test id: ``2x3-a4s-w4-acc8-sat-shared``."""
    return f"{cfg_id(cfg)}-{shift_id(cfg)}"


def config(rows, cols, a_bits, a_signed, w_bits, acc_bits, overflow, shared_shift, *, folds=2,
           beats_per_vector=3, **extra):
    if acc_bits == "min":
        acc_bits = a_bits + w_bits
    return LayerConfig(name="dut", in_features=cols * beats_per_vector,
                       out_features=rows * folds, rows=rows, cols=cols, a_bits=a_bits,
                       a_signed=a_signed, w_bits=w_bits, acc_bits=acc_bits, overflow=overflow,
                       shared_shift=shared_shift, **extra)


# The fast set: few builds, but every axis moves at least once.
FAST = [
    config(1, 1, 8, False, 8, "min", "wrap", False),
    config(2, 3, 4, True, 4, "min", "saturate", True, m_bits=12, b_bits=20, s_max=15,
           out_bits=4, out_signed=True),
    config(4, 4, 8, True, 8, 20, "saturate", False, out_bits=8, out_signed=True, relu=True),
    # Large enough that Verilator splits the model into several C++ files.
    config(8, 8, 8, False, 8, 32, "wrap", False, m_bits=24, b_bits=40),
]

# The full grid (slow): (rows, cols) from 1x1 to 8x8 with non-square and non-power-of-two
# shapes; a_bits and w_bits in {2, 4, 8}, signed and unsigned; acc_bits from the smallest legal
# width to 32; both overflow modes; shared and per-channel shift.
SLOW = [
    config(rows, cols, a, sa, w, acc, ov, sh, **extra)
    for rows, cols, a, sa, w, acc, ov, sh, extra in [
        (1, 1, 2, False, 2, "min", "saturate", True, {}),
        (1, 1, 2, True, 8, 32, "wrap", False, {}),
        (1, 8, 8, False, 2, "min", "wrap", True, {}),
        (8, 1, 4, True, 8, "min", "saturate", False, {"out_signed": True}),
        (3, 2, 8, False, 4, 14, "wrap", False, {"relu": True}),
        (3, 5, 2, True, 2, 6, "saturate", True, {"out_bits": 2, "out_signed": True}),
        (5, 3, 4, False, 4, 12, "wrap", False, {}),
        (2, 2, 8, True, 2, 10, "saturate", False, {}),
        (4, 4, 2, False, 8, 32, "saturate", True, {}),
        (8, 8, 8, True, 8, "min", "wrap", False, {"m_bits": 24, "b_bits": 40}),
        (8, 8, 4, False, 4, 32, "saturate", True, {}),
        (6, 7, 4, True, 4, 11, "wrap", True, {"out_bits": 16, "out_signed": True}),
        (8, 8, 8, False, 8, 32, "wrap", False, {}),
    ]
]

FAST_IDS = [verilog_id(cfg) for cfg in FAST]
SLOW_GRID = [pytest.param(cfg, id=verilog_id(cfg), marks=pytest.mark.slow) for cfg in SLOW]
STALL = (0.3, 0.3)


def _check_mac(cfg, verilator_build, seed):
    from qmac.hw.mac_array import MacArray
    rng = np.random.default_rng(seed)
    dut = MacArray(cfg)
    built = verilator_build(dut, "mac")
    w = mac_weights(cfg, rng)
    x = mac_inputs(cfg, w, rng)
    inputs = beats.mac_beats(cfg, x, w)
    expected = beats.mac_expected(cfg, x, w)
    width = layouts.mac_input_layout(cfg).size
    # The stimulus reaches what it is meant to reach: overflow flags both set and clear.
    _, flags = golden.mac(cfg, x, w)
    if cfg.acc_bits < cfg.datatype_acc_bits:
        assert flags.any() and not flags.all()
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=STALL,
                     seed=seed, in_width=width, label="stalls")
    assert run.passed and run.outputs == expected
    # Full rate: one beat per cycle.
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=0.0,
                     seed=seed, in_width=width, label="full-rate")
    assert run.passed and run.outputs == expected
    assert run.cycles <= len(inputs) + dut.latency + 1
    # Reset in the middle of a dot product: the partial sum must not leak into the next one.
    prefix = inputs[:cfg.beats * 2 + max(cfg.beats - 1, 1)]
    run = run_stream(built, inputs[:cfg.beats * 4], n_outputs=4, expected=expected[:4],
                     stall=STALL, seed=seed + 1, in_width=width, reset_prefix=prefix,
                     prefix_wait_cycles=0, label="reset")
    assert run.passed and run.outputs == expected[:4]
    assert run.prefix_outputs == expected[:len(run.prefix_outputs)]


def _check_requant(cfg, verilator_build, seed):
    from qmac.hw.requant import Requantizer
    rng = np.random.default_rng(seed)
    dut = Requantizer(cfg)
    built = verilator_build(dut, "requant")
    acc, M, B, S, flags, last = requant_cases(cfg, rng)
    inputs = beats.requant_beats(cfg, acc, M, B, S, flags, last)
    expected = beats.requant_expected(cfg, acc, M, B, S, flags, last)
    # The stimulus lands on both clamp edges and inside them.
    ys = beats.unpack_columns(layouts.requant_output_layout(cfg), expected)
    y = np.concatenate([ys[("y", r)] for r in range(cfg.rows)])
    assert (y == cfg.y_min).any() and (y == cfg.y_max).any()
    assert ((y > cfg.y_min) & (y < cfg.y_max)).any() or cfg.y_max - cfg.y_min < 2
    width = layouts.requant_input_layout(cfg).size
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=STALL,
                     seed=seed, in_width=width, label="stalls")
    assert run.passed and run.outputs == expected
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=0.0,
                     seed=seed, in_width=width, label="full-rate")
    assert run.passed
    assert run.cycles <= len(inputs) + dut.latency + 1
    # Reset with beats in flight: whatever came out before the reset is a prefix of the
    # expected beats, and afterwards the stream starts clean.
    run = run_stream(built, inputs[8:16], n_outputs=8, expected=expected[8:16], stall=STALL,
                     seed=seed + 1, in_width=width, reset_prefix=inputs[:8],
                     label="reset")
    assert run.passed
    assert run.prefix_outputs == expected[:len(run.prefix_outputs)]


def _check_engine(cfg, verilator_build, seed, batch=12):
    from qmac.hw.engine import LayerEngine
    rng = np.random.default_rng(seed)
    w = mac_weights(cfg, rng)
    M, B, S = engine_params(cfg, w, rng)
    x = mac_inputs(cfg, w, rng, n_random=batch)
    dut = LayerEngine(cfg, w, M, B, S)
    built = verilator_build(dut, "engine")
    inputs = beats.engine_beats(cfg, x)
    expected = beats.engine_expected(cfg, x, w, M, B, S)
    result = golden.layer(cfg, x, w, M, B, S)
    assert (result.y == cfg.y_min).any() and (result.y == cfg.y_max).any()
    width = layouts.engine_input_layout(cfg).size
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=STALL,
                     seed=seed, in_width=width, label="stalls")
    assert run.passed and run.outputs == expected
    y, flags, _ = beats.engine_outputs(cfg, run.outputs)
    assert np.array_equal(y, np.asarray(result.y, dtype=y.dtype))
    assert np.array_equal(flags, result.overflow)
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=0.0,
                     seed=seed, in_width=width, label="full-rate")
    assert run.passed
    assert run.cycles <= dut.cycles(len(x)) + 2
    # Reset in the middle of a vector (and with a whole vector before it still in flight).
    prefix = inputs[:cfg.beats + max(cfg.beats // 2, 1)]
    run = run_stream(built, inputs[:cfg.beats * 3], n_outputs=3 * cfg.out_beats,
                     expected=expected[:3 * cfg.out_beats], stall=STALL, seed=seed + 1,
                     in_width=width, reset_prefix=prefix, label="reset")
    assert run.passed
    assert run.prefix_outputs == expected[:len(run.prefix_outputs)]


@pytest.mark.parametrize("cfg", FAST, ids=FAST_IDS)
def test_mac_array(cfg, verilator_build):
    _check_mac(cfg, verilator_build, seed=1)


@pytest.mark.parametrize("cfg", FAST, ids=FAST_IDS)
def test_requantizer(cfg, verilator_build):
    _check_requant(cfg, verilator_build, seed=2)


@pytest.mark.parametrize("cfg", FAST, ids=FAST_IDS)
def test_layer_engine(cfg, verilator_build):
    _check_engine(cfg, verilator_build, seed=3)


@pytest.mark.parametrize("cfg", SLOW_GRID)
def test_mac_array_grid(cfg, verilator_build):
    _check_mac(cfg, verilator_build, seed=11)


@pytest.mark.parametrize("cfg", SLOW_GRID)
def test_requantizer_grid(cfg, verilator_build):
    _check_requant(cfg, verilator_build, seed=12)


@pytest.mark.parametrize("cfg", SLOW_GRID)
def test_layer_engine_grid(cfg, verilator_build):
    _check_engine(cfg, verilator_build, seed=13)


def test_mismatch_is_reported(verilator_build):
    """The testbench can fail: a wrong expected beat is caught and named."""
    from qmac.hw.mac_array import MacArray
    cfg = FAST[0]
    rng = np.random.default_rng(0)
    built = verilator_build(MacArray(cfg), "mac")
    w = mac_weights(cfg, rng)
    x = mac_inputs(cfg, w, rng, n_random=4)
    inputs = beats.mac_beats(cfg, x, w)
    expected = beats.mac_expected(cfg, x, w)
    expected[3] ^= 1
    run = run_stream(built, inputs, n_outputs=len(expected), expected=expected, stall=STALL,
                     seed=0, in_width=layouts.mac_input_layout(cfg).size, label="bad")
    assert not run.passed
    assert "output beat 3" in run.log
