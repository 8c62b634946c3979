"""Amaranth-simulator unit tests of the MAC array, the requantizer and the layer engine.

Every test runs a producer and a consumer testbench side by side with random stalls on both
streams, and compares every output beat bit for bit with the golden model (``sim.golden``).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from hw.config import LayerConfig
from hw.mac_array import MacArray
from sim import golden
from streams import expect_idle, stream_get, stream_put


GAP = 0.3       # probability of an idle input cycle before each beat
STALL = 0.3     # probability of ready low in each output cycle


def cfg_id(cfg):
    """A readable test id: ``2x3-a4s-w4-acc8-sat-pc``."""
    parts = [f"{cfg.rows}x{cfg.cols}",
             f"a{cfg.a_bits}{'s' if cfg.a_signed else 'u'}",
             f"w{cfg.w_bits}",
             f"acc{cfg.acc_bits}",
             "wrap" if cfg.overflow == "wrap" else "sat"]
    return "-".join(parts)


def run(dut, producer, consumer, *, deadline=1_000_000):
    """Simulate ``dut`` with the two testbenches until both finish."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.run_until(deadline * 1e-6)
    return sim


def stream_test(dut, beats_in, n_out, *, seed, gap=GAP, stall=STALL, tail=8):
    """Send ``beats_in`` on ``dut.i`` and return the first ``n_out`` beats of ``dut.o``.

    Checks that no extra beat follows within ``tail`` cycles, and that everything finished.
    """
    got = []
    done = []

    async def producer(ctx):
        rng = random.Random(seed)
        for beat in beats_in:
            await stream_put(ctx, dut.i, beat, rng=rng, gap=gap)
        done.append("producer")

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        for _ in range(n_out):
            got.append(await stream_get(ctx, dut.o, rng=rng, stall=stall))
        await expect_idle(ctx, dut.o, tail)
        done.append("consumer")

    run(dut, producer, consumer, deadline=20 * (len(beats_in) + n_out) + 1000)
    assert sorted(done) == ["consumer", "producer"], f"testbenches did not finish: {done}"
    return got


# -- operand generators ------------------------------------------------------------------------

def random_operands(cfg, rng, shape, kind):
    """Activations and weights of ``shape`` (a pair of shapes): uniform, or only extremes."""
    x_shape, w_shape = shape
    if kind == "uniform":
        x = rng.integers(cfg.x_min, cfg.x_max, size=x_shape, endpoint=True)
        w = rng.integers(cfg.w_min, cfg.w_max, size=w_shape, endpoint=True)
    elif kind == "extreme":
        x = rng.choice([cfg.x_min, cfg.x_max], size=x_shape)
        w = rng.choice([cfg.w_min, cfg.w_max], size=w_shape)
    else:
        raise ValueError(kind)
    return x.astype(np.int64), w.astype(np.int64)


def split_sum(total, count, lo, hi):
    """``count`` integers in ``[lo, hi]``, as even as possible, summing to ``total``."""
    assert count * lo <= total <= count * hi
    parts = []
    for k in range(count):
        rest = count - k - 1
        part = max(lo, total - rest * hi, min(hi, total - rest * lo, round(total / (rest + 1))))
        parts.append(part)
        total -= part
    assert total == 0
    return parts


def boundary_dot_products(cfg, rng, max_beats=48):
    """Dot products ``(x, w)`` whose accumulators land exactly on both ends of the accumulator
    range (and one step inside), then step on or across the boundary. Returns ``[]`` when the
    range is too wide to walk in ``max_beats`` beats.

    Each beat uses one activation ``v`` for all ``cols`` lanes, as large as the farthest row
    still needs; each row picks its weights (sum ``s``) so that ``v·s`` walks towards its own
    target without overshooting. ``v = ±1`` beats land exactly.
    """
    s_lo, s_hi = cfg.cols * cfg.w_min, cfg.cols * cfg.w_max
    s_mag = max(-s_lo, s_hi)
    x_mag = max(cfg.x_max, -cfg.x_min)
    if (cfg.acc_max + 1) // (x_mag * s_mag) > max_beats // 2:
        return []
    ov = golden.wrap if cfg.overflow == "wrap" else golden.saturate

    def activation(magnitude):
        return magnitude if magnitude <= cfg.x_max else -magnitude

    targets = [cfg.acc_max, cfg.acc_min, cfg.acc_max - 1, cfg.acc_min + 1]
    deltas = [1, -1, s_hi, s_lo, 0]
    dots = []
    for variant in range(4):
        row_targets = [targets[(variant + r) % len(targets)] for r in range(cfg.rows)]
        acc = [0] * cfg.rows
        xs, ws = [], []

        def beat(x_value, sums):
            xs.append([x_value] * cfg.cols)
            ws.append([split_sum(s, cfg.cols, cfg.w_min, cfg.w_max) for s in sums])
            for r in range(cfg.rows):
                acc[r] = int(ov(acc[r] + x_value * sums[r], cfg.acc_bits))

        while not xs or acc != row_targets:
            assert len(xs) < max_beats, "boundary walk did not converge"
            remaining = [t - a for t, a in zip(row_targets, acc)]
            x_value = activation(max(1, min(x_mag, max(map(abs, remaining)) // s_mag)))
            beat(x_value, [max(s_lo, min(s_hi, int(rem / x_value))) for rem in remaining])
        # Step on or across the boundary, differently per row.
        fine = activation(1)
        beat(fine, [deltas[(variant + r) % len(deltas)] for r in range(cfg.rows)])
        # A few random beats after that (saturated accumulators walk back in).
        for _ in range(int(rng.integers(0, 3))):
            beat(activation(x_mag),
                 [int(rng.integers(s_lo, s_hi, endpoint=True)) for _ in range(cfg.rows)])
        x = np.array(xs, dtype=np.int64).reshape(-1)
        w = np.array(ws, dtype=np.int64).transpose(1, 0, 2).reshape(cfg.rows, -1)
        dots.append((x, w))
    return dots


# -- MAC array -----------------------------------------------------------------------------------

def mac_stimulus(cfg, seed, count):
    """Dot products of random lengths (1 to 4 beats), uniform and extreme operands, plus the
    boundary walks of :func:`boundary_dot_products`."""
    rng = np.random.default_rng(seed)
    dots = []
    for k in range(count):
        beats = int(rng.integers(1, 5))
        x, w = random_operands(cfg, rng, ((beats * cfg.cols,), (cfg.rows, beats * cfg.cols)),
                               "uniform" if k % 2 else "extreme")
        dots.append((x, w))
    # All operands at the same extreme: largest positive and negative beat sums, long enough to
    # overflow a narrow accumulator.
    for xv in (cfg.x_min, cfg.x_max):
        for wv in (cfg.w_min, cfg.w_max):
            beats = 6
            dots.append((np.full(beats * cfg.cols, xv), np.full((cfg.rows, beats * cfg.cols), wv)))
    dots += boundary_dot_products(cfg, rng)
    return dots


def mac_beats(cfg, x, w):
    """The input beats of one dot product."""
    beats = len(x) // cfg.cols
    out = []
    for i in range(beats):
        span = slice(i * cfg.cols, (i + 1) * cfg.cols)
        out.append({
            "x": [int(v) for v in x[span]],
            "w": [[int(v) for v in w[r, span]] for r in range(cfg.rows)],
            "first": int(i == 0),
            "last": int(i == beats - 1),
        })
    return out


def check_mac(cfg, *, seed=1, count=12):
    dots = mac_stimulus(cfg, seed, count)
    dut = MacArray(cfg)
    beats = [beat for x, w in dots for beat in mac_beats(cfg, x, w)]
    got = stream_test(dut, beats, len(dots), seed=seed)
    flagged = 0
    for k, ((x, w), out) in enumerate(zip(dots, got)):
        dot_cfg = cfg.replace(in_features=len(x), out_features=cfg.rows)
        acc, overflow = golden.mac(dot_cfg, x[None, :], w)
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
]


@pytest.mark.parametrize("cfg", MAC_CONFIGS, ids=cfg_id)
def test_mac_array(cfg):
    flagged = check_mac(cfg)
    if cfg.acc_bits < cfg.product_bits + 4:
        assert flagged, "the stimulus never overflowed the accumulator"


def slow_mac_configs():
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


@pytest.mark.slow
@pytest.mark.parametrize("cfg", slow_mac_configs(), ids=cfg_id)
def test_mac_array_grid(cfg):
    check_mac(cfg, seed=cfg.acc_bits, count=6)
