"""Pieces shared by the pipelined blocks."""

from amaranth.hdl import Signal


__all__ = ["global_enable", "stage"]


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
