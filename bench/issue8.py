"""Issue 8's targets, each measured beside its "today" in the same run (``bench/qor.py
--part targets``).

Every row names a target of the issue, the figure it asks for, the figure reached by today's
qmac, the figure of qmac before the issue (the *baseline*: the tree at
:data:`baseline.BASELINE_COMMIT`, rebuilt and run through the same tools and seeds, see
``bench/baseline.py``) and their ratio. Fmax is nextpnr's, the median over the seeds, inside the
fair-timing harness; area figures come from one Yosys run (per-block figures from the run that
keeps the hierarchy).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

import baseline
from qmac.hw.config import LayerConfig
from qmac.hw.engine import LayerEngine
from qmac.hw.multiply import plan_multipliers
from qmac.synth import (TARGETS, DoesNotFitError, SynthError, _registered_mac16_bound,
                        implement, implement_rtlil, place_and_route)


ROOT = Path(__file__).resolve().parent.parent

#: nextpnr does not model the MULT18X18D's internal path in its registered modes: the DSP
#: reference frequency of the efficiency ratio is capped there (performance note, section 1.2).
ECP5_DSP_CAP_MHZ = 290.0


def example():
    """The example layer: its configuration and ``(weights, M, B, S)``."""
    cfg = LayerConfig.from_toml(ROOT / "examples/layer.toml")
    requant = np.load(ROOT / "examples/requant.npz")
    return cfg, (np.load(ROOT / "examples/weights.npy"), requant["M"], requant["B"],
                 requant["S"])


# -- jobs: one design on one part -------------------------------------------------------------

@dataclass(frozen=True)
class Job:
    """One design on one part. ``build(scratch, workdir)`` returns ``("component", component,
    soft_blocks)`` for a design of today's qmac or ``("rtlil", text, harness_info)`` for a
    baseline design."""

    key: str
    target: str
    build: Callable = field(compare=False)
    blocks: bool = False
    place: bool = True


def engine_job(key, target, cfg, parameters, *, blocks=False, place=True):
    """Today's engine of ``cfg`` with the multiplier plan ``qmac synth`` makes for the part."""
    def build(scratch, workdir):
        part = TARGETS[target]
        plan = plan_multipliers(cfg, family=part.family, dsp_budget=part.available["dsps"]) \
            if cfg.mul_style == "auto" else plan_multipliers(cfg)
        soft = [block for block, styles in
                (("mac_array", [s for row in plan.mac for s in row]),
                 ("requantizer", plan.requant)) if "lut" in styles]
        return "component", LayerEngine(cfg, *parameters, mul_plan=plan), soft
    return Job(key, target, build, blocks, place)


def component_job(key, target, factory, *, blocks=False, place=True):
    """Today's design ``factory(part)`` (a component, or ``(component, soft_blocks)``)."""
    def build(scratch, workdir):
        made = factory(TARGETS[target])
        component, soft = made if isinstance(made, tuple) else (made, ())
        return "component", component, soft
    return Job(key, target, build, blocks, place)


def baseline_job(key, target, kind, cfg, parameters=None, *, blocks=False, place=True,
                 **changes):
    """The baseline's ``kind`` (``"engine"`` or ``"mac"``) of ``cfg`` with ``changes``."""
    def build(scratch, workdir):
        names = ("weights", "M", "B", "S")
        text, info = baseline.rtlil(scratch, kind, baseline.old_config(cfg, **changes),
                                    workdir, None if parameters is None else
                                    dict(zip(names, parameters)), target=TARGETS[target])
        return "rtlil", text, info
    return Job(key, target, build, blocks, place)


def run_job(job, seeds, scratch, log):
    """Synthesize once, place and route with every seed. The result of ``implement`` with
    ``fmax_seeds``, ``fmax_median`` (and on iCE40 with registered 8×8 SB_MAC16 pairs
    ``fmax_bound_median``, the Fmax with the DSP's own delays); ``fits`` false with
    ``problem`` when the design does not fit or a tool fails."""
    workdir = Path(scratch) / job.key
    target = TARGETS[job.target]
    quiet = lambda message: None   # noqa: E731
    started = time.perf_counter()
    kind, design, extra = job.build(scratch, workdir)
    options = dict(seed=seeds[0], progress=quiet, blocks=job.blocks, place=job.place)
    try:
        if kind == "component":
            result = implement(design, target, workdir, soft_blocks=extra, **options)
        else:
            result = implement_rtlil(design, target, workdir, harness_info=extra, **options)
    except DoesNotFitError as error:
        log(f"    does not fit: {error}")
        return {**(error.result or {}), "fits": False, "problem": str(error)}
    except SynthError as error:
        log(f"    failed: {str(error).splitlines()[0]}")
        return {"fits": False, "problem": str(error).splitlines()[0], "failed": True}
    if not job.place or result.get("fmax_mhz") is None:
        return result
    more_seeds(result, target, workdir, seeds)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def more_seeds(result, target, workdir, seeds):
    """Place and route ``workdir``'s netlist again with ``seeds[1:]`` (``result`` is seed 0's)
    and add ``fmax_seeds``, ``fmax_median`` and, on iCE40 with registered 8×8 ``SB_MAC16``
    pairs only, ``fmax_bound_seeds`` and ``fmax_bound_median`` (the Fmax with the DSP's own
    delays) to ``result``."""
    quiet = lambda message: None   # noqa: E731
    fmaxes = [result["fmax_mhz"]]
    for seed in seeds[1:]:
        report, _, _ = place_and_route(target, workdir, seed=seed, freq=target.default_freq,
                                       progress=quiet)
        fmaxes.append(min(entry["achieved"] for name, entry in report["fmax"].items()
                          if "$PACKER_GND" not in name))
    result["fmax_seeds"] = [round(f, 2) for f in fmaxes]
    result["fmax_median"] = round(statistics.median(fmaxes), 2)
    bounds = [_registered_mac16_bound(Path(workdir) / "netlist.json", f) for f in fmaxes] \
        if target.family == "ice40" and result.get("dsps") else []
    if bounds and all(bounds):
        result["fmax_bound_seeds"] = [b["fmax_mhz"] for b in bounds]
        result["fmax_bound_median"] = round(statistics.median(result["fmax_bound_seeds"]), 2)
    return result


# -- rows: a target, its figure, reached against the baseline --------------------------------

@dataclass(frozen=True)
class Row:
    """One line of the table: ``metric(results_of_reached)`` against
    ``metric(results_of_today)``; met when ``check(reached_value, today_value)``."""

    target: str
    measure: str
    goal: str
    reached: tuple
    today: tuple
    metric: Callable
    check: Callable
    unit: str = ""


def fmax(result):
    return result.get("fmax_median")


def fmax_bound(result):
    return result.get("fmax_bound_median")


def requant_share(result):
    """The requantizer's own LUTs (hierarchy kept) over the engine's LUTs (its blocks; the
    harness excluded)."""
    blocks = result.get("blocks") or {}
    engine = sum(blocks[b]["luts"] for b in ("mac_array", "requantizer", "memories_control")
                 if b in blocks)
    return blocks["requantizer"]["luts"] / engine if engine and "requantizer" in blocks \
        else None


def mapped_with_abc(result):
    """Whether Yosys 0.70's ``abc9`` failed on the flat or the per-block synthesis of
    ``result`` and its LUTs were mapped with ``abc``."""
    return result.get("lut_mapper") == "abc" or \
        (result.get("blocks") or {}).get("lut_mapper") == "abc"


def requant_dsps(result):
    return (result.get("blocks") or {}).get("requantizer", {}).get("dsps")


def fits(result):
    return bool(result.get("fits"))


def logic(result):
    """Logic in LUT4 equivalents: iCE40 logic cells after packing (LUT, carry and FF share a
    cell), ECP5 LUT4 plus two per CCU2C carry cell."""
    if result.get("family") == "ice40":
        return result.get("logic_cells") or (result.get("needs") or {}).get("luts")
    if result.get("luts") is None:
        return None
    return result["luts"] + 2 * result["carries"]


def lut_ff(result):
    """LUT4 + FF (iCE40: LUT4 cells; ECP5: LUT4 plus two per CCU2C), Yosys's counts."""
    if result.get("luts") is None:
        return None
    carries = 2 * result["carries"] if result.get("family") == "ecp5" else 0
    return result["luts"] + carries + result["ffs"]


def core_lut_ff(result):
    """:func:`lut_ff` of the design's own blocks (hierarchy kept), the harness left out."""
    blocks = {name: b for name, b in (result.get("blocks") or {}).items()
              if isinstance(b, dict) and name != "harness"}
    if not blocks:
        return None
    carries = 2 if result.get("family") == "ecp5" else 0
    return sum(b["luts"] + carries * b["carries"] + b["ffs"] for b in blocks.values())


def saving(small, large):
    """``1 - small / large`` of two measures, or None."""
    return 1 - small / large if small is not None and large else None


def higher(reached, before):
    return reached is not None and (before is None or reached > before)


def lower(reached, before):
    return reached is not None and (before is None or reached < before)


def per_dsp(result, macs):
    """MMAC/s per DSP block: MACs per cycle × Fmax ÷ DSPs."""
    f = fmax(result)
    return macs * f / result["dsps"] if f and result.get("dsps") else None


def rows_and_jobs():
    """The rows of the table and the jobs they need (each job measured once)."""
    cfg, parameters = example()
    dsp = dict(mul_style="dsp")
    jobs = {}

    def add(job):
        jobs.setdefault(job.key, job)
        return job.key

    rows = []
    for part in ("ice40-up5k", "ecp5-25k"):
        reached = add(engine_job(f"example-{part}-area", part, cfg, parameters, blocks=True,
                                 place=False))
        today = add(baseline_job(f"base-example-{part}-area", part, "engine", cfg, parameters,
                                 blocks=True, place=False, **dsp))
        rows.append(Row("1", f"requantizer LUT share, example engine, {part}", "<= 20%",
                        (reached,), (today,), lambda r: requant_share(r[0]),
                        lambda v, _: v is not None and v <= 0.20, "%"))
        rows.append(Row("1", f"requantizer DSPs, example engine, {part}", "<= 2",
                        (reached,), (today,), lambda r: requant_dsps(r[0]),
                        lambda v, _: v is not None and v <= 2))
    up5k = add(engine_job("example-ice40-up5k", "ice40-up5k", cfg, parameters))
    up5k_before = add(baseline_job("base-example-ice40-up5k", "ice40-up5k", "engine", cfg,
                                   parameters, mul_style="auto"))
    rows.append(Row("3", "example engine on ice40-up5k: fits", "yes", (up5k,), (up5k_before,),
                    lambda r: fits(r[0]), lambda v, _: v))
    rows.append(Row("3", "example engine on ice40-up5k, Fmax (nextpnr)", ">= 50 MHz",
                    (up5k,), (up5k_before,), lambda r: fmax(r[0]),
                    lambda v, _: v is not None and v >= 50, "MHz"))
    rows.append(Row("3", "same, Fmax with SB_MAC16 delays (icestorm)", ">= 50 MHz",
                    (up5k,), (up5k_before,), lambda r: fmax_bound(r[0]),
                    lambda v, _: v is not None and v >= 50, "MHz"))
    ecp5 = add(engine_job("example-ecp5-45k", "ecp5-45k", cfg, parameters))
    ecp5_before = add(baseline_job("base-example-ecp5-45k", "ecp5-45k", "engine", cfg,
                                   parameters, **dsp))
    rows.append(Row("7", "example engine on ecp5-45k, Fmax", "higher", (ecp5,), (ecp5_before,),
                    lambda r: fmax(r[0]), higher, "MHz"))
    rows += ecp5_rows(add)
    rows += threshold_rows(add)
    rows += narrow_rows(add)
    rows += acc_width_rows(add)
    rows.sort(key=lambda row: row.target)          # stable: keeps each target's order
    return rows, jobs


def pe_cfg(rows, cols, style, *, bits=8, acc_bits=24):
    """A bare MAC array of the note's benchmark set: signed ``bits`` operands."""
    return LayerConfig(name="pe", in_features=cols, out_features=rows, rows=rows, cols=cols,
                       a_bits=bits, a_signed=True, w_bits=bits, acc_bits=acc_bits,
                       mul_style=style)


def dsp_efficiency(array, reference, macs=64, dsps=72):
    """MAC/s ÷ (DSPs of the part × f_ref × 1 MAC per DSP), f_ref the registered single PE's
    median Fmax capped at :data:`ECP5_DSP_CAP_MHZ` (performance note, section 6)."""
    f, f_ref = fmax(array), fmax(reference)
    if not f or not f_ref:
        return None
    return macs * f / (dsps * min(f_ref, ECP5_DSP_CAP_MHZ))


def ecp5_rows(add):
    """Target 4: the 8×8 int8 array (64 MAC/cycle) and the example-shaped engine with an 8×8
    array on ``ecp5-45k``, registered ``MULT18X18D`` products (``auto`` on ECP5: ``"dspreg"``)
    against the baseline's inferred, combinational ones; f_ref from one registered PE on
    ``ecp5-25k`` in the same run."""
    from qmac.hw.mac_array import MacArray

    def array(cfg, part):
        return MacArray(cfg, mul_plan=plan_multipliers(cfg, family=part.family,
                                                       dsp_budget=part.available["dsps"]))

    big = pe_cfg(8, 8, "auto")
    ref = add(component_job("t4-pe-ecp5-25k", "ecp5-25k",
                            lambda part: array(pe_cfg(1, 1, "auto"), part)))
    arr = add(component_job("t4-array8x8-ecp5-45k", "ecp5-45k", lambda part: array(big, part)))
    arr_before = add(baseline_job("base-t4-array8x8-ecp5-45k", "ecp5-45k", "mac", big,
                                  mul_style="dsp"))
    cfg, parameters = example()
    cfg8 = cfg.replace(rows=8, cols=8)
    eng = add(engine_job("t4-engine8x8-ecp5-45k", "ecp5-45k", cfg8, parameters))
    eng_before = add(baseline_job("base-t4-engine8x8-ecp5-45k", "ecp5-45k", "engine", cfg8,
                                  parameters, mul_style="dsp"))
    return [
        Row("4", "8x8 int8 MAC array on ecp5-45k, Fmax", ">= 180 MHz", (arr,), (arr_before,),
            lambda r: fmax(r[0]), lambda v, _: v is not None and v >= 180, "MHz"),
        Row("4", "same, DSP efficiency (64 MAC x Fmax / 72 DSP x f_ref)", ">= 60%",
            (arr, ref), (arr_before, ref), lambda r: dsp_efficiency(r[0], r[1]),
            lambda v, _: v is not None and v >= 0.60, "%"),
        Row("4", "f_ref: one registered 8x8 PE on ecp5-25k, Fmax (cap 290)", "-", (ref,), (ref,),
            lambda r: fmax(r[0]), lambda v, _: v is not None, "MHz"),
        Row("4", "example engine with an 8x8 array: fits ecp5-45k", "yes", (eng,),
            (eng_before,), lambda r: fits(r[0]), lambda v, _: v),
        Row("4", "same, Fmax", ">= 180 MHz", (eng,), (eng_before,), lambda r: fmax(r[0]),
            lambda v, _: v is not None and v >= 180, "MHz"),
    ]


def threshold_rows(add):
    """Target 2: at ``out_bits`` 2 (where ``auto`` picks thresholds) the threshold engine
    against the multiply engine of today, the same layer and multiplier plan
    (``bench/requant_style.py``)."""
    import requant_style

    def engine(style):
        def factory(part):
            cfg, w, requant, table = requant_style.layer(2)
            plan = plan_multipliers(cfg, family=part.family, dsp_budget=part.available["dsps"])
            if style == "threshold":
                return LayerEngine(cfg.replace(requant_style="threshold"), w, thresholds=table,
                                   mul_plan=plan)
            return LayerEngine(cfg, w, requant.M, requant.B, requant.S, mul_plan=plan)
        return factory

    rows = []
    for part in ("ice40-up5k", "ecp5-25k"):
        th = add(component_job(f"t2-threshold-{part}", part, engine("threshold")))
        mu = add(component_job(f"t2-multiply-{part}", part, engine("multiply")))
        what = "logic cells" if part.startswith("ice40") else "LUT4 + 2 CCU2C"
        rows.append(Row("2", f"out_bits 2 engine {part}, {what}: thresholds (before: multiply)",
                        "smaller", (th,), (mu,), lambda r: logic(r[0]), lower))
        rows.append(Row("2", "same, Fmax", "-", (th,), (mu,), lambda r: fmax(r[0]),
                        lambda v, _: v is not None, "MHz"))
    return rows


def narrow_rows(add):
    """Target 5: a 4×4 array of 4-bit operands (u4 × s4, acc 16): on ECP5 two products per
    ``MULT18X18D`` (style ``"pack"``) against one per DSP (the baseline's ``"dsp"``) and LUT
    products; on iCE40 two per ``SB_MAC16`` (``"dsp2"``) against LUT products
    (``bench/narrow.py``)."""
    import narrow
    from qmac.hw.mac_array import MacArray
    from qmac.hw.multiply import plan_packed
    cfg = narrow.array_config(4, 16)
    macs = cfg.rows * cfg.cols
    pack = add(component_job("t5-pack-ecp5-25k", "ecp5-25k",
                             lambda part: MacArray(cfg, mul_plan=plan_packed(
                                 cfg, requant_style="lut"))))
    lut = add(component_job("t5-lut-ecp5-25k", "ecp5-25k", lambda part: (MacArray(
        cfg, mul_plan=plan_multipliers(cfg.replace(mul_style="lut"))), ["mac_array"])))
    dsp = add(baseline_job("base-t5-dsp-ecp5-25k", "ecp5-25k", "mac", cfg, mul_style="dsp"))
    dsp2 = add(component_job("t5-dsp2-ice40-up5k", "ice40-up5k", lambda part: MacArray(
        cfg, mul_plan=plan_multipliers(cfg, family="ice40", dsp_budget=8))))
    lut_ice = add(component_job("t5-lut-ice40-up5k", "ice40-up5k", lambda part: (MacArray(
        cfg, mul_plan=plan_multipliers(cfg.replace(mul_style="lut"))), ["mac_array"])))
    return [
        Row("5", "4-bit 4x4 array ecp5-25k, DSPs: 2 per MULT18X18D (before: 1)", "fewer",
            (pack,), (dsp,), lambda r: r[0].get("dsps"), lower),
        Row("5", "same, MMAC/s per DSP", "higher", (pack,), (dsp,),
            lambda r: per_dsp(r[0], macs), higher),
        Row("5", "same, Fmax", "-", (pack,), (dsp,), lambda r: fmax(r[0]),
            lambda v, _: v is not None, "MHz"),
        Row("5", "4-bit 4x4 array ecp5-25k, LUT4 + 2 CCU2C: packed DSPs (before: LUT products)",
            "-", (pack,), (lut,), lambda r: logic(r[0]), lambda v, _: v is not None),
        Row("5", "same, Fmax: packed DSPs (before: LUT products)", "-", (pack,), (lut,),
            lambda r: fmax(r[0]), lambda v, _: v is not None, "MHz"),
        Row("5", "4-bit 4x4 array ice40-up5k, logic cells: 2 per SB_MAC16 (before: LUT)",
            "fewer", (dsp2,), (lut_ice,), lambda r: logic(r[0]), lower),
        Row("5", "same, Fmax with SB_MAC16 delays (before: LUT, nextpnr)", "-", (dsp2,),
            (lut_ice,), lambda r: fmax_bound(r[0]) if len(r) and r[0].get("fmax_bound_median")
            else fmax(r[0]), lambda v, _: v is not None, "MHz"),
    ]


def acc_width_rows(add):
    """Target 6: the example-shaped engine at 4-bit operands with all-LUT multipliers,
    ``acc_bits`` 16 against 32 (``bench/acc_width.py``): the LUT+FF saving. Before: the
    baseline's engine with DSPs in use (``auto``), as the issue's 18% was measured."""
    import acc_width
    rows = []
    for part in ("ice40-up5k", "ecp5-25k"):
        keys, base = {}, {}
        for acc in (16, 32):
            cfg, w, M, B, S = acc_width.four_bit_layer(acc)
            keys[acc] = add(engine_job(f"t6-lut-acc{acc}-{part}", part, cfg, (w, M, B, S),
                                       place=False))
            base[acc] = add(baseline_job(f"base-t6-auto-acc{acc}-{part}", part, "engine", cfg,
                                         (w, M, B, S), place=False, mul_style="auto"))
        rows.append(Row("6", f"4-bit engine {part}: LUT+FF saving, acc_bits 16 vs 32",
                        ">= 30%", (keys[16], keys[32]), (base[16], base[32]),
                        lambda r: saving(lut_ff(r[0]), lut_ff(r[1])),
                        lambda v, _: v is not None and v >= 0.30, "%"))
    # The bare MAC array with LUT products (the words: "the same 4-bit LUT array"),
    # counted without the harness (whose output registers grow with acc_bits).
    from qmac.hw.mac_array import MacArray
    for part in ("ice40-up5k", "ecp5-25k"):
        keys, base = {}, {}
        for acc in (16, 32):
            cfg = acc_width.four_bit_layer(acc)[0]
            keys[acc] = add(component_job(
                f"t6-lut-array-acc{acc}-{part}", part,
                lambda _, cfg=cfg: MacArray(cfg, mul_plan=plan_multipliers(cfg)),
                blocks=True, place=False))
            base[acc] = add(baseline_job(f"base-t6-lut-array-acc{acc}-{part}", part, "mac",
                                         cfg, blocks=True, place=False, mul_style="lut"))
        rows.append(Row("6", f"4-bit LUT MAC array {part} (no harness): LUT+FF saving, "
                        "acc_bits 16 vs 32", ">= 30%", (keys[16], keys[32]),
                        (base[16], base[32]),
                        lambda r: saving(core_lut_ff(r[0]), core_lut_ff(r[1])),
                        lambda v, _: v is not None and v >= 0.30, "%"))
    return rows


def run(seeds, scratch, log, *, only=None):
    rows, jobs = rows_and_jobs()
    if only:
        rows = [row for row in rows if row.target in only]
        needed = {key for row in rows for key in (*row.reached, *row.today)}
        jobs = {key: job for key, job in jobs.items() if key in needed}
    results = {}
    for key, job in jobs.items():
        log(f"  {key} on {job.target} ...")
        results[key] = run_job(job, seeds, scratch, log)
    return rows, results


def format_value(value, unit):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if unit == "%":
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.1f}" + (f" {unit}" if unit else "")
    return f"{value}" + (f" {unit}" if unit else "")


def table(rows, results):
    """``[(target, measure, goal, reached, today, ratio, met)]`` as strings."""
    lines = []
    for row in rows:
        reached = row.metric([results[k] for k in row.reached])
        today = row.metric([results[k] for k in row.today])
        why = [results[k].get("problem") for k in row.today if results[k].get("problem")]
        ratio = (f"{reached / today:.2f}" if isinstance(reached, (int, float)) and
                 not isinstance(reached, bool) and today not in (None, 0) and
                 not isinstance(today, bool) else "-")
        today_text = format_value(today, row.unit)
        if today is None and why:
            today_text = "- (" + why[0].split(":")[-1].strip()[:60] + ")"
        if any(mapped_with_abc(results[k]) for k in row.today):
            today_text += " (abc)"
        reached_text = format_value(reached, row.unit)
        if any(mapped_with_abc(results[k]) for k in row.reached):
            reached_text += " (abc)"
        lines.append((row.target, row.measure, row.goal, reached_text, today_text, ratio,
                      "met" if row.check(reached, today) else "NOT met"))
    return lines


def print_table(lines, seeds):
    header = ("#", "measure", "goal", "reached", f"before ({baseline.BASELINE_COMMIT})",
              "ratio", "")
    widths = [max(len(str(h)), *(len(line[k]) for line in lines)) for k, h in
              enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    for line in lines:
        print("  ".join(v.ljust(w) for v, w in zip(line, widths)))
    print(f"\nFmax: nextpnr, median over seeds {seeds}, fair-timing harness. Before: qmac at "
          f"{baseline.BASELINE_COMMIT} (before issue 8), rebuilt and measured in this run. "
          f"(abc): LUTs mapped with abc, because Yosys 0.70's abc9 failed on the design "
          f"or, for per-block figures, on its hierarchical synthesis (qmac.synth does that "
          f"by itself).")
