"""Pieces shared by the pipelined blocks."""

from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["global_enable", "output_enable", "stage", "register_side_band", "SkidBuffer"]


def global_enable(m, i, o):
    """The enable of a pipeline that stalls as a whole: high when the output register is empty
    or being read (``~o.valid | o.ready``); it is also ``i.ready``. ``o.valid`` stays a register,
    so no ``valid`` waits on a ``ready``."""
    en = Signal()
    m.d.comb += [
        en.eq(~o.valid | o.ready),
        i.ready.eq(en),
    ]
    return en


def output_enable(m, o, *, ready_next=None, copies=None):
    """The global enable ``en = ~o.valid | o.ready`` of a pipeline whose output register is
    ``o``, and ``out_valid``, a signal the caller drives with the next ``o.valid`` (what ``o.valid``
    takes while ``en`` is high). With ``ready_next`` (``o.ready`` of the next cycle, e.g. a
    :class:`SkidBuffer`'s ``ready_next``) ``en`` is a flip-flop that always equals that
    expression, for its fan-out; else it is logic. Returns ``(en, out_valid)``, or with
    ``copies`` (a count) ``(en, out_valid, [copy, ...])``: with ``ready_next``, flip-flops
    that always equal ``en``, each computed from itself (``~Mux(copy, out_valid, o.valid) |
    ready_next``), so that Yosys does not merge them with ``en`` (its ``opt_merge`` merges only
    cells with the same inputs) and each can sit beside the part of the pipeline it enables;
    without ``ready_next``, ``en`` itself."""
    en = Signal(init=1, name="enable")
    out_valid = Signal(name="out_valid")
    if ready_next is not None:
        enables = [en] + [Signal(init=1, name=f"enable_copy{k}") for k in range(copies or 0)]
        for copy in enables:
            m.d.sync += copy.eq(~Mux(copy, out_valid, o.valid) | ready_next)
    else:
        enables = [en] * (1 + (copies or 0))
        m.d.comb += en.eq(~o.valid | o.ready)
    return (en, out_valid) if copies is None else (en, out_valid, enables[1:])


def stage(m, en, prefix, *, reset_less=False, init=None, **values):
    """Register each of ``values`` while ``en`` is high (one pipeline stage of side-band
    signals). Returns the registers in the same order, named ``{prefix}_{key}``; with
    ``reset_less``, they have no reset (data that means something only beside a valid bit that
    has one: fewer flip-flops on the high fan-out reset net). ``init`` maps keys to initial
    values (default: the shape's own)."""
    init = init or {}
    registers = []
    for key, value in values.items():
        register = Signal(value.shape(), name=f"{prefix}_{key}", reset_less=reset_less,
                          **({"init": init[key]} if key in init else {}))
        with m.If(en):
            m.d.sync += register.eq(value)
        registers.append(register)
    return registers


def register_side_band(m, en, o, *, valid, overflow, last):
    """The output register's side band: ``o.valid``, ``o.p.overflow`` and ``o.p.last`` take
    ``valid``, ``overflow`` and ``last`` while ``en`` is high."""
    with m.If(en):
        m.d.sync += [
            o.valid.eq(valid),
            o.p.overflow.eq(overflow),
            o.p.last.eq(last),
        ]


class SkidBuffer(wiring.Component):
    """A stream register slice that cuts the ``ready`` path: ``i.ready`` is a register.

    A beat passes straight through while ``o`` is ready (no added latency); a beat offered
    while ``o`` stalls is caught in the skid register, and ``i.ready`` falls for as long as the
    skid register is full. So a global enable upstream (``~o.valid | o.ready`` of the block
    that feeds ``i``) depends on flip-flops only, not on the consumer's ``ready``.

    Parameters
    ----------
    layout : data layout
        The payload of both streams.

    Members
    -------
    i : In(stream.Signature(layout))
    o : Out(stream.Signature(layout))
    ready_next : Out(1)
        The value ``i.ready`` takes in the next cycle (a function of this cycle's ``i.valid``
        and ``o.ready``), so that the producer can register its own enable.

    Timing: ``o.valid`` is ``i.valid`` or the skid register's valid (both registers upstream;
    never a ``ready``), ``o.p`` is the skid register while it is full, else ``i.p``. Throughput
    is one beat per cycle; nothing is lost, duplicated or reordered under any stall pattern.
    """

    def __init__(self, layout):
        self.layout = layout
        super().__init__({"i": In(stream.Signature(layout)), "o": Out(stream.Signature(layout)),
                          "ready_next": Out(1)})

    def elaborate(self, platform):
        m = Module()
        skid = Signal(self.layout, name="skid", reset_less=True)    # data: no reset
        skid_valid = Signal()
        m.d.comb += [
            self.i.ready.eq(~skid_valid),
            self.o.valid.eq(skid_valid | self.i.valid),
            self.o.p.eq(Mux(skid_valid, Value.cast(skid), Value.cast(self.i.p))),
            self.ready_next.eq(Mux(skid_valid, self.o.ready, ~self.i.valid | self.o.ready)),
        ]
        with m.If(self.i.valid & ~skid_valid & ~self.o.ready):
            m.d.sync += [skid.eq(self.i.p), skid_valid.eq(1)]
        with m.If(skid_valid & self.o.ready):
            m.d.sync += skid_valid.eq(0)
        return m
