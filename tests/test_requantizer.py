"""Amaranth-simulator unit tests of the requantization unit.

Every test runs a producer and a consumer testbench side by side with random stalls on both
streams, and compares every output beat bit for bit with the golden model (``sim.golden``).
"""

import random

import numpy as np
import pytest
from amaranth.hdl import ClockDomain, Fragment, Module
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qmac.hw import layouts
from qmac.hw.config import LayerConfig
from qmac.hw.multiply import MulPlan
from qmac.hw.pipeline import SkidBuffer
from qmac.hw.requant import FoldRequantizer, Requantizer, distinct_shifts
from qmac.sim import beats, golden
from harness import (GAP, STALL, expect_idle, grid, measure_latency, rq_id, run, stream_get,
                     stream_put, stream_test)
from vectors import requant_lane_beats, requant_stimulus


def check_requant(cfg, *, seed=2, count=40):
    rng = random.Random(seed)
    acc, M, B, S, flags, last = requant_lane_beats(cfg, requant_stimulus(cfg, seed, count), rng)
    got = stream_test(Requantizer(cfg), beats.requant_beats(cfg, acc, M, B, S, flags, last),
                      len(acc), seed=seed)
    flat_cfg = cfg.replace(out_features=acc.size, rows=1, shared_shift=False)
    y = golden.requantize(flat_cfg, acc.reshape(1, -1), M.reshape(-1), B.reshape(-1),
                          S.reshape(-1))[0]
    edges = set()
    for k, out in enumerate(got):
        assert out.last == last[k], f"beat {k}: last"
        for r in range(cfg.rows):
            expected = int(y[k * cfg.rows + r])
            assert out.y[r] == expected, \
                f"beat {k}, lane {r}: (acc, M, B, S) = {acc[k, r], M[k, r], B[k, r], S[k, r]}, " \
                f"got y = {out.y[r]}, expected {expected}"
            assert out.overflow[r] == flags[k, r], f"beat {k}, lane {r}: overflow"
            edges.add(expected)
    corners = [a * m for a in (cfg.acc_min, cfg.acc_max) for m in (cfg.m_min, cfg.m_max)]
    reachable = {edge for edge in (cfg.y_min, cfg.y_max)
                 if min(corners) + cfg.b_min <= edge <= max(corners) + cfg.b_max}
    assert reachable <= edges, "the stimulus missed a clamp edge"


def rq_cfg(**changes):
    base = dict(a_bits=1, w_bits=2, in_features=4, out_features=4, rows=1)
    base.update(changes)
    return LayerConfig(**base)


RQ_CONFIGS = [
    rq_cfg(acc_bits=3, m_bits=2, b_bits=3, s_max=0, out_bits=1),
    rq_cfg(rows=2, acc_bits=8, m_bits=4, b_bits=8, s_max=31, out_bits=8),
    rq_cfg(rows=3, out_features=6, acc_bits=12, m_bits=8, b_bits=24, s_max=7, out_bits=4,
           out_signed=True, shared_shift=True),
    rq_cfg(rows=4, acc_bits=32, m_bits=16, b_bits=32, s_max=31, out_bits=8, out_signed=True,
           relu=True),
    rq_cfg(rows=2, acc_bits=48, m_bits=24, b_bits=64, s_max=80, out_bits=32, out_signed=True,
           shared_shift=True),
]


@pytest.mark.parametrize("cfg", RQ_CONFIGS, ids=rq_id)
def test_requantizer(cfg):
    check_requant(cfg)


def test_requantizer_latency():
    cfg = RQ_CONFIGS[2]
    rng = random.Random(1)
    acc, M, B, S, flags, last = requant_lane_beats(cfg, requant_stimulus(cfg, 1, 3)[:cfg.rows],
                                                   rng)
    dut = Requantizer(cfg)
    first = beats.requant_beats(cfg, acc, M, B, S, flags, last)[:1]
    assert measure_latency(dut, first) == dut.latency == 3


def grid_rq_configs():
    configs = []
    for rows in (1, 3, 8):
        for acc_bits, m_bits, b_bits in [(4, 2, 4), (12, 8, 16), (32, 16, 32), (64, 32, 64)]:
            for s_max in sorted({0, 5, acc_bits + m_bits + 2}):
                for shared_shift in (False, True):
                    for out_bits, out_signed, relu in [(1, False, False), (8, False, False),
                                                       (8, True, False), (8, True, True),
                                                       (24, True, False)]:
                        configs.append(rq_cfg(
                            rows=rows, out_features=rows * 2, acc_bits=acc_bits,
                            m_bits=m_bits, b_bits=b_bits, s_max=s_max,
                            shared_shift=shared_shift, out_bits=out_bits,
                            out_signed=out_signed, relu=relu))
    return configs


@pytest.mark.parametrize("cfg", grid(grid_rq_configs(), rq_id, every=15))
def test_requantizer_grid(cfg):
    check_requant(cfg, seed=cfg.acc_bits + cfg.s_max, count=24)


# -- the layer engine's requantizer: lanes sized to the MAC rate ------------------------------

class FoldHarness(wiring.Component):
    """A :class:`FoldRequantizer` with its parameter memory, as the layer engine builds it."""

    def __init__(self, cfg, M, B, S, *, shift_style="select", mul_plan=None,
                 registered_enable=False, enable_copies=False):
        self.rq = FoldRequantizer(cfg, distinct_shifts(S), shift_style=shift_style,
                                  mul_plan=mul_plan, registered_enable=registered_enable,
                                  enable_copies=enable_copies)
        self.image = self.rq.param_words(M, B, S)
        super().__init__({
            "i": In(stream.Signature(layouts.mac_output_layout(cfg))),
            "o": Out(stream.Signature(layouts.requant_output_layout(cfg))),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.rq = rq = self.rq
        m.submodules.params = params = Memory(shape=rq.param_layout, depth=rq.depth,
                                              init=self.image)
        wiring.connect(m, wiring.flipped(self.i), rq.i)
        if self.rq.registered_enable:       # as the engine: through a skid buffer
            m.submodules.skid = skid = SkidBuffer(layouts.requant_output_layout(self.rq.cfg))
            wiring.connect(m, rq.o, skid.i)
            wiring.connect(m, wiring.flipped(self.o), skid.o)
            m.d.comb += rq.o_ready_next.eq(skid.ready_next)
        else:
            wiring.connect(m, wiring.flipped(self.o), rq.o)
        wiring.connect(m, rq.params, params.read_port())
        return m


def fold_problem(cfg, seed, count, vectors=2):
    """A layer configuration with one channel per stimulus lane (``M``, ``B``, ``S`` per
    channel) and ``vectors`` vectors of fold beats: the stimulus accumulators, then random
    ones. With a shared shift every channel takes the first lane's shift."""
    rng = random.Random(seed)
    lanes = requant_stimulus(cfg, seed, count)
    lanes += lanes[:-len(lanes) % cfg.rows]                 # whole folds
    rng.shuffle(lanes)
    cfg = cfg.replace(out_features=len(lanes))
    acc0, M, B, S = (np.array(v, dtype=object) for v in zip(*lanes))
    if cfg.shared_shift:
        S[:] = S[0]
    acc = [acc0] + [np.array([rng.randint(cfg.acc_min, cfg.acc_max) for _ in lanes],
                             dtype=object) for _ in range(vectors - 1)]
    acc = np.stack(acc)                                       # (vectors, channels)
    flags = np.array([[rng.randint(0, 1) for _ in lanes] for _ in range(vectors)],
                     dtype=object)
    return cfg, acc, M, B, S, flags


def fold_beats(cfg, acc, flags):
    """Packed fold beats (accumulators and overflow flags of ``rows`` channels each)."""
    layout = layouts.mac_output_layout(cfg)
    count = acc.size // cfg.rows
    columns = {}
    for r in range(cfg.rows):
        columns[("acc", r)] = acc.reshape(count, cfg.rows)[:, r]
        columns[("overflow", r)] = flags.reshape(count, cfg.rows)[:, r]
    return beats.pack_columns(layout, columns, count)


def check_fold_requant(cfg, *, seed=2, count=40, vectors=2, shift_style="select", mul_plan=None,
                       registered_enable=False, enable_copies=False):
    cfg, acc, M, B, S, flags = fold_problem(cfg, seed, count, vectors)
    dut = FoldHarness(cfg, M, B, S, shift_style=shift_style, mul_plan=mul_plan,
                      registered_enable=registered_enable, enable_copies=enable_copies)
    got = stream_test(dut, fold_beats(cfg, acc, flags), vectors * cfg.out_beats, seed=seed)
    y = golden.requantize(cfg, acc, M, B, S)
    for k, out in enumerate(got):
        vector, fold = divmod(k, cfg.out_beats)
        assert out.last == (fold == cfg.out_beats - 1), f"beat {k}: last"
        for r in range(cfg.rows):
            c = fold * cfg.rows + r
            assert out.y[r] == int(y[vector, c]), \
                f"vector {vector}, channel {c}: (acc, M, B, S) = " \
                f"{acc[vector, c], M[c], B[c], S[c]}, got y = {out.y[r]}, expected {y[vector, c]}"
            assert out.overflow[r] == flags[vector, c], f"vector {vector}, channel {c}: overflow"
    return dut.rq


def fold_cfg(**changes):
    base = dict(a_bits=1, w_bits=2, cols=1)
    base.update(changes)
    base.setdefault("out_features", base.get("rows", 1))
    return LayerConfig(**base)


# (lanes, steps per fold, digits per step) move: one lane over many rows with a multiply of
# several digits, several lanes, lanes not dividing rows, and the full-rate case (lanes = rows).
FOLD_CONFIGS = [
    fold_cfg(in_features=8, rows=1, acc_bits=3, m_bits=2, b_bits=3, s_max=0, out_bits=1),
    fold_cfg(in_features=16, rows=4, acc_bits=20, m_bits=25, b_bits=41, s_max=33, out_bits=8,
             relu=True),
    fold_cfg(in_features=16, rows=2, acc_bits=12, m_bits=8, b_bits=24, s_max=7, out_bits=4,
             out_signed=True, shared_shift=True),
    fold_cfg(in_features=2, rows=5, acc_bits=32, m_bits=16, b_bits=32, s_max=31, out_bits=8,
             out_signed=True, relu=True),
    fold_cfg(in_features=1, rows=3, acc_bits=8, m_bits=4, b_bits=8, s_max=31, out_bits=8),
    fold_cfg(in_features=7, rows=2, acc_bits=48, m_bits=24, b_bits=64, s_max=80, out_bits=32,
             out_signed=True),
    # Several folds: digits, steps and folds all powers of two (the parameter address is the
    # counters side by side), and three folds (a counter of its own).
    fold_cfg(in_features=16, rows=4, out_features=16, acc_bits=20, m_bits=25, b_bits=41,
             s_max=33, out_bits=8, relu=True),
    fold_cfg(in_features=6, rows=2, out_features=6, acc_bits=12, m_bits=10, b_bits=20, s_max=15,
             out_bits=4),
]


@pytest.mark.parametrize("cfg", FOLD_CONFIGS, ids=lambda cfg: f"K{cfg.K}-{rq_id(cfg)}")
def test_fold_requantizer(cfg):
    rq = check_fold_requant(cfg)
    # The unit keeps up with the MAC array: a fold every `beats` cycles at most.
    assert rq.lanes == -(-cfg.rows // cfg.beats)
    assert rq.groups * rq.digits <= cfg.beats
    # Steps, then the operand and term registers (one stage per registered product without a
    # DSP block plan), the adder tree, the sum (its carry kept), the sum with the carry
    # resolved, the shift with the clamp's flags, the clamped result, and the output.
    assert rq.term_stages == 1
    assert rq.latency == rq.groups * rq.digits + 7 + rq.tree_levels


@pytest.mark.parametrize("cfg", FOLD_CONFIGS, ids=lambda cfg: f"K{cfg.K}-{rq_id(cfg)}")
def test_fold_requantizer_registered_enable(cfg):
    """The global enable as a flip-flop fed by a skid buffer's ready_next: the same outputs
    under stalls."""
    rq = check_fold_requant(cfg, seed=9, registered_enable=True)
    assert "o_ready_next" in dict(rq.signature.members)


@pytest.mark.parametrize("cfg", FOLD_CONFIGS, ids=lambda cfg: f"K{cfg.K}-{rq_id(cfg)}")
def test_fold_requantizer_enable_copies(cfg):
    """Copies of the registered enable (parameters, each lane) and the parameter address as a
    choice of two registers: the same outputs under stalls, with or without a skid buffer."""
    for registered in (True, False):
        check_fold_requant(cfg, seed=10, registered_enable=registered, enable_copies=True)


@pytest.mark.parametrize("cut", [2, 5, 8, 11, 14])
def test_fold_requantizer_reset_mid_step(cut):
    """A synchronous reset ``cut`` cycles after a fold entered (in the middle of its digit
    steps, with a running sum in flight) leaves nothing behind: the next folds are exact."""
    # Outputs inside the clamp bounds (y = acc + small), so that any stale sum shows.
    cfg = FOLD_CONFIGS[1].replace(out_features=8)
    rng = random.Random(cut)
    M = np.array([(1 << 20) + rng.randint(0, 1 << 12) for _ in range(cfg.N)], dtype=object)
    B = np.array([rng.randint(0, 1 << 20) for _ in range(cfg.N)], dtype=object)
    S = np.array([20, 21] * (cfg.N // 2), dtype=object)
    acc = np.array([[rng.randint(cfg.acc_min, cfg.acc_max) for _ in range(cfg.N)],
                    [rng.randint(0, 120) for _ in range(cfg.N)]], dtype=object)
    flags = np.zeros_like(acc)
    dut = FoldHarness(cfg, M, B, S, registered_enable=True)
    assert dut.rq.groups * dut.rq.digits == 16               # steps in flight for 16 cycles
    top = Module()
    top.domains.sync = sync = ClockDomain("sync")
    top.submodules.dut = dut
    got, phase = [], {"reset": False}

    async def producer(ctx):
        await stream_put(ctx, dut.i, fold_beats(cfg, acc[:1], flags[:1])[0])
        for _ in range(cut):
            await ctx.tick()
        ctx.set(sync.rst, 1)
        await ctx.tick()
        ctx.set(sync.rst, 0)
        phase["reset"] = True
        for beat in fold_beats(cfg, acc[1:], flags[1:]):
            await stream_put(ctx, dut.i, beat, rng=random.Random(cut), gap=GAP)

    async def consumer(ctx):
        rng = random.Random(cut + 1)
        while not phase["reset"]:                # the stale fold stays in the unit
            await ctx.tick()
        for _ in range(cfg.out_beats):
            got.append(await stream_get(ctx, dut.o, rng=rng, stall=STALL))
        await expect_idle(ctx, dut.o, 16)

    run(top, producer, consumer, deadline=2000)
    y = golden.requantize(cfg, acc[1:], M, B, S)
    assert [[int(v) for v in out.y] for out in got] == \
        [[int(v) for v in y[0, f * cfg.rows:(f + 1) * cfg.rows]] for f in range(cfg.out_beats)]


@pytest.mark.parametrize("cfg", FOLD_CONFIGS[1::2], ids=lambda cfg: f"K{cfg.K}-{rq_id(cfg)}")
def test_fold_requantizer_align(cfg):
    """One constant shift, M and B scaled by 2^(max S - S): the same outputs."""
    rq = check_fold_requant(cfg, seed=7, shift_style="align")
    assert len(rq.shifts) == 1 and rq.shifts[0] == rq.used_shifts[-1]
    assert rq.m_width - cfg.m_bits == rq.used_shifts[-1] - rq.used_shifts[0] > 0


def test_fold_requantizer_auto_style():
    cfg = FOLD_CONFIGS[1]                  # out_bits 8: a window of 9 bits per extra shift
    pick = lambda shifts: FoldRequantizer(cfg, shifts, shift_style="auto")
    rqs = [pick((22, 25, 27, 29, 31, 33)), pick((22, 25, 29, 33)), pick((0, 33)), pick((5,))]
    for rq in rqs:
        Fragment.get(rq, None)
    # 3·11 < 5·9: align; 3·11 >= 3·9: select; 3·33 >= 1·9: select; one shift: nothing to align.
    assert [rq.shift_style for rq in rqs] == ["align", "select", "select", "select"]


def test_fold_requantizer_shapes():
    """The example layer's shape: one lane, 4 steps of 4 digits of 7 bits."""
    rq = FoldRequantizer(FOLD_CONFIGS[1].replace(out_features=8), (22, 29, 33))
    assert (rq.lanes, rq.groups, rq.digits, rq.digit_bits) == (1, 4, 4, 7)
    assert rq.param_layout["sel"].shape.elem_shape.width == 2    # 3 shifts: a 2-bit index
    full_rate = FoldRequantizer(FOLD_CONFIGS[4], (0,))
    assert (full_rate.lanes, full_rate.groups, full_rate.digits) == (3, 1, 1)
    # One digit (2 Booth terms and B: 2 tree levels) after the buffer and operand registers,
    # then the term, tree, sum, carry, clamp-flag, result and output registers.
    assert full_rate.tree_levels == 2
    assert full_rate.latency == 1 + 1 + 1 + 2 + 1 + 1 + 1 + 1 + 1
    assert "sel" not in dict(full_rate.param_layout)
    for block in (rq, full_rate):
        Fragment.get(block, None)           # used: no UnusedElaboratable warning


def test_fold_requantizer_lut_multiply():
    cfg = FOLD_CONFIGS[1]
    plan = MulPlan(mac=(("lut",),) * cfg.rows, requant=("lut",) * cfg.requant_lanes)
    check_fold_requant(cfg, seed=5, count=12, mul_plan=plan)
    check_fold_requant(cfg, seed=6, count=12, mul_plan=plan, shift_style="align")


def test_fold_requantizer_mixed_lanes():
    """Booth ("lut") and "dsp" lanes side by side: their adder trees differ in depth, and the
    shallower one is padded with registers so that the lanes stay aligned."""
    cfg = FOLD_CONFIGS[3]                                   # 5 rows over 3 lanes
    plan = MulPlan(mac=(("lut",),) * cfg.rows, requant=("lut", "dsp", "lut"))
    rq = check_fold_requant(cfg, seed=8, count=15, mul_plan=plan)
    assert rq.lanes == 3 and rq.tree_levels == 4           # 8 Booth terms and B: 4 levels


def test_full_rate_requantizer_rejects_mixed_plan():
    cfg = FOLD_CONFIGS[3]
    plan = MulPlan(mac=(("lut",),) * cfg.rows, requant=("lut", "dsp", "lut"))
    with pytest.raises(ValueError, match=r"plan's requantizer styles must be equal, not "
                                         r"\('lut', 'dsp', 'lut'\)"):
        Requantizer(cfg, mul_plan=plan)


def test_fold_requantizer_rejects_bad_shifts():
    cfg = FOLD_CONFIGS[1]
    for shifts in [(), (3, 2), (1, 1), (34,), (-1, 2), (True,)]:
        with pytest.raises(ValueError, match=r"shifts must be distinct sorted integers in 0\.\.33"):
            FoldRequantizer(cfg, shifts)
    with pytest.raises(ValueError, match=r"shift_style must be one of 'select', 'align', "
                                         r"'auto', not 'barrel'"):
        FoldRequantizer(cfg, (2, 3), shift_style="barrel")
    rq = FoldRequantizer(cfg.replace(out_features=4), (2, 3))
    with pytest.raises(ValueError, match=r"S\[1\] = 4 is not one of the shifts \(2, 3\)"):
        rq.param_words([1] * 4, [0] * 4, [2, 4, 3, 3])
    Fragment.get(rq, None)                  # used: no UnusedElaboratable warning


# -- "dsp" lanes: the digit product cut into partial products of one DSP block each ------------

from qmac.hw.ecp5_mac import RegisteredProduct, fits_mult18          # noqa: E402
from qmac.hw.requant import operand_pieces                            # noqa: E402


@pytest.mark.parametrize("width, piece_bits", [(2, 17), (18, 17), (19, 17), (20, 17), (26, 17),
                                               (36, 17), (48, 17), (104, 17), (20, 15)])
def test_operand_pieces(width, piece_bits):
    """Every value of a signed ``width``-bit operand is the sum of its pieces, each piece fits
    one block (as the block's signed or unsigned operand), and only the top one is signed."""
    pieces = operand_pieces(width, piece_bits)
    assert [low for low, _, _ in pieces] == [piece_bits * k for k in range(len(pieces))]
    assert sum(bits for _, bits, _ in pieces) == width
    assert [s for _, _, s in pieces] == [False] * (len(pieces) - 1) + [True]
    assert all(2 <= bits <= piece_bits + 1 for _, bits, _ in pieces) or width < 2
    rng = random.Random(width)
    for value in [-(1 << (width - 1)), (1 << (width - 1)) - 1, -1, 0, 1] + \
            [rng.randint(-(1 << (width - 1)), (1 << (width - 1)) - 1) for _ in range(50)]:
        total = 0
        for low, bits, is_signed in pieces:
            part = (value >> low) & ((1 << bits) - 1)
            if is_signed and part >> (bits - 1):
                part -= 1 << bits
            total += part << low
        assert total == value


# The 8×8 example-shaped requantizer (rows 8 over beats 8: one lane, one cycle, one digit of
# the whole 25-bit M, acc 20 bits: 2×2 partial products), the example's (4 digits of 7 bits:
# acc cut in 2), one with a 48-bit acc (3 pieces) and digits > 1, and one that needs no cut.
SPLIT_CONFIGS = [
    fold_cfg(in_features=8, rows=8, acc_bits=20, m_bits=25, b_bits=41, s_max=33, out_bits=8,
             relu=True),
    FOLD_CONFIGS[1],
    FOLD_CONFIGS[5],
    fold_cfg(in_features=4, rows=4, acc_bits=20, m_bits=25, b_bits=41, s_max=33, out_bits=8,
             out_signed=True),
    FOLD_CONFIGS[2],
]
SPLIT_PIECES = [(2, 2, 1), (2, 1, 4), (3, 1, 3), (2, 2, 1), (1, 1, 4)]     # acc, digit, digits


def dsp_plan(cfg, registers):
    """``"dsp"`` requantizer lanes; with ``registers``, MAC products ``"dspreg"`` (no family: the
    behavioural model of the block) so that the lanes' partials are RegisteredProduct too."""
    mac = (("dspreg" if registers else "dsp",) * cfg.cols,) * cfg.rows
    return MulPlan(mac=mac, requant=("dsp",) * cfg.requant_lanes,
                   dsp_registers=registers or "output")


@pytest.mark.parametrize("registers", [None, "output", "all"], ids=lambda r: r or "mul")
@pytest.mark.parametrize("cfg, pieces", list(zip(SPLIT_CONFIGS, SPLIT_PIECES)),
                         ids=lambda v: f"K{v.K}-{rq_id(v)}" if isinstance(v, LayerConfig) else "")
def test_fold_requantizer_split_product(cfg, pieces, registers):
    """Bit-exact with the digit product cut into pieces of at most one DSP block (extremes of
    acc and M of both signs are in the stimulus), with a registered ``*`` per piece or a
    RegisteredProduct per piece; the latency counts the blocks' register stages."""
    plan = dsp_plan(cfg.replace(out_features=cfg.rows), registers)
    rq = check_fold_requant(cfg, seed=11, count=30, mul_plan=plan, registered_enable=True)
    assert (len(rq.acc_pieces), len(rq.digit_pieces), rq.digits) == pieces
    for _, bits, _ in rq.acc_pieces:
        for _, m_bits, m_signed in rq.digit_pieces:
            assert fits_mult18(bits, True, m_bits, m_signed)
    partials = len(rq.acc_pieces) * len(rq.digit_pieces)
    assert rq.tree_levels == partials.bit_length()           # the partials and B
    assert rq.registered_products == bool(registers)
    # The block's own stages, then a fabric register after its P output.
    assert rq.term_stages == {None: 1, "output": 3, "all": 4}[registers]
    assert rq.latency == rq.groups * rq.digits + 6 + rq.term_stages + rq.tree_levels
    # Measured: one fold in, its beat out `latency` cycles later.
    cfg, acc, M, B, S, flags = fold_problem(cfg, 3, 2, vectors=1)
    dut = FoldHarness(cfg, M, B, S, mul_plan=plan)
    assert measure_latency(dut, fold_beats(cfg, acc, flags)[:1]) == dut.rq.latency


def test_fold_requantizer_split_blocks():
    """On ECP5 (the plan's family), the 8×8 example shape's one lane is four MULT18X18D
    instances with their registers, no wide ``*``."""
    cfg = SPLIT_CONFIGS[0]
    plan = MulPlan(mac=(("dspreg",),) * cfg.rows, requant=("dsp",), family="ecp5")
    rq = FoldRequantizer(cfg, (20, 33), mul_plan=plan)
    fragment = Fragment.get(rq, None)
    blocks = [sub for sub, _, _ in fragment.subfragments if sub.origins and
              isinstance(sub.origins[0], RegisteredProduct)]
    assert len(blocks) == 4
    assert all(block.origins[0].primitive for block in blocks)
