"""Stream payload layouts shared by the generators and the testbenches.

Each function takes a :class:`~hw.config.LayerConfig` and returns the payload layout of one
stream, so that a testbench packs and unpacks beats with exactly the layout the hardware uses.
:func:`flat_fields` turns any layout into a list of ``(path, offset, width, signed)`` entries that
a process without Amaranth (the cocotb testbench) can pack with.
"""

from amaranth.hdl import Shape, signed, unsigned
from amaranth.lib import data


__all__ = [
    "activation_shape", "output_shape",
    "mac_input_layout", "mac_output_layout",
    "requant_input_layout", "requant_output_layout",
    "engine_input_layout", "engine_output_layout",
    "flat_fields",
]


def activation_shape(cfg):
    """Shape of one activation ``x``."""
    return signed(cfg.a_bits) if cfg.a_signed else unsigned(cfg.a_bits)


def output_shape(cfg):
    """Shape of one requantized output ``y``."""
    return signed(cfg.out_bits) if cfg.out_signed else unsigned(cfg.out_bits)


def mac_input_layout(cfg):
    """One beat into the MAC array: ``cols`` activations, a ``rows × cols`` weight tile, and the
    ``first``/``last`` marks of the dot product."""
    return data.StructLayout({
        "x":     data.ArrayLayout(activation_shape(cfg), cfg.cols),
        "w":     data.ArrayLayout(data.ArrayLayout(signed(cfg.w_bits), cfg.cols), cfg.rows),
        "first": unsigned(1),
        "last":  unsigned(1),
    })


def mac_output_layout(cfg):
    """One finished dot product per row: the accumulators and their sticky overflow flags."""
    return data.StructLayout({
        "acc":      data.ArrayLayout(signed(cfg.acc_bits), cfg.rows),
        "overflow": data.ArrayLayout(unsigned(1), cfg.rows),
    })


def requant_input_layout(cfg):
    """One beat into the requantization unit: ``rows`` accumulators with their parameters.

    ``s`` is one shift per lane, or a single shift when ``cfg.shared_shift``. ``overflow`` and
    ``last`` pass through unchanged.
    """
    if cfg.shared_shift:
        s_layout = unsigned(cfg.s_bits)
    else:
        s_layout = data.ArrayLayout(unsigned(cfg.s_bits), cfg.rows)
    return data.StructLayout({
        "acc":      data.ArrayLayout(signed(cfg.acc_bits), cfg.rows),
        "m":        data.ArrayLayout(signed(cfg.m_bits), cfg.rows),
        "b":        data.ArrayLayout(signed(cfg.b_bits), cfg.rows),
        "s":        s_layout,
        "overflow": data.ArrayLayout(unsigned(1), cfg.rows),
        "last":     unsigned(1),
    })


def requant_output_layout(cfg):
    """One beat out of the requantization unit (and out of the layer engine)."""
    return data.StructLayout({
        "y":        data.ArrayLayout(output_shape(cfg), cfg.rows),
        "overflow": data.ArrayLayout(unsigned(1), cfg.rows),
        "last":     unsigned(1),
    })


def engine_input_layout(cfg):
    """One beat into the layer engine: ``cols`` consecutive activations of the input vector."""
    return data.StructLayout({
        "x": data.ArrayLayout(activation_shape(cfg), cfg.cols),
    })


engine_output_layout = requant_output_layout


def flat_fields(layout, prefix=()):
    """Flatten a layout into ``[(path, offset, width, signed), ...]``, LSB first.

    ``path`` is a tuple of field names and array indices, e.g. ``("w", 2, 0)``.
    """
    if isinstance(layout, data.StructLayout) or isinstance(layout, data.ArrayLayout):
        entries = []
        for key, field in layout:
            for path, offset, width, is_signed in flat_fields(field.shape, prefix + (key,)):
                entries.append((path, offset + field.offset, width, is_signed))
        return entries
    shape = Shape.cast(layout)
    return [(prefix, 0, shape.width, shape.signed)]
