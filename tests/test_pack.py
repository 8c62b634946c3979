"""Narrow MAC products packed into one multiply (style ``"pack"``, :mod:`qmac.hw.ecp5_pack`).

The packing arithmetic is checked for every operand value: first on Python integers
(:func:`pack_weights`, :func:`unpack`), then the Amaranth block itself, then MAC arrays built
from it against the golden model with random stalls. Expected values are plain ``x·w``.
"""

import itertools

import pytest
from amaranth.sim import Simulator

from qmac.accumulator import reachable_range
from qmac.hw.config import LayerConfig, signed_width
from qmac.hw.ecp5_pack import (MULT_BITS, PackedProducts, field_bits, pack_count, pack_field,
                               pack_weights, unpack)
from qmac.hw.mac_array import MacArray
from qmac.hw.multiply import MulPlan, pack_size, plan_packed
from qmac.sim import golden
from harness import cfg_id, measure_latency, stream_test
from vectors import dot_config, dot_product_beats, mac_stimulus


def operand_values(bits, is_signed):
    return range(-(1 << (bits - 1)), 1 << (bits - 1)) if is_signed else range(1 << bits)


#: (a_bits, a_signed, w_bits, products per 18x18 multiply), counted by hand.
OPERANDS = [(4, False, 4, 2), (4, True, 4, 2), (3, True, 3, 3), (2, False, 2, 5),
            (2, True, 2, 5), (8, True, 8, 1), (1, False, 4, 3)]


@pytest.mark.parametrize("a_bits, a_signed, w_bits, expected", OPERANDS,
                         ids=lambda v: str(v))
def test_field_bits_is_the_accumulator_bound(a_bits, a_signed, w_bits, expected):
    """The field of one product is the accumulator analysis's exact width of a dot product
    of length 1 over the extreme weights; the packing count follows from it."""
    x = list(operand_values(a_bits, a_signed))
    w = list(operand_values(w_bits, True))
    lo, hi = reachable_range([[w[0]], [w[-1]]], x[0], x[-1])
    assert field_bits(a_bits, a_signed, w_bits) == signed_width(min(lo), max(hi))
    assert pack_count(a_bits, a_signed, w_bits) == expected


@pytest.mark.parametrize("a_bits, a_signed, w_bits", [(4, False, 4), (4, True, 4), (3, True, 3),
                                                      (2, False, 2), (2, True, 2),
                                                      (1, False, 4)], ids=str)
def test_packing_exact_for_every_operand(a_bits, a_signed, w_bits):
    """Every activation and every tuple of weights (4-bit pairs: 2^12 cases; 2-bit groups of
    five: 2^12): the packed operand is what the hardware builds and fits the multiplier port,
    and unpacking ``x·A`` gives every ``x·w_i``."""
    count = pack_count(a_bits, a_signed, w_bits)
    k = pack_field(a_bits, a_signed, w_bits, count)
    assert k == field_bits(a_bits, a_signed, w_bits) + (a_bits == 1)   # a guard bit for 1 bit
    cases = 0
    for weights in itertools.product(operand_values(w_bits, True), repeat=count):
        A, signs = pack_weights(weights, k)
        assert signs == [int(w < 0) for w in weights]
        assert A == sum((w + (signs[i - 1] if i else 0)) << (i * k)
                        for i, w in enumerate(weights))
        assert -(1 << (MULT_BITS - 1)) <= A < 1 << (MULT_BITS - 1)
        for x in operand_values(a_bits, a_signed):
            assert unpack(x * A, x, signs, k) == [x * w for w in weights], (x, weights)
            cases += 1
    assert cases == len(operand_values(a_bits, a_signed)) * (1 << (w_bits * count))


def test_one_more_product_does_not_fit():
    """The count is the largest: with one product more, every field width either overflows
    the 18-bit port or unpacks some extreme operands wrongly (e.g. a 1-bit activation and four
    4-bit weights: a 4-bit field cannot hold ``x·(w + 1) = 8``, and 5-bit fields need 19 bits
    of port)."""
    for a_bits, a_signed, w_bits, count in OPERANDS:
        x_values = operand_values(a_bits, a_signed)
        w_extremes = (-(1 << (w_bits - 1)), (1 << (w_bits - 1)) - 1)
        for k in range(field_bits(a_bits, a_signed, w_bits), MULT_BITS + 1):
            packed = [(weights, *pack_weights(weights, k))
                      for weights in itertools.product(w_extremes, repeat=count + 1)]
            if signed_width(min(A for _, A, _ in packed),
                            max(A for _, A, _ in packed)) > MULT_BITS:
                continue
            assert any(unpack(x * A, x, signs, k) != [x * w for w in weights]
                       for weights, A, signs in packed for x in (x_values[0], x_values[-1])), \
                (a_bits, a_signed, w_bits, k)
        assert pack_field(a_bits, a_signed, w_bits, count + 1) is None


def simulate_block(block, cases):
    """Apply each ``(x, weights)`` of ``cases`` and return the registered products."""
    got = []

    async def bench(ctx):
        ctx.set(block.en, 1)
        for x, weights in cases:
            ctx.set(block.x, x)
            for i, w in enumerate(weights):
                ctx.set(block.w[i], w)
            await ctx.tick()
            got.append([ctx.get(block.p[i]) for i in range(block.count)])
        # Enable low: the products hold still.
        ctx.set(block.en, 0)
        ctx.set(block.x, 1)
        await ctx.tick()
        got.append([ctx.get(block.p[i]) for i in range(block.count)])

    sim = Simulator(block)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("a_bits, a_signed, w_bits, count, late",
                         [(4, False, 4, 2, True), (4, True, 4, 2, True), (2, False, 2, 5, True),
                          (2, True, 2, 5, True), (1, False, 4, 3, True), (1, False, 4, 1, False),
                          (3, True, 3, 3, True)], ids=str)
def test_packed_block_exhaustive(a_bits, a_signed, w_bits, count, late):
    """The hardware block, every operand value: 4-bit pairs (4096 cases), 2-bit groups of
    five (4096 cases), ...; the borrow added after the register where that is exact
    (``late``), before it where not (a content reaches ``-2^(k-1)`` in a field without a guard
    bit: ``1·-8`` of a 1-bit activation, alone)."""
    block = PackedProducts(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits, count=count)
    assert block.late_borrow == late
    cases = [(x, weights)
             for weights in itertools.product(operand_values(w_bits, True), repeat=count)
             for x in operand_values(a_bits, a_signed)]
    got = simulate_block(block, cases)
    for (x, weights), products in zip(cases, got):
        assert products == [x * w for w in weights], (x, weights)
    assert got[-1] == got[-2]


def test_packed_block_rejects_bad_count():
    with pytest.raises(ValueError, match="count must be an integer from 1 to 2 .* not 3"):
        PackedProducts(a_bits=4, a_signed=False, w_bits=4, count=3)
    with pytest.raises(ValueError, match="count must be an integer from 1 to 1 .* not 0"):
        PackedProducts(a_bits=8, a_signed=True, w_bits=8, count=0)
    with pytest.raises(ValueError, match="w_bits must be a positive integer, not 0"):
        pack_count(4, True, 0)
    with pytest.raises(ValueError, match="a_signed must be a bool, not 1"):
        pack_count(4, 1, 4)


def test_plan_rejects_bad_pack():
    cfg = LayerConfig(rows=2, cols=2, in_features=4, out_features=2, a_bits=4, w_bits=4,
                      acc_bits=12)
    with pytest.raises(ValueError, match="requantizer lane cannot be 'pack'"):
        MulPlan(mac=(("pack", "pack"),) * 2, requant=("pack", "pack"))
    with pytest.raises(ValueError, match="at least two products per 18x18 multiply; a_bits=8, "
                                         "a_signed=False, w_bits=8 fit 1"):
        plan_packed(cfg.replace(a_bits=8, w_bits=8, acc_bits=20))
    with pytest.raises(ValueError, match="fit 1"):
        plan_packed(cfg.replace(rows=1, out_features=1))
    with pytest.raises(ValueError, match="cannot mix 'pack' and 'dsp2' MAC products"):
        MulPlan(mac=(("pack", "dsp2"),) * 2, requant=("lut",)).check(cfg)
    with pytest.raises(ValueError, match="requant_style must be 'dsp', 'lut' or None, not 'x'"):
        plan_packed(cfg, requant_style="x")


PACK_CONFIGS = [
    LayerConfig(rows=4, cols=4, a_bits=4, w_bits=4, acc_bits=16),
    LayerConfig(rows=4, cols=4, a_bits=4, w_bits=4, acc_bits=10, a_signed=True,
                overflow="saturate"),
    LayerConfig(rows=3, cols=2, in_features=12, out_features=6, a_bits=4, w_bits=4,
                acc_bits=9, overflow="wrap"),
    LayerConfig(rows=4, cols=3, in_features=12, out_features=8, a_bits=2, w_bits=2,
                acc_bits=6, a_signed=True, overflow="saturate"),
    LayerConfig(rows=5, cols=2, in_features=8, out_features=10, a_bits=3, w_bits=3,
                acc_bits=12, overflow="wrap"),
    LayerConfig(rows=6, cols=2, in_features=8, out_features=12, a_bits=2, w_bits=2,
                acc_bits=7, overflow="wrap"),
]


@pytest.mark.parametrize("cfg", PACK_CONFIGS, ids=cfg_id)
def test_pack_mac_array(cfg):
    """MAC arrays of packed products against the golden model, random stalls, overflow
    included; the latency is that of the other single-stage styles."""
    plan = plan_packed(cfg)
    size = pack_size(cfg)
    groups = plan.pack_groups(cfg)
    assert len(groups) == cfg.cols * -(-cfg.rows // size)
    assert plan_packed(cfg, requant_style="lut").dsp_estimate(cfg, "ecp5") == len(groups)
    dots = mac_stimulus(cfg, 3, 12)
    dut = MacArray(cfg, mul_plan=plan)
    got = stream_test(dut, dot_product_beats(cfg, dots), len(dots), seed=3)
    for k, ((x, w), out) in enumerate(zip(dots, got)):
        acc, overflow = golden.mac(dot_config(cfg, x), x[None, :], w)
        assert list(out.acc) == [int(v) for v in acc[0]], f"dot product {k}"
        assert list(out.overflow) == [int(v) for v in overflow[0]], f"dot product {k}"
    one = dot_product_beats(cfg, mac_stimulus(cfg, 7, 1)[:1])
    assert measure_latency(MacArray(cfg, mul_plan=plan), one) == dut.latency
    assert dut.latency == 2 + (cfg.cols - 1).bit_length()      # as with "dsp" or "lut"


def test_pack_beside_other_styles():
    """``pack`` groups beside ``lut`` and ``dsp`` products; a column's odd one out gets a
    block of its own."""
    cfg = LayerConfig(rows=3, cols=3, in_features=9, out_features=6, a_bits=4, w_bits=4,
                      acc_bits=11, a_signed=True, overflow="saturate")
    plan = MulPlan(mac=(("pack", "lut", "pack"), ("pack", "pack", "dsp"),
                        ("pack", "pack", "lut")), requant=("dsp",) * cfg.requant_lanes)
    assert plan.pack_groups(cfg) == [((0, 0), (1, 0)), ((2, 0),), ((1, 1), (2, 1)), ((0, 2),)]
    assert plan.counts()["mac_pack"] == 6
    dots = mac_stimulus(cfg, 5, 10)
    got = stream_test(MacArray(cfg, mul_plan=plan), dot_product_beats(cfg, dots), len(dots),
                      seed=5)
    for (x, w), out in zip(dots, got):
        acc, overflow = golden.mac(dot_config(cfg, x), x[None, :], w)
        assert list(out.acc) == [int(v) for v in acc[0]]
        assert list(out.overflow) == [int(v) for v in overflow[0]]


def test_pack_engine():
    """A layer engine whose MAC array packs its products, against the golden model."""
    from qmac.hw.engine import LayerEngine
    from qmac.sim import beats
    from vectors import engine_problem
    cfg = LayerConfig(in_features=8, out_features=8, rows=4, cols=2, a_bits=4, w_bits=4,
                      acc_bits=10, overflow="saturate", m_bits=16, b_bits=32, s_max=20)
    batch = 4
    x, w, M, B, S = engine_problem(cfg, 11, batch, "uniform")
    dut = LayerEngine(cfg, w, M, B, S, mul_plan=plan_packed(cfg))
    got = stream_test(dut, beats.engine_beats(cfg, x), batch * cfg.out_beats, seed=11,
                      cycles=dut.cycles(batch))
    expected = golden.layer(cfg, x, w, M, B, S)
    for k, out in enumerate(got):
        vector, fold = divmod(k, cfg.out_beats)
        for r in range(cfg.rows):
            c = fold * cfg.rows + r
            assert (out.y[r], out.overflow[r]) == \
                (int(expected.y[vector, c]), int(expected.overflow[vector, c])), (vector, c)
