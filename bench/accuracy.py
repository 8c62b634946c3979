"""Accuracy of the digits network against accumulator width, operand width and strategy.

Prints two tables, each with the float accuracy beside it:

(a) integer (golden-model) accuracy against ``acc_bits`` in {32, 20, 16, 14, 12, 10}, for operand
    widths 8/8, 6/6 and 4/4 and each strategy (databound, exact, l1); "--" where the strategy
    cannot fit the widths into the accumulator;
(b) post-training quantization of the plain and the gradient-L1-regularized checkpoints to 8, 6,
    5 and 4 bits (activations and weights, 32-bit accumulators, exact strategy);
(c) the whole test split through the RTL of the committed network (16-bit accumulators): the
    mismatches against the golden model in every layer, and the wall time.

The test split of digits is small (360 images: 0.28% per image), so with PyTorch installed both
tables are repeated over several training seeds (``--seeds``; networks trained by
``qmac.train`` on the same split) and reported as mean ± standard deviation; without PyTorch only
the committed checkpoints are scored. ::

    python bench/accuracy.py [--seeds 5] [--quick] [--csv accuracy.csv]
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qmac.digits import INPUT_MAX, INPUT_MIN, INPUT_SCALE, load_digits  # noqa: E402
from qmac.network import forward, load_network  # noqa: E402
from qmac.quantize import STRATEGIES, QuantizeError, quantize_network  # noqa: E402

ACC_BITS = (32, 20, 16, 14, 12, 10)
OPERANDS = (8, 6, 4)
PTQ_BITS = (8, 6, 5, 4)
GRAD_L1 = 0.005     # the lambda of the committed regularized checkpoint


def float_accuracy(network, data):
    return float((forward(network, data.test_x * INPUT_SCALE).argmax(1) == data.test_y).mean())


def int_accuracy(network, data, **kwargs):
    try:
        qnet = quantize_network(network, data.train_x, **kwargs)
    except QuantizeError:
        return None
    return float((qnet.predict(data.test_x) == data.test_y).mean())


def networks(seeds):
    """(plain, regularized) float networks: the committed pair, or freshly trained per seed."""
    folder = resources.files("qmac").joinpath("data")
    if not seeds:
        return [(load_network(folder / "digits_mlp.json"),
                 load_network(folder / "digits_mlp_gl1.json"))]
    from qmac.network import from_torch
    from qmac.train import train
    data = load_digits()
    pairs = []
    for seed in range(seeds):
        pair = []
        for grad_l1 in (0.0, GRAD_L1):
            model = train(data.train_x, data.train_y, seed=seed, grad_l1=grad_l1)
            pair.append(from_torch(model, input_scale=INPUT_SCALE, input_min=INPUT_MIN,
                                   input_max=INPUT_MAX))
        pairs.append(tuple(pair))
        print(f"trained seed {seed}", file=sys.stderr)
    return pairs


def cell(values):
    """Mean ± standard deviation in %; "(k/n)" when only k of n seeds fit; "--" when none."""
    fitted = [v for v in values if v is not None]
    if not fitted:
        return "--"
    share = "" if len(fitted) == len(values) else f" ({len(fitted)}/{len(values)})"
    if len(fitted) == 1:
        return f"{100 * fitted[0]:.2f}{share}"
    return f"{100 * np.mean(fitted):.2f}±{100 * np.std(fitted):.2f}{share}"


def rtl_run(data):
    """The committed plain checkpoint at 16-bit accumulators (l1, widest operands), the whole
    test split through its Verilog under Verilator, every layer compared with the golden model."""
    from qmac.netflow import _network_build_dir, golden_outputs, simulate_network_rtl
    from qmac.quantize import choose_widths
    network = load_network(resources.files("qmac").joinpath("data/digits_mlp.json"))
    a_bits, w_bits, qnet = choose_widths(network, data.train_x, acc_bits=16, strategy="l1")
    layers = [(q.cfg, q.weights, q.M, q.B, q.S) for q in qnet.layers]
    started = time.perf_counter()
    got, run = simulate_network_rtl(layers, data.test_x, build_dir=_network_build_dir(
        layers, None), log=lambda text: print(text, file=sys.stderr))
    wall = time.perf_counter() - started
    want = golden_outputs(layers, data.test_x)
    mismatches = sum(int(np.sum(np.asarray(g != np.asarray(w, dtype=np.int64), dtype=bool)))
                     for g, w in zip(got, want))
    total = sum(g.size for g in got)
    accuracy = float((np.argmax(got[-1], axis=1) == data.test_y).mean())
    print(f"\n(c) RTL: the committed network at acc_bits 16 (l1, {a_bits}/{w_bits}), "
          f"{len(data.test_y)} test images through its Verilog under Verilator: "
          f"{mismatches} mismatches in {total} outputs of every layer "
          f"({100 * (1 - mismatches / total):.2f}% bit-exact), RTL accuracy {100 * accuracy:.2f}%; "
          f"{run.cycles} cycles, simulation {run.seconds:.1f} s, wall time with the build "
          f"{wall:.1f} s")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None,
                        help="train this many seeds (needs PyTorch; default 5 when PyTorch is "
                             "installed, else 0: the committed checkpoints only)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer cells: acc_bits 32, 16, 12 and operands 8, 4")
    parser.add_argument("--csv", type=Path, help="also write every cell as CSV")
    parser.add_argument("--no-rtl", action="store_true",
                        help="skip the run of the full test split through the network's RTL")
    args = parser.parse_args(argv)
    if args.seeds is None:
        try:
            import torch  # noqa: F401
            args.seeds = 5
        except ImportError:
            args.seeds = 0
    acc_list = (32, 16, 12) if args.quick else ACC_BITS
    operands = (8, 4) if args.quick else OPERANDS
    started = time.perf_counter()
    data = load_digits()
    pairs = networks(args.seeds)
    floats = [float_accuracy(plain, data) for plain, _ in pairs]
    rows = []
    source = (f"{args.seeds} training seeds, mean±std" if args.seeds else
              "committed checkpoint")
    print(f"\n(a) integer accuracy (%) of the plain network, 360 test images, {source}; "
          f"float: {cell(floats)}")
    header = f"{'acc_bits':>8} " + " ".join(f"{f'{s} {b}/{b}':>21}" for s in STRATEGIES
                                            for b in operands)
    print(header)
    for acc_bits in acc_list:
        cells = []
        for strategy in STRATEGIES:
            for bits in operands:
                values = [int_accuracy(plain, data, acc_bits=acc_bits, a_bits=bits,
                                       w_bits=bits, strategy=strategy) for plain, _ in pairs]
                cells.append(cell(values))
                rows.append({"table": "a", "acc_bits": acc_bits, "strategy": strategy,
                             "bits": bits, "values": values})
        print(f"{acc_bits:>8} " + " ".join(f"{c:>21}" for c in cells), flush=True)
    print(f"\n(b) post-training quantization, accuracy (%), acc_bits 32, exact strategy, "
          f"{source}")
    print(f"{'model':<24} {'float':>12} " + " ".join(f"{f'{b}-bit':>12}" for b in PTQ_BITS))
    for label, index in (("plain", 0), (f"gradient-L1 (λ={GRAD_L1})", 1)):
        nets = [pair[index] for pair in pairs]
        cells = [cell([float_accuracy(n, data) for n in nets])]
        for bits in PTQ_BITS:
            values = [int_accuracy(n, data, acc_bits=32, a_bits=bits, w_bits=bits,
                                   strategy="exact") for n in nets]
            cells.append(cell(values))
            rows.append({"table": "b", "model": label, "bits": bits, "values": values})
        print(f"{label:<24} " + " ".join(f"{c:>12}" for c in cells), flush=True)
    if not args.no_rtl:
        rtl_run(data)
    print(f"\ntargets: 16-bit accumulators within 1% of float; the smallest accumulator within "
          f"1% of float; the regularized model ahead at 4 bits. ({time.perf_counter() - started:.0f}"
          f" s)")
    if args.csv:
        with open(args.csv, "w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["table", "model", "acc_bits", "strategy", "bits", "mean", "std",
                             "values"])
            for row in rows:
                values = [v for v in row["values"] if v is not None]
                writer.writerow([row["table"], row.get("model", "plain"),
                                 row.get("acc_bits", 32), row.get("strategy", "exact"),
                                 row["bits"], np.mean(values) if values else "",
                                 np.std(values) if values else "",
                                 " ".join("--" if v is None else f"{v:.4f}"
                                          for v in row["values"])])
    return 0


if __name__ == "__main__":
    sys.exit(main())
