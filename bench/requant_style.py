"""Multiply versus threshold requantizer, measured with the ``qmac synth`` flow.

    python bench/requant_style.py [--out-bits 2 4 8] [--targets ice40-up5k ecp5-25k]
                                  [--styles multiply threshold] [--seed 1] [--no-blocks]
                                  [--json OUT]

One small layer (K=64, N=8, 4×4 array, uint8 × int8, acc_bits 20) with the parameters of one
random float BN layer: the solver's ``(M, B, S)`` for the multiply engine, whose ``m_bits``,
``b_bits`` and ``s_max`` are the narrowest that hold them, and the exact thresholds of the same
target for the threshold engine. Both engines get the same multiplier plan (the multiply
engine's ``auto`` plan against the part's DSPs), so the MAC arrays are identical and the
difference is the requantizer and its parameter memory. Every design sits in the fair-timing
harness; Fmax is nextpnr's, one seed. A design that does not fit is reported with its Yosys figures.
Every run uses ``qmac synth``'s own Yosys script (default ``abc9`` mapping on both families);
a tool failure is reported in its row and the run goes on. (An earlier ``--noabc9`` option is
gone: Yosys 0.70's ``synth_ecp5`` accepts ``-noabc9`` but still runs ``abc9``, so it changed
nothing, and the threshold engines synthesize without it.)

Prints one table: per target and ``out_bits``, the engine's LUT, carry, FF, DSP, BRAM, iCE40 logic
cells (LUT, carry and FF packed, nextpnr's count) and Fmax and the
requantizer block's own LUT, FF and DSP and the parameter memory and control's LUTs
(hierarchical synthesis), for both styles.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from qmac.accumulator import reachable_range
from qmac.hw.config import LayerConfig
from qmac.hw.engine import LayerEngine
from qmac.hw.multiply import plan_multipliers
from qmac.solver import solve_layer
from qmac.synth import TARGETS, SynthError, implement
from qmac.thresholds import layer_thresholds


def layer(out_bits, seed=0):
    """The configuration, weights, (M, B, S) and thresholds of one random float layer."""
    cfg = LayerConfig(name="rq", in_features=64, out_features=8, rows=4, cols=4, a_bits=8,
                      w_bits=8, acc_bits=20, m_bits=32, b_bits=48, s_max=48, out_bits=out_bits)
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, size=(cfg.N, cfg.K))
    lo, hi = reachable_range(w, cfg.x_min, cfg.x_max)
    lo, hi = np.asarray(lo), np.asarray(hi)
    # A BN scale that maps a quarter of the reachable range onto the output levels.
    k = (cfg.y_max - cfg.y_min + 1) / (0.25 * (hi - lo)) * rng.uniform(0.7, 1.3, cfg.N)
    k[-1] = -k[-1]                                   # one decreasing channel
    b = rng.uniform(-0.5, 0.5, cfg.N) * (cfg.y_max - cfg.y_min) \
        + (cfg.y_max + cfg.y_min) / 2 - k * (lo + hi) / 2
    requant = solve_layer(cfg, k, b, lo, hi)
    # The multiply unit at the narrowest widths that hold this solution.
    cfg = cfg.replace(m_bits=requant.m_bits, b_bits=requant.b_bits, s_max=requant.s_needed)
    table = layer_thresholds(k, b, lo, hi, y_min=cfg.y_min, y_max=cfg.y_max)
    return cfg, w, requant, table


def measure(cfg, w, requant, table, target, style, seed, workdir, blocks=True):
    plan = plan_multipliers(cfg, family=target.family, dsp_budget=target.available["dsps"])
    if style == "multiply":
        engine = LayerEngine(cfg, w, requant.M, requant.B, requant.S, mul_plan=plan)
    else:
        engine = LayerEngine(cfg.replace(requant_style="threshold"), w, thresholds=table,
                             mul_plan=plan)
    start = time.perf_counter()
    result = implement(engine, target, workdir, seed=seed, blocks=blocks, allow_unfit=True,
                       progress=lambda message: None)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["latency"] = engine.latency
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-bits", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--targets", nargs="+", default=["ice40-up5k", "ecp5-25k"],
                        choices=sorted(TARGETS))
    parser.add_argument("--styles", nargs="+", default=["multiply", "threshold"],
                        choices=["multiply", "threshold"])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-blocks", action="store_true",
                        help="skip the hierarchical synthesis (no requantizer columns)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    header = (f"{'target':<11} {'out':>3} {'style':<9} {'LUT':>6} {'carry':>5} {'FF':>6} "
              f"{'DSP':>3} {'BRAM':>4} {'LC':>5} "
              f"{'Fmax':>6} {'lat':>3} | {'rq LUT':>6} {'rq FF':>6} {'rq DSP':>6} "
              f"{'mem LUT':>7} {'fits':>4}")
    print(header)
    for target_name in args.targets:
        target = TARGETS[target_name]
        for out_bits in args.out_bits:
            cfg, w, requant, table = layer(out_bits)
            for style in args.styles:
                with tempfile.TemporaryDirectory(prefix=f"rq-{style}-") as folder:
                    try:
                        r = measure(cfg, w, requant, table, target, style, args.seed,
                                    Path(folder), blocks=not args.no_blocks)
                    except SynthError as error:
                        first = str(error).splitlines()[0]
                        print(f"{target_name:<11} {out_bits:>3} {style:<9} failed: {first}",
                              flush=True)
                        rows.append({"target": target_name, "out_bits": out_bits,
                                     "style": style, "error": str(error)})
                        continue
                blocks = r.get("blocks", {})
                rq = blocks.get("requantizer", {})
                mem = blocks.get("memories_control", {})
                row = {"target": target_name, "out_bits": out_bits, "style": style,
                       "luts": r["luts"], "ffs": r["ffs"], "dsps": r["dsps"],
                       "brams": r["brams"], "logic_cells": r.get("logic_cells"),
                       "carries": r["carries"], "fmax_mhz": r["fmax_mhz"],
                       "latency": r["latency"], "fits": r["fits"],
                       "rq_luts": rq.get("luts"), "rq_ffs": rq.get("ffs"),
                       "rq_dsps": rq.get("dsps"), "mem_luts": mem.get("luts"),
                       "seconds": r["seconds"]}
                rows.append(row)
                fmax = "-" if row["fmax_mhz"] is None else f"{row['fmax_mhz']:.1f}"
                print(f"{target_name:<11} {out_bits:>3} {style:<9} {row['luts']:>6} "
                      f"{row['carries']:>5} {row['ffs']:>6} {row['dsps']:>3} {row['brams']:>4} "
                      f"{row['logic_cells']!s:>5} "
                      f"{fmax:>6} "
                      f"{row['latency']:>3} | "
                      f"{row['rq_luts']!s:>6} {row['rq_ffs']!s:>6} {row['rq_dsps']!s:>6} "
                      f"{row['mem_luts']!s:>7} {'yes' if row['fits'] else 'no':>4}",
                      flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
