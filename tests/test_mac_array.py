"""Amaranth-simulator unit tests of the MAC array.

Every test runs a producer and a consumer testbench side by side with random stalls on both
streams, and compares every output beat bit for bit with the golden model (``sim.golden``).
"""

import numpy as np
import pytest

from qmac.hw.config import LayerConfig
from qmac.hw.mac_array import MacArray
from qmac.sim import golden
from harness import cfg_id, grid, measure_latency, stream_test
from vectors import dot_config, dot_product_beats, mac_stimulus, random_operands


def check_mac(cfg, *, seed=1, count=12):
    dots = mac_stimulus(cfg, seed, count)
    dut = MacArray(cfg)
    got = stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=seed)
    flagged = 0
    for k, ((x, w), out) in enumerate(zip(dots, got)):
        acc, overflow = golden.mac(dot_config(cfg, x), x[None, :], w)
        for r in range(cfg.rows):
            assert (out.acc[r], out.overflow[r]) == (int(acc[0, r]), int(overflow[0, r])), \
                f"dot product {k}, row {r}: got acc {out.acc[r]} overflow {out.overflow[r]}, " \
                f"expected {int(acc[0, r])} {int(overflow[0, r])}"
        flagged += int(overflow.sum())
    return flagged


MAC_CONFIGS = [
    LayerConfig(rows=1, cols=1, a_bits=2, w_bits=2, acc_bits=4, a_signed=True),
    LayerConfig(rows=1, cols=1, a_bits=4, w_bits=4, acc_bits=8, overflow="saturate"),
    LayerConfig(rows=2, cols=3, in_features=12, out_features=4, a_bits=4, w_bits=4,
                acc_bits=8, a_signed=True, overflow="saturate"),
    LayerConfig(rows=2, cols=3, in_features=12, out_features=4, a_bits=4, w_bits=2,
                acc_bits=7, overflow="wrap"),
    LayerConfig(rows=3, cols=2, in_features=12, out_features=6, a_bits=8, w_bits=8,
                acc_bits=32, a_signed=True, overflow="saturate"),
    LayerConfig(rows=4, cols=4, a_bits=8, w_bits=8, acc_bits=18, overflow="wrap"),
    LayerConfig(rows=4, cols=4, a_bits=2, w_bits=4, acc_bits=7, a_signed=True,
                overflow="saturate"),
    LayerConfig(rows=8, cols=8, in_features=16, a_bits=8, w_bits=8, acc_bits=16, a_signed=True,
                overflow="saturate"),
]


@pytest.mark.parametrize("cfg", MAC_CONFIGS, ids=cfg_id)
def test_mac_array(cfg):
    flagged = check_mac(cfg)
    if cfg.acc_bits < cfg.product_bits + 4:
        assert flagged, "the stimulus never overflowed the accumulator"


@pytest.mark.parametrize("cols, levels_per_stage", [(1, 1), (3, 1), (8, 1), (8, 2), (8, 3),
                                                    (5, 8)])
def test_mac_latency(cols, levels_per_stage):
    cfg = LayerConfig(rows=2, cols=cols, in_features=2 * cols, a_bits=4, w_bits=4, acc_bits=12)
    dut = MacArray(cfg, levels_per_stage=levels_per_stage)
    rng = np.random.default_rng(cols)
    x, w = random_operands(cfg, rng, ((2 * cols,), (2, 2 * cols)), "uniform")
    assert measure_latency(dut, dot_product_beats(cfg, [(x, w)])) == dut.latency
    tree_levels = (cols - 1).bit_length()
    assert dut.latency == 2 + -(-tree_levels // levels_per_stage)


@pytest.mark.parametrize("levels_per_stage", [2, 3])
def test_mac_array_tree_pipelining(levels_per_stage):
    cfg = LayerConfig(rows=2, cols=8, in_features=16, out_features=2, a_bits=4, w_bits=4,
                      acc_bits=10, a_signed=True, overflow="saturate")
    dots = mac_stimulus(cfg, 9, 8)
    dut = MacArray(cfg, levels_per_stage=levels_per_stage)
    got = stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=9)
    for (x, w), out in zip(dots, got):
        acc, overflow = golden.mac(cfg.replace(in_features=len(x)), x[None, :], w)
        assert list(out.acc) == [int(v) for v in acc[0]]
        assert list(out.overflow) == [int(v) for v in overflow[0]]


def test_mac_array_rejects_bad_levels():
    with pytest.raises(ValueError, match="levels_per_stage must be a positive integer, not 0"):
        MacArray(LayerConfig(), levels_per_stage=0)


def grid_mac_configs():
    configs = []
    for rows, cols in [(1, 1), (2, 3), (3, 2), (4, 4), (8, 8)]:
        for a_bits in (2, 4, 8):
            for w_bits in (2, 4, 8):
                for a_signed in (False, True):
                    for overflow in ("wrap", "saturate"):
                        product = a_bits + w_bits
                        for acc_bits in sorted({product, product + 3, 32}):
                            configs.append(LayerConfig(
                                rows=rows, cols=cols, in_features=cols * 4,
                                out_features=rows * 2, a_bits=a_bits, w_bits=w_bits,
                                a_signed=a_signed, acc_bits=acc_bits, overflow=overflow))
    return configs


@pytest.mark.parametrize("cfg", grid(grid_mac_configs(), cfg_id, every=15))
def test_mac_array_grid(cfg):
    check_mac(cfg, seed=cfg.acc_bits, count=10)
