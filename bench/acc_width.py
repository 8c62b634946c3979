"""Issue 8, target 6: does a narrower accumulator pay? The example-shaped engine with 4-bit
operands and LUT multipliers, and its bare MAC array, synthesized with ``acc_bits`` 16 and 32.

The example layer (``examples/float_layer.npz``) is folded again with 4-bit weights and 4-bit
unsigned inputs (``s_x = 1/15``), and its requantization is solved again for each accumulator
width (:func:`qmac.solver.solve_layer`), so both engines compute the same exact layer.

Run: ``python bench/acc_width.py [--targets ice40-up5k ecp5-25k] [--place] [--json OUT]``.
Prints LUT, FF, carry, DSP per design and the saving ``1 - (LUT+FF)(16) / (LUT+FF)(32)``.
Area is Yosys's (seed-independent); ``--place`` adds nextpnr's Fmax for one seed.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from qmac.accumulator import reachable_range
from qmac.files import load_config
from qmac.fold import fold_layer
from qmac.hw.mac_array import MacArray
from qmac.hw.engine import LayerEngine
from qmac.hw.multiply import plan_multipliers, plan_packed
from qmac.solver import solve_layer
from qmac.synth import TARGETS, SynthError, implement

ROOT = Path(__file__).resolve().parent.parent


def four_bit_layer(acc_bits, mul_style="lut"):
    """``(cfg, weights, M, B, S)``: the example layer at 4-bit operands and ``acc_bits``
    (``mul_style`` ``"pack"`` gives an ``"auto"`` configuration: the plan is made apart)."""
    if mul_style == "pack":
        mul_style = "auto"
    base = load_config(ROOT / "examples" / "layer.toml")
    f = np.load(ROOT / "examples" / "float_layer.npz")
    s_x = 1 / 15
    layer = fold_layer(f["W"], f["bias"], f["gamma"], f["beta"], f["mu"], f["var"], float(f["eps"]),
                       s_x=s_x, s_y=float(f["s_y"]), w_bits=4)
    draft = base.replace(a_bits=4, w_bits=4, acc_bits=acc_bits, mul_style=mul_style,
                         m_bits=32, b_bits=48, s_max=40)
    lo, hi = reachable_range(layer.q, draft.x_min, draft.x_max)
    requant = solve_layer(draft, layer.k, layer.b, lo, hi)
    cfg = draft.replace(m_bits=requant.m_bits, b_bits=requant.b_bits, s_max=requant.s_needed)
    return cfg, layer.q.astype(np.int64), requant.M, requant.B, requant.S


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["ice40-up5k", "ecp5-25k"])
    parser.add_argument("--acc-bits", nargs="+", type=int, default=[16, 32])
    parser.add_argument("--place", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["engine", "array"], default=None)
    parser.add_argument("--mul-style", default="lut", choices=["lut", "auto", "pack"],
                        help="MAC multipliers: all LUT (requantizer too), the part's 'auto' "
                             "plan, or 'pack' (two products per DSP, requantizer in LUTs)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rows = []
    quiet = lambda message: None  # noqa: E731
    for target_name in args.targets:
        target = TARGETS[target_name]
        for design in ("engine", "array"):
            if args.only and design != args.only:
                continue
            for acc_bits in args.acc_bits:
                cfg, w, M, B, S = four_bit_layer(acc_bits, args.mul_style)
                if args.mul_style == "pack":
                    plan = plan_packed(cfg, requant_style="lut")
                elif args.mul_style == "auto":
                    plan = plan_multipliers(cfg, family=target.family,
                                            dsp_budget=target.available["dsps"])
                else:
                    plan = plan_multipliers(cfg)
                dut = LayerEngine(cfg, w, M, B, S, mul_plan=plan) if design == "engine" else \
                    MacArray(cfg, mul_plan=plan)
                with tempfile.TemporaryDirectory() as tmp:
                    try:
                        r = implement(dut, target, tmp, seed=args.seed, place=args.place,
                                      progress=quiet, blocks=True, allow_unfit=True)
                    except SynthError as error:
                        # Yosys 0.70's hierarchy-kept synth_ecp5 can fail an assertion where
                        # the flat synthesis does not: report the flat figures alone.
                        print(f"# per-block synthesis failed: {str(error).splitlines()[-1]}",
                              flush=True)
                        dut = LayerEngine(cfg, w, M, B, S, mul_plan=plan) \
                            if design == "engine" else MacArray(cfg, mul_plan=plan)
                        r = implement(dut, target, tmp + "/flat", seed=args.seed,
                                      place=args.place, progress=quiet, allow_unfit=True)
                blocks = {name: {k: b.get(k) for k in ("luts", "ffs", "carries", "dsps")}
                          for name, b in r.get("blocks", {}).items() if isinstance(b, dict)}
                row = {"target": target_name, "design": design, "acc_bits": acc_bits,
                       "mul_style": args.mul_style, "plan": plan.counts(),
                       "m_bits": cfg.m_bits, "b_bits": cfg.b_bits, "s_max": cfg.s_max,
                       **{k: r[k] for k in ("luts", "ffs", "carries", "dsps", "brams")},
                       "fmax_mhz": r.get("fmax_mhz"), "blocks": blocks}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(f"{'target':12} {'design':7} {'acc':>4} {'LUT':>6} {'FF':>6} {'carry':>6} {'DSP':>4} "
          f"{'LUT+FF':>7} {'saving vs 32':>12}")
    for row in rows:
        ref = next((r for r in rows if r["target"] == row["target"] and
                    r["design"] == row["design"] and r["acc_bits"] == 32), None)
        total = row["luts"] + row["ffs"]
        saving = "" if ref is None else f"{1 - total / (ref['luts'] + ref['ffs']):.1%}"
        print(f"{row['target']:12} {row['design']:7} {row['acc_bits']:4} {row['luts']:6} "
              f"{row['ffs']:6} {row['carries']:6} {row['dsps']:4} {total:7} {saving:>12}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    sys.exit(main())
