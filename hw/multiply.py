"""How each multiplier of a layer is built: a ``*`` that synthesis may map to a DSP block, or
explicit LUT logic (radix-4 Booth partial products and an adder) that it cannot.

A layer has ``rows × cols`` MAC products (``x·w``, ``a_bits`` by ``w_bits``) and ``rows``
requantizer multiplies (``acc·M``, ``acc_bits`` by ``m_bits``). :func:`plan_multipliers` turns
``cfg.mul_style`` (and, for ``"auto"``, a DSP budget) into a :class:`MulPlan` that names the
style of every one of them; :class:`~qmac.hw.mac_array.MacArray` and
:class:`~qmac.hw.requant.Requantizer` build each multiplier with :func:`product`.
"""

from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Value


__all__ = ["MulPlan", "plan_multipliers", "dsp_cost", "product", "soft_product",
           "AUTO_DSP_MIN_BITS", "FAMILIES"]


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
    """The style, ``"dsp"`` or ``"lut"``, of every multiplier of a layer.

    Parameters
    ----------
    mac : tuple of tuple of str
        ``mac[r][c]``: the product of row ``r`` and column ``c`` of the MAC array.
    requant : tuple of str
        ``requant[r]``: the multiply of requantizer lane ``r``.
    """

    mac: tuple
    requant: tuple

    def __post_init__(self):
        for style in [s for row in self.mac for s in row] + list(self.requant):
            if style not in ("dsp", "lut"):
                raise ValueError(f"a multiplier style must be 'dsp' or 'lut', not {style!r}")

    def counts(self):
        """``{"mac_dsp", "mac_lut", "requant_dsp", "requant_lut"}``: multipliers per style."""
        flat = [s for row in self.mac for s in row]
        return {"mac_dsp": flat.count("dsp"), "mac_lut": flat.count("lut"),
                "requant_dsp": list(self.requant).count("dsp"),
                "requant_lut": list(self.requant).count("lut")}

    def dsp_estimate(self, cfg, family):
        """DSP blocks this plan asks of ``family`` (Yosys's mapping rules, estimated)."""
        counts = self.counts()
        return (counts["mac_dsp"] * dsp_cost(*mac_operands(cfg), family)
                + counts["requant_dsp"] * dsp_cost(*requant_operands(cfg), family))

    def check(self, cfg):
        if len(self.mac) != cfg.rows or any(len(row) != cfg.cols for row in self.mac):
            raise ValueError(f"the MAC part of a multiplier plan must be {cfg.rows}×{cfg.cols}, "
                             f"not {len(self.mac)}×{len(self.mac[0]) if self.mac else 0}")
        if len(self.requant) != cfg.rows:
            raise ValueError(f"the requantizer part of a multiplier plan must have {cfg.rows} "
                             f"lanes, not {len(self.requant)}")
        return self


def _uniform(cfg, mac_style, requant_style):
    return MulPlan(mac=tuple(tuple(mac_style for _ in range(cfg.cols)) for _ in range(cfg.rows)),
                   requant=tuple(requant_style for _ in range(cfg.rows)))


def _auto_style(a_bits, b_bits):
    lo, hi = sorted((a_bits, b_bits))
    return "dsp" if lo >= AUTO_DSP_MIN_BITS[0] and hi >= AUTO_DSP_MIN_BITS[1] else "lut"


def plan_multipliers(cfg, *, family=None, dsp_budget=None):
    """The :class:`MulPlan` of ``cfg.mul_style``.

    ``"dsp"`` and ``"lut"`` give every multiplier that style. ``"auto"`` without ``family``
    gives ``"dsp"`` to products of at least 5×6 bits (:data:`AUTO_DSP_MIN_BITS`, operand widths
    as the signed multiply sees them: an unsigned activation counts one bit more) and ``"lut"``
    to narrower ones. ``"auto"`` with ``family`` and ``dsp_budget`` starts from every multiplier
    that the family's DSPs take (:func:`dsp_cost` > 0) on a DSP, then moves multipliers to LUTs,
    the smallest first (MAC products before requantizer lanes when they are smaller), until the
    DSP estimate fits ``dsp_budget``. Within the MAC array whole columns move first, so the
    rows stay alike.

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
    mac_ops, rq_ops = mac_operands(cfg), requant_operands(cfg)
    if family is None:
        return _uniform(cfg, _auto_style(*mac_ops), _auto_style(*rq_ops))

    mac_cost, rq_cost = dsp_cost(*mac_ops, family), dsp_cost(*rq_ops, family)
    mac = [["dsp" if mac_cost else "lut" for _ in range(cfg.cols)] for _ in range(cfg.rows)]
    requant = ["dsp" if rq_cost else "lut" for _ in range(cfg.rows)]
    # Candidates to move, smallest multiply first; MAC products column by column.
    moves = [(mac_ops[0] * mac_ops[1], "mac", r, c)
             for c in range(cfg.cols) for r in range(cfg.rows) if mac_cost]
    moves += [(rq_ops[0] * rq_ops[1], "requant", r, None) for r in range(cfg.rows) if rq_cost]
    moves.sort(key=lambda move: move[0])      # stable: keeps the column-by-column order
    used = mac_cost * cfg.rows * cfg.cols + rq_cost * cfg.rows
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
    (:func:`soft_product`)."""
    if style == "dsp":
        return a * b
    if style == "lut":
        return soft_product(a, b)
    raise ValueError(f"a multiplier style must be 'dsp' or 'lut', not {style!r}")
