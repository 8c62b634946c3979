"""The layer configuration: one frozen dataclass that drives the generator, the golden model and
the tests.

A configuration is loaded from a TOML file with a single ``[layer]`` table whose keys are the
field names of :class:`LayerConfig`. Unknown keys, missing required keys, wrong types and
impossible values are errors that name the key and the value.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path


__all__ = ["ConfigError", "LayerConfig", "MAX_NAME_LENGTH", "MAX_WIDTH", "signed_width",
           "signed_range"]


#: The widest operand, accumulator or parameter the generator accepts.
MAX_WIDTH = 64

OVERFLOW_MODES = ("wrap", "saturate")

#: The longest module ``name``: it also names files and folders (``<name>_requant.v``, the build
#: folder), which must stay well under the usual 255-byte file-name limit.
MAX_NAME_LENGTH = 64

MUL_STYLES = ("auto", "dsp", "lut", "pack")

REQUANT_STYLES = ("multiply", "threshold", "auto")

#: The most thresholds per channel (``y_max - y_min``) of ``requant_style = "threshold"``.
MAX_THRESHOLDS = 4095


# Words a module cannot be named in Verilog-2005 or SystemVerilog (Verilator parses both).
_VERILOG_KEYWORDS = frozenset("""
    alias always always_comb always_ff always_latch and assert assign assume automatic before
    begin bind bins binsof bit break buf bufif0 bufif1 byte case casex casez cell chandle checker
    class clocking cmos config const constraint context continue cover covergroup coverpoint
    cross deassign default defparam design disable dist do edge else end endcase endchecker
    endclass endclocking endconfig endfunction endgenerate endgroup endinterface endmodule
    endpackage endprimitive endprogram endproperty endspecify endsequence endtable endtask enum
    event eventually expect export extends extern final first_match for force foreach forever
    fork forkjoin function generate genvar global highz0 highz1 if iff ifnone ignore_bins
    illegal_bins implements implies import incdir include initial inout input inside instance
    int integer interconnect interface intersect join join_any join_none large let liblist
    library local localparam logic longint macromodule matches medium modport module nand
    negedge nettype new nexttime nmos nor noshowcancelled not notif0 notif1 null or output
    package packed parameter pmos posedge primitive priority program property protected pull0
    pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent pure rand randc randcase
    randsequence rcmos real realtime ref reg reject_on release repeat restrict return rnmos
    rpmos rtran rtranif0 rtranif1 s_always s_eventually s_nexttime s_until s_until_with
    scalared sequence shortint shortreal showcancelled signed small soft solve specify
    specparam static string strong strong0 strong1 struct super supply0 supply1 sync_accept_on
    sync_reject_on table tagged task this throughout time timeprecision timeunit tran tranif0
    tranif1 tri tri0 tri1 triand trior trireg type typedef union unique unique0 unsigned until
    until_with untyped use uwire var vectored virtual void wait wait_order wand weak weak0 weak1
    while wildcard wire with within wor xnor xor
""".split())


class ConfigError(ValueError):
    """A layer configuration (or the file that holds it) is malformed or impossible."""


def signed_width(lo, hi=None):
    """Return the fewest bits of a two's-complement signed integer that hold ``[lo, hi]``.

    Parameters
    ----------
    lo, hi : int
        The inclusive range; ``lo <= hi``. Without ``hi``, the one value ``lo``.

    Raises
    ------
    ValueError
        ``lo > hi``.
    """
    lo = int(lo)
    hi = lo if hi is None else int(hi)
    if lo > hi:
        raise ValueError(f"empty range [{lo}, {hi}]")
    # v needs v.bit_length() + 1 bits if v >= 0, and (-v - 1).bit_length() + 1 if v < 0.
    return max(v.bit_length() if v >= 0 else (-v - 1).bit_length() for v in (lo, hi)) + 1


def signed_range(bits):
    """Return ``(lo, hi)``, the range of a ``bits``-wide two's-complement signed integer."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def _signed_bounds(width):
    """The properties ``(min, max)`` of a signed quantity whose width is the field ``width``."""
    def bound(which):
        return property(lambda self: signed_range(getattr(self, width))[which],
                        doc=f"{('Smallest', 'Largest')[which]} value of ``{width}`` signed bits.")
    return bound(0), bound(1)


def _check_int(name, value, lo, hi=None):
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, not {value!r}")
    if value < lo or (hi is not None and value > hi):
        if hi is None:
            raise ConfigError(f"{name} must be at least {lo}, not {value!r}")
        raise ConfigError(f"{name} must be between {lo} and {hi}, not {value!r}")


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, not {value!r}")


@dataclass(frozen=True)
class LayerConfig:
    """One fully connected layer: a ``rows × cols`` MAC array, accumulator and requantization.

    Parameters
    ----------
    name : str
        Verilog module name; a Verilog identifier.
    in_features : int
        ``K``, the length of each dot product. ``cols`` must divide it.
    out_features : int
        ``N``, the number of output channels. ``rows`` must divide it.
    rows, cols : int
        Shape of the MAC array: ``rows`` accumulators, ``cols`` products summed per beat.
    a_bits, a_signed : int, bool
        Activation width and signedness.
    w_bits : int
        Weight width (signed two's complement).
    acc_bits : int
        Accumulator width (signed); at least the product width ``a_bits + w_bits``.
    overflow : {"wrap", "saturate"}
        What the accumulator does with a value that does not fit.
    m_bits, b_bits : int
        Widths of the signed requantization multiplier ``M`` and offset ``B``.
    s_max : int
        Largest right shift ``S`` of the requantization unit.
    shared_shift : bool
        One ``S`` for the whole layer instead of one per channel.
    out_bits, out_signed : int, bool
        Output width and signedness.
    relu : bool
        Clamp outputs below at 0.
    mul_style : {"auto", "dsp", "lut", "pack"}
        How the multipliers (MAC products and requantizer multiplies) are built. ``"dsp"``
        writes each as a ``*`` that synthesis may map to a DSP block; ``"lut"`` writes each as
        explicit radix-4 Booth shift-and-add logic that no synthesis tool maps to a DSP;
        ``"pack"`` puts several narrow MAC products of one column in one multiply (an ECP5
        ``MULT18X18D``; :func:`qmac.hw.multiply.plan_packed`; at least two must fit, e.g. 4-bit
        operands); ``"auto"`` picks per multiplier (see
        :func:`qmac.hw.multiply.plan_multipliers`): with no target part, ``"dsp"`` for products
        of at least 5×6 bits, ``"lut"`` below; with a target, DSPs until the part's budget is
        used (on iCE40 two 8×8 products per ``SB_MAC16``, on ECP5 registered ``MULT18X18D``),
        the smallest multipliers going to LUTs.
    requant_style : {"multiply", "threshold", "auto"}
        The requantizer: ``"multiply"`` is ``clamp(floor((acc·M + B) / 2^S))``
        (:class:`~qmac.hw.requant.FoldRequantizer`, parameters ``M``, ``B``, ``S``);
        ``"threshold"`` counts the channel's thresholds at or below ``acc``
        (:class:`~qmac.hw.threshold.ThresholdRequantizer`, parameters ``T``, ``D``; at most
        :data:`MAX_THRESHOLDS` thresholds, ``y_max - y_min``, per channel); ``"auto"`` lets the
        tool that makes the parameters choose (:func:`qmac.thresholds.choose_style`), and the
        engine builds whichever form it is given.

    Raises
    ------
    ConfigError
        Any value that is of the wrong type or impossible; the message names the key and value.
    """

    name: str = "layer"
    in_features: int = 16
    out_features: int = 8
    rows: int = 1
    cols: int = 1
    a_bits: int = 8
    a_signed: bool = False
    w_bits: int = 8
    acc_bits: int = 32
    overflow: str = "wrap"
    m_bits: int = 16
    b_bits: int = 32
    s_max: int = 31
    shared_shift: bool = False
    out_bits: int = 8
    out_signed: bool = False
    relu: bool = False
    mul_style: str = "auto"
    requant_style: str = "multiply"

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier() or \
                not self.name.isascii() or self.name.startswith("_"):
            raise ConfigError(f"name must be a Verilog identifier (letters, digits, '_', "
                              f"not starting with a digit or '_'), not {self.name!r}")
        if len(self.name) > MAX_NAME_LENGTH:
            raise ConfigError(f"name must be at most {MAX_NAME_LENGTH} characters (it names "
                              f"files and folders), not {len(self.name)} characters "
                              f"({self.name[:16]!r}...)")
        if self.name in _VERILOG_KEYWORDS:
            raise ConfigError(f"name must not be a Verilog keyword, not {self.name!r}")
        _check_int("in_features", self.in_features, 1, 1 << 20)
        _check_int("out_features", self.out_features, 1, 1 << 20)
        _check_int("rows", self.rows, 1, 256)
        _check_int("cols", self.cols, 1, 256)
        if self.in_features % self.cols:
            raise ConfigError(f"cols must divide in_features ({self.in_features}), "
                              f"not {self.cols}")
        if self.out_features % self.rows:
            raise ConfigError(f"rows must divide out_features ({self.out_features}), "
                              f"not {self.rows}")
        _check_bool("a_signed", self.a_signed)
        for key in ("a_bits", "w_bits", "acc_bits", "m_bits", "b_bits", "out_bits"):
            _check_int(key, getattr(self, key), 1, MAX_WIDTH)
        if self.w_bits < 2:
            raise ConfigError(f"w_bits must be at least 2 (signed weights), not {self.w_bits}")
        if self.m_bits < 2:
            raise ConfigError(f"m_bits must be at least 2 (signed multiplier), "
                              f"not {self.m_bits}")
        if self.acc_bits < self.product_bits:
            raise ConfigError(f"acc_bits must be at least the product width "
                              f"a_bits + w_bits = {self.product_bits}, not {self.acc_bits}")
        if self.overflow not in OVERFLOW_MODES:
            raise ConfigError(f"overflow must be one of {', '.join(map(repr, OVERFLOW_MODES))}, "
                              f"not {self.overflow!r}")
        _check_int("s_max", self.s_max, 0, 2 * MAX_WIDTH)
        _check_bool("shared_shift", self.shared_shift)
        _check_bool("out_signed", self.out_signed)
        _check_bool("relu", self.relu)
        if self.mul_style not in MUL_STYLES:
            raise ConfigError(f"mul_style must be one of {', '.join(map(repr, MUL_STYLES))}, "
                              f"not {self.mul_style!r}")
        if self.mul_style == "pack":
            from .ecp5_pack import pack_count
            fit = min(self.rows, pack_count(self.a_bits, self.a_signed, self.w_bits))
            if fit < 2:
                raise ConfigError(f"mul_style = 'pack' needs at least two MAC products per "
                                  f"multiply; rows = {self.rows}, a_bits = {self.a_bits}, "
                                  f"w_bits = {self.w_bits} fit {fit} (narrower operands, "
                                  f"e.g. 4 bits, fit two)")
        if self.requant_style not in REQUANT_STYLES:
            raise ConfigError(f"requant_style must be one of "
                              f"{', '.join(map(repr, REQUANT_STYLES))}, "
                              f"not {self.requant_style!r}")
        if self.out_signed and self.out_bits < 2:
            raise ConfigError(f"out_bits must be at least 2 for a signed output, "
                              f"not {self.out_bits}")
        if self.requant_style == "threshold" and self.y_max - self.y_min > MAX_THRESHOLDS:
            raise ConfigError(f"out_bits = {self.out_bits} gives y_max - y_min = "
                              f"{self.y_max - self.y_min} thresholds per channel; "
                              f"requant_style = 'threshold' holds at most {MAX_THRESHOLDS}")

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, table, *, source="configuration"):
        """Build a configuration from a mapping of keys, refusing unknown keys."""
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [layer] must be a table, not {table!r}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(table) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown key {unknown[0]!r} in [layer] "
                              f"(known keys: {', '.join(sorted(known))})")
        required = ("in_features", "out_features")
        for key in required:
            if key not in table:
                raise ConfigError(f"{source}: missing required key {key!r} in [layer]")
        try:
            return cls(**table)
        except ConfigError as error:
            raise ConfigError(f"{source}: {error}") from None

    @classmethod
    def from_toml(cls, path):
        """Load a configuration from a TOML file holding one ``[layer]`` table."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as error:
            raise ConfigError(f"cannot read configuration {str(path)!r}: "
                              f"{error.strerror}") from None
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: malformed TOML: {error}") from None
        extra = sorted(set(document) - {"layer"})
        if extra:
            raise ConfigError(f"{path}: unknown table or key {extra[0]!r}; "
                              f"the file must hold one [layer] table")
        if "layer" not in document:
            raise ConfigError(f"{path}: no [layer] table")
        return cls.from_dict(document["layer"], source=str(path))

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_toml(self):
        lines = ["[layer]"]
        for key, value in self.to_dict().items():
            if isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, str):
                text = f'"{value}"'
            else:
                text = str(value)
            lines.append(f"{key} = {text}")
        return "\n".join(lines) + "\n"

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    # -- derived quantities -------------------------------------------------------------------

    @property
    def K(self):
        return self.in_features

    @property
    def N(self):
        return self.out_features

    @property
    def beats(self):
        """Beats per dot product, ``K / cols``."""
        return self.in_features // self.cols

    @property
    def out_beats(self):
        """Output beats per input vector, ``N / rows``."""
        return self.out_features // self.rows

    @property
    def requant_lanes(self):
        """Requantizer lanes that keep up with the MAC array, ``ceil(rows / beats)`` (at least 1).

        The array yields ``rows`` accumulators once every ``beats = K/cols`` cycles, so each lane
        requantizes ``ceil(rows / lanes) <= beats`` of them per fold, one after another.
        """
        return -(-self.rows // self.beats)

    @property
    def x_min(self):
        return -(1 << (self.a_bits - 1)) if self.a_signed else 0

    @property
    def x_max(self):
        return (1 << (self.a_bits - 1)) - 1 if self.a_signed else (1 << self.a_bits) - 1

    w_min, w_max = _signed_bounds("w_bits")

    @property
    def product_bits(self):
        """Width that holds every product ``x·w`` (``a_bits + w_bits``)."""
        return self.a_bits + self.w_bits

    def sum_bits(self, count):
        """Width that holds every exact sum of ``count`` products ``x·w``."""
        corners = [x * w for x in (self.x_min, self.x_max) for w in (self.w_min, self.w_max)]
        return signed_width(count * min(corners), count * max(corners))

    @property
    def beat_sum_bits(self):
        """Width that holds every exact sum of ``cols`` products."""
        return self.sum_bits(self.cols)

    acc_min, acc_max = _signed_bounds("acc_bits")
    m_min, m_max = _signed_bounds("m_bits")
    b_min, b_max = _signed_bounds("b_bits")

    @property
    def s_bits(self):
        """Width of the unsigned shift amount, enough for ``s_max``."""
        return max(1, self.s_max.bit_length())

    @property
    def y_min(self):
        lo = -(1 << (self.out_bits - 1)) if self.out_signed else 0
        return max(lo, 0) if self.relu else lo

    @property
    def y_max(self):
        return (1 << (self.out_bits - 1)) - 1 if self.out_signed else (1 << self.out_bits) - 1

    @property
    def datatype_acc_bits(self):
        """The data-type bound ``a_bits + w_bits + ceil(log2 K)``."""
        return self.a_bits + self.w_bits + math.ceil(math.log2(self.in_features))
