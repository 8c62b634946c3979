"""Issue 8, target 5: narrow operands. A 4×4 MAC array of 4-bit operands (unsigned activations,
signed weights, ``acc_bits`` 16) with each multiplier style, synthesized and placed through the
fair-timing harness, Fmax over several seeds.

Styles: ``lut`` (radix-4 Booth in LUTs, :func:`qmac.hw.multiply.soft_product`), ``booth`` (a
plain ``*`` through Yosys's ``booth`` pass, no DSP mapping), ``dsp`` (one
DSP block per product, Yosys's mapping), ``pack`` (products of one column sharing their
activation, two per multiply: :mod:`qmac.hw.ecp5_pack`; one ``MULT18X18D`` on ECP5, one 16×16
``SB_MAC16`` on iCE40), ``dsp2`` (iCE40 only: two products per ``SB_MAC16`` in ``MODE_8x8``).

Run: ``python bench/narrow.py [--targets ecp5-25k ice40-up5k] [--seeds 1 2 3] [--bits 4]
[--json OUT]``.

Measured 2026-11-26 (Yosys 0.70, nextpnr 0.11.1, YoWASP; seeds 1, 2, 3; counts include the
fair-timing harness, 27 LUT / 211 FF; ECP5 LUT = LUT4 cells, CCU2C counted apart)::

    target      style  bits  LUT  carry   FF DSP  Fmax MHz (median)  MMAC/s  /DSP
    ecp5-25k    lut       4  690    160  529   0  184.2                2948     -
    ecp5-25k    booth     4  626    160  529   0  164.4                2630     -
    ecp5-25k    dsp       4   98     96  529  16  133.5                2135   133
    ecp5-25k    pack      4  194    128  553   8  139.1                2225   278
    ice40-up5k  lut       4  700    260  529   0   62.1                 994     -
    ice40-up5k  booth     4  748    244  529   0   59.1                 946     -
    ice40-up5k  dsp2      4  220    164  404   8   68.8 (DSP bound 58.6) 1102  138
    ice40-up5k  pack      4  372    220  553   8   56.7 (SB_MAC16 unregistered, not timed)
    ecp5-25k    lut       2  162     72  377   0  222.2                3555     -
    ecp5-25k    dsp       2   98     72  377  16  135.6                2169   136
    ecp5-25k    pack      2  290     72  397   4  138.1                2209   552
"""

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile

from qmac.hw.config import LayerConfig
from qmac.hw.mac_array import MacArray
from qmac.hw.multiply import plan_multipliers, plan_packed
from qmac.synth import TARGETS, Target, implement


STYLES = {"ecp5": ("lut", "booth", "dsp", "pack"), "ice40": ("lut", "booth", "dsp2", "pack")}


class BoothTarget(Target):
    """``target`` synthesized with Yosys's ``booth`` pass and no DSP mapping: the plain ``*``
    products become Booth multipliers in LUTs (style ``booth`` of this benchmark)."""

    @property
    def synth_command(self):
        family = "synth_ice40" if self.family == "ice40" else "synth_ecp5 -nodsp"
        return f"proc; opt; booth; {family}"


def booth_target(target):
    return BoothTarget(**{f.name: getattr(target, f.name) for f in dataclasses.fields(target)})


def array_config(bits=4, acc_bits=16, a_signed=False):
    return LayerConfig(name="narrow", in_features=16, out_features=4, rows=4, cols=4,
                       a_bits=bits, a_signed=a_signed, w_bits=bits, acc_bits=acc_bits,
                       mul_style="auto")


def array(cfg, style, family):
    """The MAC array of ``cfg`` with every product in ``style`` (requantizer lanes unused)."""
    if style == "pack":
        plan = plan_packed(cfg, requant_style="lut")
    elif style == "booth":
        plan = plan_multipliers(cfg.replace(mul_style="dsp"))
    elif style == "dsp2":
        plan = plan_multipliers(cfg.replace(mul_style="auto"), family=family, dsp_budget=1000)
        assert plan.counts().get("mac_dsp2") == cfg.rows * cfg.cols, plan
    else:
        plan = plan_multipliers(cfg.replace(mul_style=style))
    return MacArray(cfg, mul_plan=plan)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", default=["ecp5-25k", "ice40-up5k"])
    parser.add_argument("--styles", nargs="+", default=None)
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--bits", type=int, default=4)
    parser.add_argument("--acc-bits", type=int, default=16)
    parser.add_argument("--signed", action="store_true", help="signed activations")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    cfg = array_config(args.bits, args.acc_bits, args.signed)
    quiet = lambda message: None  # noqa: E731
    rows = []
    for target_name in args.targets:
        target = TARGETS[target_name]
        for style in args.styles or STYLES[target.family]:
            if style not in STYLES[target.family]:
                continue
            runs = []
            for seed in args.seeds:
                with tempfile.TemporaryDirectory() as tmp:
                    r = implement(array(cfg, style, target.family),
                                  booth_target(target) if style == "booth" else target, tmp,
                                  seed=seed,
                                  progress=quiet, allow_unfit=True)
                runs.append(r)
                print(json.dumps({"target": target_name, "style": style, "seed": seed,
                                  **{k: r.get(k) for k in ("luts", "ffs", "carries", "dsps",
                                                           "fmax_mhz", "fmax_dsp_bound_mhz",
                                                           "logic_cells")},
                                  "critical": (r.get("critical_path") or {}).get("kind"),
                                  "path": {k: (r.get("critical_path") or {}).get(k)
                                           for k in ("start", "end", "delay_ns", "routing_ns")}}),
                      flush=True)
            fmax = statistics.median(r["fmax_mhz"] for r in runs)
            first = runs[0]
            macs = cfg.rows * cfg.cols
            row = {"target": target_name, "style": style, "bits": args.bits,
                   "a_signed": args.signed, "acc_bits": args.acc_bits,
                   **{k: first[k] for k in ("luts", "ffs", "carries", "dsps")},
                   "logic_cells": first.get("logic_cells"),
                   "fmax_seeds": [r["fmax_mhz"] for r in runs], "fmax_median": fmax,
                   "dsp_bound_median": statistics.median(r["fmax_dsp_bound_mhz"] for r in runs)
                   if all(r.get("fmax_dsp_bound_mhz") for r in runs) else None,
                   "mmac_s": macs * fmax,
                   "mmac_s_per_dsp": macs * fmax / first["dsps"] if first["dsps"] else None,
                   "mmac_s_per_lut": macs * fmax / first["luts"]}
            rows.append(row)
    print()
    print(f"{'target':11} {'style':5} {'LUT':>5} {'FF':>5} {'carry':>5} {'DSP':>4} "
          f"{'Fmax seeds':>22} {'median':>7} {'MMAC/s':>7} {'/DSP':>6} {'/LUT':>6}")
    for row in rows:
        per_dsp = f"{row['mmac_s_per_dsp']:.0f}" if row["mmac_s_per_dsp"] else "-"
        print(f"{row['target']:11} {row['style']:5} {row['luts']:5} {row['ffs']:5} "
              f"{row['carries']:5} {row['dsps']:4} {str(row['fmax_seeds']):>22} "
              f"{row['fmax_median']:7.1f} {row['mmac_s']:7.0f} {per_dsp:>6} "
              f"{row['mmac_s_per_lut']:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
