"""Several narrow MAC products in one ECP5 ``MULT18X18D``: products that share their activation.

Yosys maps every multiply of 2×2 bits or wider to a whole ``MULT18X18D`` on ECP5, so a 4×4
product wastes most of an 18×18 block. The products of one column of the MAC array share their
activation ``x``, so ``n`` of them fit one multiply (style ``"pack"``): with weights
``w_0 … w_{n-1}`` and a field of ``k`` bits per product,

    A = Σ_i w_i·2^(i·k)            P = x·A = Σ_i (x·w_i)·2^(i·k)

exactly. ``k`` starts at :func:`field_bits`, the exact signed width of one product ``x·w`` over
every operand value (the accumulator analysis of a dot product of length 1: the corners of
``[x_min, x_max] × [w_min, w_max]``); :func:`pack_field` adds a guard bit only where the exact
product range needs one for the borrows below (three or more fields whose products reach
``-2^(k-1)``, e.g. a 1-bit activation). Signed fields borrow from the fields above them, on
both sides of the multiply:

- ``A`` is built by concatenation, with no adder across fields: digit ``i`` is
  ``(w_i - b_{i-1}) mod 2^k`` and ``b_i = [w_i - b_{i-1} < 0]`` (a ``w_bits + 1``-bit decrement
  per field; the top field is ``w_{n-1} - b_{n-2}``, signed). Then ``A = Σ w_i·2^(i·k)``.
- From ``P``, product ``i`` is ``P[i·k : i·k + k]`` plus the borrow ``P[i·k - 1]`` (the sign of
  the fields below it, whose sum ``L_i = Σ_{j<i} (x·w_j)·2^(j·k)`` lies in
  ``[-2^(i·k-1), 2^(i·k-1))``, which :func:`pack_field` makes sure of), modulo ``2^k``, read
  as signed: one ``k``-bit increment per field, each independent of the others
  (:func:`unpack`).

:func:`pack_weights` and :func:`unpack` are the same arithmetic on Python integers; the tests
check them, and the hardware, against ``x·w_i`` for every operand value.
"""

from amaranth.hdl import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["PackedProducts", "product_range", "field_bits", "pack_field", "pack_count",
           "pack_weights", "unpack", "MULT_BITS"]


#: Operand width of ECP5's ``MULT18X18D`` (signed; an unsigned operand needs one bit more).
MULT_BITS = 18


def _operand_range(bits, is_signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)


def _signed_width(lo, hi):
    width = 1
    while not -(1 << (width - 1)) <= lo <= hi <= (1 << (width - 1)) - 1:
        width += 1
    return width


def product_range(a_bits, a_signed, w_bits):
    """The exact range ``(lo, hi)`` of one product ``x·w`` over every operand value: the
    accumulator analysis of a dot product of length 1 (the corners of the operand box)."""
    x_lo, x_hi = _operand_range(a_bits, a_signed)
    w_lo, w_hi = _operand_range(w_bits, True)
    corners = [x * w for x in (x_lo, x_hi) for w in (w_lo, w_hi)]
    return min(corners), max(corners)


def field_bits(a_bits, a_signed, w_bits):
    """The exact signed width of one product ``x·w`` of an ``a_bits`` activation (signed or
    not) and a signed ``w_bits`` weight (e.g. 8 for 4-bit operands, 4 for 2-bit ones): the
    narrowest field a packed product can have."""
    return _signed_width(*product_range(a_bits, a_signed, w_bits))


def _check_operands(a_bits, a_signed, w_bits):
    for name, value in (("a_bits", a_bits), ("w_bits", w_bits)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if not isinstance(a_signed, bool):
        raise ValueError(f"a_signed must be a bool, not {a_signed!r}")


def _borrows_readable(lo, hi, k, count):
    """Whether, for products in ``[lo, hi]`` and ``k``-bit fields, the sum of the fields below
    every field ``i`` lies in ``[-2^(i·k-1), 2^(i·k-1))``, so that bit ``i·k - 1`` of ``P`` is
    its sign (the borrow into field ``i``). With ``k`` the product width this holds for two
    fields always, and for more unless products reach ``-2^(k-1)``."""
    for i in range(1, count):
        weight = sum(1 << (j * k) for j in range(i))
        if lo * weight < -(1 << (i * k - 1)) or hi * weight >= 1 << (i * k - 1):
            return False
    return True


def pack_field(a_bits, a_signed, w_bits, count, *, mult_bits=MULT_BITS):
    """The narrowest field ``k`` (guard bits included) with which ``count`` products sharing
    one activation are exact in one ``mult_bits × mult_bits`` signed multiply, or ``None``.

    ``k`` starts at :func:`field_bits` (no guard bit) and grows while the borrows between
    fields are not readable (:func:`_borrows_readable`, from the exact product range); the
    packed weights need ``(count - 1)·k + w_bits + 1`` bits (the top field holds
    ``w - borrow``), the activation ``a_bits`` (one more when unsigned).
    """
    _check_operands(a_bits, a_signed, w_bits)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, not {count!r}")
    if a_bits + (0 if a_signed else 1) > mult_bits:
        return None
    lo, hi = product_range(a_bits, a_signed, w_bits)
    k = field_bits(a_bits, a_signed, w_bits)
    while (count - 1) * k + w_bits + 1 <= mult_bits:
        if _borrows_readable(lo, hi, k, count):
            return k
        k += 1
    return None


def pack_count(a_bits, a_signed, w_bits, *, mult_bits=MULT_BITS):
    """How many products sharing one activation fit one ``mult_bits × mult_bits`` signed
    multiply exactly (:func:`pack_field`); 0 when not even one does. A result of 1 means
    packing gains nothing."""
    count = 0
    while pack_field(a_bits, a_signed, w_bits, count + 1, mult_bits=mult_bits) is not None:
        count += 1
    return count


def pack_weights(weights, k):
    """The packed operand ``A = Σ w_i·2^(i·k)`` as the hardware builds it: digits
    ``(w_i - b_{i-1}) mod 2^k`` with borrows ``b_i``, and the signed top field. Returns
    ``(A, digits)``; ``A`` equals ``Σ w_i·2^(i·k)`` exactly."""
    borrow, digits, value = 0, [], 0
    for i, w in enumerate(weights):
        field = int(w) - borrow
        if i == len(weights) - 1:
            digits.append(field)
            value += field << (i * k)
        else:
            digits.append(field % (1 << k))
            value += digits[-1] << (i * k)
            borrow = int(field < 0)
    return value, digits


def unpack(P, count, k):
    """The ``count`` products ``x·w_i`` held in ``P = x·A`` (fields of ``k`` bits): field ``i``
    plus the borrow bit ``P[i·k - 1]``, modulo ``2^k``, read as signed."""
    products = []
    for i in range(count):
        field = (P >> (i * k)) % (1 << k)
        borrow = (P >> (i * k - 1)) & 1 if i else 0
        value = (field + borrow) % (1 << k)
        products.append(value - (1 << k) if value >> (k - 1) else value)
    return products


class PackedProducts(wiring.Component):
    """``count`` registered products ``x·w_i`` of one activation, computed by one multiply.

    Parameters
    ----------
    a_bits : int
        Activation width.
    a_signed : bool
        Whether the activation is signed.
    w_bits : int
        Weight width (signed).
    count : int
        Products in the block, ``1 <= count <= pack_count(a_bits, a_signed, w_bits)``.

    Members
    -------
    x : In(a_bits, signed or not)
        The shared activation.
    w : In(data.ArrayLayout(signed(w_bits), count))
        The weights.
    en : In(1)
        Enable of the product registers.
    p : Out(data.ArrayLayout(signed(field_bits(a_bits, a_signed, w_bits)), count))
        The products: registered, or (with :attr:`late_borrow`) a registered field plus its
        registered borrow bit.

    Timing: one register stage; ``p`` holds ``x·w_i`` of the operands present in the cycle
    before the last one with ``en`` high. The path to that register runs through the weight
    decrement and the multiply (one ``MULT18X18D`` on ECP5, combinational as Yosys maps it),
    and, without :attr:`late_borrow`, a ``k``-bit increment; with it, the increment follows the
    register (into the adder tree's first level).

    Raises
    ------
    ValueError
        A width is not a positive integer, or ``count`` does not fit one multiply.
    """

    def __new__(cls, *, a_bits, a_signed, w_bits, count):
        # Refuse bad arguments before the component exists (one never elaborated would make
        # Amaranth warn when it is collected).
        limit = pack_count(a_bits, a_signed, w_bits)
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= limit:
            raise ValueError(f"count must be an integer from 1 to {limit} (products of "
                             f"{a_bits}-bit {'signed' if a_signed else 'unsigned'} activations "
                             f"and {w_bits}-bit weights per {MULT_BITS}x{MULT_BITS} multiply), "
                             f"not {count!r}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, a_bits, a_signed, w_bits, count):
        self.a_bits, self.a_signed, self.w_bits, self.count = a_bits, a_signed, w_bits, count
        #: Bits per field: :func:`pack_field` of ``count``.
        self.k = pack_field(a_bits, a_signed, w_bits, count)
        #: Bits of one product (the width of each ``p``).
        self.product_bits = field_bits(a_bits, a_signed, w_bits)
        lo, _ = product_range(a_bits, a_signed, w_bits)
        #: Whether the borrow of each field is added after the product register (off the
        #: multiply's path): the field read as a signed ``read_bits``-bit number plus its borrow
        #: bit is then the product itself, not only modulo ``2^read_bits``. It is when the
        #: field has a guard bit (``read_bits = product_bits + 1``) or no product reaches
        #: ``-2^(product_bits-1)`` (then the sum stays inside ``[-2^(r-1), 2^(r-1)]`` and
        #: differs from the product by a multiple of ``2^r``: by 0).
        self.late_borrow = self.k > self.product_bits or lo > -(1 << (self.product_bits - 1))
        #: Bits of each field that are registered.
        self.read_bits = min(self.k, self.product_bits + 1)
        super().__init__({
            "x": In(signed(a_bits) if a_signed else unsigned(a_bits)),
            "w": In(data.ArrayLayout(signed(w_bits), count)),
            "en": In(1),
            "p": Out(data.ArrayLayout(signed(self.product_bits), count)),
        })

    def elaborate(self, platform):
        m = Module()
        k, count = self.k, self.count
        # A by concatenation: digit i = (w_i - b_{i-1}) mod 2^k, the top field signed.
        digits = []
        borrow = None
        for i in range(count):
            field = Signal(signed(self.w_bits + 1), name=f"field_{i}")
            m.d.comb += field.eq(self.w[i] if borrow is None else self.w[i] - borrow)
            if i < count - 1:
                digits.append(field.as_unsigned()[:k] if k <= len(field) else
                              Cat(field, field[-1].replicate(k - len(field))))
                borrow = field[-1]
            else:
                digits.append(field)
        packed = Signal(signed((count - 1) * k + self.w_bits + 1), name="packed")
        m.d.comb += packed.eq(Cat(*digits).as_signed())
        full = Signal(signed(len(packed) + self.a_bits + (0 if self.a_signed else 1)),
                      name="full_product")
        m.d.comb += full.eq(self.x * packed)
        for i in range(count):
            borrow_in = full[i * k - 1] if i else 0
            if self.late_borrow:
                # Register the field and its borrow; add them after the register, where the
                # adder tree follows (the sum is exact: see `late_borrow`).
                raw = Signal(signed(self.read_bits), name=f"raw_{i}")
                borrow_reg = Signal(name=f"borrow_{i}")
                with m.If(self.en):
                    m.d.sync += [raw.eq(full[i * k:i * k + self.read_bits].as_signed()),
                                 borrow_reg.eq(borrow_in)]
                m.d.comb += self.p[i].eq(raw + borrow_reg)
            else:
                value = full[i * k:i * k + k] + borrow_in
                product = Signal(signed(self.product_bits), name=f"product_{i}")
                with m.If(self.en):
                    m.d.sync += product.eq(value[:self.product_bits].as_signed())
                m.d.comb += self.p[i].eq(product)
        return m
