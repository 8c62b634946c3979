"""Amaranth-simulator tests of the UART (receiver, transmitter) and of the board top's byte <->
beat adapters.

The serial line is driven and decoded by the testbench bit by bit, cycle by cycle, so the frame
timing itself is checked (exact bit lengths on ``tx``; sampling tolerance on ``rx``). The
adapters are checked against packing code they do not share: ``qmac.sim.beats`` (engine beats)
and ``qmac.host`` (request and response bytes).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import Module
from amaranth.lib import stream, wiring

from qmac import host
from qmac.hw import board, layouts
from qmac.hw.board import BeatsToBytes, BytesToBeats, baud_divisor
from qmac.hw.config import LayerConfig
from qmac.hw.uart import BAUD_TOLERANCE, UartRx, UartTx
from qmac.sim import beats
from harness import expect_idle, run as simulate, stream_get, stream_put


def frame_bits(byte, *, stop=1):
    """Line levels of one 8N1 frame: start, data LSB first, stop."""
    return [0] + [(byte >> k) & 1 for k in range(8)] + [stop]


async def drive_line(ctx, line, levels, period):
    """Hold each level of ``levels`` on ``line`` for ``period`` cycles."""
    for level in levels:
        ctx.set(line, level)
        for _ in range(period):
            await ctx.tick()


# -- baud divisor ---------------------------------------------------------------------------

def test_baud_divisor_of_the_boards():
    assert baud_divisor(12_000_000, 115200) == 104           # 0.16% off
    assert baud_divisor(25_000_000, 115200) == 217
    assert baud_divisor(12_000_000, 3_000_000) == 4
    assert baud_divisor(100, 50) == 2


@pytest.mark.parametrize("clk_hz, baud, match", [
    (100, 51, "too fast"),                          # 1.96 cycles per bit
    (12_000_000, 12_000_000, "too fast"),
    (12_000_000, 4_800_000, "nearest divisor 2 .* 25.00% off"),      # 2.5 cycles per bit
    (10_000, 1_400, "nearest divisor 7 .* 2.04% off"),
    (0, 9600, "clk_hz must be a positive number, not 0"),
    (12_000_000, -9600, "baud must be a positive number, not -9600"),
    (12_000_000, True, "baud must be a positive number, not True"),
    (12_000_000, "9600", "baud must be a positive number, not '9600'"),
])
def test_bad_baud(clk_hz, baud, match):
    with pytest.raises(ValueError, match=match):
        baud_divisor(clk_hz, baud)


def test_baud_tolerance_edge():
    """The error is relative to the requested baud: 2% is allowed, just over it is not."""
    made = 10_000 / 7                           # what divisor 7 makes of a 10 kHz clock
    for sign in (1, -1):
        assert baud_divisor(10_000, made / (1 - sign * BAUD_TOLERANCE * 0.99)) == 7
        with pytest.raises(ValueError, match="nearest divisor 7 .* 2.0[0-9]% off"):
            baud_divisor(10_000, made / (1 - sign * BAUD_TOLERANCE * 1.01))


@pytest.mark.parametrize("divisor", [1, 0, 2.5, None, True])
def test_bad_divisor(divisor):
    for cls in (UartRx, UartTx):
        with pytest.raises(ValueError, match=f"divisor must be an integer .* not {divisor!r}"):
            cls(divisor=divisor)


def test_bad_baud_in_top():
    cfg = LayerConfig(in_features=2, out_features=1)
    with pytest.raises(ValueError, match="baud 5000000 is too fast"):
        board.UartEngineTop(cfg, [[1, 1]], [1], [0], [0], clk_hz=6_000_000, baud=5_000_000)


# -- transmitter ----------------------------------------------------------------------------

def decode_line(levels, divisor):
    """Decode a recorded ``tx`` line, requiring exact timing: each frame's start, data and stop
    bits last exactly ``divisor`` cycles. Returns ``[(start_cycle, byte), ...]``."""
    frames = []
    t = 0
    while t < len(levels):
        if levels[t]:
            t += 1
            continue
        assert t + 10 * divisor <= len(levels), f"frame at cycle {t} cut off"
        bits = []
        for k in range(10):
            span = levels[t + k * divisor:t + (k + 1) * divisor]
            assert len(set(span)) == 1, f"bit {k} of the frame at cycle {t} is not steady: {span}"
            bits.append(span[0])
        assert bits[0] == 0 and bits[9] == 1, f"bad frame at cycle {t}: {bits}"
        frames.append((t, sum(b << k for k, b in enumerate(bits[1:9]))))
        t += 10 * divisor
    return frames


@pytest.mark.parametrize("divisor, gap", [(2, 0.5), (3, 0.0), (5, 0.9), (8, 0.3)])
def test_tx_frames(divisor, gap):
    """Random bytes with random gaps (and none): exact frames, idle-high line between them,
    and back-to-back frames when bytes wait."""
    dut = UartTx(divisor=divisor)
    rng = random.Random(divisor)
    data = [rng.getrandbits(8) for _ in range(40)] + [0x00, 0xFF, 0x55, 0xAA]
    levels = []

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, dut.i, byte, rng=rng, gap=gap)
        await ctx.tick().repeat(11 * divisor)       # the last frame, and idle after it

    async def monitor(ctx):
        async for _, _, line in ctx.tick().sample(dut.tx):
            levels.append(line)

    simulate(dut, producer, ("background", monitor), deadline=100 * divisor * len(data) + 1000)
    frames = decode_line(levels, divisor)
    assert [byte for _, byte in frames] == data
    if gap == 0.0:
        starts = [t for t, _ in frames]
        assert all(b - a == 10 * divisor for a, b in zip(starts, starts[1:])), \
            "frames of waiting bytes are not back to back"


def test_tx_idle_high_and_holds_stream():
    """``tx`` is high before any byte; ``ready`` stays low for the whole frame but its last
    cycle."""
    divisor = 4
    dut = UartTx(divisor=divisor)
    record = []

    async def bench(ctx):
        for _ in range(5):
            _, _, line, ready = await ctx.tick().sample(dut.tx, dut.i.ready)
            assert line == 1 and ready == 1
        ctx.set(dut.i.payload, 0xA5)
        ctx.set(dut.i.valid, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 0)
        for _ in range(12 * divisor):
            _, _, line, ready = await ctx.tick().sample(dut.tx, dut.i.ready)
            record.append((line, ready))

    simulate(dut, bench, deadline=1000)
    readies = [ready for _, ready in record]
    # Sampled before each edge: the frame occupies cycles 0..10·divisor-1 after the transfer.
    assert readies[:10 * divisor - 1] == [0] * (10 * divisor - 1)
    assert all(readies[10 * divisor - 1:])
    assert [line for line, _ in record][:10 * divisor:divisor] == frame_bits(0xA5)


# -- receiver -------------------------------------------------------------------------------

@pytest.mark.parametrize("divisor, period", [
    (2, 2), (3, 3), (4, 4), (7, 7),
    (32, 31), (32, 33),             # the sender's bit is 3% short or long
    (104, 102), (104, 106),         # iCEBreaker at 115200 baud, sender 2% off
])
def test_rx_bytes(divisor, period):
    """Random bytes, random idle gaps (often none: back to back), a consumer that stalls."""
    dut = UartRx(divisor=divisor)
    rng = random.Random(divisor * 1000 + period)
    count = 12 if divisor > 50 else 40
    data = [rng.getrandbits(8) for _ in range(count - 4)] + [0x00, 0xFF, 0x01, 0x80]
    got = []

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        for byte in data:
            if rng.random() < 0.5:                  # else back to back
                await ctx.tick().repeat(rng.randrange(1, 3 * period))
            await drive_line(ctx, dut.rx, frame_bits(byte), period)
        await ctx.tick().repeat(4 * period)

    async def consumer(ctx):
        stall_rng = random.Random(7)
        for _ in data:
            got.append(await stream_get(ctx, dut.o, rng=stall_rng, stall=0.3))
        await expect_idle(ctx, dut.o, 20 * divisor)

    async def errors(ctx):
        async for _, _, framing, overrun in ctx.tick().sample(dut.framing_error, dut.overrun):
            assert not framing and not overrun

    simulate(dut, line, consumer, ("background", errors),
             deadline=20 * period * len(data) + 40 * divisor + 1000)
    assert got == data


def test_rx_framing_error_glitch_and_recovery():
    """A frame with a low stop bit is dropped with a ``framing_error`` pulse, a long low line
    (break) after it yields nothing, a glitch shorter than half a bit is ignored, and the next
    frames arrive intact."""
    divisor = 8
    dut = UartRx(divisor=divisor)
    got = []
    pulses = []

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(5)
        await drive_line(ctx, dut.rx, frame_bits(0x3C), divisor)
        await drive_line(ctx, dut.rx, frame_bits(0x42, stop=0), divisor)
        await drive_line(ctx, dut.rx, [0], 5 * divisor)               # break
        await drive_line(ctx, dut.rx, [1], 2 * divisor)
        await drive_line(ctx, dut.rx, [0], divisor // 2 - 2)          # glitch
        await drive_line(ctx, dut.rx, [1], 2 * divisor)
        await drive_line(ctx, dut.rx, frame_bits(0xC3) + frame_bits(0x81), divisor)
        await ctx.tick().repeat(3 * divisor)

    async def consumer(ctx):
        for _ in range(3):
            got.append(await stream_get(ctx, dut.o))
        await expect_idle(ctx, dut.o, 30 * divisor)

    async def errors(ctx):
        cycle = 0
        async for _, _, framing, overrun in ctx.tick().sample(dut.framing_error, dut.overrun):
            cycle += 1
            assert not overrun
            if framing:
                pulses.append(cycle)

    simulate(dut, line, consumer, ("background", errors), deadline=2000)
    assert got == [0x3C, 0xC3, 0x81]
    assert len(pulses) == 1


def test_rx_overrun_keeps_the_waiting_byte():
    """Nobody takes the first byte: the second is dropped with an ``overrun`` pulse, the first
    still waits unchanged, and a third byte (after the first is taken) arrives."""
    divisor = 4
    dut = UartRx(divisor=divisor)
    overruns = []
    got = []

    async def line(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        await drive_line(ctx, dut.rx, frame_bits(0x11) + frame_bits(0x22), divisor)
        await ctx.tick().repeat(4 * divisor)
        # The consumer now takes 0x11; then the third byte.
        await drive_line(ctx, dut.rx, frame_bits(0x33), divisor)
        await ctx.tick().repeat(4 * divisor)

    async def consumer(ctx):
        await ctx.tick().repeat(25 * divisor)
        got.append(await stream_get(ctx, dut.o))
        got.append(await stream_get(ctx, dut.o))
        await expect_idle(ctx, dut.o, 20)

    async def errors(ctx):
        async for _, _, framing, overrun in ctx.tick().sample(dut.framing_error, dut.overrun):
            assert not framing
            if overrun:
                overruns.append(1)

    simulate(dut, line, consumer, ("background", errors), deadline=2000)
    assert got == [0x11, 0x33]
    assert len(overruns) == 1


def test_tx_into_rx():
    """Transmitter and receiver with the same divisor agree on every byte value."""
    divisor = 3

    class Loop(wiring.Component):
        i: wiring.In(stream.Signature(8))
        o: wiring.Out(stream.Signature(8))

        def __init__(self):
            self.tx = UartTx(divisor=divisor)
            self.rx = UartRx(divisor=divisor)
            super().__init__()

        def elaborate(self, platform):
            m = Module()
            m.submodules.tx, m.submodules.rx = self.tx, self.rx
            wiring.connect(m, wiring.flipped(self.i), self.tx.i)
            wiring.connect(m, self.rx.o, wiring.flipped(self.o))
            m.d.comb += self.rx.rx.eq(self.tx.tx)
            return m

    dut = Loop()
    data = list(range(256))
    got = []

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, dut.i, byte)

    async def consumer(ctx):
        for _ in data:
            got.append(await stream_get(ctx, dut.o))

    simulate(dut, producer, consumer, deadline=12 * divisor * len(data) + 100)
    assert got == data


# -- byte <-> beat adapters ------------------------------------------------------------------

ADAPTER_CONFIGS = [
    LayerConfig(in_features=6, out_features=4, rows=2, cols=2, a_bits=8, a_signed=False,
                out_bits=8, out_signed=False),
    LayerConfig(in_features=6, out_features=6, rows=3, cols=3, a_bits=4, a_signed=True,
                w_bits=4, acc_bits=16, out_bits=4, out_signed=True),
    LayerConfig(in_features=3, out_features=2, rows=1, cols=1, a_bits=12, a_signed=True,
                acc_bits=32, out_bits=12, out_signed=True),
    LayerConfig(in_features=4, out_features=3, rows=3, cols=4, a_bits=16, a_signed=False,
                w_bits=4, acc_bits=32, out_bits=16, out_signed=False, relu=True),
    LayerConfig(in_features=2, out_features=2, rows=2, cols=2, a_bits=1, out_bits=1),
]


def adapter_id(cfg):
    return (f"{cfg.rows}x{cfg.cols}-a{cfg.a_bits}{'s' if cfg.a_signed else 'u'}-"
            f"y{cfg.out_bits}{'s' if cfg.out_signed else 'u'}")


def random_inputs(cfg, rng, batch):
    x = rng.integers(cfg.x_min, cfg.x_max, size=(batch, cfg.in_features), endpoint=True)
    x[0] = cfg.x_min
    x[1] = cfg.x_max
    return x


@pytest.mark.parametrize("cfg", ADAPTER_CONFIGS, ids=adapter_id)
def test_bytes_to_beats(cfg):
    """The request bytes of ``qmac.host`` become exactly the engine beats of
    ``qmac.sim.beats``, under stalls on both sides."""
    rng = np.random.default_rng(1)
    x = random_inputs(cfg, rng, 7)
    data = host.encode_inputs(cfg, x)
    assert len(data) == len(x) * board.request_bytes(cfg)
    expected = beats.engine_beats(cfg, x)
    dut = BytesToBeats(cfg)
    got = []

    async def producer(ctx):
        stall_rng = random.Random(2)
        for byte in data:
            await stream_put(ctx, dut.i, byte, rng=stall_rng, gap=0.3)

    async def consumer(ctx):
        stall_rng = random.Random(3)
        for _ in expected:
            beat = await stream_get(ctx, dut.o, rng=stall_rng, stall=0.5)
            got.append(beat.as_value().value)
        await expect_idle(ctx, dut.o, 10)

    simulate(dut, producer, consumer, deadline=20 * len(data) + 1000)
    assert got == expected


def test_bytes_to_beats_full_rate():
    """Without stalls a byte is taken every cycle."""
    cfg = ADAPTER_CONFIGS[0]
    dut = BytesToBeats(cfg)
    x = random_inputs(cfg, np.random.default_rng(4), 5)
    data = host.encode_inputs(cfg, x)

    async def producer(ctx):
        for byte in data:
            await stream_put(ctx, dut.i, byte)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        await ctx.tick().repeat(len(data) + 5)

    ticks = []

    async def counter(ctx):
        async for _, _, valid, ready in ctx.tick().sample(dut.i.valid, dut.i.ready):
            ticks.append(valid and ready)

    simulate(dut, producer, consumer, ("background", counter), deadline=1000)
    transfers = [k for k, t in enumerate(ticks) if t]
    assert len(transfers) == len(data)
    assert transfers[-1] - transfers[0] == len(data) - 1


def pack_outputs(cfg, y, flags):
    """Engine output beats for results ``y`` and flags ``flags`` (both (batch, N))."""
    batch = len(y)
    y = np.asarray(y, dtype=object).reshape(batch * cfg.out_beats, cfg.rows)
    flags = np.asarray(flags, dtype=int).reshape(batch * cfg.out_beats, cfg.rows)
    columns = {("last",): np.tile((np.arange(cfg.out_beats) == cfg.out_beats - 1).astype(int), batch)}
    for r in range(cfg.rows):
        columns[("y", r)] = y[:, r]
        columns[("overflow", r)] = flags[:, r]
    layout = layouts.engine_output_layout(cfg)
    return [layout.from_bits(beat) for beat in beats.pack_columns(layout, columns,
                                                                   batch * cfg.out_beats)]


@pytest.mark.parametrize("cfg", ADAPTER_CONFIGS, ids=adapter_id)
def test_beats_to_bytes(cfg):
    """Engine output beats become response bytes that ``qmac.host`` decodes back to the same
    results, with the overflow status OR-ed per vector, under stalls on both sides."""
    rng = np.random.default_rng(5)
    batch = 9
    y = rng.integers(cfg.y_min, cfg.y_max, size=(batch, cfg.out_features), endpoint=True)
    y[0] = cfg.y_min
    y[1] = cfg.y_max
    flags = rng.random((batch, cfg.out_features)) < 0.1
    flags[2] = False
    flags[3, -1] = True                 # only the last channel of the last beat
    flags[4, 0] = True
    data_in = pack_outputs(cfg, y, flags)
    dut = BeatsToBytes(cfg)
    count = batch * board.response_bytes(cfg)
    got = []

    async def producer(ctx):
        stall_rng = random.Random(6)
        for beat in data_in:
            await stream_put(ctx, dut.i, beat, rng=stall_rng, gap=0.3)

    async def consumer(ctx):
        stall_rng = random.Random(7)
        for _ in range(count):
            got.append(await stream_get(ctx, dut.o, rng=stall_rng, stall=0.5))
        await expect_idle(ctx, dut.o, 10)

    simulate(dut, producer, consumer, deadline=20 * count + 1000)
    response = host.decode_outputs(cfg, bytes(got))
    assert response.y.tolist() == y.tolist()
    assert response.overflow.tolist() == flags.any(axis=1).tolist()
    assert response.overflow[3] and response.overflow[4] and not response.overflow[2]
    assert not response.lost.any()


def test_beats_to_bytes_reports_lost_bytes_once():
    """A ``lost`` pulse sets the lost bit of the next status byte only."""
    cfg = ADAPTER_CONFIGS[0]
    y = np.arange(3 * cfg.out_features).reshape(3, cfg.out_features)
    data_in = pack_outputs(cfg, y, np.zeros_like(y, dtype=bool))
    dut = BeatsToBytes(cfg)
    size = board.response_bytes(cfg)
    got = []

    async def producer(ctx):
        await stream_put(ctx, dut.i, data_in[0])
        await ctx.tick().repeat(3)
        ctx.set(dut.lost, 1)
        await ctx.tick()
        ctx.set(dut.lost, 0)
        for beat in data_in[1:]:
            await stream_put(ctx, dut.i, beat)

    async def consumer(ctx):
        await ctx.tick().repeat(10)         # vector 0's status byte is not current yet
        for _ in range(3 * size):
            got.append(await stream_get(ctx, dut.o))

    simulate(dut, producer, consumer, deadline=1000)
    response = host.decode_outputs(cfg, bytes(got))
    assert response.lost.tolist() == [True, False, False]
    assert response.y.tolist() == y.tolist()
