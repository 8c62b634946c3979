"""Several narrow MAC products in one ECP5 ``MULT18X18D``: products that share their activation.

Yosys maps every multiply of 2×2 bits or wider to a whole ``MULT18X18D`` on ECP5, so a 4×4
product wastes most of an 18×18 block. The products of one column of the MAC array share their
activation ``x``, so ``n`` of them fit one multiply (style ``"pack"``). The weights are
concatenated, each but the top one sign-extended to a field of ``k`` bits (no adder before the
multiply, so its inputs are plain wires from the registers):

    A = Σ_{i<n-1} (w_i mod 2^k)·2^(i·k) + w_{n-1}·2^((n-1)·k) = Σ_i (w_i + b_{i-1})·2^(i·k)

with ``b_i = [w_i < 0]`` (``b_{-1} = 0``): a negative digit sign-extended to ``k`` bits is
``w_i + 2^k``, one too many in the field above. So ``P = x·A = Σ_i q_i·2^(i·k)`` with field
contents ``q_i = x·(w_i + b_{i-1})``, and the products are recovered after the multiply:

- ``q_i`` is ``P[i·k : i·k + k]`` plus the borrow ``P[i·k - 1]`` (the sign of the fields below
  it, whose sum ``L_i = Σ_{j<i} q_j·2^(j·k)`` lies in ``[-2^(i·k-1), 2^(i·k-1))``), modulo
  ``2^k``, read as signed;
- ``x·w_i = q_i - b_{i-1}·x``.

``k`` is the narrowest width that holds every ``q_i`` (the exact range of ``x·v`` over
``v ∈ [w_min, w_max + 1]``: the accumulator analysis of a dot product of length 1) and keeps
every ``L_i`` readable (:func:`pack_field`; a guard bit only where the exact range needs one,
e.g. a 1-bit activation). Both corrections are small adders after the product register
(:attr:`PackedProducts.late_borrow`), where the adder tree follows, so the path into the
register is the multiply alone, as with one product per ``MULT18X18D``.

:func:`pack_weights` and :func:`unpack` are the same arithmetic on Python integers; the tests
check them, and the hardware, against ``x·w_i`` for every operand value.
"""

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["PackedProducts", "product_range", "field_bits", "field_range", "pack_field",
           "pack_count", "pack_weights", "unpack", "MULT_BITS"]


#: Operand width of ECP5's ``MULT18X18D`` (signed; an unsigned operand needs one bit more).
MULT_BITS = 18


def _operand_range(bits, is_signed):
    return (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if is_signed else (0, (1 << bits) - 1)


def _signed_width(lo, hi):
    width = 1
    while not -(1 << (width - 1)) <= lo <= hi <= (1 << (width - 1)) - 1:
        width += 1
    return width


def product_range(a_bits, a_signed, w_bits, *, extra=0):
    """The exact range ``(lo, hi)`` of one product ``x·v`` over every activation and every
    ``v ∈ [w_min, w_max + extra]``: the accumulator analysis of a dot product of length 1
    (the corners of the operand box). ``extra = 1`` gives the range of a field's content
    ``q_i = x·(w_i + b_{i-1})``."""
    x_lo, x_hi = _operand_range(a_bits, a_signed)
    w_lo, w_hi = _operand_range(w_bits, True)
    corners = [x * w for x in (x_lo, x_hi) for w in (w_lo, w_hi + extra)]
    return min(corners), max(corners)


def field_bits(a_bits, a_signed, w_bits):
    """The exact signed width of one product ``x·w`` of an ``a_bits`` activation (signed or
    not) and a signed ``w_bits`` weight (e.g. 8 for 4-bit operands, 4 for 2-bit ones)."""
    return _signed_width(*product_range(a_bits, a_signed, w_bits))


def _check_operands(a_bits, a_signed, w_bits):
    for name, value in (("a_bits", a_bits), ("w_bits", w_bits)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if not isinstance(a_signed, bool):
        raise ValueError(f"a_signed must be a bool, not {a_signed!r}")


def _borrows_readable(lo, hi, k, count):
    """Whether, for field contents in ``[lo, hi]`` and ``k``-bit fields, the sum of the fields
    below every field ``i`` lies in ``[-2^(i·k-1), 2^(i·k-1))``, so that bit ``i·k - 1`` of
    ``P`` is its sign (the borrow into field ``i``). With ``k`` the content width this holds
    for two fields always, and for more unless contents reach ``-2^(k-1)``."""
    for i in range(1, count):
        weight = sum(1 << (j * k) for j in range(i))
        if lo * weight < -(1 << (i * k - 1)) or hi * weight >= 1 << (i * k - 1):
            return False
    return True


def field_range(a_bits, a_signed, w_bits, count):
    """The range ``(lo, hi)`` of the field contents ``q_i`` of a group of ``count``."""
    return product_range(a_bits, a_signed, w_bits, extra=1 if count > 1 else 0)


def pack_field(a_bits, a_signed, w_bits, count, *, mult_bits=MULT_BITS):
    """The narrowest field ``k`` (guard bits included) with which ``count`` products sharing
    one activation are exact in one ``mult_bits × mult_bits`` signed multiply, or ``None``.

    ``k`` starts at the width of the field contents (:func:`field_range`, no guard bit) and
    grows while the borrows between fields are not readable (:func:`_borrows_readable`); the
    packed weights need ``(count - 1)·k + w_bits`` bits, the activation ``a_bits`` (one more
    when unsigned).

    Raises
    ------
    ValueError
        A width is not a positive integer, ``a_signed`` not a bool, or ``count`` not a
        positive integer.
    """
    _check_operands(a_bits, a_signed, w_bits)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, not {count!r}")
    if a_bits + (0 if a_signed else 1) > mult_bits or w_bits > mult_bits:
        return None
    lo, hi = field_range(a_bits, a_signed, w_bits, count)
    k = _signed_width(lo, hi)
    while (count - 1) * k + w_bits <= mult_bits:
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
    """The packed operand ``A`` as the hardware builds it: every weight but the top one
    sign-extended to ``k`` bits, concatenated. Returns ``(A, b)`` with ``b[i] = [w_i < 0]``;
    ``A = Σ (w_i + b_{i-1})·2^(i·k)``."""
    A = sum((int(w) % (1 << k)) << (i * k) for i, w in enumerate(weights[:-1]))
    A += int(weights[-1]) << ((len(weights) - 1) * k)
    return A, [int(w < 0) for w in weights]


def unpack(P, x, signs, k):
    """The products ``x·w_i`` held in ``P = x·A`` (fields of ``k`` bits; ``signs[i] = [w_i <
    0]``): field ``i`` plus the borrow bit ``P[i·k - 1]``, modulo ``2^k``, read as signed, is
    ``q_i``; minus ``signs[i-1]·x`` it is the product."""
    products = []
    for i in range(len(signs)):
        field = (P >> (i * k)) % (1 << k)
        borrow = (P >> (i * k - 1)) & 1 if i else 0
        q = (field + borrow) % (1 << k)
        q = q - (1 << k) if q >> (k - 1) else q
        products.append(q - (signs[i - 1] * x if i else 0))
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
        Enable of the registers.
    p : Out(data.ArrayLayout(signed(field_bits(a_bits, a_signed, w_bits)), count))
        The products: registered fields, borrow bits, signs and activation, corrected by a
        small adder each after the registers.

    Timing: one register stage; ``p`` holds ``x·w_i`` of the operands present in the cycle
    before the last one with ``en`` high. The path to the registers is the multiply alone (one
    ``MULT18X18D`` on ECP5, combinational as Yosys maps it; with :attr:`late_borrow` false,
    a ``k``-bit increment follows it); the corrections follow the registers, into the adder
    tree's first level.

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
        lo, hi = field_range(a_bits, a_signed, w_bits, count)
        #: Bits of a field's content ``q_i``.
        self.content_bits = _signed_width(lo, hi)
        #: Whether each field's borrow is added after the register (off the multiply's path):
        #: the field read as a signed ``read_bits``-bit number plus its borrow bit is then
        #: ``q_i`` itself, not only modulo ``2^read_bits``. It is when the field has a guard
        #: bit (``read_bits = content_bits + 1``) or no content reaches
        #: ``-2^(content_bits-1)`` (then the sum stays inside ``[-2^(r-1), 2^(r-1)]`` and
        #: differs from ``q_i`` by a multiple of ``2^r``: by 0).
        self.late_borrow = self.k > self.content_bits or lo > -(1 << (self.content_bits - 1))
        #: Bits of each field that are registered.
        self.read_bits = min(self.k, self.content_bits + 1) if self.late_borrow else \
            self.content_bits
        super().__init__({
            "x": In(signed(a_bits) if a_signed else unsigned(a_bits)),
            "w": In(data.ArrayLayout(signed(w_bits), count)),
            "en": In(1),
            "p": Out(data.ArrayLayout(signed(self.product_bits), count)),
        })

    def elaborate(self, platform):
        m = Module()
        k, count = self.k, self.count
        assert k >= self.w_bits
        # A by concatenation: every weight but the top one sign-extended to k bits.
        digits = [Cat(self.w[i], self.w[i][-1].replicate(k - self.w_bits))
                  for i in range(count - 1)] + [self.w[count - 1]]
        packed = Signal(signed((count - 1) * k + self.w_bits), name="packed")
        m.d.comb += packed.eq(Cat(*digits).as_signed())
        full = Signal(signed(len(packed) + self.a_bits + (0 if self.a_signed else 1)),
                      name="full_product")
        m.d.comb += full.eq(self.x * packed)
        x_reg = Signal.like(self.x, name="x_reg")
        with m.If(self.en):
            m.d.sync += x_reg.eq(self.x)
        for i in range(count):
            borrow_in = full[i * k - 1] if i else 0
            content = Signal(signed(self.read_bits), name=f"content_{i}")
            if self.late_borrow:
                # The field and its borrow are registered and added after the register (the
                # sum is q_i exactly: see `late_borrow`).
                borrow_reg = Signal(name=f"borrow_{i}")
                with m.If(self.en):
                    m.d.sync += [content.eq(full[i * k:i * k + self.read_bits].as_signed()),
                                 borrow_reg.eq(borrow_in)]
                q = content + borrow_reg
            else:
                value = full[i * k:i * k + k] + borrow_in
                with m.If(self.en):
                    m.d.sync += content.eq(value[:self.read_bits].as_signed())
                q = content
            if i:
                # The digit below was sign-extended: q_i holds x·(w_i + b_{i-1}).
                sign_reg = Signal(name=f"sign_{i - 1}")
                with m.If(self.en):
                    m.d.sync += sign_reg.eq(self.w[i - 1][-1])
                m.d.comb += self.p[i].eq(q - Mux(sign_reg, x_reg, 0))
            else:
                m.d.comb += self.p[i].eq(q)
        return m
