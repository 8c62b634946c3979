"""A cocotb testbench for the board top (:class:`qmac.hw.board.UartEngineTop`): a host on the
other end of the serial line.

The launcher (:mod:`qmac.sim.uart_runner`) writes a JSON plan and passes its path in
``QMAC_TB_PLAN``. The plan holds the layer configuration, the input vectors, the UART divisor
(clock cycles per bit), the number of power-on reset cycles, the host's window (vectors
outstanding), the probability and length of idle gaps between the host's bytes, and the seed.
The testbench

- waits out the top's power-on reset (the top has no reset pin),
- sends the request bytes of :func:`qmac.host.encode_inputs` as 8N1 frames on ``rx``, bit by bit,
  with random idle gaps between frames (often none: back to back), never more than ``window``
  vectors ahead of the responses it has received,
- optionally sends one frame with a low stop bit (which the board must drop and report) after
  vector ``bad_frame_after``,
- decodes every frame on ``tx`` by sampling each bit near its middle, failing on a low stop bit,
- stops when every response has arrived, then listens ``drain_bits`` more bit times for an
  extra byte,
- writes the received bytes and the cycle counts to ``QMAC_TB_RESULT``.

The comparison with the golden model is the launcher's caller's (it decodes with
:func:`qmac.host.decode_outputs`), so a failing comparison shows as a test failure, not a
simulator log.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, First, Timer

from qmac import host
from qmac.hw import board
from qmac.hw.config import LayerConfig


async def _send_frame(dut, byte, divisor, *, stop=1):
    """Drive one 8N1 frame on ``rx``: each level for ``divisor`` clock cycles."""
    for level in [0] + [(byte >> k) & 1 for k in range(8)] + [stop]:
        dut.rx.value = level
        await ClockCycles(dut.clk, divisor)


async def _receive_frame(dut, divisor):
    """After the falling edge of a start bit on ``tx``: sample each bit near its middle and
    return the byte. ``ClockCycles`` returns at a rising edge, before the flip-flops update, so
    the value read is the one held in the cycle before that edge."""
    middle = divisor // 2 if divisor > 2 else 1
    await ClockCycles(dut.clk, middle)
    assert dut.tx.value == 0, "start bit on tx did not last half a bit"
    byte = 0
    for k in range(8):
        await ClockCycles(dut.clk, divisor)
        byte |= int(dut.tx.value) << k
    await ClockCycles(dut.clk, divisor)
    assert dut.tx.value == 1, f"low stop bit on tx after byte {byte:#04x}"
    return byte


@cocotb.test()
async def uart_top(dut):
    """Send the plan's vectors through the serial line and record the responses."""
    with open(os.environ["QMAC_TB_PLAN"]) as file:
        plan = json.load(file)
    cfg = LayerConfig.from_dict(plan["config"])
    x = plan["inputs"]
    divisor, window = plan["divisor"], plan["window"]
    gap, max_gap = plan["gap"], plan["max_gap_bits"] * plan["divisor"]
    rng = random.Random(plan["seed"])
    request = host.encode_inputs(cfg, x) if x else b""
    request_size, response_size = board.request_bytes(cfg), board.response_bytes(cfg)
    batch = len(x)

    dut.rx.value = 1
    Clock(dut.clk, 10, unit="ns").start()
    await ClockCycles(dut.clk, plan["reset_cycles"] + 2)
    start = cocotb.utils.get_sim_time("ns")

    received = bytearray()
    state = {"sent": 0, "done_ns": None}

    async def sender():
        for n in range(batch):
            while n - len(received) // response_size >= window:
                await ClockCycles(dut.clk, divisor)
            for byte in request[n * request_size:(n + 1) * request_size]:
                if gap and rng.random() < gap:
                    dut.rx.value = 1
                    await ClockCycles(dut.clk, rng.randrange(1, max_gap + 1))
                await _send_frame(dut, byte, divisor)
            state["sent"] += 1
            if n == plan["bad_frame_after"]:
                await _send_frame(dut, 0x5A, divisor, stop=0)
                dut.rx.value = 1
                await ClockCycles(dut.clk, 2 * divisor)

    async def receiver():
        while len(received) < batch * response_size:
            await FallingEdge(dut.tx)
            received.append(await _receive_frame(dut, divisor))
        state["done_ns"] = cocotb.utils.get_sim_time("ns")

    send_task = cocotb.start_soon(sender())
    receive_task = cocotb.start_soon(receiver())
    limit_ns = 10 * plan["max_cycles"]
    await First(receive_task, Timer(limit_ns, unit="ns"))
    timed_out = state["done_ns"] is None
    extra = bytearray()
    if not timed_out:
        await send_task
        # Anything after the last response is a duplicated or invented byte.
        drain = cocotb.start_soon(_collect(dut, divisor, extra))
        await ClockCycles(dut.clk, plan["drain_bits"] * divisor)
        drain.cancel()

    result = {
        "received": received.hex(),
        "extra": extra.hex(),
        "sent_vectors": state["sent"],
        "cycles": None if timed_out else (state["done_ns"] - start) // 10,
        "timed_out": timed_out,
    }
    with open(os.environ["QMAC_TB_RESULT"], "w") as file:
        json.dump(result, file)
    assert not timed_out, (f"timed out: sent {state['sent']} of {batch} vectors, received "
                           f"{len(received)} of {batch * response_size} response bytes")
    assert not extra, f"{len(extra)} byte(s) after the last response: {extra.hex()}"


async def _collect(dut, divisor, extra):
    while True:
        await FallingEdge(dut.tx)
        extra.append(await _receive_frame(dut, divisor))
