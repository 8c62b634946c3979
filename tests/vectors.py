"""Stimulus for the block tests: random vectors plus the corner cases of the arithmetic contract.

Every generator takes a :class:`hw.config.LayerConfig` and a seed or a seeded random generator,
and returns plain integers or integer arrays; expected values always come from the golden model,
and beats are packed by :mod:`qmac.sim.beats`.

- Operands: :func:`random_ints`, :func:`random_operands`.
- MAC array: :func:`mac_stimulus` (dot products of any length, for the Amaranth simulator) with
  :func:`boundary_dot_products` and :func:`dot_product_beats`; :func:`mac_weights` and
  :func:`mac_inputs` (whole layers, for the Verilog).
- Requantizer: :func:`requant_stimulus` and :func:`requant_lane_beats` (for the Amaranth
  simulator), :func:`requant_cases` (for the Verilog); both give ``acc, M, B, S, flags, last``.
- Layer engine: :func:`engine_problem` (parameters from the batch's accumulators, for the
  Amaranth simulator), :func:`engine_params` (from the reachable range, for the Verilog).
"""

import random

import numpy as np

from qmac.accumulator import extreme_inputs, reachable_range
from qmac.sim import beats, golden


# -- operands --------------------------------------------------------------------------------------


def random_ints(rng, lo, hi, shape):
    """Uniform integers in ``[lo, hi]``, exact for any width (object arrays past int64)."""
    lo, hi = int(lo), int(hi)
    if hi - lo < 2**62 and -2**62 < lo and hi < 2**62:
        return rng.integers(lo, hi, size=shape, endpoint=True)
    count = int(np.prod(shape))
    span = hi - lo + 1
    values = [lo + int.from_bytes(rng.bytes(16), "little") % span for _ in range(count)]
    return np.array(values, dtype=object).reshape(shape)


def random_operands(cfg, rng, shape, kind):
    """Activations and weights of ``shape`` (a pair of shapes): uniform, or only extremes."""
    x_shape, w_shape = shape
    if kind == "uniform":
        x = random_ints(rng, cfg.x_min, cfg.x_max, x_shape)
        w = random_ints(rng, cfg.w_min, cfg.w_max, w_shape)
    elif kind == "extreme":
        x = rng.choice([cfg.x_min, cfg.x_max], size=x_shape)
        w = rng.choice([cfg.w_min, cfg.w_max], size=w_shape)
    else:
        raise ValueError(f"kind must be 'uniform' or 'extreme', not {kind!r}")
    return x.astype(np.int64), w.astype(np.int64)


# -- MAC array -------------------------------------------------------------------------------------


def _hit(target, w, x_min, x_max):
    """An input vector ``x`` in range with ``Σ x·w == target``, or ``None``."""
    x = np.zeros(len(w), dtype=object)
    remaining = int(target)
    for i in sorted(range(len(w)), key=lambda i: -abs(int(w[i]))):
        wi = int(w[i])
        if wi == 0:
            continue
        xi = min(max(remaining // wi, x_min), x_max)
        x[i] = xi
        remaining -= xi * wi
    return x if remaining == 0 else None


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


def mac_stimulus(cfg, seed, count):
    """Dot products of random lengths (1 to 4 beats), uniform and extreme operands, plus the
    boundary walks of :func:`boundary_dot_products`."""
    rng = np.random.default_rng(seed)
    dots = []
    for k in range(count):
        n_beats = int(rng.integers(1, 5))
        x, w = random_operands(cfg, rng,
                               ((n_beats * cfg.cols,), (cfg.rows, n_beats * cfg.cols)),
                               "uniform" if k % 2 else "extreme")
        dots.append((x, w))
    # All operands at the same extreme: largest positive and negative beat sums, long enough to
    # overflow a narrow accumulator.
    n_beats = 6
    for xv in (cfg.x_min, cfg.x_max):
        for wv in (cfg.w_min, cfg.w_max):
            dots.append((np.full(n_beats * cfg.cols, xv),
                         np.full((cfg.rows, n_beats * cfg.cols), wv)))
    dots += boundary_dot_products(cfg, rng)
    return dots


def dot_config(cfg, x):
    """The configuration of one dot product ``x`` alone: ``len(x)`` inputs, ``rows`` channels."""
    return cfg.replace(in_features=len(x), out_features=cfg.rows)


def dot_product_beats(cfg, dots):
    """The packed MAC-array input beats of the dot products ``dots`` (pairs ``(x, w)``, ``x`` of
    any whole number of beats, ``w`` of ``rows`` channels), one after the other."""
    return [beat for x, w in dots
            for beat in beats.mac_beats(dot_config(cfg, x), np.asarray(x)[None, :], w)]


def mac_weights(cfg, rng):
    """Weights: random rows, rows at the extremes, and rows that end in ±1 so that exact sums
    (overflow boundaries) can be reached."""
    w = random_ints(rng, cfg.w_min, cfg.w_max, (cfg.out_features, cfg.in_features))
    specials = [np.full(cfg.in_features, cfg.w_max), np.full(cfg.in_features, cfg.w_min)]
    ramp = np.full(cfg.in_features, cfg.w_max)
    ramp[-1] = 1
    specials.append(ramp)
    ramp = np.full(cfg.in_features, cfg.w_min)
    ramp[-1] = -1
    specials.append(ramp)
    for row, special in zip(range(cfg.out_features), specials):
        w[row] = special
    return w


def mac_inputs(cfg, w, rng, n_random=16):
    """Input vectors: random ones, every input at each extreme, the exact reachable extremes of
    every channel, and vectors whose dot product with some channel lands on (and one past) both
    accumulator boundaries."""
    vectors = [random_ints(rng, cfg.x_min, cfg.x_max, (n_random, cfg.in_features))]
    vectors.append(np.full((1, cfg.in_features), cfg.x_min))
    vectors.append(np.full((1, cfg.in_features), cfg.x_max))
    x_hi, x_lo = extreme_inputs(w, cfg.x_min, cfg.x_max)
    vectors += [x_hi[:4], x_lo[:4]]
    boundary = []
    for row in w[:4]:
        for target in (cfg.acc_max, cfg.acc_max + 1, cfg.acc_min, cfg.acc_min - 1,
                       cfg.acc_max + 2**cfg.acc_bits // 3):
            x = _hit(target, row, cfg.x_min, cfg.x_max)
            if x is not None:
                boundary.append(x)
    if boundary:
        vectors.append(np.array(boundary, dtype=object))
    x = np.concatenate([np.asarray(v, dtype=object) for v in vectors])
    return golden.check_inputs(cfg, x)


# -- requantizer -----------------------------------------------------------------------------------


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


def requant_lane_beats(cfg, lanes, rng):
    """Shuffle ``lanes`` (from :func:`requant_stimulus`) with ``rng`` (a :class:`random.Random`)
    into beats of ``rows`` lanes, padded to whole beats, with random overflow flags and ``last``
    bits; with a shared shift, lanes are sorted by shift and each beat takes its first lane's.

    Returns ``acc, M, B, S, flags`` (each ``(beats, rows)``) and ``last`` (``(beats,)``), as
    :func:`requant_cases` does.
    """
    lanes = lanes + lanes[:-len(lanes) % cfg.rows]      # pad to whole beats
    order = list(range(len(lanes)))
    rng.shuffle(order)
    lanes = [lanes[k] for k in order]
    if cfg.shared_shift:
        lanes.sort(key=lambda lane: lane[3])    # lanes of one beat share their shift
    groups, flags, last = [], [], []
    for k in range(0, len(lanes), cfg.rows):
        group = lanes[k:k + cfg.rows]
        if cfg.shared_shift:
            group = [(acc, m, b, group[0][3]) for acc, m, b, _ in group]
        groups.append(group)
        flags.append([rng.randint(0, 1) for _ in group])
        last.append(rng.randint(0, 1))
    acc, M, B, S = np.array(groups, dtype=object).transpose(2, 0, 1)
    return acc, M, B, S, np.array(flags, dtype=object), np.array(last, dtype=object)


def requant_cases(cfg, rng, n_random=64):
    """Per-beat requantization operands ``acc, M, B, S`` (each ``(beats, rows)``): random values,
    every operand at its extremes, and values where ``acc·M + B`` lands on ``-1``, ``-2^S``,
    ``-2^S - 1``, ``2^S - 1`` and on both clamp edges (and one past them)."""
    shape = (n_random, cfg.rows)
    acc = random_ints(rng, cfg.acc_min, cfg.acc_max, shape)
    M = random_ints(rng, cfg.m_min, cfg.m_max, shape)
    B = random_ints(rng, cfg.b_min, cfg.b_max, shape)
    S = random_ints(rng, 0, cfg.s_max, shape)
    rows = [(acc, M, B, S)]
    # Extremes of every operand.
    extremes = []
    for a in (cfg.acc_min, cfg.acc_max, 0, -1):
        for m in (cfg.m_min, cfg.m_max, 1, -1):
            for b in (cfg.b_min, cfg.b_max, 0):
                for s in (0, cfg.s_max):
                    extremes.append((a, m, b, s))
    # acc·M + B on the rounding and clamp edges: M = 1, B = 0 or small.
    for s in sorted({0, 1, min(cfg.s_max, 3), cfg.s_max}):
        for value in (-1, -(1 << s), -(1 << s) - 1, (1 << s) - 1,
                      cfg.y_min << s, (cfg.y_min << s) - 1, cfg.y_max << s,
                      (cfg.y_max + 1) << s, ((cfg.y_max + 1) << s) - 1):
            for b in (0, 1, -1):
                a = value - b
                if cfg.acc_min <= a <= cfg.acc_max and cfg.b_min <= b <= cfg.b_max:
                    extremes.append((a, 1, b, s))
    ext = np.array(extremes, dtype=object)
    count = -(-len(ext) // cfg.rows) * cfg.rows
    ext = np.concatenate([ext, np.zeros((count - len(ext), 4), dtype=object)])
    ext = ext.reshape(-1, cfg.rows, 4)
    rows.append(tuple(ext[:, :, k] for k in range(4)))
    acc, M, B, S = (np.concatenate([np.asarray(r[k], dtype=object) for r in rows])
                    for k in range(4))
    if cfg.shared_shift:
        S = np.repeat(S[:, :1], cfg.rows, axis=1)
    flags = random_ints(rng, 0, 1, acc.shape)
    last = random_ints(rng, 0, 1, (len(acc),))
    return acc, M, B, S, flags, last


# -- layer engine ----------------------------------------------------------------------------------


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


def engine_params(cfg, w, rng):
    """Requantization parameters that spread outputs over the whole output range: ``M / 2^S``
    maps the reachable accumulator range (as far as ``acc_bits`` holds it) to 1.5 times
    ``[y_min, y_max]``, centred, with random signs, so that both clamp edges and the inside are
    hit. ``S`` is the largest shift that keeps ``M`` within ``m_bits`` (shared: for all)."""
    lo, hi = reachable_range(w, cfg.x_min, cfg.x_max)
    lo = [max(v, cfg.acc_min) for v in lo]
    hi = [min(v, cfg.acc_max) for v in hi]
    ratio = [1.5 * (cfg.y_max - cfg.y_min + 1) / max(h - l, 1) for l, h in zip(lo, hi)]
    shifts = [int(np.clip(np.floor(np.log2(cfg.m_max / r)), 0, cfg.s_max)) for r in ratio]
    if cfg.shared_shift:
        shifts = [min(shifts)] * len(shifts)
    M, B, S = [], [], []
    for c in range(cfg.out_features):
        s = shifts[c]
        m = int(np.clip(round(ratio[c] * (1 << s)), 1, cfg.m_max))
        if rng.random() < 0.5:
            m = -m
        centre = ((cfg.y_min + cfg.y_max) << s) // 2
        b = int(np.clip(centre - (lo[c] + hi[c]) // 2 * m, cfg.b_min, cfg.b_max))
        M.append(m)
        B.append(b)
        S.append(s)
    return golden.check_requant(cfg, M, B, S)
