"""Stimulus for the block tests: random vectors plus the corner cases of the arithmetic contract.

Every generator takes a :class:`hw.config.LayerConfig` and a seeded :class:`numpy.random.
Generator`, and returns plain integer arrays; expected values always come from the golden model.
"""

import numpy as np

from qmac.accumulator import extreme_inputs, reachable_range
from qmac.sim import golden


def random_ints(rng, lo, hi, shape):
    """Uniform integers in ``[lo, hi]``, exact for any width (object arrays past int64)."""
    lo, hi = int(lo), int(hi)
    if hi - lo < 2**62 and -2**62 < lo and hi < 2**62:
        return rng.integers(lo, hi, size=shape, endpoint=True)
    count = int(np.prod(shape))
    span = hi - lo + 1
    values = [lo + int.from_bytes(rng.bytes(16), "little") % span for _ in range(count)]
    return np.array(values, dtype=object).reshape(shape)


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
