"""How each multiplier of a layer is built: a ``*`` that synthesis may map to a DSP block, or
explicit LUT logic (radix-4 Booth partial products and an adder) that it cannot.

A layer has ``rows × cols`` MAC products (``x·w``, ``a_bits`` by ``w_bits``) and ``rows``
requantizer multiplies (``acc·M``, ``acc_bits`` by ``m_bits``). :func:`plan_multipliers` turns
``cfg.mul_style`` (and, for ``"auto"``, a DSP budget) into a :class:`MulPlan` that names the
style of every one of them; :class:`~qmac.hw.mac_array.MacArray` and
:class:`~qmac.hw.requant.Requantizer` build each multiplier with :func:`product`.

A third style, ``"dsp2"``, exists for MAC products only: two products of at most 8×8 bits share
one iCE40 ``SB_MAC16`` in its ``MODE_8x8`` (:class:`~qmac.hw.ice40_mac.DualProduct8x8`), which
Yosys does not infer. :class:`~qmac.hw.mac_array.MacArray` pairs them (:meth:`MulPlan.pairs`) and
gives them two register stages instead of one.

A fourth style, ``"dspreg"``, also for MAC products only: one product in an ECP5 ``MULT18X18D``
with its input and output (or pipeline) registers on
(:class:`~qmac.hw.ecp5_mac.RegisteredProduct`), which Yosys does not infer either (it maps a
``*`` to a combinational ``MULT18X18D``). ``"auto"`` picks it on ECP5 for every product the DSP
takes; ``"dsp"`` stays the inferred, combinational mapping.

A fifth, ``"pack"``, also for MAC products only: the products of one column share their
activation, so ``n`` of them (:func:`pack_size`: 2 for 4-bit operands, 5 for 2-bit ones, at
most ``rows``) share one multiply ``x·A``, ``A`` the weights side by side, one ECP5 ``MULT18X18D``
(:class:`~qmac.hw.ecp5_pack.PackedProducts`), with the same single register stage as ``"dsp"``
and ``"lut"`` products. :func:`plan_packed` makes such a plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Value

from .ecp5_pack import MULT_BITS, pack_count


__all__ = ["MulPlan", "plan_multipliers", "plan_packed", "dsp_cost", "product", "soft_product",
           "AUTO_DSP_MIN_BITS", "FAMILIES", "PACKED_FAMILIES", "REGISTERED_FAMILIES",
           "packs_8x8", "fits_dspreg"]


#: With no target part, ``auto`` gives a DSP to products whose narrower operand has at least
#: ``AUTO_DSP_MIN_BITS[0]`` bits and whose wider operand has at least ``AUTO_DSP_MIN_BITS[1]``
#: (5×6 and wider); narrower products go to LUTs.
AUTO_DSP_MIN_BITS = (5, 6)

#: DSP mapping rules of Yosys per FPGA family: largest operand widths of one DSP block, and the
#: smallest multiply it maps (narrower operand, sum of operand widths, product width).
FAMILIES = {
    # synth_ice40 -dsp: SB_MAC16 16x16; maps only A+B > 10 bits with a product of >= 11 bits.
    "ice40": {"max_a": 16, "max_b": 16, "min_operand": 2, "min_sum": 11, "min_y": 11},
    # synth_ecp5: MULT18X18D 18x18; maps every multiply of 2x2 and wider.
    "ecp5": {"max_a": 18, "max_b": 18, "min_operand": 2, "min_sum": 4, "min_y": 1},
}


#: Families whose DSP block takes two MAC products (style ``"dsp2"``) as a hand-instantiated
#: primitive: iCE40's ``SB_MAC16`` in ``MODE_8x8``.
PACKED_FAMILIES = ("ice40",)

#: Families whose DSP block takes one MAC product with its registers on (style ``"dspreg"``)
#: as a hand-instantiated primitive: ECP5's ``MULT18X18D``.
REGISTERED_FAMILIES = ("ecp5",)

#: MAC product styles, and the ones a requantizer lane may have.
MAC_STYLES = ("dsp", "lut", "dsp2", "dspreg", "pack")
REQUANT_STYLES = ("dsp", "lut")


def packs_8x8(cfg):
    """Whether the MAC products of ``cfg`` fit one half of an ``SB_MAC16`` in ``MODE_8x8``
    (activations and weights of at most 8 bits; an unsigned 8-bit activation fits, the block
    reads its ``A`` operand unsigned)."""
    from .ice40_mac import fits_8x8
    return fits_8x8(cfg.a_bits, cfg.a_signed, cfg.w_bits, True)


def fits_dspreg(cfg):
    """Whether the MAC products of ``cfg`` fit one ECP5 ``MULT18X18D`` (operands of at most 18
    bits)."""
    from .ecp5_mac import fits_mult18
    return fits_mult18(cfg.a_bits, cfg.a_signed, cfg.w_bits, True)


def _operand_bits(bits, is_signed):
    """Width of an operand as a signed multiply sees it (an unsigned one gains a sign bit)."""
    return bits if is_signed else bits + 1


def mac_operands(cfg):
    """Widths ``(a, b)`` of one MAC product as the multiply sees them."""
    return _operand_bits(cfg.a_bits, cfg.a_signed), cfg.w_bits


def requant_operands(cfg):
    """Widths ``(a, b)`` of one requantizer multiply ``acc·M``."""
    return cfg.acc_bits, cfg.m_bits


def dsp_cost(a_bits, b_bits, family):
    """DSP blocks Yosys uses for one ``a_bits × b_bits`` signed multiply on ``family``
    (0 when the multiply stays in LUTs). An estimate of its ``mul2dsp`` split: one block per
    ``max_a × max_b`` piece."""
    rule = FAMILIES[family]
    a, b = max(a_bits, b_bits), min(a_bits, b_bits)
    if b < rule["min_operand"] or a + b < rule["min_sum"] or a + b < rule["min_y"]:
        return 0
    return -(-a // rule["max_a"]) * -(-b // rule["max_b"])


@dataclass(frozen=True)
class MulPlan:
    """The style of every multiplier of a layer: ``"dsp"``, ``"lut"``, or for MAC products also
    ``"dsp2"`` (two products per iCE40 ``SB_MAC16``) or ``"dspreg"`` (one product per ECP5
    ``MULT18X18D``, registered).

    Parameters
    ----------
    mac : tuple of tuple of str
        ``mac[r][c]``: the product of row ``r`` and column ``c`` of the MAC array.
    requant : tuple of str
        ``requant[l]``: the multiply of requantizer lane ``l`` (``cfg.requant_lanes`` lanes, the
        lanes the engine's requantizer builds).
    family : str, optional
        The FPGA family the plan is for. With ``"ice40"``, ``"dsp2"`` products are built as
        ``SB_MAC16`` instances (for synthesis), with ``"ecp5"`` ``"dspreg"`` products as
        ``MULT18X18D`` instances; with ``None`` (no target part), as their behavioural model,
        which the Amaranth simulator and plain Verilog simulation run.
    dsp_registers : {"output", "pipeline", "all"}
        The register stages of ``"dspreg"`` products
        (:data:`~qmac.hw.ecp5_mac.REGISTER_MODES`).

    Raises
    ------
    ValueError
        A style is unknown, ``"dsp2"`` or ``"dspreg"`` is given to a requantizer lane,
        ``family`` is not ``None`` or a family of :data:`FAMILIES`, or ``dsp_registers`` is
        unknown; (in :meth:`check`) the plan's shape does not match the configuration,
        ``"dsp2"`` products do not fit 8×8, ``"dspreg"`` products do not fit 18×18, or a
        style is given on a family that does not have it.
    """

    mac: tuple
    requant: tuple
    family: str | None = None
    dsp_registers: str = "output"

    def __post_init__(self):
        for style in [s for row in self.mac for s in row]:
            if style not in MAC_STYLES:
                raise ValueError(f"a multiplier style must be 'dsp' or 'lut', not {style!r} "
                                 f"('dsp2', 'dspreg' and 'pack' are also allowed for MAC "
                                 f"products)")
        for style in self.requant:
            if style not in REQUANT_STYLES:
                raise ValueError(f"a multiplier style must be 'dsp' or 'lut', not {style!r}"
                                 + (f" (a requantizer lane cannot be {style!r})"
                                    if style in MAC_STYLES else ""))
        from .ecp5_mac import check_registers
        check_registers(self.dsp_registers)
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"family must be None or one of "
                             f"{', '.join(map(repr, FAMILIES))}, not {self.family!r}")

    @property
    def packed(self):
        """Whether any MAC product is ``"dsp2"``."""
        return any(s == "dsp2" for row in self.mac for s in row)

    @property
    def registered(self):
        """Whether any MAC product is ``"dspreg"``."""
        return any(s == "dspreg" for row in self.mac for s in row)

    @property
    def product_stages(self):
        """Register stages of the MAC products: those of the DSP blocks when the plan has
        ``"dsp2"`` (2) or ``"dspreg"`` products (2 or 3), else 1."""
        if self.registered:
            from .ecp5_mac import latency
            return latency(self.dsp_registers)
        return 2 if self.packed else 1

    @property
    def primitives(self):
        """Whether ``"dsp2"`` and ``"dspreg"`` products are built as the family's DSP primitive
        (else as its behavioural model)."""
        return self.family in PACKED_FAMILIES + REGISTERED_FAMILIES

    def pairs(self):
        """The ``"dsp2"`` MAC products grouped by the DSP block they share: a list of tuples of
        one or two ``(row, col)`` positions, in column-major order (so that the products of one
        column, which share their activation, share a block where they can)."""
        positions = [(r, c) for c in range(len(self.mac[0]) if self.mac else 0)
                     for r in range(len(self.mac)) if self.mac[r][c] == "dsp2"]
        return [tuple(positions[k:k + 2]) for k in range(0, len(positions), 2)]

    def pack_groups(self, cfg):
        """The ``"pack"`` MAC products grouped by the multiply they share: per column (one
        activation), consecutive rows in groups of at most :func:`pack_size` of ``cfg``; a list
        of tuples of ``(row, col)``."""
        size = pack_size(cfg)
        groups = []
        for c in range(len(self.mac[0]) if self.mac else 0):
            rows = [r for r in range(len(self.mac)) if self.mac[r][c] == "pack"]
            groups += [tuple((r, c) for r in rows[k:k + size])
                       for k in range(0, len(rows), size)]
        return groups

    def counts(self):
        """``{"mac_dsp", "mac_lut", "requant_dsp", "requant_lut"}``: multipliers per style, and
        ``"mac_dsp2"`` (products packed two per DSP block) when there are any."""
        flat = [s for row in self.mac for s in row]
        counts = {"mac_dsp": flat.count("dsp"), "mac_lut": flat.count("lut"),
                  "requant_dsp": list(self.requant).count("dsp"),
                  "requant_lut": list(self.requant).count("lut")}
        if "dsp2" in flat:
            counts["mac_dsp2"] = flat.count("dsp2")
        if "pack" in flat:
            counts["mac_pack"] = flat.count("pack")
        if "dspreg" in flat:
            counts["mac_dspreg"] = flat.count("dspreg")
        return counts

    def dsp_estimate(self, cfg, family):
        """DSP blocks this plan asks of ``family`` (Yosys's mapping rules, estimated; one block
        per pair of ``"dsp2"`` products, one per ``"dspreg"`` product and one per group of
        ``"pack"`` products)."""
        counts = self.counts()
        requant = self.requant             # cfg.requant_lanes lanes (check)
        return (counts["mac_dsp"] * dsp_cost(*mac_operands(cfg), family)
                + len(self.pairs()) + counts.get("mac_dspreg", 0)
                + (len(self.pack_groups(cfg)) if "mac_pack" in counts else 0)
                + list(requant).count("dsp") * dsp_cost(*requant_operands(cfg), family))

    def check(self, cfg):
        if len(self.mac) != cfg.rows or any(len(row) != cfg.cols for row in self.mac):
            raise ValueError(f"the MAC part of a multiplier plan must be {cfg.rows}×{cfg.cols}, "
                             f"not {len(self.mac)}×{len(self.mac[0]) if self.mac else 0}")
        if len(self.requant) != cfg.requant_lanes:
            raise ValueError(f"the requantizer part of a multiplier plan must have "
                             f"{cfg.requant_lanes} lanes (cfg.requant_lanes), "
                             f"not {len(self.requant)}")
        if self.packed:
            if not packs_8x8(cfg):
                raise ValueError(f"'dsp2' MAC products need operands of at most 8 bits, not "
                                 f"a_bits={cfg.a_bits}, w_bits={cfg.w_bits}")
            if self.family is not None and self.family not in PACKED_FAMILIES:
                raise ValueError(f"'dsp2' MAC products exist only on "
                                 f"{', '.join(map(repr, PACKED_FAMILIES))}, not on family "
                                 f"{self.family!r}")
        if "mac_pack" in self.counts() and self.packed:
            raise ValueError("a multiplier plan cannot mix 'pack' and 'dsp2' MAC products")
        if "mac_pack" in self.counts() and pack_size(cfg) < 2:
            raise ValueError(f"'pack' MAC products need at least two products per "
                             f"{MULT_BITS}x{MULT_BITS} multiply; a_bits={cfg.a_bits}, "
                             f"a_signed={cfg.a_signed}, w_bits={cfg.w_bits} fit "
                             f"{pack_size(cfg)}")
        if self.registered:
            if not fits_dspreg(cfg):
                raise ValueError(f"'dspreg' MAC products need operands of at most 18 bits, not "
                                 f"a_bits={cfg.a_bits}, w_bits={cfg.w_bits}")
            if self.family is not None and self.family not in REGISTERED_FAMILIES:
                raise ValueError(f"'dspreg' MAC products exist only on "
                                 f"{', '.join(map(repr, REGISTERED_FAMILIES))}, not on family "
                                 f"{self.family!r}")
        if self.packed and self.registered:
            raise ValueError("a plan cannot mix 'dsp2' and 'dspreg' MAC products")
        if "mac_pack" in self.counts() and self.registered:
            raise ValueError("a plan cannot mix 'pack' and 'dspreg' MAC products")
        return self


def pack_size(cfg):
    """Products sharing one activation that fit one ECP5 ``MULT18X18D`` (style ``"pack"``),
    at most ``cfg.rows``: :func:`~qmac.hw.ecp5_pack.pack_count` of the MAC operands."""
    return min(cfg.rows, pack_count(cfg.a_bits, cfg.a_signed, cfg.w_bits))


def plan_packed(cfg, *, requant_style=None):
    """The plan with every MAC product ``"pack"`` (:func:`pack_size` per ``MULT18X18D``) and
    every requantizer lane ``requant_style`` (default: the ``"auto"`` style without a target
    part, a DSP for the usual widths).

    Raises
    ------
    ValueError
        Fewer than two products of ``cfg`` fit one multiply, or ``requant_style`` is not
        ``"dsp"``, ``"lut"`` or ``None``.
    """
    if requant_style is None:
        requant_style = _auto_style(*requant_operands(cfg))
    if requant_style not in ("dsp", "lut"):
        raise ValueError(f"requant_style must be 'dsp', 'lut' or None, not {requant_style!r}")
    return _uniform(cfg, "pack", requant_style).check(cfg)


def _uniform(cfg, mac_style, requant_style):
    return MulPlan(mac=tuple(tuple(mac_style for _ in range(cfg.cols)) for _ in range(cfg.rows)),
                   requant=tuple(requant_style for _ in range(cfg.requant_lanes)))


def _auto_style(a_bits, b_bits):
    lo, hi = sorted((a_bits, b_bits))
    return "dsp" if lo >= AUTO_DSP_MIN_BITS[0] and hi >= AUTO_DSP_MIN_BITS[1] else "lut"


def plan_multipliers(cfg, *, family=None, dsp_budget=None, dsp_registers="output"):
    """The :class:`MulPlan` of ``cfg.mul_style``.

    ``"dsp"`` and ``"lut"`` give every multiplier that style. ``"auto"`` without ``family``
    gives ``"dsp"`` to products of at least 5×6 bits (:data:`AUTO_DSP_MIN_BITS`, operand widths
    as the signed multiply sees them: an unsigned activation counts one bit more) and ``"lut"``
    to narrower ones. ``"auto"`` with ``family`` and ``dsp_budget`` starts from every multiplier
    that the family's DSPs take (:func:`dsp_cost` > 0) on a DSP, then moves multipliers to LUTs,
    the smallest first (MAC products before requantizer lanes when they are smaller), until the
    DSP estimate fits ``dsp_budget``. Within the MAC array whole columns move first, so the
    rows stay alike.

    On iCE40 (:data:`PACKED_FAMILIES`), when the MAC products fit 8×8 (:func:`packs_8x8`),
    ``"auto"`` makes them ``"dsp2"``: two per ``SB_MAC16``. Those blocks set the array's
    throughput, so the requantizer lanes move to LUTs first; then MAC products, column by
    column, until the estimate fits. The plan records ``family``, so that the packed products
    become ``SB_MAC16`` instances.

    On ECP5 (:data:`REGISTERED_FAMILIES`), when the MAC products fit 18×18
    (:func:`fits_dspreg`), ``"auto"`` makes every MAC product that stays on a DSP
    ``"dspreg"`` (a ``MULT18X18D`` with its registers on, ``dsp_registers`` stages) and records
    ``family``, so that they become ``MULT18X18D`` instances.

    Raises
    ------
    ValueError
        ``family`` is unknown, or only one of ``family`` and ``dsp_budget`` is given.
    """
    if (family is None) != (dsp_budget is None):
        raise ValueError("give both family and dsp_budget, or neither")
    if family is not None and family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}, "
                         f"not {family!r}")
    if cfg.mul_style in ("dsp", "lut"):
        return _uniform(cfg, cfg.mul_style, cfg.mul_style)
    if cfg.mul_style == "pack":
        return plan_packed(cfg)
    mac_ops, rq_ops = mac_operands(cfg), requant_operands(cfg)
    if family is None:
        return _uniform(cfg, _auto_style(*mac_ops), _auto_style(*rq_ops))
    if family in PACKED_FAMILIES and packs_8x8(cfg):
        return _plan_dsp_first(cfg, family, dsp_budget, "dsp2")
    if family in REGISTERED_FAMILIES and fits_dspreg(cfg) and dsp_cost(*mac_ops, family):
        return _plan_dsp_first(cfg, family, dsp_budget, "dspreg",
                               dsp_registers=dsp_registers)

    mac_cost, rq_cost = dsp_cost(*mac_ops, family), dsp_cost(*rq_ops, family)
    mac = [["dsp" if mac_cost else "lut" for _ in range(cfg.cols)] for _ in range(cfg.rows)]
    requant = ["dsp" if rq_cost else "lut" for _ in range(cfg.requant_lanes)]
    # Candidates to move, smallest multiply first; MAC products column by column.
    moves = [(mac_ops[0] * mac_ops[1], "mac", r, c)
             for c in range(cfg.cols) for r in range(cfg.rows) if mac_cost]
    moves += [(rq_ops[0] * rq_ops[1], "requant", r, None)
              for r in range(cfg.requant_lanes) if rq_cost]
    moves.sort(key=lambda move: move[0])      # stable: keeps the column-by-column order
    used = mac_cost * cfg.rows * cfg.cols + rq_cost * cfg.requant_lanes
    for _, block, r, c in moves:
        if used <= dsp_budget:
            break
        if block == "mac":
            mac[r][c] = "lut"
            used -= mac_cost
        else:
            requant[r] = "lut"
            used -= rq_cost
    return MulPlan(mac=tuple(map(tuple, mac)), requant=tuple(requant))


def _plan_dsp_first(cfg, family, dsp_budget, style, **options):
    """``"auto"`` on a family whose DSP blocks qmac instantiates for MAC products (``style``
    ``"dsp2"``: two per iCE40 ``SB_MAC16``; ``"dspreg"``: one registered ECP5 ``MULT18X18D``):
    every MAC product ``style``; then, while :meth:`MulPlan.dsp_estimate` exceeds
    ``dsp_budget``, requantizer lanes to LUTs, then MAC products (column by column, last column
    first). The MAC blocks set the array's clock and throughput, so they keep the DSPs first.
    The estimate counts the requantizer lanes the engine builds (``cfg.requant_lanes``,
    :class:`~qmac.hw.requant.FoldRequantizer`), each at the cost of a full ``acc_bits ×
    m_bits`` multiply (an upper bound of its digit multiply). ``options`` go to
    :class:`MulPlan` (e.g. ``dsp_registers``)."""
    rq_cost = dsp_cost(*requant_operands(cfg), family)
    mac = [[style] * cfg.cols for _ in range(cfg.rows)]
    requant = ["dsp" if rq_cost else "lut" for _ in range(cfg.requant_lanes)]

    def plan():
        return MulPlan(mac=tuple(map(tuple, mac)), requant=tuple(requant), family=family,
                       **options)

    for r in range(cfg.requant_lanes):
        if plan().dsp_estimate(cfg, family) <= dsp_budget:
            return plan()
        requant[r] = "lut"
    for c in reversed(range(cfg.cols)):
        for r in range(cfg.rows):
            if plan().dsp_estimate(cfg, family) <= dsp_budget:
                return plan()
            mac[r][c] = "lut"
    return plan()


def soft_product(a, b):
    """The exact product ``a·b`` of two Amaranth values as radix-4 Booth partial products summed
    by adders, with no ``*``: no synthesis tool maps it to a DSP block.

    The narrower operand is recoded into ``ceil((n + 1) / 2)`` digits ``d ∈ {-2, …, 2}`` (an
    unsigned operand gains a sign bit first); each digit selects ``0, ±a, ±2a`` (a negation is an
    inversion plus one, the ones gathered into a single extra addend), so an ``n``-bit operand
    costs about ``n/2 + 1`` addends instead of ``n``. The result is signed when either operand is
    signed and exactly as wide as Amaranth's ``a * b``.
    """
    a, b = Value.cast(a), Value.cast(b)
    def digits_of(v):
        return (len(v) + (0 if v.shape().signed else 1) + 1) // 2
    if digits_of(b) > digits_of(a):
        a, b = b, a            # recode the operand with fewer Booth digits, `b`
    shape = Value.cast(a * b).shape()        # the shape Amaranth gives `a * b` (not built)
    # `b` as a signed value with an even number of bits (sign-extended).
    b_signed = b if b.shape().signed else Cat(b, Const(0, 1)).as_signed()
    digit_bits = len(b_signed) + len(b_signed) % 2
    b_bits = [b_signed[min(k, len(b_signed) - 1)] for k in range(digit_bits)]
    a_wide = a if a.shape().signed else Cat(a, Const(0, 1)).as_signed()
    terms = []
    ones = []
    for i in range(digit_bits // 2):
        lower = b_bits[2 * i - 1] if i else Const(0, 1)
        mid, high = b_bits[2 * i], b_bits[2 * i + 1]
        one = mid ^ lower
        two = (high & ~mid & ~lower) | (~high & mid & lower)
        # 0, a or 2a, then inverted when the digit is negative (~v = -v - 1), modulo 2^width;
        # written with AND/OR/XOR so that every bit of every cell is used.
        single = _to_width(a_wide << (2 * i), shape.width)
        double = _to_width(a_wide << (2 * i + 1), shape.width)
        magnitude = (single & one.replicate(shape.width)) | (double & two.replicate(shape.width))
        invert = Cat(Const(0, 2 * i), high.replicate(shape.width - 2 * i))
        terms.append(magnitude ^ invert)
        ones += [high, Const(0, 1)]
    terms.append(Cat(*ones))                                         # the +1 of each negation
    # Sum modulo 2^width (the exact product fits `width` bits): every term sign-extended or
    # cut to `width` bits, every partial sum cut to `width` bits.
    width = shape.width
    total = None
    for term in terms:
        term = _to_width(term, width)
        total = term if total is None else (total + term)[:width]
    exact = total
    return exact.as_signed() if shape.signed else exact.as_unsigned()


def _to_width(value, width):
    """``value`` modulo ``2^width`` as a ``width``-bit unsigned value (sign-extended first)."""
    if len(value) >= width:
        return value[:width]
    fill = value[-1] if value.shape().signed else Const(0, 1)
    return Cat(value, fill.replicate(width - len(value)))


def product(a, b, style):
    """``a * b`` built in ``style``: ``"dsp"`` (a plain ``*``) or ``"lut"``
    (:func:`soft_product`). (``"dsp2"`` and ``"dspreg"`` products are registered blocks,
    built by :class:`~qmac.hw.mac_array.MacArray` with
    :class:`~qmac.hw.ice40_mac.DualProduct8x8` and
    :class:`~qmac.hw.ecp5_mac.RegisteredProduct`.)"""
    if style == "dsp":
        return a * b
    if style == "lut":
        return soft_product(a, b)
    raise ValueError(f"a multiplier style must be 'dsp' or 'lut', not {style!r}")
