"""Amaranth-simulator unit tests of the requantization unit.

Every test runs a producer and a consumer testbench side by side with random stalls on both
streams, and compares every output beat bit for bit with the golden model (``sim.golden``).
"""

import random

import pytest

from qmac.hw.config import LayerConfig
from qmac.hw.requant import Requantizer
from qmac.sim import beats, golden
from harness import grid, measure_latency, rq_id, stream_test
from vectors import requant_lane_beats, requant_stimulus


def check_requant(cfg, *, seed=2, count=40):
    rng = random.Random(seed)
    acc, M, B, S, flags, last = requant_lane_beats(cfg, requant_stimulus(cfg, seed, count), rng)
    got = stream_test(Requantizer(cfg), beats.requant_beats(cfg, acc, M, B, S, flags, last),
                      len(acc), seed=seed)
    flat_cfg = cfg.replace(out_features=acc.size, rows=1, shared_shift=False)
    y = golden.requantize(flat_cfg, acc.reshape(1, -1), M.reshape(-1), B.reshape(-1),
                          S.reshape(-1))[0]
    edges = set()
    for k, out in enumerate(got):
        assert out.last == last[k], f"beat {k}: last"
        for r in range(cfg.rows):
            expected = int(y[k * cfg.rows + r])
            assert out.y[r] == expected, \
                f"beat {k}, lane {r}: (acc, M, B, S) = {acc[k, r], M[k, r], B[k, r], S[k, r]}, " \
                f"got y = {out.y[r]}, expected {expected}"
            assert out.overflow[r] == flags[k, r], f"beat {k}, lane {r}: overflow"
            edges.add(expected)
    corners = [a * m for a in (cfg.acc_min, cfg.acc_max) for m in (cfg.m_min, cfg.m_max)]
    reachable = {edge for edge in (cfg.y_min, cfg.y_max)
                 if min(corners) + cfg.b_min <= edge <= max(corners) + cfg.b_max}
    assert reachable <= edges, "the stimulus missed a clamp edge"


def rq_cfg(**changes):
    base = dict(a_bits=1, w_bits=2, in_features=4, out_features=4, rows=1)
    base.update(changes)
    return LayerConfig(**base)


RQ_CONFIGS = [
    rq_cfg(acc_bits=3, m_bits=2, b_bits=3, s_max=0, out_bits=1),
    rq_cfg(rows=2, acc_bits=8, m_bits=4, b_bits=8, s_max=31, out_bits=8),
    rq_cfg(rows=3, out_features=6, acc_bits=12, m_bits=8, b_bits=24, s_max=7, out_bits=4,
           out_signed=True, shared_shift=True),
    rq_cfg(rows=4, acc_bits=32, m_bits=16, b_bits=32, s_max=31, out_bits=8, out_signed=True,
           relu=True),
    rq_cfg(rows=2, acc_bits=48, m_bits=24, b_bits=64, s_max=80, out_bits=32, out_signed=True,
           shared_shift=True),
]


@pytest.mark.parametrize("cfg", RQ_CONFIGS, ids=rq_id)
def test_requantizer(cfg):
    check_requant(cfg)


def test_requantizer_latency():
    cfg = RQ_CONFIGS[2]
    rng = random.Random(1)
    acc, M, B, S, flags, last = requant_lane_beats(cfg, requant_stimulus(cfg, 1, 3)[:cfg.rows],
                                                   rng)
    dut = Requantizer(cfg)
    first = beats.requant_beats(cfg, acc, M, B, S, flags, last)[:1]
    assert measure_latency(dut, first) == dut.latency == 3


def grid_rq_configs():
    configs = []
    for rows in (1, 3, 8):
        for acc_bits, m_bits, b_bits in [(4, 2, 4), (12, 8, 16), (32, 16, 32), (64, 32, 64)]:
            for s_max in sorted({0, 5, acc_bits + m_bits + 2}):
                for shared_shift in (False, True):
                    for out_bits, out_signed, relu in [(1, False, False), (8, False, False),
                                                       (8, True, False), (8, True, True),
                                                       (24, True, False)]:
                        configs.append(rq_cfg(
                            rows=rows, out_features=rows * 2, acc_bits=acc_bits,
                            m_bits=m_bits, b_bits=b_bits, s_max=s_max,
                            shared_shift=shared_shift, out_bits=out_bits,
                            out_signed=out_signed, relu=relu))
    return configs


@pytest.mark.parametrize("cfg", grid(grid_rq_configs(), rq_id, every=15))
def test_requantizer_grid(cfg):
    check_requant(cfg, seed=cfg.acc_bits + cfg.s_max, count=24)
