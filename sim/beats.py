"""Turn NumPy batches into packed stream beats for each block, and packed beats back into arrays.

Packing follows :func:`hw.layouts.flat_fields`, so it matches the hardware's payload layouts bit
for bit. Values are Python integers (payloads can be hundreds of bits wide). The expected beats
come from the golden model (:mod:`qmac.sim.golden`); the payload formats are those of
``docs/arithmetic.md``.
"""

from __future__ import annotations

import numpy as np

from qmac.hw import layouts
from qmac.hw.layouts import flat_fields
from . import golden


__all__ = [
    "pack_columns", "unpack_columns",
    "mac_beats", "mac_expected", "requant_beats", "requant_expected",
    "engine_beats", "engine_expected", "engine_outputs",
]


def pack_columns(layout, columns, count):
    """Pack ``count`` beats; ``columns`` maps each leaf path of ``layout`` to ``count`` values."""
    packed = np.zeros(count, dtype=object)
    for path, offset, width, _signed in flat_fields(layout):
        values = np.asarray(columns[path], dtype=object).reshape(count)
        packed = packed | ((values & ((1 << width) - 1)) << offset)
    return [int(v) for v in packed]


def unpack_columns(layout, packed):
    """Unpack beats into ``{path: object array}``; signed fields are sign-extended."""
    values = np.array([int(v) for v in packed], dtype=object)
    columns = {}
    for path, offset, width, is_signed in flat_fields(layout):
        field = (values >> offset) & ((1 << width) - 1)
        if is_signed and len(field):
            field = np.where(field >> (width - 1) == 1, field - (1 << width), field)
        columns[path] = field
    return columns


def _vector_beats(cfg, x):
    """``x`` (batch, K) -> array (batch, beats, cols)."""
    return np.asarray(x, dtype=object).reshape(len(x), cfg.beats, cfg.cols)


def mac_beats(cfg, x, w):
    """MAC-array input beats: for each vector and each fold ``j``, the ``K/cols`` beats of the dot
    products of channels ``[j·rows, (j+1)·rows)``."""
    x = golden.check_inputs(cfg, x)
    w = golden.check_weights(cfg, w)
    xb = _vector_beats(cfg, x)                                   # batch, beats, cols
    wt = np.asarray(w, dtype=object).reshape(cfg.out_beats, cfg.rows, cfg.beats, cfg.cols)
    batch = len(x)
    count = batch * cfg.out_beats * cfg.beats
    shape = (batch, cfg.out_beats, cfg.beats)
    columns = {}
    for c in range(cfg.cols):
        columns[("x", c)] = np.broadcast_to(xb[:, None, :, c], shape)
        for r in range(cfg.rows):
            columns[("w", r, c)] = np.broadcast_to(wt[None, :, r, :, c], shape)
    beat_index = np.broadcast_to(np.arange(cfg.beats), shape)
    columns[("first",)] = (beat_index == 0).astype(int)
    columns[("last",)] = (beat_index == cfg.beats - 1).astype(int)
    return pack_columns(layouts.mac_input_layout(cfg), columns, count)


def mac_expected(cfg, x, w):
    """Expected MAC-array output beats for :func:`mac_beats`."""
    acc, flags = golden.mac(cfg, x, w)
    batch = len(acc)
    acc = np.asarray(acc, dtype=object).reshape(batch * cfg.out_beats, cfg.rows)
    flags = np.asarray(flags, dtype=int).reshape(batch * cfg.out_beats, cfg.rows)
    columns = {}
    for r in range(cfg.rows):
        columns[("acc", r)] = acc[:, r]
        columns[("overflow", r)] = flags[:, r]
    return pack_columns(layouts.mac_output_layout(cfg), columns, batch * cfg.out_beats)


def _requant_columns(cfg, acc, M, B, S, flags, last):
    n = len(acc)
    columns = {}
    for r in range(cfg.rows):
        columns[("acc", r)] = acc[:, r]
        columns[("m", r)] = M[:, r]
        columns[("b", r)] = B[:, r]
        columns[("overflow", r)] = flags[:, r]
        if not cfg.shared_shift:
            columns[("s", r)] = S[:, r]
    if cfg.shared_shift:
        columns[("s",)] = S[:, 0]
    columns[("last",)] = last
    return columns, n


def requant_beats(cfg, acc, M, B, S, flags, last):
    """Requantization-unit input beats. Each argument is an array of shape (beats, rows), except
    ``last`` (beats,)."""
    arrays = [np.asarray(a, dtype=object) for a in (acc, M, B, S, flags)]
    columns, n = _requant_columns(cfg, *arrays, np.asarray(last, dtype=object))
    return pack_columns(layouts.requant_input_layout(cfg), columns, n)


def requant_expected(cfg, acc, M, B, S, flags, last):
    """Expected requantization-unit output beats for :func:`requant_beats`."""
    # Every lane of every beat uses that beat's own parameters: element-wise requantization.
    acc = golden.check_range("acc", acc, cfg.acc_min, cfg.acc_max)
    M, B, S = golden.check_requant_values(cfg, M, B, S)
    y = golden.requantize_values(acc, M, B, S, y_min=cfg.y_min, y_max=cfg.y_max)
    y = np.asarray(y, dtype=object)
    flags = np.asarray(flags, dtype=object)
    columns = {("last",): np.asarray(last, dtype=object)}
    for r in range(cfg.rows):
        columns[("y", r)] = y[:, r]
        columns[("overflow", r)] = flags[:, r]
    return pack_columns(layouts.requant_output_layout(cfg), columns, len(acc))


def engine_beats(cfg, x):
    """Layer-engine input beats: ``K/cols`` beats per vector."""
    x = golden.check_inputs(cfg, x)
    xb = _vector_beats(cfg, x).reshape(len(x) * cfg.beats, cfg.cols)
    columns = {("x", c): xb[:, c] for c in range(cfg.cols)}
    return pack_columns(layouts.engine_input_layout(cfg), columns, len(xb))


def engine_expected(cfg, x, w, M, B, S):
    """Expected layer-engine output beats: ``N/rows`` beats per vector, ``last`` on the final."""
    result = golden.layer(cfg, x, w, M, B, S)
    batch = len(result.y)
    y = np.asarray(result.y, dtype=object).reshape(batch * cfg.out_beats, cfg.rows)
    flags = np.asarray(result.overflow, dtype=int).reshape(batch * cfg.out_beats, cfg.rows)
    last = np.tile((np.arange(cfg.out_beats) == cfg.out_beats - 1).astype(int), batch)
    columns = {("last",): last}
    for r in range(cfg.rows):
        columns[("y", r)] = y[:, r]
        columns[("overflow", r)] = flags[:, r]
    return pack_columns(layouts.engine_output_layout(cfg), columns, batch * cfg.out_beats)


def engine_outputs(cfg, packed):
    """Unpack layer-engine output beats into ``(y, overflow, last)``.

    ``y`` and ``overflow`` have shape ``(batch, out_features)``; ``last`` has one entry per beat.
    The number of beats must be a multiple of ``N/rows``.
    """
    if len(packed) % cfg.out_beats:
        raise ValueError(f"{len(packed)} output beats is not a whole number of vectors "
                         f"({cfg.out_beats} beats each)")
    columns = unpack_columns(layouts.engine_output_layout(cfg), packed)
    batch = len(packed) // cfg.out_beats
    y = np.stack([columns[("y", r)] for r in range(cfg.rows)], axis=1)
    flags = np.stack([columns[("overflow", r)] for r in range(cfg.rows)], axis=1)
    y = y.reshape(batch, cfg.out_features)
    flags = flags.reshape(batch, cfg.out_features).astype(bool)
    if cfg.out_signed or cfg.out_bits <= 63:
        y = y.astype(np.int64)
    else:
        y = y.astype(np.uint64)
    return y, flags, columns[("last",)].astype(bool)
