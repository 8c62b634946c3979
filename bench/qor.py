"""Quality of results: issue 8's targets against the qmac of before the issue, the benchmark set
of the performance note (section 6) plus the example layer, synthesized, placed and routed on
iCE40 UP5K and ECP5, with the references measured in the same run.

    python bench/qor.py [--quick] [--seeds N] [--out DIR] [--part targets set sweep]
                        [--only N ...]

``--part targets`` (``bench/issue8.py``) prints one row per target of issue 8: the figure it
asks for, the figure reached, the figure of the baseline (qmac at the commit before the issue,
``bench/baseline.py``, rebuilt and measured in the same run) and their ratio; it writes
``qor_targets.csv``. ``--only 3 4`` keeps those targets.

``--part set`` prints one table (LUT, FF, DSP, BRAM, median Fmax, MAC/s per config and target) and the three
ratios of the note:

- DSP efficiency = MAC/s ÷ (DSPs of the part × f_ref,DSP × 1 MAC per DSP), with f_ref,DSP the
  median Fmax of B1 (one 8×8 PE with its product on a DSP) on the same family in this run,
  capped at 290 MHz on ECP5 (the MULT18X18D internal path, which nextpnr does not model);
- MAC/s per LUT;
- clock utilisation = array Fmax ÷ Fmax of a standalone accumulator of the same width on the
  same part (an ``acc += x`` register in the same harness), measured in this run.

It writes ``qor.csv``, ``qor_acc_bits.csv`` and ``qor_acc_bits.png`` (LUTs, flip-flops and Fmax
of one array against ``acc_bits`` from 12 to 32). Every design sits in the fair-timing harness
(:class:`qmac.hw.harness.FairTimingHarness`); Fmax is nextpnr's estimate, the median over the
seeds. Designs that do not fit are listed with the resource they lack.
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from amaranth.hdl import Module, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from qmac.hw.config import LayerConfig
from qmac.hw.engine import LayerEngine
from qmac.hw.mac_array import MacArray
from qmac.hw.multiply import MulPlan, plan_multipliers
from qmac.synth import TARGETS, DoesNotFitError, SynthError, implement
from issue8 import more_seeds


ROOT = Path(__file__).resolve().parent.parent
ECP5_DSP_CAP_MHZ = 290.0


class Accumulator(wiring.Component):
    """The reference: ``acc <= acc + x``, ``acc_bits`` wide, with a registered input."""

    def __init__(self, acc_bits):
        self.acc_bits = acc_bits
        super().__init__({"x": In(signed(acc_bits)), "acc": Out(signed(acc_bits))})

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.acc.eq(self.acc + self.x)
        return m


def pe_cfg(rows, cols, bits, acc_bits, style, *, signed_a=True):
    return LayerConfig(name="pe", in_features=cols, out_features=rows, rows=rows, cols=cols,
                       a_bits=bits, a_signed=signed_a, w_bits=bits, acc_bits=acc_bits,
                       mul_style=style)


def benchmark_set(quick):
    """``(id, description, kind, cfg-or-None, targets)``."""
    example = LayerConfig.from_toml(ROOT / "examples/layer.toml")
    rows = [
        ("B1-dsp", "1x1 PE 8x8s acc24, DSP", "mac", pe_cfg(1, 1, 8, 24, "dsp"),
         ["ice40-up5k", "ecp5-25k"]),
        ("B1-lut", "1x1 PE 8x8s acc24, LUT (Booth)", "mac", pe_cfg(1, 1, 8, 24, "lut"),
         ["ice40-up5k", "ecp5-25k"]),
        ("B3", "4x4 4x4s acc16, LUT", "mac", pe_cfg(4, 4, 4, 16, "lut"),
         ["ice40-up5k", "ecp5-25k"]),
        ("B4-acc24", "4x4 8x8s acc24, DSP", "mac", pe_cfg(4, 4, 8, 24, "dsp"), ["ecp5-25k"]),
        ("B4-acc32", "4x4 8x8s acc32, DSP", "mac", pe_cfg(4, 4, 8, 32, "dsp"), ["ecp5-25k"]),
        ("B5", "8x8 8x8s acc24, DSP", "mac", pe_cfg(8, 8, 8, 24, "dsp"),
         ["ecp5-45k", "ecp5-85k"]),
        ("example", f"example layer engine {example.rows}x{example.cols}, auto", "engine",
         example, ["ice40-up5k", "ecp5-25k", "ecp5-45k"]),
        # Issue 8, target 3: the example's MAC array (u8 x s8, acc20) on the UP5K, its 16
        # products two per SB_MAC16 (auto picks "dsp2"), against what auto gave before
        # (half the products on 16x16 SB_MAC16s, half in LUTs).
        ("T3-dsp2", f"example MAC array {example.rows}x{example.cols}, 2 per SB_MAC16",
         "mac", example, ["ice40-up5k"]),
        ("T3-before", f"example MAC array {example.rows}x{example.cols}, 1 per DSP + LUT",
         "mac-before", example, ["ice40-up5k"]),
    ]
    if quick:
        keep = {"B1-dsp": ["ice40-up5k", "ecp5-25k"], "B1-lut": ["ecp5-25k"],
                "B3": ["ecp5-25k"], "B4-acc24": ["ecp5-25k"], "B5": ["ecp5-45k"],
                "example": ["ecp5-25k"], "T3-dsp2": ["ice40-up5k"],
                "T3-before": ["ice40-up5k"]}
        rows = [(i, d, k, c, keep[i]) for i, d, k, c, t in rows if i in keep]
    return rows


def component_for(kind, cfg, target):
    if kind == "engine":
        weights = np.load(ROOT / "examples/weights.npy")
        requant = np.load(ROOT / "examples/requant.npz")
        plan = plan_multipliers(cfg, family=target.family,
                                dsp_budget=target.available["dsps"])
        return LayerEngine(cfg, weights, requant["M"], requant["B"], requant["S"],
                           mul_plan=plan), plan
    if kind == "mac":
        plan = plan_multipliers(cfg, family=target.family, dsp_budget=target.available["dsps"])
        return MacArray(cfg, mul_plan=plan), plan
    if kind == "mac-before":
        # The plan auto made before products were packed: every product on a 16x16 DSP, then
        # whole columns to LUTs (the first columns first) until the DSPs fit.
        keep = min(cfg.cols, target.available["dsps"] // cfg.rows)
        mac = tuple(tuple("lut" if c < cfg.cols - keep else "dsp" for c in range(cfg.cols))
                    for _ in range(cfg.rows))
        plan = MulPlan(mac=mac, requant=("lut",) * cfg.requant_lanes)
        return MacArray(cfg, mul_plan=plan), plan
    return Accumulator(cfg), None


def measure(kind, cfg, target_name, seeds, workdir, log):
    """Synthesize once, place and route with every seed; the figures with the median Fmax."""
    target = TARGETS[target_name]
    component, plan = component_for(kind, cfg, target)
    soft = []
    if plan is not None:
        if any(s == "lut" for row in plan.mac for s in row):
            soft.append("mac_array")
        if "lut" in plan.requant:
            soft.append("requantizer")
    quiet = lambda message: None   # noqa: E731
    started = time.perf_counter()
    try:
        result = implement(component, target, workdir, seed=seeds[0], progress=quiet,
                           soft_blocks=soft)
    except DoesNotFitError as error:
        log(f"    does not fit: {error}")
        return {"fits": False, "problem": str(error),
                **{k: (error.result or {}).get(k) for k in ("luts", "ffs", "dsps", "brams")}}
    except SynthError as error:
        log(f"    failed: {error}")
        return {"fits": False, "problem": str(error).splitlines()[0]}
    more_seeds(result, target, workdir, seeds)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="one seed, fewer configurations and sweep points")
    parser.add_argument("--seeds", type=int, default=3, help="nextpnr seeds (default 3)")
    parser.add_argument("--out", default=".", help="folder for the CSV and PNG files")
    parser.add_argument("--part", nargs="+", choices=["targets", "set", "sweep"],
                        default=["targets", "set", "sweep"],
                        help="what to run: issue 8's targets against the baseline, the "
                             "benchmark set of the note, the acc_bits sweep (default: all)")
    parser.add_argument("--only", nargs="+", metavar="N",
                        help="with 'targets': only these target numbers of issue 8")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, not {args.seeds}")
    seeds = [1] if args.quick else list(range(1, args.seeds + 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="qmac-qor-"))

    def log(message):
        print(message, file=sys.stderr, flush=True)

    log(f"qor: seeds {seeds}, run folders under {scratch}")
    if "targets" in args.part:
        import issue8
        log("issue 8 targets:")
        target_rows, results = issue8.run(seeds, scratch / "targets", log,
                                          only=set(args.only or ()))
        lines = issue8.table(target_rows, results)
        with open(out / "qor_targets.csv", "w", newline="") as f:
            csv.writer(f).writerows([("target", "measure", "goal", "reached", "before",
                                      "ratio", "met"), *lines])
        print("Issue 8 targets")
        issue8.print_table(lines, seeds)
        print(f"wrote {out / 'qor_targets.csv'}\n")
    if "set" not in args.part:
        if "sweep" in args.part:
            sweep(out, scratch, seeds, args.quick, log)
        return 0
    rows = []
    for ident, description, kind, cfg, targets in benchmark_set(args.quick):
        for target in targets:
            log(f"  {ident} on {target} ...")
            result = measure(kind, cfg, target, seeds, scratch / f"{ident}-{target}", log)
            rows.append((ident, description, kind, cfg, target, result))

    # References: the B1 DSP Fmax per family, standalone accumulators per width and part.
    f_ref = {}
    for ident, _, _, _, target, result in rows:
        if ident == "B1-dsp" and result.get("fmax_median"):
            family = TARGETS[target].family
            f = result["fmax_median"]
            f_ref[family] = min(f, ECP5_DSP_CAP_MHZ) if family == "ecp5" else f
    acc_ref = {}
    for ident, _, kind, cfg, target, result in rows:
        if kind == "engine" or not result.get("fmax_median"):
            continue
        key = (target, cfg.acc_bits)
        if key not in acc_ref:
            log(f"  reference accumulator acc{cfg.acc_bits} on {target} ...")
            ref = measure("acc", cfg.acc_bits, target, seeds,
                          scratch / f"acc{cfg.acc_bits}-{target}", log)
            acc_ref[key] = ref.get("fmax_median")

    header = ["id", "config", "target", "LUT", "FF", "carry", "DSP", "BRAM", "Fmax_MHz",
              "Fmax_seeds", "Fmax_DSP_bound_MHz", "MAC_per_cycle", "GMAC_s", "DSP_eff", "f_ref_DSP_MHz",
              "MMAC_s_per_LUT", "acc_Fmax_MHz", "clock_util", "critical_path", "fits"]
    table = []
    for ident, description, kind, cfg, target, result in rows:
        t = TARGETS[target]
        macs = cfg.rows * cfg.cols
        fmax = result.get("fmax_median")
        macs_s = macs * fmax * 1e6 if fmax else None
        ref = f_ref.get(t.family)
        dsp_eff = macs_s / (t.available["dsps"] * ref * 1e6) if macs_s and ref else None
        per_lut = macs_s / 1e6 / result["luts"] if macs_s and result.get("luts") else None
        acc_f = acc_ref.get((target, cfg.acc_bits)) if kind != "engine" else None
        path = result.get("critical_path") or {}
        table.append([ident, description, target, result.get("luts"), result.get("ffs"),
                      result.get("carries"), result.get("dsps"), result.get("brams"), fmax,
                      " ".join(map(str, result.get("fmax_seeds", []))),
                      result.get("fmax_bound_median"), macs,
                      round(macs_s / 1e9, 3) if macs_s else None,
                      round(dsp_eff, 3) if dsp_eff is not None else None, ref,
                      round(per_lut, 3) if per_lut else None, acc_f,
                      round(fmax / acc_f, 3) if fmax and acc_f else None,
                      path.get("kind"), result.get("fits") if result.get("fits") is not None
                      else result.get("problem")])

    with open(out / "qor.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(table)
    print_table(header, table)
    print(f"\nf_ref,DSP: B1 DSP single-PE median Fmax per family (ECP5 capped at "
          f"{ECP5_DSP_CAP_MHZ:g} MHz); iCE40's is nextpnr's, which does not model SB_MAC16 "
          f"timing. DSP_eff counts 1 MAC per DSP. clock_util = Fmax / standalone "
          f"accumulator Fmax (same width, same part). Seeds: {seeds}.")

    print_target3(header, table)
    if "sweep" in args.part:
        sweep(out, scratch, seeds, args.quick, log)
    print(f"\nwrote {out / 'qor.csv'}, {out / 'qor_acc_bits.csv'}, {out / 'qor_acc_bits.png'}")
    return 0


#: Issue 8, target 3: 16 MAC/cycle on the UP5K at >= 50 MHz (800 MMAC/s); MARLANN, the best
#: open UP5K design on record, runs about 414 MMAC/s (icetime, 16 MAC/cycle at ~25.9 MHz).
TARGET3_MHZ = 50.0
MARLANN_MMAC_S = 414.0


def print_target3(header, table):
    """Target 3 of issue 8 against the figures of this run: reached, before, ratio."""
    col = {name: header.index(name) for name in header}
    rows = {row[col["id"]]: row for row in table if row[col["id"]].startswith("T3-")}
    packed, before = rows.get("T3-dsp2"), rows.get("T3-before")
    if packed is None:
        return
    print(f"\nTarget 3 (UP5K, int8, 16 MAC/cycle in 8 SB_MAC16, >= {TARGET3_MHZ:g} MHz):")
    for label, key in (("nextpnr Fmax", "Fmax_MHz"),
                       ("Fmax with SB_MAC16 delays (icestorm)", "Fmax_DSP_bound_MHz")):
        f = packed[col[key]]
        if f is None:
            print(f"  {label}: not measured")
            continue
        was = before[col["Fmax_MHz"]] if before is not None else None
        macs = packed[col["MAC_per_cycle"]]
        verdict = "met" if f >= TARGET3_MHZ else "NOT met"
        ratio = f" ({f / was:.2f}x the unpacked array's {was} MHz)" if was else ""
        print(f"  {label}: {f} MHz -> {macs * f:.0f} MMAC/s, target {verdict}{ratio}; "
              f"{macs * f / MARLANN_MMAC_S:.2f}x MARLANN's ~{MARLANN_MMAC_S:g} MMAC/s")
    if before is not None:
        print(f"  DSPs {packed[col['DSP']]} (before {before[col['DSP']]}), LUTs "
              f"{packed[col['LUT']]} (before {before[col['LUT']]})")


def print_table(header, table):
    shown = ["id", "target", "LUT", "FF", "DSP", "BRAM", "Fmax_MHz", "GMAC_s", "DSP_eff",
             "MMAC_s_per_LUT", "acc_Fmax_MHz", "clock_util", "critical_path", "fits"]
    index = [header.index(name) for name in shown]
    cells = [[("" if row[i] is None else str(row[i])) for i in index] for row in table]
    widths = [max(len(name), *(len(c[k]) for c in cells)) for k, name in enumerate(shown)]
    print("  ".join(name.rjust(w) for name, w in zip(shown, widths)))
    for c in cells:
        print("  ".join(value[:60].rjust(w) for value, w in zip(c, widths)))


def sweep(out, scratch, seeds, quick, log):
    """LUTs, flip-flops and Fmax of one array (2x2, 4-bit LUT products) against acc_bits."""
    widths = [12, 20, 32] if quick else [12, 16, 20, 24, 28, 32]
    targets = ["ecp5-25k"] if quick else ["ice40-up5k", "ecp5-25k"]
    points = []
    for target in targets:
        for acc_bits in widths:
            cfg = pe_cfg(2, 2, 4, acc_bits, "lut")
            log(f"  sweep acc_bits={acc_bits} on {target} ...")
            result = measure("mac", cfg, target, seeds, scratch / f"sweep{acc_bits}-{target}",
                             log)
            points.append((target, acc_bits, result.get("luts"), result.get("ffs"),
                           result.get("fmax_median")))
    with open(out / "qor_acc_bits.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["target", "acc_bits", "LUT", "FF", "Fmax_MHz"])
        writer.writerows(points)
    print("\nacc_bits sweep, 2x2 array of 4x4-bit LUT products:")
    print("  target      acc_bits   LUT    FF  Fmax_MHz")
    for target, acc_bits, luts, ffs, fmax in points:
        print(f"  {target:<11}{acc_bits:>9}{luts or 0:>6}{ffs or 0:>6}{fmax or 0:>10}")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no PNG written")
        return
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for target in targets:
        mine = [p for p in points if p[0] == target]
        x = [p[1] for p in mine]
        axes[0].plot(x, [p[2] for p in mine], "o-", label=f"LUT {target}")
        axes[0].plot(x, [p[3] for p in mine], "s--", label=f"FF {target}")
        axes[1].plot(x, [p[4] for p in mine], "o-", label=target)
    axes[0].set_xlabel("acc_bits")
    axes[0].set_ylabel("cells")
    axes[0].legend()
    axes[1].set_xlabel("acc_bits")
    axes[1].set_ylabel("Fmax (MHz, median over seeds)")
    axes[1].legend()
    fig.suptitle("2x2 MAC array, 4x4-bit LUT products, in the fair-timing harness")
    fig.tight_layout()
    fig.savefig(out / "qor_acc_bits.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
