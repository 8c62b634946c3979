"""Run the board top's cocotb testbench (:mod:`qmac.sim.tb_uart`) on a model built with
:func:`qmac.sim.runner.build`."""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .runner import verilator_environment


__all__ = ["UartRun", "run_uart"]


@dataclass
class UartRun:
    """What the host in the testbench saw."""
    received: bytes
    extra: bytes
    sent_vectors: int
    cycles: int | None
    timed_out: bool
    passed: bool
    seconds: float
    log: str


def run_uart(built, cfg, x, *, divisor, reset_cycles, window=2, gap=0.0, max_gap_bits=3,
             bad_frame_after=None, seed=0, drain_bits=40, max_cycles=None, label="run"):
    """Send ``x`` through the board top's serial line from the cocotb host.

    Parameters
    ----------
    built : qmac.sim.runner.Built
        The Verilated :class:`~qmac.hw.board.UartEngineTop`.
    cfg : LayerConfig
    x : array_like, shape (batch, in_features)
    divisor, reset_cycles : int
        The top's ``divisor`` and ``reset_cycles``.
    window : int
        Vectors the host keeps outstanding.
    gap : float
        Probability of an idle gap (1 to ``max_gap_bits`` bit times) before each host byte.
    bad_frame_after : int, optional
        Send a frame with a low stop bit after this vector.
    """
    from cocotb_tools.runner import get_runner
    from cocotb_tools.check_results import get_results

    if not 0.0 <= gap < 1.0:
        raise ValueError(f"gap must be a probability in [0, 1), not {gap!r}")
    batch = len(x)
    if max_cycles is None:
        from qmac.hw.board import request_bytes, response_bytes
        frames = batch * (request_bytes(cfg) + response_bytes(cfg)) + 8
        max_cycles = int(frames * 10 * divisor * (1 + gap * max_gap_bits) * 2 + 10_000)
    run_dir = built.build_dir / label
    run_dir.mkdir(parents=True, exist_ok=True)
    plan_path, result_path = run_dir / "plan.json", run_dir / "result.json"
    if result_path.exists():
        result_path.unlink()
    plan = {
        "config": cfg.to_dict(), "inputs": [[int(v) for v in row] for row in x],
        "divisor": divisor, "reset_cycles": reset_cycles, "window": window, "gap": gap,
        "max_gap_bits": max_gap_bits,
        "bad_frame_after": -1 if bad_frame_after is None else bad_frame_after,
        "seed": seed, "drain_bits": drain_bits, "max_cycles": max_cycles,
    }
    plan_path.write_text(json.dumps(plan))
    log_path = run_dir / "sim.log"
    start = time.perf_counter()
    with verilator_environment():
        runner = get_runner("verilator")
        results_xml = runner.test(
            test_module="qmac.sim.tb_uart", hdl_toplevel=built.name,
            hdl_toplevel_lang="verilog", build_dir=built.build_dir / "sim_build",
            test_dir=run_dir,
            extra_env={"QMAC_TB_PLAN": str(plan_path), "QMAC_TB_RESULT": str(result_path),
                       "COCOTB_LOG_LEVEL": "WARNING"},
            timescale=("1ns", "1ps"), results_xml=str(run_dir / "results.xml"),
            log_file=log_path)
    seconds = time.perf_counter() - start
    log = log_path.read_text() if log_path.exists() else ""
    if not result_path.exists():
        raise RuntimeError(f"the simulation ended without a result; log:\n{log[-3000:]}")
    result = json.loads(result_path.read_text())
    _, failures = get_results(Path(results_xml))
    return UartRun(received=bytes.fromhex(result["received"]),
                   extra=bytes.fromhex(result["extra"]), sent_vectors=result["sent_vectors"],
                   cycles=result["cycles"], timed_out=result["timed_out"],
                   passed=failures == 0, seconds=seconds, log=log)
