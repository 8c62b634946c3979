"""The network top: layer engines chained by streams, with width adaptation between them.

Layer ``l`` sends ``rows_l`` outputs per beat; layer ``l + 1`` takes ``cols_(l+1)`` activations
per beat. :class:`Regroup` turns one into the other without losing, adding or reordering an
element, moving ``g = gcd(rows_l, cols_(l+1))`` elements per cycle.
"""

import functools
import math
import operator

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .engine import LayerEngine


__all__ = ["Regroup", "NetworkTop", "check_chain"]


class Regroup(wiring.Component):
    """Re-beat a stream of elements: ``n_in`` elements per input beat to ``n_out`` per output beat.

    Parameters
    ----------
    shape : Shape
        Shape of one element.
    n_in, n_out : int
        Elements per input and per output beat.

    Members
    -------
    i : In(stream.Signature(ArrayLayout(shape, n_in)))
    o : Out(stream.Signature(ArrayLayout(shape, n_out)))

    Timing: ``g = gcd(n_in, n_out)`` elements move per cycle from an input holding register to
    an output collecting register, so a steady stream needs ``n_in/g`` cycles per input beat and
    ``n_out/g`` per output beat. The output beat is registered; ``valid`` never waits on
    ``ready``. Element ``e`` of the stream (counting across beats) is element ``e mod n_out`` of
    output beat ``e // n_out``; a partial output beat waits for the elements that complete it.
    """

    def __new__(cls, shape, n_in, n_out):
        # Refuse bad counts before Elaboratable.__new__ marks the object as one to be used.
        for name, value in (("n_in", n_in), ("n_out", n_out)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        return super().__new__(cls)

    def __init__(self, shape, n_in, n_out):
        self.shape, self.n_in, self.n_out = shape, n_in, n_out
        self.chunk = math.gcd(n_in, n_out)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(shape, n_in))),
            "o": Out(stream.Signature(data.ArrayLayout(shape, n_out))),
        })

    def elaborate(self, platform):
        m = Module()
        chunk_bits = self.chunk * data.ArrayLayout(self.shape, 1).size
        chunks_in, chunks_out = self.n_in // self.chunk, self.n_out // self.chunk

        # Unpack side: hold one input beat, hand out its chunks in order.
        held = Signal(data.ArrayLayout(self.shape, self.n_in).size)
        held_valid = Signal()
        take = Signal(range(chunks_in))
        chunk_valid = held_valid
        # An OR of masked chunks rather than a variable word_select or a Switch: the Verilog
        # stays lint-clean (no truncating shift, no overlapping casez).
        chunk = Signal(chunk_bits)
        m.d.comb += chunk.eq(functools.reduce(operator.or_, [
            Mux(take == k, held[k * chunk_bits:(k + 1) * chunk_bits], 0)
            for k in range(chunks_in)]))
        chunk_ready = Signal()
        last_take = take == chunks_in - 1
        m.d.comb += self.i.ready.eq(~held_valid | (chunk_ready & last_take))
        with m.If(chunk_valid & chunk_ready):
            if chunks_in > 1:
                m.d.sync += take.eq(take + 1)
            with m.If(last_take):
                m.d.sync += [take.eq(0), held_valid.eq(0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [held.eq(self.i.payload.as_value()), held_valid.eq(1), take.eq(0)]

        # Pack side: collect chunks; the completing chunk moves the beat into the output register.
        collect = Signal(max(1, (chunks_out - 1) * chunk_bits))
        put = Signal(range(chunks_out))
        last_put = put == chunks_out - 1
        m.d.comb += chunk_ready.eq(~last_put | ~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(chunk_valid & chunk_ready):
            with m.If(last_put):
                if chunks_out == 1:
                    m.d.sync += self.o.payload.as_value().eq(chunk)
                else:
                    m.d.sync += self.o.payload.as_value().eq(
                        collect[:(chunks_out - 1) * chunk_bits] | (chunk.as_unsigned() << (
                            (chunks_out - 1) * chunk_bits)))
                m.d.sync += [self.o.valid.eq(1), put.eq(0)]
            with m.Else():
                for k in range(chunks_out - 1):
                    with m.If(put == k):
                        m.d.sync += collect.word_select(k, chunk_bits).eq(chunk)
                m.d.sync += put.eq(put + 1)
        return m


def check_chain(cfgs):
    """Raise ``ValueError`` naming the layers when one layer's output does not fit the next
    layer's input (features, width or signedness)."""
    for before, after in zip(cfgs, cfgs[1:]):
        if before.out_features != after.in_features:
            raise ValueError(f"layer {after.name}: in_features = {after.in_features} does not "
                             f"match out_features = {before.out_features} of {before.name}")
        if (before.out_bits, before.out_signed) != (after.a_bits, after.a_signed):
            raise ValueError(
                f"layer {after.name}: input a_bits = {after.a_bits} "
                f"({'signed' if after.a_signed else 'unsigned'}) does not match the output of "
                f"{before.name}: out_bits = {before.out_bits} "
                f"({'signed' if before.out_signed else 'unsigned'})")


class NetworkTop(wiring.Component):
    """Layer engines chained by streams: a whole network in hardware.

    Parameters
    ----------
    layers : list of (LayerConfig, weights, M, B, S)
        In order; layer ``l``'s output must be layer ``l + 1``'s input (:func:`check_chain`).
    mul_plans : list of MulPlan, optional
        One multiplier plan per layer (:func:`qmac.hw.multiply.plan_multipliers`), as a
        synthesis for a given part chooses them; default: each layer's own ``mul_style``.
    taps : bool
        Add an observation port per layer boundary (``tap_valid[l]`` high in a cycle in which
        layer ``l`` hands a beat on, ``tap_y<l>`` its outputs), for testbenches that check every
        layer. They only observe; leave them off for synthesis.

    Members
    -------
    i : In(stream.Signature(layouts.engine_input_layout(first layer)))
    o : Out(stream.Signature(layouts.engine_output_layout(last layer)))
    overflow : Out(1)
        Sticky: some accumulator of some layer overflowed since the last reset (proven
        impossible for weights that ``qmac analyze`` calls safe).

    Timing: each engine as :class:`LayerEngine`; the regroupers add two registers each. The
    slowest stage sets the rate: ``max_l`` of the engine's ``cycles_per_vector`` and the
    regrouper's ``K_(l+1)/g`` cycles per vector.
    """

    def __new__(cls, layers, *, mul_plans=None, taps=False):
        # Refuse a bad chain before the component exists (no UnusedElaboratable warning).
        if not layers:
            raise ValueError("a network needs at least one layer")
        check_chain([layer[0] for layer in layers])
        if mul_plans is not None and len(mul_plans) != len(layers):
            raise ValueError(f"mul_plans must have one plan per layer ({len(layers)}), not "
                             f"{len(mul_plans)}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, layers, *, mul_plans=None, taps=False):
        cfgs = [layer[0] for layer in layers]
        self.cfgs = cfgs
        plans = mul_plans or [None] * len(layers)
        self.engines = [LayerEngine(*layer, mul_plan=plan) for layer, plan in zip(layers, plans)]
        self.taps = taps
        ports = {
            "i": In(stream.Signature(layouts.engine_input_layout(cfgs[0]))),
            "o": Out(stream.Signature(layouts.engine_output_layout(cfgs[-1]))),
            "overflow": Out(1),
        }
        if taps:
            ports["tap_valid"] = Out(max(1, len(cfgs) - 1))
            for index, cfg in enumerate(cfgs[:-1]):
                ports[f"tap_y{index}"] = Out(data.ArrayLayout(layouts.output_shape(cfg),
                                                              cfg.rows))
        super().__init__(ports)
        self.regroups = [Regroup(layouts.output_shape(before), before.rows, after.cols)
                         for before, after in zip(cfgs, cfgs[1:])]

    @property
    def cycles_per_vector(self):
        """Cycles per vector of the slowest stage in steady state."""
        stages = [engine.cycles_per_vector for engine in self.engines]
        stages += [after.in_features // regroup.chunk
                   for regroup, after in zip(self.regroups, self.cfgs[1:])]
        return max(stages)

    def elaborate(self, platform):
        m = Module()
        for index, engine in enumerate(self.engines):
            m.submodules[f"engine{index}"] = engine
        for index, regroup in enumerate(self.regroups):
            m.submodules[f"regroup{index}"] = regroup
        wiring.connect(m, wiring.flipped(self.i), self.engines[0].i)
        wiring.connect(m, self.engines[-1].o, wiring.flipped(self.o))
        flags = Signal(len(self.engines))
        for index, engine in enumerate(self.engines):
            out = engine.o
            m.d.comb += flags[index].eq(out.valid & out.ready & out.payload.overflow.as_value()
                                        .any())
        for index, (regroup, after) in enumerate(zip(self.regroups, self.engines[1:])):
            before = self.engines[index]
            m.d.comb += [regroup.i.valid.eq(before.o.valid),
                         regroup.i.payload.eq(before.o.payload.y),
                         before.o.ready.eq(regroup.i.ready)]
            m.d.comb += [after.i.valid.eq(regroup.o.valid),
                         after.i.payload.x.eq(regroup.o.payload),
                         regroup.o.ready.eq(after.i.ready)]
            if self.taps:
                m.d.comb += [self.tap_valid[index].eq(before.o.valid & before.o.ready),
                             getattr(self, f"tap_y{index}").eq(before.o.payload.y)]
        with m.If(flags.any()):
            m.d.sync += self.overflow.eq(1)
        return m
