"""Amaranth-simulator unit tests of the MAC array, the requantizer and the layer engine.

Every test runs a producer and a consumer testbench side by side with random stalls on both
streams, and compares every output beat bit for bit with the golden model (``sim.golden``).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from qmac.hw.config import LayerConfig
from qmac.hw.mac_array import MacArray
from qmac.sim import golden
from streams import expect_idle, stream_get, stream_put


GAP = 0.3       # probability of an idle input cycle before each beat
STALL = 0.3     # probability of ready low in each output cycle


def cfg_id(cfg):
    """A readable test id: ``2x3-a4s-w4-acc8-sat``."""
    parts = [f"{cfg.rows}x{cfg.cols}",
             f"a{cfg.a_bits}{'s' if cfg.a_signed else 'u'}",
             f"w{cfg.w_bits}",
             f"acc{cfg.acc_bits}",
             "wrap" if cfg.overflow == "wrap" else "sat"]
    return "-".join(parts)


def run(dut, producer, consumer, *, deadline=1_000_000):
    """Simulate ``dut`` with the two testbenches until both finish; fail after ``deadline``
    cycles."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)

    async def watchdog(ctx):
        await ctx.delay(deadline * 1e-6)
        raise TimeoutError(f"the testbenches did not finish in {deadline} cycles")

    sim.add_testbench(watchdog, background=True)
    sim.run()
    return sim


def grid(configs, make_id, *, every):
    """Parameters for a configuration grid: every ``every``-th configuration runs by default,
    the others only with ``-m slow``."""
    return [pytest.param(cfg, id=make_id(cfg), marks=() if k % every == 0 else pytest.mark.slow)
            for k, cfg in enumerate(configs)]


def stream_test(dut, beats_in, n_out, *, seed, gap=GAP, stall=STALL, tail=8, cycles=0):
    """Send ``beats_in`` on ``dut.i`` and return the first ``n_out`` beats of ``dut.o``.

    Checks that no extra beat follows within ``tail`` cycles, and that everything finished
    (within a deadline that allows for the stalls and ``cycles``, the stall-free cycle count).
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

    run(dut, producer, consumer, deadline=3 * cycles + 20 * (len(beats_in) + n_out) + 1000)
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
    LayerConfig(rows=8, cols=8, in_features=16, a_bits=8, w_bits=8, acc_bits=16, a_signed=True,
                overflow="saturate"),
]


@pytest.mark.parametrize("cfg", MAC_CONFIGS, ids=cfg_id)
def test_mac_array(cfg):
    flagged = check_mac(cfg)
    if cfg.acc_bits < cfg.product_bits + 4:
        assert flagged, "the stimulus never overflowed the accumulator"


def measure_latency(dut, beats):
    """Cycles from the transfer of the last of ``beats`` (sent at full rate from cycle 0) to
    the first ``o.valid``, with ``o.ready`` always high."""
    timing = {}

    async def producer(ctx):
        for k, beat in enumerate(beats):
            await stream_put(ctx, dut.i, beat)
        timing["last_in"] = k                    # no gaps: beat k is transferred in cycle k

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while True:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            if valid:
                timing["first_out"] = cycle
                return
            cycle += 1

    run(dut, producer, consumer, deadline=1000)
    return timing["first_out"] - timing["last_in"]


@pytest.mark.parametrize("cols, levels_per_stage", [(1, 1), (3, 1), (8, 1), (8, 2), (8, 3),
                                                    (5, 8)])
def test_mac_latency(cols, levels_per_stage):
    cfg = LayerConfig(rows=2, cols=cols, in_features=2 * cols, a_bits=4, w_bits=4, acc_bits=12)
    dut = MacArray(cfg, levels_per_stage=levels_per_stage)
    rng = np.random.default_rng(cols)
    x, w = random_operands(cfg, rng, ((2 * cols,), (2, 2 * cols)), "uniform")
    assert measure_latency(dut, mac_beats(cfg, x, w)) == dut.latency
    tree_levels = (cols - 1).bit_length()
    assert dut.latency == 2 + -(-tree_levels // levels_per_stage)


@pytest.mark.parametrize("levels_per_stage", [2, 3])
def test_mac_array_tree_pipelining(levels_per_stage):
    cfg = LayerConfig(rows=2, cols=8, in_features=16, out_features=2, a_bits=4, w_bits=4,
                      acc_bits=10, a_signed=True, overflow="saturate")
    dots = mac_stimulus(cfg, 9, 8)
    dut = MacArray(cfg, levels_per_stage=levels_per_stage)
    got = stream_test(dut, [b for x, w in dots for b in mac_beats(cfg, x, w)], len(dots), seed=9)
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


# -- requantizer ---------------------------------------------------------------------------------

def rq_id(cfg):
    """A readable test id: ``2r-acc8-m4-b8-s31-lane-y8u``."""
    out = f"y{cfg.out_bits}{'s' if cfg.out_signed else 'u'}{'-relu' if cfg.relu else ''}"
    shift = "shared" if cfg.shared_shift else "lane"
    return (f"{cfg.rows}r-acc{cfg.acc_bits}-m{cfg.m_bits}-b{cfg.b_bits}-s{cfg.s_max}-{shift}-"
            f"{out}")


def solve_requant(cfg, value, rng, tries=20):
    """``(acc, M, B)`` in range with ``acc·M + B == value``, or ``None``."""
    for attempt in range(tries):
        m = rng.randint(cfg.m_min, cfg.m_max) if attempt else cfg.m_max
        if m == 0:
            continue
        for acc in (rng.randint(cfg.acc_min, cfg.acc_max),
                    max(cfg.acc_min, min(cfg.acc_max, value // m)),
                    max(cfg.acc_min, min(cfg.acc_max, -(-value // m))), 0):
            b = value - acc * m
            if cfg.b_min <= b <= cfg.b_max:
                return acc, m, b
    return None


def requant_stimulus(cfg, seed, count):
    """Lanes ``(acc, M, B, S)``: uniform, all extremes, outputs on and just past both clamp
    edges, and sums ``acc·M + B`` at the ties of the shift (``-1``, ``-2^S``, ``-2^S - 1``,
    ``0``, ``2^S - 1``, ``2^S``)."""
    rng = random.Random(seed)
    uniform = rng.randint

    lanes = []
    for k in range(count):
        extreme = k % 2
        pick = (lambda lo, hi: rng.choice([lo, hi])) if extreme else uniform
        lanes.append((pick(cfg.acc_min, cfg.acc_max), pick(cfg.m_min, cfg.m_max),
                      pick(cfg.b_min, cfg.b_max), pick(0, cfg.s_max)))
    for s in sorted({0, 1, cfg.s_max // 2, cfg.s_max}):
        if s > cfg.s_max:
            continue
        one = 1 << s
        values = [-1, -one, -one - 1, 0, one - 1, one]
        for target in (cfg.y_max, cfg.y_max + 1, cfg.y_min, cfg.y_min - 1):
            values += [target * one, target * one + one - 1, target * one + uniform(0, one - 1)]
        for value in values:
            solved = solve_requant(cfg, value, rng)
            if solved is not None:
                lanes.append((*solved, s))
    return lanes


def requant_beats(cfg, lanes, rng):
    """Group lanes into beats of ``rows`` (one shift per beat with a shared shift)."""
    beats, channels = [], []
    lanes = lanes + lanes[:-len(lanes) % cfg.rows]      # pad to whole beats
    order = list(range(len(lanes)))
    rng.shuffle(order)
    lanes = [lanes[k] for k in order]
    if cfg.shared_shift:
        lanes.sort(key=lambda lane: lane[3])    # lanes of one beat share their shift
    for k in range(0, len(lanes), cfg.rows):
        group = lanes[k:k + cfg.rows]
        if cfg.shared_shift:
            group = [(acc, m, b, group[0][3]) for acc, m, b, _ in group]
        channels += group
        beats.append({
            "acc": [lane[0] for lane in group],
            "m": [lane[1] for lane in group],
            "b": [lane[2] for lane in group],
            "s": group[0][3] if cfg.shared_shift else [lane[3] for lane in group],
            "overflow": [rng.randint(0, 1) for _ in group],
            "last": rng.randint(0, 1),
        })
    return beats, channels


def check_requant(cfg, *, seed=2, count=40):
    rng = random.Random(seed)
    beats, channels = requant_beats(cfg, requant_stimulus(cfg, seed, count), rng)
    from qmac.hw.requant import Requantizer
    got = stream_test(Requantizer(cfg), beats, len(beats), seed=seed)
    n = len(channels)
    flat_cfg = cfg.replace(out_features=n, rows=1, shared_shift=False)
    acc, M, B, S = ([lane[k] for lane in channels] for k in range(4))
    y = golden.requantize(flat_cfg, np.array([acc], dtype=object), np.array(M, dtype=object),
                          np.array(B, dtype=object), np.array(S, dtype=object))[0]
    edges = set()
    for k, (beat, out) in enumerate(zip(beats, got)):
        assert out.last == beat["last"], f"beat {k}: last"
        for r in range(cfg.rows):
            expected = int(y[k * cfg.rows + r])
            assert out.y[r] == expected, \
                f"beat {k}, lane {r}: (acc, M, B, S) = {channels[k * cfg.rows + r]}, " \
                f"got y = {out.y[r]}, expected {expected}"
            assert out.overflow[r] == beat["overflow"][r], f"beat {k}, lane {r}: overflow"
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


# -- layer engine --------------------------------------------------------------------------------

def engine_id(cfg):
    shift = "shared" if cfg.shared_shift else "lane"
    relu = "-relu" if cfg.relu else ""
    return (f"K{cfg.K}-N{cfg.N}-{cfg_id(cfg)}-{shift}-"
            f"y{cfg.out_bits}{'s' if cfg.out_signed else 'u'}{relu}")


def engine_problem(cfg, seed, batch, kind="uniform"):
    """Inputs, weights and requantization parameters that keep most outputs off the clamps."""
    rng = np.random.default_rng(seed)
    x, w = random_operands(cfg, rng, ((batch, cfg.K), (cfg.N, cfg.K)), kind)
    acc, _ = golden.mac(cfg, x, w)
    acc = acc.astype(object)
    pyrng = random.Random(seed)
    M, B, S = [], [], []
    shared = pyrng.randint(0, cfg.s_max)
    for c in range(cfg.N):
        s = shared if cfg.shared_shift else pyrng.randint(0, cfg.s_max)
        spread = max(1, int(max(acc[:, c]) - min(acc[:, c])))
        scale = ((cfg.y_max - cfg.y_min) << s) // spread
        m = max(1, min(cfg.m_max, scale + pyrng.randint(-2, 2)))
        m = m if pyrng.random() < 0.7 else max(cfg.m_min, -m)
        mid = int(sorted(acc[:, c])[batch // 2])
        b = ((cfg.y_max + cfg.y_min) << s) // 2 - mid * m + pyrng.randint(-(1 << s), 1 << s)
        B.append(max(cfg.b_min, min(cfg.b_max, b)))
        M.append(m)
        S.append(s)
    return x, w, np.array(M, dtype=object), np.array(B, dtype=object), np.array(S, dtype=object)


def engine_beats(cfg, x):
    return [{"x": [int(v) for v in row[i * cfg.cols:(i + 1) * cfg.cols]]}
            for row in x for i in range(cfg.beats)]


def check_engine_outputs(cfg, x, w, M, B, S, got):
    expected = golden.layer(cfg, x, w, M, B, S)
    assert len(got) == len(x) * cfg.folds
    for k, out in enumerate(got):
        vector, fold = divmod(k, cfg.folds)
        assert out.last == (fold == cfg.folds - 1), f"vector {vector}, fold {fold}: last"
        for r in range(cfg.rows):
            c = fold * cfg.rows + r
            assert (out.y[r], out.overflow[r]) == \
                (int(expected.y[vector, c]), int(expected.overflow[vector, c])), \
                f"vector {vector}, channel {c}: got y {out.y[r]} overflow {out.overflow[r]}, " \
                f"expected {expected.y[vector, c]} {expected.overflow[vector, c]} " \
                f"(acc {expected.acc[vector, c]})"
    return expected


def check_engine(cfg, *, seed=3, batch=5, kind="uniform", levels_per_stage=1):
    from qmac.hw.engine import LayerEngine
    x, w, M, B, S = engine_problem(cfg, seed, batch, kind)
    dut = LayerEngine(cfg, w, M, B, S, levels_per_stage=levels_per_stage)
    got = stream_test(dut, engine_beats(cfg, x), batch * cfg.folds, seed=seed,
                      cycles=dut.cycles(batch))
    return check_engine_outputs(cfg, x, w, M, B, S, got)


def engine_cfg(**changes):
    base = dict(m_bits=16, b_bits=32, s_max=20)
    base.update(changes)
    return LayerConfig(**base)


ENGINE_CONFIGS = [
    engine_cfg(in_features=3, out_features=2, rows=1, cols=1, a_bits=2, w_bits=2, acc_bits=4,
               a_signed=True, out_bits=2, out_signed=True),
    engine_cfg(in_features=6, out_features=4, rows=2, cols=3, a_bits=4, w_bits=4, acc_bits=8,
               overflow="saturate"),
    engine_cfg(in_features=4, out_features=6, rows=3, cols=2, a_bits=8, w_bits=8, acc_bits=32,
               a_signed=True, shared_shift=True, out_bits=8, out_signed=True, relu=True),
    engine_cfg(in_features=4, out_features=8, rows=4, cols=4, a_bits=4, w_bits=4, acc_bits=9,
               a_signed=True, overflow="wrap"),
    engine_cfg(in_features=12, out_features=2, rows=2, cols=2, a_bits=2, w_bits=4,
               acc_bits=6, overflow="saturate", shared_shift=True),
    engine_cfg(in_features=16, out_features=16, rows=8, cols=8, a_bits=8, w_bits=8,
               acc_bits=18, overflow="wrap", out_bits=4),
]


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS, ids=engine_id)
def test_engine(cfg):
    expected = check_engine(cfg)
    # The parameters must put outputs strictly inside the clamp range too, not only on it.
    assert np.any((expected.y > cfg.y_min) & (expected.y < cfg.y_max))


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS[1:4:2], ids=engine_id)
def test_engine_extreme_operands(cfg):
    check_engine(cfg, seed=4, batch=4, kind="extreme")


def test_engine_tree_pipelining():
    from qmac.hw.engine import LayerEngine
    cfg = ENGINE_CONFIGS[-1]
    check_engine(cfg, levels_per_stage=2)
    x, w, M, B, S = engine_problem(cfg, 2, 1)
    dut = LayerEngine(cfg, w, M, B, S, levels_per_stage=2)
    assert dut.latency == 1 + (2 + 2) + 3
    assert measure_latency(dut, engine_beats(cfg, x)) == dut.latency


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS, ids=engine_id)
def test_engine_cycles(cfg):
    """At full rate (no gaps, no stalls) the last output beat comes in cycle cycles(batch) - 1."""
    from qmac.hw.engine import LayerEngine
    batch = 3
    x, w, M, B, S = engine_problem(cfg, 5, batch)
    dut = LayerEngine(cfg, w, M, B, S)
    got, timing = [], {}

    async def producer(ctx):
        for beat in engine_beats(cfg, x):
            await stream_put(ctx, dut.i, beat)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while len(got) < batch * cfg.folds:
            _, _, valid, payload = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            cycle += 1
            if valid:
                got.append(payload)
        timing["cycles"] = cycle

    run(dut, producer, consumer, deadline=10 * dut.cycles(batch))
    check_engine_outputs(cfg, x, w, M, B, S, got)
    assert timing["cycles"] == dut.cycles(batch)
    assert dut.cycles(batch) == batch * cfg.folds * cfg.beats + dut.latency


RESET_CONFIG = engine_cfg(in_features=6, out_features=8, rows=2, cols=2, a_bits=4, w_bits=4,
                          acc_bits=10, overflow="saturate")
# (configuration, number of stale beats before the reset): in the first vector, in the second
# (the reader still busy with the first), and with two whole vectors waiting.
RESET_CASES = [(RESET_CONFIG, 1), (RESET_CONFIG, 4), (RESET_CONFIG, 5), (RESET_CONFIG, 6),
               (ENGINE_CONFIGS[0], 4), (ENGINE_CONFIGS[4], 8)]


@pytest.mark.parametrize("cfg, cut", RESET_CASES,
                         ids=[f"{engine_id(cfg)}-cut{cut}" for cfg, cut in RESET_CASES])
def test_engine_reset_mid_vector(cfg, cut):
    """A synchronous reset in the middle of a vector, with results in flight, leaves nothing
    behind: after it, the next ``beats`` beats form a fresh vector."""
    from qmac.hw.engine import LayerEngine
    x, w, M, B, S = engine_problem(cfg, 6, 6)
    stale, fresh = x[:3], x[3:]
    dut = LayerEngine(cfg, w, M, B, S)
    top = Module()
    top.domains.sync = sync = ClockDomain("sync")
    top.submodules.engine = dut
    got, phase = [], {"reset": False}
    # Input at full rate and no output taken: stale beats and results fill the engine.
    stale_beats = engine_beats(cfg, stale)[:cut]

    async def producer(ctx):
        rng = random.Random(7)
        for beat in stale_beats:
            await stream_put(ctx, dut.i, beat)
        ctx.set(sync.rst, 1)
        await ctx.tick()
        ctx.set(sync.rst, 0)
        phase["reset"] = True
        for beat in engine_beats(cfg, fresh):
            await stream_put(ctx, dut.i, beat, rng=rng, gap=GAP)

    async def consumer(ctx):
        rng = random.Random(8)
        while not phase["reset"]:                # hold stale results in the pipeline
            await ctx.tick()
        for _ in range(len(fresh) * cfg.folds):
            got.append(await stream_get(ctx, dut.o, rng=rng, stall=STALL))
        await expect_idle(ctx, dut.o, 16)

    run(top, producer, consumer, deadline=3 * dut.cycles(len(x)) + 40 * len(x) * cfg.beats + 1000)
    check_engine_outputs(cfg, fresh, w, M, B, S, got)


def test_engine_rejects_bad_parameters():
    from qmac.hw.engine import LayerEngine
    cfg = ENGINE_CONFIGS[1]
    x, w, M, B, S = engine_problem(cfg, 1, 2)
    bad_w = w.copy()
    bad_w[1, 2] = cfg.w_max + 1
    with pytest.raises(golden.RangeError, match=r"weights\[1, 2\] = 8"):
        LayerEngine(cfg, bad_w, M, B, S)
    bad_S = S.copy()
    bad_S[3] = cfg.s_max + 1
    with pytest.raises(golden.RangeError, match=r"S\[3\] = 21"):
        LayerEngine(cfg, w, M, B, bad_S)


def test_requantizer_latency():
    from qmac.hw.requant import Requantizer
    cfg = RQ_CONFIGS[2]
    rng = random.Random(1)
    beats, _ = requant_beats(cfg, requant_stimulus(cfg, 1, 3)[:cfg.rows], rng)
    dut = Requantizer(cfg)
    assert measure_latency(dut, beats[:1]) == dut.latency == 3


@pytest.mark.parametrize("cfg", ENGINE_CONFIGS, ids=engine_id)
def test_engine_latency(cfg):
    from qmac.hw.engine import LayerEngine
    x, w, M, B, S = engine_problem(cfg, 2, 1)
    dut = LayerEngine(cfg, w, M, B, S)
    assert measure_latency(dut, engine_beats(cfg, x)) == dut.latency


def grid_engine_configs():
    configs = []
    for rows, cols, K, N in [(1, 1, 3, 2), (2, 3, 9, 4), (3, 2, 4, 9), (4, 4, 8, 8),
                             (8, 8, 16, 16), (2, 2, 2, 8)]:
        for a_bits, w_bits in [(2, 2), (4, 8), (8, 4), (8, 8)]:
            for a_signed in (False, True):
                for overflow, acc_extra in [("wrap", 0), ("saturate", 1), ("wrap", None)]:
                    acc_bits = 32 if acc_extra is None else a_bits + w_bits + acc_extra
                    for shared_shift in (False, True):
                        configs.append(engine_cfg(
                            in_features=K, out_features=N, rows=rows, cols=cols,
                            a_bits=a_bits, w_bits=w_bits, a_signed=a_signed, acc_bits=acc_bits,
                            overflow=overflow, shared_shift=shared_shift,
                            out_bits=a_bits, out_signed=a_signed, relu=a_signed and w_bits == 4))
    return configs


@pytest.mark.parametrize("cfg", grid(grid_engine_configs(), engine_id, every=10))
def test_engine_grid(cfg):
    check_engine(cfg, seed=cfg.rows * 100 + cfg.acc_bits, batch=6)
