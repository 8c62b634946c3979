"""The Amaranth-simulator harness of the block tests, and the test ids of every block test.

Stream sides: :func:`stream_put` (a producer) and :func:`stream_get` (a consumer) stall at random
from a seeded :class:`random.Random`, and both check the stream rules they can see: the consumer
checks that ``valid`` is never withdrawn and that the payload holds still while the beat waits
for ``ready``; the producer puts random garbage on the payload while ``valid`` is low, so that a
design that samples it anyway fails the comparison. Beats are packed integers, as
:mod:`qmac.sim.beats` builds them for the cocotb testbench too.

Runs: :func:`run` simulates a design with a producer and a consumer testbench side by side;
:func:`stream_test` sends beats with stalls on both streams and returns what came out;
:func:`measure_latency` counts the cycles from the last input beat to the first output beat.
"""

import random

import pytest
from amaranth.sim import Simulator


__all__ = ["GAP", "STALL", "stream_put", "stream_get", "expect_idle", "run", "stream_test",
           "measure_latency", "grid", "cfg_id", "shift_id", "out_id", "rq_id", "engine_id"]


GAP = 0.3       # probability of an idle input cycle before each beat
STALL = 0.3     # probability of ready low in each output cycle


# -- test ids ------------------------------------------------------------------------------------

def cfg_id(cfg):
    """A readable test id of the MAC side of a configuration: ``2x3-a4s-w4-acc8-sat``."""
    parts = [f"{cfg.rows}x{cfg.cols}",
             f"a{cfg.a_bits}{'s' if cfg.a_signed else 'u'}",
             f"w{cfg.w_bits}",
             f"acc{cfg.acc_bits}",
             "wrap" if cfg.overflow == "wrap" else "sat"]
    return "-".join(parts)


def shift_id(cfg):
    """``shared`` (one shift per beat) or ``lane`` (a shift per channel)."""
    return "shared" if cfg.shared_shift else "lane"


def out_id(cfg):
    """The output format: ``y8u``, ``y4s-relu``."""
    return f"y{cfg.out_bits}{'s' if cfg.out_signed else 'u'}{'-relu' if cfg.relu else ''}"


def rq_id(cfg):
    """A readable test id of a requantizer configuration: ``2r-acc8-m4-b8-s31-lane-y8u``."""
    return (f"{cfg.rows}r-acc{cfg.acc_bits}-m{cfg.m_bits}-b{cfg.b_bits}-s{cfg.s_max}-"
            f"{shift_id(cfg)}-{out_id(cfg)}")


def engine_id(cfg):
    """A readable test id of a whole layer: ``K6-N4-2x3-a4u-w4-acc8-sat-lane-y8u``."""
    return f"K{cfg.K}-N{cfg.N}-{cfg_id(cfg)}-{shift_id(cfg)}-{out_id(cfg)}"


def grid(configs, make_id, *, every):
    """Parameters for a configuration grid: every ``every``-th configuration runs by default,
    the others only with ``-m slow``."""
    return [pytest.param(cfg, id=make_id(cfg), marks=() if k % every == 0 else pytest.mark.slow)
            for k, cfg in enumerate(configs)]


# -- stream sides --------------------------------------------------------------------------------

async def stream_put(ctx, stream, payload, *, rng=None, gap=0.0):
    """Send one beat (``payload``, the packed bits) on ``stream`` (a stream interface the
    testbench drives).

    Before the beat, with probability ``gap`` per cycle, ``valid`` stays low for a cycle (with
    random bits on the payload). Returns after the clock edge on which the beat was transferred,
    with ``valid`` low again.
    """
    bits = stream.payload.as_value() if hasattr(stream.payload, "as_value") else stream.payload
    if rng is not None and gap:
        width = len(bits)
        while rng.random() < gap:
            ctx.set(stream.valid, 0)
            ctx.set(bits, rng.getrandbits(width))
            await ctx.tick()
    ctx.set(bits, payload)
    ctx.set(stream.valid, 1)
    # One-shot waits rather than `tick().until()`: an abandoned async generator (a failing
    # test) would otherwise be finalized at a random later moment, which can crash CPython 3.11's
    # parser inside pytest's error report.
    while True:
        _, _, ready = await ctx.tick().sample(stream.ready)
        if ready:
            break
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, *, rng=None, stall=0.0):
    """Receive one beat from ``stream`` (a stream interface the testbench consumes).

    In every cycle ``ready`` is low with probability ``stall``. Returns the payload (a
    :class:`amaranth.lib.data.Const`, or an ``int`` for a plain shape) after the clock edge on
    which it was transferred, with ``ready`` low again.

    Raises
    ------
    AssertionError
        ``valid`` fell, or the payload changed, while a beat waited for ``ready``.
    """
    bits = stream.payload.as_value() if hasattr(stream.payload, "as_value") else stream.payload
    held = None
    while True:
        ready = rng is None or rng.random() >= stall
        ctx.set(stream.ready, ready)
        _, _, valid, payload = await ctx.tick().sample(stream.valid, bits)
        if valid:
            assert held is None or payload == held, \
                f"payload changed from {held:#x} to {payload:#x} while stalled"
            if ready:
                ctx.set(stream.ready, 0)
                shape = stream.payload.shape()
                return shape.from_bits(payload) if hasattr(shape, "from_bits") else payload
            held = payload
        else:
            assert held is None, "valid fell before the beat was transferred"


async def expect_idle(ctx, stream, cycles):
    """Hold ``ready`` high for ``cycles`` cycles and check that no further beat appears."""
    ctx.set(stream.ready, 1)
    for cycle in range(cycles):
        _, _, valid = await ctx.tick().sample(stream.valid)
        assert not valid, f"unexpected extra beat {cycle} cycles after the last one"
    ctx.set(stream.ready, 0)


# -- runs ----------------------------------------------------------------------------------------

def run(dut, *benches, deadline=1_000_000):
    """Simulate ``dut`` with ``benches`` until they finish; fail after ``deadline`` cycles.
    A bench passed as ``("background", bench)`` may run forever (a monitor)."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        if isinstance(bench, tuple):
            sim.add_testbench(bench[1], background=True)
        else:
            sim.add_testbench(bench)

    async def watchdog(ctx):
        await ctx.delay(deadline * 1e-6)
        raise TimeoutError(f"the testbenches did not finish in {deadline} cycles")

    sim.add_testbench(watchdog, background=True)
    sim.run()
    return sim


def stream_test(dut, beats_in, n_out, *, seed, gap=GAP, stall=STALL, tail=8, cycles=0):
    """Send ``beats_in`` on ``dut.i`` and return the first ``n_out`` beats of ``dut.o``.

    Checks that no extra beat follows within ``tail`` cycles, and that everything finished
    (within a deadline that allows for the stalls and ``cycles``, the stall-free cycle count).
    """
    got = []
    done = []

    async def producer(ctx):
        rng = random.Random(seed)
        for beat in beats_in:
            await stream_put(ctx, dut.i, beat, rng=rng, gap=gap)
        done.append("producer")

    async def consumer(ctx):
        rng = random.Random(seed + 1)
        for _ in range(n_out):
            got.append(await stream_get(ctx, dut.o, rng=rng, stall=stall))
        await expect_idle(ctx, dut.o, tail)
        done.append("consumer")

    run(dut, producer, consumer, deadline=3 * cycles + 20 * (len(beats_in) + n_out) + 1000)
    assert sorted(done) == ["consumer", "producer"], f"testbenches did not finish: {done}"
    return got


def measure_latency(dut, beats):
    """Cycles from the transfer of the last of ``beats`` (sent at full rate from cycle 0) to
    the first ``o.valid``, with ``o.ready`` always high."""
    timing = {}

    async def producer(ctx):
        for k, beat in enumerate(beats):
            await stream_put(ctx, dut.i, beat)
        timing["last_in"] = k                    # no gaps: beat k is transferred in cycle k

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycle = 0
        while True:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            if valid:
                timing["first_out"] = cycle
                return
            cycle += 1

    run(dut, producer, consumer, deadline=1000)
    return timing["first_out"] - timing["last_in"]
