"""The requantization units, ``y = clamp(floor((acc·M + B) / 2^S), y_min, y_max)``.

- :class:`Requantizer`: ``rows`` full lanes with ``M``, ``B``, ``S`` on the input stream and a
  0..``s_max`` shifter; one beat per cycle (the bare block of ``qmac generate``).
- :class:`FoldRequantizer`: the layer engine's unit, sized to the rate at which the MAC array
  delivers accumulators (``rows`` every ``beats`` cycles): ``cfg.requant_lanes`` lanes, each
  multiply spread over the idle cycles digit by digit, and a shifter over only the shifts the
  baked-in ``S`` uses.
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetSignal, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import ReadPort
from amaranth.lib.wiring import In, Out

from . import layouts
from .ecp5_mac import OPERAND_BITS, RegisteredProduct
from .ecp5_mux import lut_mux, mux_tree
from .multiply import FAMILIES, plan_multipliers, product
from .config import signed_width
from .pipeline import global_enable, output_enable, stage, register_side_band


__all__ = ["Requantizer", "FoldRequantizer", "clamp_output", "operand_pieces"]


def operand_pieces(width, piece_bits):
    """How a signed ``width``-bit operand is cut for products of at most one DSP block each:
    ``(low, bits, is_signed)`` slices, low first: unsigned pieces of ``piece_bits`` bits, then the
    signed rest (at most ``piece_bits + 1`` bits, the widest signed operand of the block). An
    operand of at most ``piece_bits + 1`` bits is one signed piece; ``value = Σ piece·2^low``."""
    pieces, low = [], 0
    while width - low > piece_bits + 1:
        pieces.append((low, piece_bits, False))
        low += piece_bits
    pieces.append((low, width - low, True))
    return pieces


def clamp_output(cfg, value):
    """``value`` (signed) clamped to ``[cfg.y_min, cfg.y_max]``.

    ``y_max`` is ``2^k - 1`` and ``y_min`` is ``-2^k`` or 0, so the clamp looks at the high
    bits of ``value`` instead of comparing with constants.
    """
    width = len(value)
    k = cfg.y_max.bit_length()
    sign = value[-1]
    if cfg.y_min < 0:
        assert cfg.y_min == -(1 << k)
        if width <= k + 1:
            return value
        top = value[k:]
        inside = top.all() | ~top.any()
        return Mux(inside, value[:k + 1].as_signed(), Mux(sign, cfg.y_min, cfg.y_max))
    assert cfg.y_min == 0
    low = value[:min(k, width - 1)]
    if width - 1 > k:
        above = ~sign & value[k:width - 1].any()
        low = Mux(above, cfg.y_max, low)
    return Mux(sign, 0, low)


class Requantizer(wiring.Component):
    """``rows`` lanes of multiply, add, arithmetic shift and clamp.

    Lane ``r`` computes ``y = clamp(floor((acc·M + B) / 2^S), y_min, y_max)`` exactly: the
    product is ``acc_bits + m_bits`` wide, the sum one bit wider than the product or ``B``
    (whichever is wider), ``floor`` is an arithmetic right shift by ``S`` (a shift of the whole
    width or more leaves the sign), and the clamp bounds come from ``out_bits``, ``out_signed``
    and ``relu``. ``S`` is per lane, or one shared field when ``cfg.shared_shift``.
    ``overflow`` and ``last`` pass through unchanged.

    Pipeline: stage 1 registers the products, stage 2 the sums, stage 3 the shifted and clamped
    outputs (the output register).

    Parameters
    ----------
    cfg : LayerConfig
        Uses ``rows``, ``acc_bits``, ``m_bits``, ``b_bits``, ``s_max``, ``shared_shift``,
        ``out_bits``, ``out_signed``, ``relu``.
    mul_plan : MulPlan, optional
        How each lane's multiply is built; default :func:`~qmac.hw.multiply.plan_multipliers`
        of ``cfg`` with no target part.

    Members
    -------
    i : In(stream.Signature(layouts.requant_input_layout(cfg)))
        Accumulators with their ``M``, ``B``, ``S``, overflow flags and ``last``.
    o : Out(stream.Signature(layouts.requant_output_layout(cfg)))
        One output beat per input beat, in order.

    Timing: a beat transferred on ``i`` in cycle ``t`` makes ``o.valid`` high in cycle
    ``t + latency`` (``latency = 3``) when ``o`` does not stall; one beat per cycle. One global
    enable ``en = ~o.valid | o.ready`` (``i.ready = en``) freezes every stage while ``o``
    stalls, so nothing is lost, duplicated or reordered; ``o.valid`` never depends on
    ``o.ready``.
    """

    #: Cycles from the transfer of a beat on ``i`` to ``o.valid``, without stalls.
    latency = 3

    def __new__(cls, cfg, *, mul_plan=None):
        # Refuse a plan of another configuration before the component exists (no
        # UnusedElaboratable warning).
        if mul_plan is not None:
            cls._lane_style(cfg, mul_plan)
        return super().__new__(cls, src_loc_at=1)

    @staticmethod
    def _lane_style(cfg, mul_plan):
        """The one multiplier style of the ``rows`` full-rate lanes: the plan describes the
        engine's ``cfg.requant_lanes`` lanes, so its requantizer styles must all be equal."""
        styles = set(mul_plan.check(cfg).requant)
        if len(styles) != 1:
            raise ValueError(f"the full-rate Requantizer builds its {cfg.rows} lanes alike: the "
                             f"plan's requantizer styles must be equal, not {mul_plan.requant!r}")
        return styles.pop()

    def __init__(self, cfg, *, mul_plan=None):
        self.cfg = cfg
        self.mul_plan = plan_multipliers(cfg) if mul_plan is None else mul_plan
        #: The multiplier style of every lane.
        self.lane_style = self._lane_style(cfg, self.mul_plan)
        self.scaled_bits = cfg.acc_bits + cfg.m_bits
        self.sum_bits = max(self.scaled_bits, cfg.b_bits) + 1
        super().__init__({
            "i": In(stream.Signature(layouts.requant_input_layout(cfg))),
            "o": Out(stream.Signature(layouts.requant_output_layout(cfg))),
        })

    def _clamp(self, value):
        return clamp_output(self.cfg, value)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()

        en = global_enable(m, self.i, self.o)

        # Stage 1: products; B, S, overflow and last travel alongside.
        products = [Signal(signed(self.scaled_bits), name=f"product_{r}")
                    for r in range(cfg.rows)]
        offsets = [Signal(signed(cfg.b_bits), name=f"offset_{r}") for r in range(cfg.rows)]
        s1_valid, s1_shift, s1_overflow, s1_last = stage(
            m, en, "product", valid=self.i.valid, shift=self.i.p.s,
            overflow=self.i.p.overflow, last=self.i.p.last)
        with m.If(en):
            for r in range(cfg.rows):
                m.d.sync += [
                    products[r].eq(product(self.i.p.acc[r], self.i.p.m[r], self.lane_style)),
                    offsets[r].eq(self.i.p.b[r]),
                ]

        # Stage 2: sums.
        sums = [Signal(signed(self.sum_bits), name=f"sum_{r}") for r in range(cfg.rows)]
        s2_valid, s2_shift, s2_overflow, s2_last = stage(
            m, en, "sum", valid=s1_valid, shift=s1_shift, overflow=s1_overflow, last=s1_last)
        with m.If(en):
            for r in range(cfg.rows):
                m.d.sync += sums[r].eq(products[r] + offsets[r])

        # Stage 3: arithmetic shift and clamp into the output register.
        register_side_band(m, en, self.o, valid=s2_valid, overflow=s2_overflow, last=s2_last)
        for r in range(cfg.rows):
            amount = s2_shift if cfg.shared_shift else s2_shift[r]
            shifted = Signal(signed(self.sum_bits), name=f"shifted_{r}")
            m.d.comb += shifted.eq(sums[r] >> amount)
            with m.If(en):
                m.d.sync += self.o.p.y[r].eq(self._clamp(shifted))

        return m


#: How :class:`FoldRequantizer` shifts: a multiplexer over the shifts used (``"select"``), or
#: one shift with ``M`` and ``B`` scaled to it (``"align"``).
SHIFT_STYLES = ("select", "align", "auto")

#: The narrowest digit of ``M`` a spread multiply uses (narrower digits save little and cost a
#: wider digit mux and more control).
MIN_DIGIT_BITS = 2


def distinct_shifts(S):
    """The sorted distinct shifts of a layer's ``S`` array, as a tuple of ints."""
    return tuple(sorted({int(s) for s in S}))


class FoldRequantizer(wiring.Component):
    """The layer engine's requantizer, with lanes sized to the rate of the MAC array.

    The MAC array yields the ``rows`` accumulators of a fold once every ``beats = K/cols``
    cycles. This unit takes them into a buffer and requantizes them with ``lanes =
    cfg.requant_lanes`` lanes: lane ``l`` handles channels ``g·lanes + l`` of the fold in
    ``groups = ceil(rows / lanes)`` consecutive steps ``g``. Each step spreads the multiply
    ``acc·M`` over ``digits`` cycles (``digits·groups <= beats``): ``M`` and ``B`` are cut into
    ``digits`` digits of ``d = digit_bits`` bits (the top one signed, the others unsigned), and

        T_0 = acc·M_0 + B_0,    T_j = floor(T_{j-1} / 2^d) + acc·M_j + B_j

    with the ``d`` low bits of each ``T_{j-1}`` kept, so that ``acc·M + B = T_last·2^(d·(digits
    - 1)) + low`` exactly (each step is an exact floor division with its remainder kept; when
    every shift is at least ``d·(digits - 1)``, no low bit is kept at all). Every ``T_j`` but the
    last fits ``acc_bits + d`` signed bits (its digits of ``M`` and ``B`` are unsigned), so the
    running sum is ``loop_bits`` wide, not the full sum's width; the adder of that loop has
    registers on both inputs (``floor(T / 2^d)`` is registered already zeroed before a first
    digit). The digit product ``acc·M_j + B_j`` is pipelined: in a ``"dsp"`` lane its partial
    products and ``B_j``: ``acc`` and the digit are cut into pieces of at most one DSP block
    (:func:`operand_pieces`: unsigned pieces of ``piece_bits`` bits, 17 on ECP5, and a signed
    top piece; a 20-bit ``acc`` times a 26-bit digit field is 2×2 pieces), every pair of pieces
    one partial product shifted by the sum of the pieces' offsets, so that no multiply wider
    than one block stands in one stage: a :class:`~qmac.hw.ecp5_mac.RegisteredProduct`
    (its input and output registers, then a fabric register; ``term_stages`` = its latency
    + 1) when the plan registers its DSPs (``mul_plan.registered``), else a registered ``*``
    (``term_stages = 1``). In a ``"lut"`` lane its ``ceil((d + 1) / 2)`` radix-4 Booth terms (each
    ``0``, ``±acc`` or ``±2·acc``, a negative one formed as ``~(|q|·acc) = q·acc - 1``; those ones
    are added to ``B_j`` in the parameter memory, :meth:`booth_correction`) and ``B_j``, summed by
    an adder tree with a register after every level (``tree_levels``). The right
    shift is a multiplexer over the distinct shifts ``shifts`` that the baked-in ``S`` uses (a
    constant with one shift, as with ``cfg.shared_shift``), each clamped like
    :func:`clamp_output`. The output beat holds all ``rows`` results, as :class:`Requantizer`'s.

    Shift styles: ``"select"`` is the multiplexer above; ``"align"`` stores ``M·2^e`` and
    ``B·2^e`` with ``e = max(shifts) - S`` and shifts every channel by ``max(shifts)``, a
    constant (exactly equal: ``floor((acc·M + B)·2^e / 2^(S+e)) = floor((acc·M + B) / 2^S)``),
    at the cost of ``M``, ``B`` and the sum ``max - min`` bits wider; ``"auto"`` picks
    ``"align"`` when ``3·(max - min) < (len(shifts) - 1)·(out_bits + 1)`` (about 3 LUTs per
    extra bit of the sum and digits against one more ``out_bits + 1``-bit window per shift;
    measured on the example layer), else ``"select"``.

    The parameters come from a memory outside the unit (the engine's): word ``(f·groups +
    g)·digits + j`` holds digit ``j`` of ``M`` and of ``B`` and the shift index of the ``lanes``
    channels of step ``g`` of fold ``f`` (:meth:`param_words`); the unit reads it through
    ``params``, so no digit multiplexer is needed.

    Parameters
    ----------
    cfg : LayerConfig
    shifts : sequence of int
        The distinct shifts ``S`` used (sorted, each in ``0..s_max``).
    shift_style : {"select", "align", "auto"}
    mul_plan : MulPlan, optional
        ``mul_plan.requant[l]`` builds the multiply of lane ``l``.
    registered_enable : bool
        Make the global enable a flip-flop (for its fan-out): the consumer of ``o`` must then
        tell, on ``o_ready_next``, the value ``o.ready`` will have in the next cycle (a
        :class:`~qmac.hw.pipeline.SkidBuffer`'s ``ready_next``).
    registered_params : bool
        The parameter memory has an output register (``params_oce``), so that no memory output
        drives logic; same latency.
    enable_copies : bool
        Copies of the global enable: one for the parameter memory's address and output
        register, one for each lane's registers (with ``registered_enable``, flip-flops that
        Yosys keeps apart, so that each can sit beside what it enables: for a unit spread over
        the part, e.g. DSP lanes at whatever sites are left and a parameter table in logic),
        and the address a choice of two registers instead of an adder after the enable.

    Members
    -------
    i : In(stream.Signature(layouts.mac_output_layout(cfg)))
        The accumulators and overflow flags of one fold, folds in order ``0..folds-1`` (the
        unit counts them and sets ``last`` on fold ``folds - 1``).
    o : Out(stream.Signature(layouts.requant_output_layout(cfg)))
        One output beat per input beat, in order.
    params : In(ReadPort.Signature(...))
        A synchronous read port of the parameter memory (``en`` stays high); the unit drives
        ``addr`` one cycle ahead of the step that uses the word.
    o_ready_next : In(1)
        With ``registered_enable`` only: ``o.ready`` of the next cycle.
    params_oce : Out(1)
        With ``registered_params`` only: the enable of the parameter memory's output register
        (:class:`~qmac.hw.ecp5_rom.RegisteredRom`'s ``oce``), which then stands in for the
        operand register of the parameter fields: ``params.data`` must be the word read in the
        last cycle with ``params_oce`` high (the unit's enable).

    Timing: a beat transferred on ``i`` in cycle ``t`` makes ``o.valid`` high in cycle ``t +
    latency`` with ``latency = groups·digits + 6 + term_stages + tree_levels`` when ``o`` does
    not stall (its steps are issued from the buffer in cycles ``t+1 .. t+groups·digits``, then
    pass the operand register, the ``term_stages`` term registers (the DSP blocks' own among
    them), the adder tree, the sum, the stage that resolves the loop adder's
    deferred carry, the shift with the clamp's flags, the clamped result and the output
    register; lanes with a shallower
    tree are padded with registers); ``i`` takes a new beat every
    ``groups·digits <= beats`` cycles (the next beat enters the buffer during the last step of
    the previous one), so the MAC array never waits at full rate. One global enable ``en =
    ~o.valid | o.ready`` freezes every stage while ``o`` stalls (``i.ready = en`` and a register
    that says no step of the buffered fold is left but the current one), so nothing is lost,
    duplicated or reordered; ``o.valid`` never depends on ``o.ready``.
    """

    def __new__(cls, cfg, shifts, *, shift_style="select", mul_plan=None,
                registered_enable=False, registered_params=False, enable_copies=False):
        cls._check_shifts(cfg, shifts)
        if shift_style not in SHIFT_STYLES:
            raise ValueError(f"shift_style must be one of "
                             f"{', '.join(map(repr, SHIFT_STYLES))}, not {shift_style!r}")
        if mul_plan is not None:
            mul_plan.check(cfg)
        return super().__new__(cls, src_loc_at=1)

    @staticmethod
    def _check_shifts(cfg, shifts):
        shifts = tuple(shifts)
        if not shifts or any(isinstance(s, bool) or not isinstance(s, int) for s in shifts) \
                or list(shifts) != sorted(set(shifts)) \
                or not 0 <= shifts[0] <= shifts[-1] <= cfg.s_max:
            raise ValueError(f"shifts must be distinct sorted integers in 0..{cfg.s_max} "
                             f"(s_max), not {shifts!r}")
        return shifts

    def __init__(self, cfg, shifts, *, shift_style="select", mul_plan=None,
                 registered_enable=False, registered_params=False, enable_copies=False):
        self.cfg = cfg
        #: The shifts the parameters use.
        self.used_shifts = self._check_shifts(cfg, shifts)
        if shift_style == "auto":
            spread = self.used_shifts[-1] - self.used_shifts[0]
            wide = 3 * spread < (len(self.used_shifts) - 1) * (cfg.out_bits + 1)
            shift_style = "align" if wide else "select"
        self.shift_style = shift_style
        #: ``align``: ``M`` and ``B`` of a channel with shift ``S`` are stored times
        #: ``2^(max - S)`` and every channel shifts by the largest one (exactly equal: the
        #: factor divides out); the stored ``M``, ``B`` are ``spread`` bits wider.
        spread = self.used_shifts[-1] - self.used_shifts[0] if shift_style == "align" else 0
        #: The shifts of the hardware: those used, or the largest one alone with ``align``.
        self.shifts = self.used_shifts[-1:] if shift_style == "align" else self.used_shifts
        self.m_width = cfg.m_bits + spread
        self.b_width = cfg.b_bits + spread
        self.mul_plan = (plan_multipliers(cfg) if mul_plan is None else mul_plan).check(cfg)
        self.lanes = cfg.requant_lanes
        self.groups = -(-cfg.rows // self.lanes)
        budget = max(1, cfg.beats // self.groups)               # cycles per step
        digits = max(1, min(budget, -(-self.m_width // MIN_DIGIT_BITS)))
        #: Bits of every digit of ``M`` but the top one.
        self.digit_bits = -(-self.m_width // digits)
        #: Cycles (and digits of ``M``) per step; the top digit has at least one bit.
        self.digits = -(-self.m_width // self.digit_bits)
        self.scaled_bits = cfg.acc_bits + self.m_width
        self.sum_bits = max(self.scaled_bits, self.b_width) + 1
        d, top = self.digit_bits, self.digit_bits * (self.digits - 1)
        #: Width of the running sum ``T_j``: every ``T_j`` before the last fits ``acc_bits + d``
        #: signed bits (its ``M`` and ``B`` digits are unsigned), the last one is the exact sum
        #: without its ``d·(digits - 1)`` low bits.
        self.loop_bits = max(cfg.acc_bits + d, self.sum_bits - top)
        #: Radix-4 Booth terms of one digit in a ``"lut"`` lane (the digit field is ``d + 1``
        #: signed bits).
        self.booth_terms = (d + 2) // 2
        styles = [self.mul_plan.requant[lane] for lane in range(self.lanes)]
        family = self.mul_plan.family
        #: Bits of the unsigned low pieces of a ``"dsp"`` lane's operands: one less than the
        #: DSP block's operand (18 on ECP5 and with no family, 16 on iCE40), so that every
        #: partial product fits one block as a signed multiply.
        self.piece_bits = (FAMILIES[family]["max_a"] if family else OPERAND_BITS) - 1
        #: The pieces ``(low, bits, is_signed)`` of ``acc`` and of a digit field of ``M`` (``d +
        #: 1`` signed bits) in a ``"dsp"`` lane (:func:`operand_pieces`).
        self.acc_pieces = operand_pieces(cfg.acc_bits, self.piece_bits)
        self.digit_pieces = operand_pieces(self.digit_bits + 1, self.piece_bits)
        #: Whether the partial products of ``"dsp"`` lanes are
        #: :class:`~qmac.hw.ecp5_mac.RegisteredProduct` blocks (the plan's MAC products are
        #: registered ``MULT18X18D``: ``mul_plan.registered``), else a registered ``*`` each.
        self.registered_products = self.mul_plan.registered and "dsp" in styles
        # A RegisteredProduct's stages, then one fabric register: the routing from the DSP
        # column and the first adder of the tree are not in one cycle.
        dsp_stages = self.mul_plan.product_stages + 1 if self.registered_products else 1
        #: Register stages of the addends of a digit product (the product blocks' stages and a
        #: fabric register after them; the Booth terms, ``B_j`` and the other lanes' addends
        #: are delayed to match).
        self.term_stages = max(dsp_stages if style == "dsp" else 1 for style in styles)
        #: Addends of each lane's digit product ``acc·M_j + B_j``: its Booth terms (``"lut"``)
        #: or its partial products (``"dsp"``), and ``B_j``.
        addends = max(1 + (self.booth_terms if style == "lut" else
                           len(self.acc_pieces) * len(self.digit_pieces)) for style in styles)
        #: Register levels of the adder tree of the digit product.
        self.tree_levels = (addends - 1).bit_length()
        # The B field: digit j of B (the top one signed), plus in "lut" lanes the Booth
        # correction sum(neg_k·4^k) of the digit of M (at most 2^(d+1) - 1 when d + 1 is odd or
        # even alike: the negative bits are at most every other bit up to the field's top).
        correction = sum(4 ** k for k in range(self.booth_terms)) if "lut" in styles else 0
        b_top_lo = -(1 << (self.b_width - 1)) >> top
        b_top_hi = ((1 << (self.b_width - 1)) - 1) >> top
        b_lo = min(0, b_top_lo) if self.digits > 1 else -(1 << (self.b_width - 1))
        b_hi = max((1 << d) - 1 if self.digits > 1 else 0, b_top_hi) + correction
        self.b_field_bits = signed_width(b_lo, b_hi)
        #: Cycles from the transfer of a beat on ``i`` to ``o.valid``, without stalls.
        self.latency = self.groups * self.digits + 6 + self.term_stages + self.tree_levels
        self.depth = max(2, cfg.out_beats * self.groups * self.digits)
        self.registered_enable = bool(registered_enable)
        self.registered_params = bool(registered_params)
        self.enable_copies = bool(enable_copies)
        members = {
            "i": In(stream.Signature(layouts.mac_output_layout(cfg))),
            "o": Out(stream.Signature(layouts.requant_output_layout(cfg))),
            "params": In(ReadPort.Signature(addr_width=(self.depth - 1).bit_length(),
                                            shape=self.param_layout)),
        }
        if self.registered_enable:
            members["o_ready_next"] = In(1)
        if self.registered_params:
            members["params_oce"] = Out(1)
        super().__init__(members)

    @property
    def param_layout(self):
        """One parameter word: digit ``m`` of ``M``, ``b`` (and ``sel``, the index into
        ``shifts``, when there is more than one shift) of the ``lanes`` channels of one step."""
        fields = {"m": data.ArrayLayout(signed(self.digit_bits + 1), self.lanes),
                  "b": data.ArrayLayout(signed(self.b_field_bits), self.lanes)}
        if len(self.shifts) > 1:
            fields["sel"] = data.ArrayLayout(unsigned((len(self.shifts) - 1).bit_length()),
                                             self.lanes)
        return data.StructLayout(fields)

    def digits_of(self, value):
        """The digits of ``value`` (an int of ``m_width`` signed bits), low first: ``digits -
        1`` unsigned ones of ``digit_bits`` bits, then the signed rest; ``value = Σ digit_j ·
        2^(j·digit_bits)``."""
        d = self.digit_bits
        low = [(value >> (j * d)) & ((1 << d) - 1) for j in range(self.digits - 1)]
        return low + [value >> (d * (self.digits - 1))]

    def booth_correction(self, digit):
        """``Σ neg_k·4^k`` of a digit of ``M`` (an int of ``digit_bits + 1`` signed bits):
        a ``"lut"`` lane forms each negative Booth term ``q_k·acc`` as ``~(|q_k|·acc) = q_k·acc -
        1``, and its ``B`` digit carries these ones back."""
        return sum(4 ** k for k in range(self.booth_terms) if (digit >> (2 * k + 1)) & 1)

    def param_words(self, M, B, S):
        """The parameter memory image of a layer's per-channel ``M``, ``B``, ``S``: word ``(f·groups
        + g)·digits + j`` holds digit ``j`` of ``M`` (times ``2^(max S - S)`` with ``align``) and
        ``B`` (scaled alike) of the lanes of step ``g`` of fold ``f``; lanes past the last row of a
        fold hold zeros.

        Raises
        ------
        ValueError
            A shift of ``S`` that is not in ``shifts``.
        """
        cfg = self.cfg
        words = []
        for f in range(cfg.out_beats):
            for g in range(self.groups):
                m_digits, b, sel = [], [], []
                for lane in range(self.lanes):
                    r = g * self.lanes + lane
                    if r >= cfg.rows:
                        m_digits.append([0] * self.digits)
                        b.append([0] * self.digits)
                        sel.append(0)
                        continue
                    c = f * cfg.rows + r
                    if int(S[c]) not in self.used_shifts:
                        raise ValueError(f"S[{c}] = {int(S[c])} is not one of the shifts "
                                         f"{self.used_shifts}")
                    scale = self.shifts[-1] - int(S[c]) if self.shift_style == "align" else 0
                    digits = self.digits_of(int(M[c]) << scale)
                    b_digits = self.digits_of(int(B[c]) << scale)
                    if self.mul_plan.requant[lane] == "lut":
                        b_digits = [b + self.booth_correction(m) for m, b in zip(digits, b_digits)]
                    m_digits.append(digits)
                    b.append(b_digits)
                    sel.append(self.shifts.index(int(S[c])) if len(self.shifts) > 1 else 0)
                for j in range(self.digits):
                    word = {"m": [lane[j] for lane in m_digits],
                            "b": [lane[j] for lane in b]}
                    if len(self.shifts) > 1:
                        word["sel"] = sel
                    words.append(word)
        return words

    def _shift_clamp(self, full, sel, drop=0):
        """``clamp(full >> shifts[sel])``, as :func:`clamp_output` of the shifted value, in two
        parts with a register between them: returns ``(parts, init, finish)``, the values to
        register (a dict), their registers' initial values where not 0 (so that a synchronous
        set can use the flip-flops' own set: on ECP5 the set value is the initial one) and the
        function of the registered ones that gives the result.

        The clamp needs, per shift ``s``, the ``k`` or ``k + 1`` bits from ``s`` up (the window)
        and whether the bits above them are all equal to the sign (one "all" and one "any"
        over each suffix of ``full``, shared between the shifts as two chains); the shift is a
        multiplexer of windows and flags over only the shifts used (the first part), then one
        clamp: a choice of the window or a bound by two flags (the second part; for unsigned
        outputs the window is already saturated at ``y_max`` in the first).
        """
        cfg = self.cfg
        shifts = [s - drop for s in self.shifts]       # `full` is the sum without `drop` bits
        width = len(full)
        k = cfg.y_max.bit_length()
        sign = full[-1]

        def bit(j):
            return full[min(j, width - 1)]          # past the top: the sign

        def pick(values):
            return mux_tree(values, sel)

        def suffix(op, stop):
            """``chain[j] = op(full[j:stop])`` for every ``j < stop``, as one chain."""
            chain = {}
            for j in reversed(range(stop)):
                chain[j] = full[j] if j == stop - 1 else op(full[j], chain[j + 1])
            return chain

        if cfg.y_min < 0:
            assert cfg.y_min == -(1 << k)
            any_from = suffix(lambda a, b: a | b, width)
            all_from = suffix(lambda a, b: a & b, width)
            windows = [Cat(*(bit(s + i) for i in range(k + 1))) for s in shifts]
            inside = [all_from[s + k] | ~any_from[s + k] if s + k < width - 1 else Const(1, 1)
                      for s in shifts]
            parts = {"window": pick(windows).as_signed(), "inside": pick(inside), "sign": sign}
            return parts, {}, lambda r: Mux(r["inside"], r["window"],
                                            Mux(r["sign"], cfg.y_min, cfg.y_max))
        assert cfg.y_min == 0
        any_from = suffix(lambda a, b: a | b, width - 1)           # below the sign bit
        windows = [Cat(*(bit(s + i) for i in range(k))) for s in shifts]
        above = [any_from[s + k] if s + k < width - 1 else Const(0, 1) for s in shifts]
        # y_max is all ones: the register of the first part takes it as a synchronous set
        # (the flip-flops' own), the output register takes 0 as a synchronous reset.
        parts = {"window": Mux(pick(above), cfg.y_max, pick(windows)), "sign": sign}
        return parts, {"window": cfg.y_max}, lambda r: Mux(r["sign"], 0, r["window"])

    def elaborate(self, platform):
        cfg = self.cfg
        lanes, groups, digits, d = self.lanes, self.groups, self.digits, self.digit_bits
        m = Module()

        # With `enable_copies`, copies of the enable (flip-flops of their own with
        # `registered_enable`): one for the parameter address and memory, one per lane.
        en, out_valid, copies = output_enable(
            m, self.o, ready_next=self.o_ready_next if self.registered_enable else None,
            copies=lanes + 1 if self.enable_copies else 0)
        param_en, lane_en = (copies[0], copies[1:]) if copies else (en, [en] * lanes)
        busy = Signal()                      # the buffer holds a fold with steps left
        accept = Signal()
        issue = Signal()
        # -- sequencer: step `group` of the fold, digit `digit` of the step --------------------
        group = Signal(range(max(2, groups)), name="step_group")
        digit = Signal(range(max(2, digits)), name="step_digit")
        cur_group, cur_digit = group, digit
        digit_last = Signal()
        group_last = Signal()
        # `room`: the buffer may take a fold (it is empty, or its last step is being issued), as
        # a register computed from the next state, so that `i.ready` is `en` and one flip-flop.
        room = Signal(init=1)
        digit_next = Signal.like(digit)
        group_next = Signal.like(group)
        busy_next = Signal()
        m.d.comb += [
            digit_last.eq(digit == digits - 1),
            group_last.eq(group == groups - 1),
            issue.eq(busy & en),
            # A new fold enters the buffer while the last step of the previous one reads it.
            self.i.ready.eq(en & room),
            accept.eq(self.i.valid & self.i.ready),
            digit_next.eq(Mux(issue, Mux(digit_last, 0, digit + 1), digit)),
            group_next.eq(Mux(issue & digit_last, Mux(group_last, 0, group + 1), group)),
            busy_next.eq(Mux(accept, 1, Mux(issue & digit_last & group_last, 0, busy))),
        ]
        m.d.sync += [
            digit.eq(digit_next),
            group.eq(group_next),
            busy.eq(busy_next),
        ]
        # The next `room`, without counting through `digit_next` and `group_next`: after an
        # accept the buffer starts a fold at its first step (room only when it is also the last);
        # after an issue, room when the fold ends or the issued step was the last but one.
        if digits > 1:
            last_but_one = (digit == digits - 2) & group_last
        elif groups > 1:
            last_but_one = group == groups - 2
        else:
            last_but_one = Const(0, 1)
        with m.If(accept):
            m.d.sync += room.eq(digits == 1 and groups == 1)
        with m.Elif(issue):
            m.d.sync += room.eq((digit_last & group_last) | last_but_one)

        fold = Signal(range(max(2, cfg.out_beats)), name="fold")
        with m.If(issue & digit_last & group_last):
            m.d.sync += fold.eq(Mux(fold == cfg.out_beats - 1, 0, fold + 1))

        # The parameter word of the current step and digit, `(fold·groups + group)·digits +
        # digit`; the read port is addressed with its next value (while a step is issued, of the
        # parameters' copy of the enable), so its data always belongs to the current one. When
        # `digits`, `groups` and the folds are powers of two the word is the counters side by
        # side, else a counter of its own. The next value is the word plus `issue` (an adder), or
        # with `enable_copies` a choice of the word and `word_after`, a register that is always
        # the word after it (no adder on the path of the enable).
        param_issue = Signal()
        m.d.comb += param_issue.eq(busy & param_en)
        fields = [(digit, digits), (group, groups), (fold, cfg.out_beats)]
        words = cfg.out_beats * groups * digits
        if self.enable_copies:
            word_after = Signal(range(self.depth), init=1 % words, name="param_word_after")
        if words > 1 and all(count & (count - 1) == 0 for _, count in fields):
            word = Cat(*(counter[:(count - 1).bit_length()] for counter, count in fields))
            if self.enable_copies:
                with m.If(param_issue):
                    m.d.sync += word_after.eq(word_after + 1)     # wraps with the counters
            else:
                m.d.comb += self.params.addr.eq(word + param_issue)
        else:
            word = Signal(range(self.depth), name="param_word")
            if self.enable_copies:
                with m.If(param_issue):
                    m.d.sync += [word.eq(word_after),
                                 word_after.eq(Mux(word_after == words - 1, 0, word_after + 1))]
            else:
                word_next = Signal(range(self.depth), name="param_word_next")
                m.d.comb += [
                    word_next.eq(Mux(param_issue, Mux(word == words - 1, 0, word + 1), word)),
                    self.params.addr.eq(word_next),
                ]
                m.d.sync += word.eq(word_next)
        if self.enable_copies:
            m.d.comb += self.params.addr.eq(Mux(param_issue, word_after, word))
        params = self.params.data

        # -- the buffered fold ---------------------------------------------------------------
        # Data registers have no reset (only valid bits, counters and `base` do).
        buffer_acc = Signal.like(self.i.p.acc, name="buffer_acc", reset_less=True)
        buffer_overflow = Signal.like(self.i.p.overflow, name="buffer_overflow", reset_less=True)
        with m.If(accept):
            m.d.sync += [buffer_acc.eq(self.i.p.acc), buffer_overflow.eq(self.i.p.overflow)]

        def channel_of(source, lane, name):
            """``source[group·lanes + lane]`` (0 past the last row) for the current group: on
            ECP5 one slice per bit and four groups (:func:`~qmac.hw.ecp5_mux.lut_mux`)."""
            choices = [source[g * lanes + lane] if g * lanes + lane < cfg.rows else 0
                       for g in range(groups)]
            return lut_mux(m, f"{name}_{lane}", choices, group,
                           primitive=self.mul_plan.family == "ecp5")

        # -- stage 0: the operands of one digit, registered (the parameter memory's output and
        # the channel multiplexer stay out of the multiplier's path) ---------------------------
        s0 = stage(m, en, "operand", valid=issue, first=cur_digit == 0, final=digit_last,
                   group=cur_group, last=group_last & (fold == cfg.out_beats - 1))
        operands = []
        if self.registered_params:
            # The memory's own output register, enabled by the parameters' copy of `en`, is
            # this stage for the parameter fields.
            m.d.comb += self.params_oce.eq(param_en)
        for lane in range(lanes):
            values = {"acc": channel_of(buffer_acc, lane, "channel_acc").as_signed(),
                      "digit": params.m[lane], "b": params.b[lane],
                      "overflow": channel_of(buffer_overflow, lane, "channel_overflow")}
            if len(self.shifts) > 1:
                values["select"] = params.sel[lane]
            fields = ("digit", "b", "select") if self.registered_params else ()
            registered = dict(zip([k for k in values if k not in fields],
                                  stage(m, lane_en[lane], f"operand_{lane}", reset_less=True,
                                        **{k: v for k, v in values.items() if k not in fields})))
            operands.append({k: registered.get(k, v) for k, v in values.items()})

        # -- stage 1 (``term_stages`` register stages): the addends of the digit product
        # acc·M_j + B_j: its partial products ("dsp", each within one DSP block) or its radix-4
        # Booth terms ("lut", each a choice of 0, acc, 2·acc, inverted when negative; the ones
        # of the inversions are in B_j), and B_j -------------------------------------------------
        control = s0
        for k in range(self.term_stages):
            control = stage(m, en, "term" if k == 0 else f"term{k}", valid=control[0],
                            first=control[1], final=control[2], group=control[3],
                            last=control[4])
        trees, side = [], []
        for lane, operand in enumerate(operands):
            enable = lane_en[lane]
            if self.mul_plan.requant[lane] == "lut":
                addends = [(self._delay(m, enable, f"term_{lane}_{k}_d", term,
                                        self.term_stages - 1), shift)
                           for k, (term, shift) in enumerate(self._booth_terms(m, enable, lane,
                                                                               operand))]
            else:
                addends = self._dsp_partials(m, enable, lane, operand)
            b = self._delay(m, enable, f"term_{lane}_b", operand["b"], self.term_stages)
            trees.append(addends + [(b, 0)])
            values = {"overflow": operand["overflow"]}
            if len(self.shifts) > 1:
                values["select"] = operand["select"]
            for k in range(self.term_stages):
                values = dict(zip(values, stage(m, enable, f"term{k or ''}_{lane}",
                                                reset_less=True, **values)))
            side.append(values)

        # -- stages 2 ..: the adder tree of each lane, a register after every level, modulo
        # 2^loop_bits (the sum T_j fits loop_bits signed bits, so the digit product may wrap) --
        for level in range(self.tree_levels):
            control = stage(m, en, f"tree_l{level + 1}", valid=control[0], first=control[1],
                            final=control[2], group=control[3], last=control[4])
            for lane in range(lanes):
                nodes, enable = trees[lane], lane_en[lane]
                trees[lane] = [self._add_node(m, enable, f"tree_l{level + 1}_{lane}_{k // 2}",
                                              nodes[k:k + 2])
                               for k in range(0, len(nodes), 2)]
                values = side[lane]
                side[lane] = dict(zip(values, stage(m, enable, f"tree_l{level + 1}_{lane}",
                                                    reset_less=True, **values)))
        t_valid, t_first, t_final, t_group, t_last = control

        # -- the running sum: T = floor(T / 2^d) + acc·M_j + B_j, the low bits kept ------------
        s2_valid, s2_group, s2_last = stage(
            m, en, "sum", valid=t_valid & t_final, group=t_group, last=t_last)
        s2_valid, s2_group, s2_last = stage(
            m, en, "total", valid=s2_valid, group=s2_group, last=s2_last)
        # The low bits of the sum only matter when a shift is smaller than their count.
        low_bits = d * (digits - 1) if self.shifts[0] < d * (digits - 1) else 0
        drop = d * (digits - 1) - low_bits          # bits of the sum below `total` left out
        totals, lows, s2_selects, s2_flags = [], [], [], []
        for lane in range(lanes):
            (digit_product, shift), = trees[lane]
            assert shift == 0
            enable = lane_en[lane]
            # `base + carry` is floor(T / 2^d) for the next digit, already 0 before a first
            # digit (zeroed by its own synchronous reset, the domain reset included), so that no
            # logic stands before or after the loop adder. The adder is split at bit `d`: the
            # high part does not wait for the carry out of the low part, which is kept in
            # `carry` and enters the next digit's low part as its carry in (the true sum is
            # `Cat(low_part, high_part + carry)`, resolved after the final digit).
            base = Signal(signed(self.loop_bits - d), name=f"sum_base_{lane}", reset_less=True)
            carry = Signal(name=f"sum_carry_{lane}", reset_less=True)
            low_part = Signal(d + 1, name=f"sum_lowpart_{lane}")
            high_part = Signal(signed(self.loop_bits - d), name=f"sum_highpart_{lane}")
            total = Signal(signed(self.loop_bits), name=f"sum_{lane}", reset_less=True)
            low = Signal(max(1, low_bits), name=f"sum_low_{lane}", reset_less=True)
            m.d.comb += [
                low_part.eq(base[:d] + digit_product[:d] + carry),
                high_part.eq((base >> d) + (digit_product >> d)),
            ]
            with m.If(ResetSignal() | (enable & t_valid & t_final)):
                m.d.sync += [base.eq(0), carry.eq(0)]
            with m.Elif(enable & t_valid):
                m.d.sync += [base.eq(high_part), carry.eq(low_part[d])]
            # The final digit's sum, its carry resolved (one more register stage).
            final_low = Signal(d, name=f"sum_final_low_{lane}", reset_less=True)
            final_high = Signal(signed(self.loop_bits - d), name=f"sum_final_high_{lane}",
                                reset_less=True)
            final_carry = Signal(name=f"sum_final_carry_{lane}", reset_less=True)
            with m.If(enable & t_valid):
                m.d.sync += [final_low.eq(low_part[:d]), final_high.eq(high_part),
                             final_carry.eq(low_part[d])]
                if low_bits:
                    with m.If(~t_first):
                        m.d.sync += low.eq(Cat(low[d:], final_low))
            with m.If(enable):
                m.d.sync += total.eq(Cat(final_low, final_high + final_carry))
            s2 = stage(m, enable, f"sum_{lane}", reset_less=True, **side[lane])
            s2 = stage(m, enable, f"total_{lane}", reset_less=True,
                       **dict(zip(side[lane], s2)))
            totals.append(total)
            lows.append(low)
            s2_flags.append(s2[0])
            s2_selects.append(s2[1] if len(s2) > 1 else None)

        # -- the shift and the first half of the clamp, registered ----------------------------
        finishes, clamped = [], []
        for lane in range(lanes):
            full = Cat(lows[lane], totals[lane]).as_signed() if low_bits else totals[lane]
            parts, init, finish = self._shift_clamp(full, s2_selects[lane], drop)
            parts["overflow"] = s2_flags[lane]
            clamped.append(dict(zip(parts, stage(m, lane_en[lane], f"clamp_{lane}",
                                                 reset_less=True, init=init, **parts))))
            finishes.append(finish)
        s2_valid, s2_group, s2_last = stage(
            m, en, "clamp", valid=s2_valid, group=s2_group, last=s2_last)

        # -- the clamp's second part, registered without reset (for unsigned outputs its choice
        # of 0 is the flip-flops' own synchronous reset) ----------------------------------------
        results = [stage(m, lane_en[lane], f"result_{lane}", reset_less=True,
                         y=finishes[lane](clamped[lane]), overflow=clamped[lane]["overflow"])
                   for lane in range(lanes)]
        s2_valid, s2_group, s2_last = stage(
            m, en, "result", valid=s2_valid, group=s2_group, last=s2_last)

        # -- the last stage: the output beat ----------------------------------------------------
        m.d.comb += out_valid.eq(s2_valid & (s2_group == groups - 1))
        with m.If(en):
            m.d.sync += self.o.valid.eq(out_valid)
            with m.If(out_valid):
                m.d.sync += self.o.p.last.eq(s2_last)
        # The output beat fills as a shift register of steps: each step's results enter the
        # top group's places and the others move one group down, so after the fold's last step
        # group `g` holds step `g` (no multiplexer or enable per row).
        ys = [self.o.p.y[r] if r < cfg.rows else Signal.like(self.o.p.y[0], name=f"y_pad_{r}")
              for r in range(groups * lanes)]
        flags = [self.o.p.overflow[r] if r < cfg.rows else Signal(name=f"overflow_pad_{r}")
                 for r in range(groups * lanes)]
        for r in range(groups * lanes):
            lane = r % lanes
            with m.If(lane_en[lane] & s2_valid):
                if r < (groups - 1) * lanes:
                    m.d.sync += [ys[r].eq(ys[r + lanes]), flags[r].eq(flags[r + lanes])]
                else:
                    m.d.sync += [ys[r].eq(results[lane][0]), flags[r].eq(results[lane][1])]

        return m

    @staticmethod
    def _register(m, en, name, value):
        register = Signal(value.shape(), name=name, reset_less=True)
        with m.If(en):
            m.d.sync += register.eq(value)
        return register

    def _delay(self, m, en, name, value, count):
        """``value`` through ``count`` registers (``value`` itself when ``count`` is 0)."""
        for k in range(count):
            value = self._register(m, en, name if k == 0 else f"{name}{k}", value)
        return value

    def _dsp_partials(self, m, en, lane, operand):
        """The partial products of ``acc·digit`` in a ``"dsp"`` lane, as ``(product, shift)``
        pairs with ``Σ product·2^shift = acc·digit``, sorted by shift, after ``term_stages``
        register stages: one per pair of pieces of ``acc`` and of the digit
        (:func:`operand_pieces`), each at most one DSP block wide, so that no multiply wider
        than one block stands in one stage. A piece product is a
        :class:`~qmac.hw.ecp5_mac.RegisteredProduct` (its own input and output registers; an
        instance when the plan's family has it, else its behavioural model) when
        ``registered_products``, else a registered ``*``."""
        plan = self.mul_plan
        acc, digit = operand["acc"], operand["digit"]

        def piece(value, low, bits, is_signed):
            part = value[low:low + bits]
            return part.as_signed() if is_signed else part

        single = len(self.acc_pieces) * len(self.digit_pieces) == 1
        partials = []
        for i, (a_low, a_bits, a_signed) in enumerate(self.acc_pieces):
            for j, (m_low, m_bits, m_signed) in enumerate(self.digit_pieces):
                a = piece(acc, a_low, a_bits, a_signed)
                b = piece(digit, m_low, m_bits, m_signed)
                name = f"term_{lane}_product" + ("" if single else f"_{i}_{j}")
                if self.registered_products:
                    block = RegisteredProduct(a_bits=a_bits, a_signed=a_signed, b_bits=m_bits,
                                              b_signed=m_signed, registers=plan.dsp_registers,
                                              primitive=plan.primitives)
                    m.submodules[f"mult18_{lane}_{i}_{j}"] = block
                    m.d.comb += [block.en.eq(en), block.a.eq(a), block.b.eq(b)]
                    value, stages = block.p, block.latency
                else:
                    value, stages = self._register(m, en, name, product(a, b, "dsp")), 1
                value = self._delay(m, en, f"{name}_d", value, self.term_stages - stages)
                partials.append((value, a_low + m_low))
        return sorted(partials, key=lambda node: node[1])

    def _booth_terms(self, m, en, lane, operand):
        """The registered radix-4 Booth terms of ``acc·digit``, as ``(term, shift)`` pairs with
        ``Σ term·2^shift = acc·digit - booth_correction(digit)``: term ``k`` is ``q_k·acc``,
        ``q_k = -2·b[2k+1] + b[2k] + b[2k-1]`` of the digit's bits ``b`` (sign-extended), formed
        as ``|q_k|·acc`` inverted when ``b[2k+1]`` is set (``~v = -v - 1``)."""
        acc, digit = operand["acc"], operand["digit"]
        width = len(acc) + 1

        def bit(j):
            return Const(0, 1) if j < 0 else digit[min(j, len(digit) - 1)]

        terms = []
        for k in range(self.booth_terms):
            high, mid, low = bit(2 * k + 1), bit(2 * k), bit(2 * k - 1)
            one = mid ^ low
            two = (high & ~mid & ~low) | (~high & mid & low)
            magnitude = Mux(one, acc, Mux(two, acc << 1, 0))
            term = Signal(signed(width), name=f"term_{lane}_{k}", reset_less=True)
            with m.If(en):
                m.d.sync += term.eq(magnitude ^ high.replicate(width))
            terms.append((term, 2 * k))
        return terms

    def _add_node(self, m, en, name, pair):
        """One registered node of a lane's adder tree: the sum of one or two ``(value, shift)``
        addends (``value·2^shift``), modulo ``2^loop_bits``, as a ``(register, shift)`` pair; the
        bits below the larger shift are the smaller-shift addend's own (no adder for them)."""
        if len(pair) == 1:
            (value, shift), = pair
            return self._register(m, en, name, value), shift
        (a, sa), (b, sb) = sorted(pair, key=lambda node: node[1])
        gap = sb - sa
        width = self.loop_bits - sa
        node = Signal(signed(width), name=name, reset_less=True)
        high = (a >> gap) + b if gap else a + b
        if gap:
            fill = a[-1] if a.shape().signed else Const(0, 1)         # an unsigned product
            a_low = Cat(*(a[j] if j < len(a) else fill for j in range(gap)))    # extended
            value = Cat(a_low, high)
            if high.shape().signed:
                value = value.as_signed()
        else:
            value = high
        with m.If(en):
            # Cut to `width` bits, or extended as its own signedness says when narrower.
            m.d.sync += node.eq(value[:width].as_signed() if len(value) > width else value)
        return node, sa
