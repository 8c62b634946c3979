"""A cocotb testbench for any block with one input stream ``i`` and one output stream ``o``.

The launcher (:mod:`sim.runner`) writes a JSON plan and passes its path in ``QMAC_TB_PLAN``. The
plan holds the packed input beats, optionally the expected packed output beats, the stall
probabilities and the seed. The testbench

- drives ``i`` with random gaps (``valid`` low with probability ``stall_in`` whenever the source
  may choose; once ``valid`` is high the payload holds until the transfer),
- drives ``o.ready`` low with probability ``stall_out`` each cycle,
- optionally sends ``reset_prefix`` beats first, then pulses ``rst`` for ``reset_cycles`` cycles
  (one by default) in the middle of the stream, and continues with the main beats,
- records every output beat, and after the last expected beat keeps ``ready`` high for
  ``drain_cycles`` more cycles to catch any extra (duplicated) beat,
- writes what it saw to ``QMAC_TB_RESULT`` and, when expected beats are given, fails on the first
  difference,
- when the plan has ``taps`` (a count ``n``), records the payload of ``tap_y<k>`` in every
  cycle in which bit ``k`` of ``tap_valid`` is set (the beats between the layers of a network),
- when the plan names a ``progress_file``, replaces it about every ``progress_seconds`` with the
  output beats received and the cycles run so far.

Signals are sampled at ``RisingEdge(clk)``, i.e. the values just before the edge, and driven right
after it; Verilator applies the writes after the flip-flops have sampled (inertial writes).
"""

import json
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import RisingEdge


def _unsigned(handle):
    return handle.value.to_unsigned()


class _ProgressFile:
    """Replace the plan's progress file at most every ``progress_seconds``."""

    def __init__(self, plan):
        self.path = plan.get("progress_file")
        self.seconds = plan.get("progress_seconds", 0.5)
        self.last = time.monotonic()

    def update(self, outputs, cycles):
        now = time.monotonic()
        if now - self.last < self.seconds:
            return
        self.last = now
        temporary = self.path + ".tmp"
        with open(temporary, "w") as file:
            json.dump({"outputs": outputs, "cycles": cycles}, file)
        os.replace(temporary, self.path)


async def _pump(dut, rng, plan, beats, n_outputs, max_cycles, taps=None):
    """Send ``beats`` and collect ``n_outputs`` beats (or stop after ``max_cycles``); append
    every tapped beat to ``taps[k]``."""
    edge = RisingEdge(dut.clk)
    tap_handles = [getattr(dut, f"tap_y{k}") for k in range(len(taps))] if taps else []
    progress = _ProgressFile(plan) if plan.get("progress_file") else None
    stall_in, stall_out = plan["stall_in"], plan["stall_out"]
    in_width = plan["in_width"]
    outputs = []
    sent = 0
    valid = False
    ready = False
    waiting = None      # payload of an output beat that was offered while ready was low
    cycles = 0
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    driven_valid = driven_ready = False
    while (sent < len(beats) or len(outputs) < n_outputs) and cycles < max_cycles:
        await edge
        cycles += 1
        if progress is not None and not cycles & 255:
            progress.update(len(outputs), cycles)
        if tap_handles:
            tapped = dut.tap_valid.value.to_unsigned()
            if tapped:
                for k, handle in enumerate(tap_handles):
                    if (tapped >> k) & 1:
                        taps[k].append(format(_unsigned(handle), "x"))
        if valid and dut.i__ready.value:
            sent += 1
            valid = False
        if dut.o__valid.value:
            payload = _unsigned(dut.o__payload)
            assert waiting is None or payload == waiting, (
                f"output payload changed from {waiting:#x} to {payload:#x} while stalled")
            if ready:
                outputs.append(payload)
                waiting = None
            else:
                waiting = payload
        else:
            assert waiting is None, "o.valid fell before the beat was transferred"
        if not valid and sent < len(beats) and rng.random() >= stall_in:
            valid = True
            dut.i__payload.value = beats[sent]
        elif not valid and stall_in:
            # Garbage while valid is low: a design that samples it anyway fails the comparison.
            dut.i__payload.value = rng.getrandbits(in_width)
        # Writes cost time; only write what changes.
        if valid != driven_valid:
            dut.i__valid.value = int(valid)
            driven_valid = valid
        ready = not stall_out or rng.random() >= stall_out
        if ready != driven_ready:
            dut.o__ready.value = int(ready)
            driven_ready = ready
    return outputs, sent, cycles


async def _drain(dut, cycles):
    """Keep ``ready`` high with no input for ``cycles`` cycles; return any beats that appear."""
    edge = RisingEdge(dut.clk)
    dut.i__valid.value = 0
    dut.o__ready.value = 1
    extra = []
    for _ in range(cycles):
        await edge
        if dut.o__valid.value:
            extra.append(_unsigned(dut.o__payload))
    return extra


async def _reset(dut, cycles=2):
    edge = RisingEdge(dut.clk)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    dut.rst.value = 1
    for _ in range(cycles):
        await edge
    dut.rst.value = 0


@cocotb.test()
async def stream(dut):
    """Drive the plan's beats through ``i`` and check what leaves ``o``."""
    with open(os.environ["QMAC_TB_PLAN"]) as file:
        plan = json.load(file)
    rng = random.Random(plan["seed"])
    beats = [int(beat, 16) for beat in plan["inputs"]]
    expected = [int(beat, 16) for beat in plan["expected"]] if plan["expected"] is not None \
        else None
    n_outputs = plan["n_outputs"]
    max_cycles = plan["max_cycles"]

    Clock(dut.clk, 10, unit="ns").start()
    await _reset(dut)

    result = {"prefix_outputs": [], "outputs": [], "extra": [], "cycles": 0,
              "timed_out": False}
    if plan["reset_prefix"]:
        prefix = [int(beat, 16) for beat in plan["reset_prefix"]]
        # Send the prefix, collecting nothing on purpose beyond what appears, then reset.
        outputs, _, cycles = await _pump(dut, rng, plan, prefix, 0, max_cycles)
        outputs += await _drain(dut, plan["prefix_wait_cycles"]) \
            if plan["prefix_wait_cycles"] else []
        result["prefix_outputs"] = [format(v, "x") for v in outputs]
        await _reset(dut, plan["reset_cycles"])

    taps = [[] for _ in range(plan.get("taps", 0))]
    outputs, sent, cycles = await _pump(dut, rng, plan, beats, n_outputs, max_cycles, taps)
    result["taps"] = taps
    result["cycles"] = cycles
    result["outputs"] = [format(v, "x") for v in outputs]
    if len(outputs) < n_outputs or sent < len(beats):
        result["timed_out"] = True
    else:
        result["extra"] = [format(v, "x") for v in await _drain(dut, plan["drain_cycles"])]

    with open(os.environ["QMAC_TB_RESULT"], "w") as file:
        json.dump(result, file)

    assert not result["timed_out"], (
        f"timed out after {cycles} cycles: sent {sent} of {len(beats)} input beats, "
        f"received {len(outputs)} of {n_outputs} output beats")
    if expected is not None:
        for index, (want, got) in enumerate(zip(expected, outputs)):
            assert want == got, f"output beat {index}: expected {want:#x}, got {got:#x}"
        assert len(outputs) == len(expected), \
            f"expected {len(expected)} output beats, got {len(outputs)}"
    assert not result["extra"], f"{len(result['extra'])} extra output beat(s) after the last one"
