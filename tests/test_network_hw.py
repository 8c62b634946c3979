"""The network top and its width adapters, in the Amaranth simulator, against the golden model."""

import random

import numpy as np
import pytest
from amaranth.hdl import unsigned
from amaranth.sim import Simulator

from qmac.hw.config import LayerConfig
from qmac.hw.network import NetworkTop, Regroup, check_chain
from qmac.netflow import golden_outputs
from harness import run as simulate, stream_get, stream_put
from qmac.sim import beats as sim_beats


def pack(values, bits):
    return sum(int(v) << (k * bits) for k, v in enumerate(values))


@pytest.mark.parametrize("n_in, n_out", [(4, 8), (8, 4), (4, 4), (3, 2), (2, 3), (1, 5), (6, 4),
                                         (5, 1)])
def test_regroup_keeps_every_element_in_order(n_in, n_out):
    bits, rng = 5, random.Random(n_in * 10 + n_out)
    count = n_in * n_out * 6
    elements = [rng.randrange(1 << bits) for _ in range(count)]
    dut = Regroup(unsigned(bits), n_in, n_out)
    got = []

    async def producer(ctx):
        for start in range(0, count, n_in):
            await stream_put(ctx, dut.i, pack(elements[start:start + n_in], bits), rng=rng,
                             gap=0.3)

    async def consumer(ctx):
        for _ in range(count // n_out):
            beat = await stream_get(ctx, dut.o, rng=rng, stall=0.3)
            got.extend(int(v) for v in beat)

    simulate(dut, producer, consumer)
    assert got == elements


def test_regroup_full_rate():
    """Without stalls a steady stream moves gcd(n_in, n_out) elements every cycle."""
    n_in, n_out, bits = 4, 8, 3
    dut = Regroup(unsigned(bits), n_in, n_out)
    beats = 16
    done = {}

    async def producer(ctx):
        ctx.set(dut.i.valid, 1)
        for k in range(beats):
            ctx.set(dut.i.payload, [k % 8] * n_in)
            while True:
                _, _, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    break
        ctx.set(dut.i.valid, 0)

    async def consumer(ctx):
        ctx.set(dut.o.ready, 1)
        cycles, received = 0, 0
        while received < beats * n_in // n_out:
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            cycles += 1
            received += int(valid)
        done["cycles"] = cycles

    simulate(dut, producer, consumer)
    assert done["cycles"] <= beats + 3


def test_regroup_rejects_bad_counts():
    with pytest.raises(ValueError, match="n_out must be a positive integer, not 0"):
        Regroup(unsigned(4), 2, 0)


def tiny_network(rng):
    cfgs = [LayerConfig(name="l0", in_features=8, out_features=6, rows=3, cols=4, a_bits=4,
                        w_bits=4, acc_bits=14, m_bits=10, b_bits=16, s_max=12, out_bits=4,
                        relu=True),
            LayerConfig(name="l1", in_features=6, out_features=4, rows=2, cols=2, a_bits=4,
                        w_bits=4, acc_bits=12, m_bits=10, b_bits=16, s_max=12, out_bits=5,
                        relu=True),
            LayerConfig(name="l2", in_features=4, out_features=3, rows=1, cols=4, a_bits=5,
                        w_bits=3, acc_bits=12, m_bits=8, b_bits=14, s_max=10, out_bits=6,
                        out_signed=True)]
    layers = []
    for cfg in cfgs:
        w = rng.integers(cfg.w_min, cfg.w_max + 1, size=(cfg.N, cfg.K))
        M = rng.integers(1, 1 << (cfg.m_bits - 2), size=cfg.N)
        B = rng.integers(-(1 << (cfg.b_bits - 3)), 1 << (cfg.b_bits - 3), size=cfg.N)
        S = rng.integers(cfg.s_max - 4, cfg.s_max + 1, size=cfg.N)
        layers.append((cfg, w, M, B, S))
    return layers


def test_network_top_equals_golden_model_under_stalls():
    rng = np.random.default_rng(7)
    layers = tiny_network(rng)
    first, last = layers[0][0], layers[-1][0]
    x = rng.integers(0, 16, size=(12, first.K))
    want = golden_outputs(layers, x)
    dut = NetworkTop(layers, taps=True)
    stall = random.Random(3)
    got, taps = [], [[] for _ in range(len(layers) - 1)]

    async def producer(ctx):
        for beat in sim_beats.engine_beats(first, x):
            await stream_put(ctx, dut.i, beat, rng=stall, gap=0.3)

    async def consumer(ctx):
        for _ in range(len(x) * last.N // last.rows):
            beat = await stream_get(ctx, dut.o, rng=stall, stall=0.3)
            got.extend(int(v) for v in beat.y)

    async def tap_monitor(ctx):
        async for _, _, valid, *ys in ctx.tick().sample(
                dut.tap_valid, *(getattr(dut, f"tap_y{k}") for k in range(len(taps)))):
            for k in range(len(taps)):
                if (valid >> k) & 1:
                    taps[k].extend(int(v) for v in ys[k])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer)
    sim.add_testbench(consumer)
    sim.add_testbench(tap_monitor, background=True)
    sim.run_until(60_000e-6)
    assert np.array_equal(np.array(got).reshape(len(x), last.N), want[-1])
    for k, tap in enumerate(taps):
        assert np.array_equal(np.array(tap).reshape(len(x), layers[k][0].N), want[k]), k
    assert dut.cycles_per_vector == max(e.cycles_per_vector for e in dut.engines)


def test_chain_mismatch_is_named():
    rng = np.random.default_rng(0)
    layers = tiny_network(rng)
    cfgs = [layer[0] for layer in layers]
    with pytest.raises(ValueError, match=r"layer l2: input a_bits = 4 .* out_bits = 5"):
        check_chain([cfgs[0], cfgs[1], cfgs[2].replace(a_bits=4)])
    with pytest.raises(ValueError, match="in_features = 6 does not match out_features = 4"):
        check_chain([cfgs[1], cfgs[1]])
