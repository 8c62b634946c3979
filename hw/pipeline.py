"""Pieces shared by the pipelined blocks."""

from amaranth.hdl import Signal


__all__ = ["global_enable", "stage", "register_side_band"]


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


def stage(m, en, prefix, **values):
    """Register each of ``values`` while ``en`` is high (one pipeline stage of side-band
    signals). Returns the registers in the same order, named ``{prefix}_{key}``."""
    registers = []
    for key, value in values.items():
        register = Signal(value.shape(), name=f"{prefix}_{key}")
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
