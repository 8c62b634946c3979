"""How many shift and multiplier bits does exact BN requantization need?

Compares, on the same channels and the same target ``clamp(round_half_up(k·acc + b))`` over every
reachable accumulator value:

- the exact solver (``qmac.solver.solve``): smallest ``S``, then smallest ``|M|``, per channel and
  with one shared ``S``;
- naive rounding: ``M = round(k·2^S)``, ``B = floor((b + 1/2)·2^S)`` at the smallest ``S`` that
  happens to be exact;
- TFLite's default integer output stage (32-bit Q0.31 multiplier, bias rounded to accumulator
  units, double rounding): how many reachable accumulator values it gets wrong.

Two experiments:

(a) 1,000 random channels: unsigned 8-bit activations ``[0, 255]``, 8-bit weights (standard
    normal floats quantized per channel, narrow range), ``K = 64``; the reachable range is exact
    from the weights (``docs/arithmetic.md``); ``k = ±10^U(-4, -2)`` (sign 50/50),
    ``b ~ U(-64, 64)``; signed 8-bit output ``[-128, 127]``.
(b) A real BN layer: a 64-64-10 MLP with batch norm and ReLU, trained in NumPy on scikit-learn's
    digits data set; its hidden layer (8-bit unsigned inputs ``s_x = 1/255``, 8-bit weights,
    ReLU output ``[0, 255]`` with ``s_y`` calibrated on the training set) is folded with
    ``qmac.fold`` and solved. Needs scikit-learn (``pip install scikit-learn``); without it (b) is
    skipped with a message.

Every solver and naive solution is re-checked with ``qmac.verify.verify``. Run::

    python bench/bn_bits.py [--channels 1000] [--seed 0] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from qmac import accumulator
from qmac.fold import fold_layer, quantize_weights
from qmac.baselines import naive_requant, tflite_mismatches
from qmac.hw.config import signed_width
from qmac.sim.golden import requantize_values
from qmac.solver import solve
from qmac.verify import verify


LIMITS = dict(m_bits=48, b_bits=64, s_max=60)       # generous: report what is needed


def reachable_range(q, x_min, x_max):
    """Exact accumulator range per channel (:func:`qmac.accumulator.reachable_range`), as
    int64 arrays so that channels can be picked by index."""
    lo, hi = accumulator.reachable_range(q, x_min, x_max)
    return np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64)


def measure(name, k, b, acc_lo, acc_hi, y_min, y_max, sample_exhaustive):
    """Run the solver and the baselines on one set of channels; return a dict of results."""
    timings = {}
    start = time.perf_counter()
    exact = solve(k, b, acc_lo, acc_hi, y_min=y_min, y_max=y_max, **LIMITS)
    timings["solver_s"] = time.perf_counter() - start
    start = time.perf_counter()
    shared = solve(k, b, acc_lo, acc_hi, y_min=y_min, y_max=y_max, shared_shift=True, **LIMITS)
    timings["shared_s"] = time.perf_counter() - start
    start = time.perf_counter()
    naive = naive_requant(k, b, acc_lo, acc_hi, y_min=y_min, y_max=y_max, s_limit=LIMITS["s_max"])
    timings["naive_s"] = time.perf_counter() - start
    start = time.perf_counter()
    encoding, mismatches = tflite_mismatches(k, b, acc_lo, acc_hi, y_min=y_min, y_max=y_max)
    timings["tflite_s"] = time.perf_counter() - start

    start = time.perf_counter()
    checks = {
        "solver": verify(k, b, acc_lo, acc_hi, exact.M, exact.B, exact.S, y_min=y_min,
                         y_max=y_max, mode="runs"),
        "shared": verify(k, b, acc_lo, acc_hi, shared.M, shared.B, shared.S, y_min=y_min,
                         y_max=y_max, mode="runs"),
    }
    exact_naive = np.flatnonzero(naive.exact)
    checks["naive"] = verify(k[exact_naive], b[exact_naive], acc_lo[exact_naive],
                             acc_hi[exact_naive], naive.M[exact_naive], naive.B[exact_naive],
                             naive.S[exact_naive], y_min=y_min, y_max=y_max, mode="runs")
    picked = np.asarray(sample_exhaustive)
    checks["solver_window"] = verify(k[picked], b[picked], acc_lo[picked], acc_hi[picked],
                                     exact.M[picked], exact.B[picked], exact.S[picked],
                                     y_min=y_min, y_max=y_max, mode="auto")
    timings["verify_s"] = time.perf_counter() - start
    for what, check in checks.items():
        if not check:
            raise SystemExit(f"{name}: {what} solution failed verification: "
                             f"{check.counterexamples[:3]}")

    def stats(values):
        values = [int(v) for v in values]
        return {"median": statistics.median(values), "max": max(values), "min": min(values)}

    solver_m_bits = np.array([signed_width(m) for m in exact.M])
    saved = naive.S[naive.exact] - exact.S[naive.exact]
    tflite_S = 31 - encoding.shift                    # total right shift of the Q0.31 product
    sizes = (np.asarray(acc_hi, dtype=np.int64) - np.asarray(acc_lo, dtype=np.int64) + 1)
    return {
        "name": name,
        "channels": len(k),
        "reachable_values": int(sizes.sum()),
        "solver": {"S": stats(exact.S), "m_bits": stats(signed_width(m) for m in exact.M),
                   "b_bits": stats(signed_width(v) for v in exact.B),
                   "verified_values": int(checks["solver"].checked.sum()),
                   "exhaustive_or_window_checked_channels": len(picked),
                   "exhaustive_or_window_checked_values":
                       int(checks["solver_window"].checked.sum())},
        "shared": {"S": int(shared.S[0]), "m_bits": shared.m_bits, "b_bits": shared.b_bits},
        "naive": {"exact_channels": int(naive.exact.sum()),
                  "S": stats(naive.S[naive.exact]), "m_bits": stats(naive.m_bits[naive.exact]),
                  "b_bits": stats(naive.b_bits[naive.exact])},
        "tflite": {"m_bits": 32, "S": stats(tflite_S),
                   "mismatched_values": int(mismatches.sum()),
                   "channels_with_mismatch": int((mismatches > 0).sum()),
                   "max_mismatches_in_a_channel": int(mismatches.max())},
        "ratio_solver_over_naive": {
            "median_S": float(np.median(exact.S[naive.exact]) / np.median(naive.S[naive.exact])),
            "median_m_bits": float(np.median(solver_m_bits[naive.exact])
                                   / np.median(naive.m_bits[naive.exact])),
            "sum_m_bits": float(solver_m_bits[naive.exact].sum()
                                / naive.m_bits[naive.exact].sum()),
        },
        "S_saved_over_naive": {"mean": float(saved.mean()), "max": int(saved.max()),
                               "channels_fewer": int((saved > 0).sum()),
                               "channels_more": int((saved < 0).sum())},
        "seconds": timings,
    }


def random_channels(count, seed):
    rng = np.random.default_rng(seed)
    q, _ = quantize_weights(rng.standard_normal((count, 64)), 8)
    acc_lo, acc_hi = reachable_range(q, 0, 255)
    k = rng.choice([-1.0, 1.0], size=count) * 10.0 ** rng.uniform(-4, -2, size=count)
    b = rng.uniform(-64, 64, size=count)
    return k, b, acc_lo, acc_hi


# -- (b) a real BN layer ----------------------------------------------------------------------

def train_digits_mlp(seed, epochs=30, hidden=64, batch=64, lr=1e-2):
    """Train 64-hidden(BN, ReLU)-10 on the digits data set with Adam; return the parameters."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    X = digits.data / 16.0
    labels = digits.target
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    split = int(0.8 * len(X))
    train, test = order[:split], order[split:]
    p = {"W1": rng.standard_normal((hidden, 64)) * np.sqrt(2 / 64), "b1": np.zeros(hidden),
         "gamma": np.ones(hidden), "beta": np.zeros(hidden),
         "W2": rng.standard_normal((10, hidden)) * np.sqrt(2 / hidden), "b2": np.zeros(10)}
    mu, var, eps, momentum = np.zeros(hidden), np.ones(hidden), 1e-5, 0.1
    m = {key: np.zeros_like(v) for key, v in p.items()}
    v2 = {key: np.zeros_like(v) for key, v in p.items()}
    step = 0
    for _ in range(epochs):
        for start in range(0, len(train), batch):
            idx = train[start:start + batch]
            x, y = X[idx], labels[idx]
            z = x @ p["W1"].T + p["b1"]
            batch_mu, batch_var = z.mean(0), z.var(0)
            z_hat = (z - batch_mu) / np.sqrt(batch_var + eps)
            h = p["gamma"] * z_hat + p["beta"]
            a = np.maximum(h, 0)
            logits = a @ p["W2"].T + p["b2"]
            logits -= logits.max(1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(1, keepdims=True)
            n = len(idx)
            d_logits = prob.copy()
            d_logits[np.arange(n), y] -= 1
            d_logits /= n
            grads = {"W2": d_logits.T @ a, "b2": d_logits.sum(0)}
            d_h = (d_logits @ p["W2"]) * (h > 0)
            grads["gamma"] = (d_h * z_hat).sum(0)
            grads["beta"] = d_h.sum(0)
            d_zhat = d_h * p["gamma"]
            d_z = (d_zhat - d_zhat.mean(0) - z_hat * (d_zhat * z_hat).mean(0)) \
                / np.sqrt(batch_var + eps)
            grads["W1"] = d_z.T @ x
            grads["b1"] = d_z.sum(0)
            step += 1
            for key in p:
                m[key] = 0.9 * m[key] + 0.1 * grads[key]
                v2[key] = 0.999 * v2[key] + 0.001 * grads[key] ** 2
                m_hat = m[key] / (1 - 0.9 ** step)
                v_hat = v2[key] / (1 - 0.999 ** step)
                p[key] -= lr * m_hat / (np.sqrt(v_hat) + 1e-8)
            mu = (1 - momentum) * mu + momentum * batch_mu
            var = (1 - momentum) * var + momentum * batch_var * n / (n - 1)
        rng.shuffle(train)
    p.update(mu=mu, var=var, eps=eps)
    return p, X, labels, train, test


def float_forward(p, x):
    z = x @ p["W1"].T + p["b1"]
    h = p["gamma"] * (z - p["mu"]) / np.sqrt(p["var"] + p["eps"]) + p["beta"]
    return np.maximum(h, 0)


def digits_layer(seed):
    """Fold and quantize the trained hidden layer; return the channels and an accuracy check."""
    p, X, labels, train, test = train_digits_mlp(seed)
    hidden_train = float_forward(p, X[train])
    s_x = 1 / 255
    s_y = float(hidden_train.max()) / 255
    layer = fold_layer(p["W1"], p["b1"], p["gamma"], p["beta"], p["mu"], p["var"], p["eps"],
                       s_x=s_x, s_y=s_y, w_bits=8)
    acc_lo, acc_hi = reachable_range(layer.q, 0, 255)
    float_acc = float(np.mean(np.argmax(float_forward(p, X[test]) @ p["W2"].T + p["b2"], 1)
                              == labels[test]))

    def integer_accuracy(M, B, S):
        x_int = np.clip(np.round(X[test] * 255), 0, 255).astype(np.int64)
        acc = x_int @ layer.q.T
        y = requantize_values(acc, M, B, S, y_min=0, y_max=255)
        logits = (y * s_y) @ p["W2"].T + p["b2"]
        return float(np.mean(np.argmax(logits, 1) == labels[test]))

    return layer.k, layer.b, acc_lo, acc_hi, float_acc, integer_accuracy


# -- report -----------------------------------------------------------------------------------

def table(results):
    header = (f"{'experiment':<28} {'method':<26} {'S med':>6} {'S max':>6} {'m_bits med':>10} "
              f"{'m_bits max':>10} {'b_bits max':>10} {'wrong values':>13} {'wrong ch.':>9}")
    lines = [header, "-" * len(header)]
    for r in results:
        first = f"{r['name']} ({r['channels']} ch.)"
        s, n, t, sh = r["solver"], r["naive"], r["tflite"], r["shared"]
        rows = [
            ("exact solver", s["S"]["median"], s["S"]["max"], s["m_bits"]["median"],
             s["m_bits"]["max"], s["b_bits"]["max"], 0, 0),
            ("exact solver, shared S", sh["S"], sh["S"], "-", sh["m_bits"], sh["b_bits"], 0, 0),
            (f"naive rounding ({n['exact_channels']} ex.)", n["S"]["median"], n["S"]["max"],
             n["m_bits"]["median"], n["m_bits"]["max"], n["b_bits"]["max"], 0, 0),
            ("TFLite double rounding", t["S"]["median"], t["S"]["max"], 32, 32, 32,
             t["mismatched_values"], t["channels_with_mismatch"]),
        ]
        for i, (method, *cells) in enumerate(rows):
            label = first if i == 0 else ""
            lines.append(f"{label:<28} {method:<26} {cells[0]!s:>6} {cells[1]!s:>6} "
                         f"{cells[2]!s:>10} {cells[3]!s:>10} {cells[4]!s:>10} {cells[5]:>13,} "
                         f"{cells[6]:>9}")
        ratio, saved = r["ratio_solver_over_naive"], r["S_saved_over_naive"]
        lines.append(f"{'':<28} solver/naive: median S {ratio['median_S']:.3f}, median m_bits "
                     f"{ratio['median_m_bits']:.3f}, sum of m_bits {ratio['sum_m_bits']:.3f}; "
                     f"S saved: mean {saved['mean']:.2f}, max {saved['max']} bits, "
                     f"{saved['channels_fewer']} channels fewer, {saved['channels_more']} more")
        lines.append(f"{'':<28} reachable accumulator values: {r['reachable_values']:,}; "
                     f"solver verified at {r['solver']['verified_values']:,} run ends, and "
                     f"{r['solver']['exhaustive_or_window_checked_values']:,} values of "
                     f"{r['solver']['exhaustive_or_window_checked_channels']} channels one by "
                     f"one (every reachable value up to 2^20 per channel, else the whole "
                     f"unclamped window and the clamp regions' ends)")
        lines.append("")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args(argv)
    started = time.perf_counter()

    results = []
    k, b, acc_lo, acc_hi = random_channels(args.channels, args.seed)
    sample = np.random.default_rng(args.seed + 1).choice(args.channels,
                                                         size=min(10, args.channels),
                                                         replace=False)
    results.append(measure("(a) random", k, b, acc_lo, acc_hi, -128, 127, sample))

    notes = []
    try:
        import sklearn  # noqa: F401
    except ImportError:
        notes.append("(b) skipped: scikit-learn is not installed "
                     "(pip install scikit-learn); the core qmac package does not need it")
    else:
        k, b, acc_lo, acc_hi, float_acc, integer_accuracy = digits_layer(args.seed)
        result = measure("(b) digits BN layer", k, b, acc_lo, acc_hi, 0, 255,
                         np.arange(len(k)))
        exact = solve(k, b, acc_lo, acc_hi, y_min=0, y_max=255, **LIMITS)
        result["test_accuracy"] = {"float": float_acc,
                                   "integer_hidden_layer": integer_accuracy(exact.M, exact.B,
                                                                            exact.S)}
        results.append(result)
        notes.append(f"(b) test accuracy: float {float_acc:.4f}; with the hidden layer in "
                     f"integers (8-bit inputs and weights, exact requantization) "
                     f"{result['test_accuracy']['integer_hidden_layer']:.4f}")

    print(__doc__.splitlines()[0])
    print("Target: clamp(round_half_up(k*acc + b)) on every reachable accumulator value; "
          "S = right shift, m_bits/b_bits = signed widths of M and B; TFLite's S is 31 - shift.")
    print()
    print(table(results))
    for note in notes:
        print(note)
    elapsed = time.perf_counter() - started
    print(f"total time {elapsed:.1f} s")
    document = {"results": results, "notes": notes, "seconds": elapsed,
                "limits": LIMITS, "seed": args.seed}
    args.json.write_text(json.dumps(document, indent=2, default=float) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
