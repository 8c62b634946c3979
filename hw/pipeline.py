"""Pieces shared by the pipelined blocks."""

from amaranth.hdl import Signal


__all__ = ["stage"]


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
