"""Stream helpers for Amaranth-simulator testbenches: one producer side, one consumer side.

Both sides stall at random from a seeded :class:`random.Random`, and both check the stream rules
they can see: the consumer checks that ``valid`` is never withdrawn and that the payload holds
still while the beat waits for ``ready``; the producer puts random garbage on the payload while
``valid`` is low, so that a design that samples it anyway fails the comparison.
"""

__all__ = ["stream_put", "stream_get", "expect_idle"]


async def stream_put(ctx, stream, payload, *, rng=None, gap=0.0):
    """Send one beat on ``stream`` (a stream interface the testbench drives).

    Before the beat, with probability ``gap`` per cycle, ``valid`` stays low for a cycle (with
    random bits on the payload). Returns after the clock edge on which the beat was transferred,
    with ``valid`` low again.
    """
    if rng is not None and gap:
        bits = stream.payload.as_value() if hasattr(stream.payload, "as_value") \
            else stream.payload
        width = len(bits)
        while rng.random() < gap:
            ctx.set(stream.valid, 0)
            ctx.set(bits, rng.getrandbits(width))
            await ctx.tick()
    ctx.set(stream.payload, payload)
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
