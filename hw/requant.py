"""The requantization unit: ``rows`` lanes of ``clamp(floor((acc·M + B) / 2^S), y_min, y_max)``."""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .multiply import plan_multipliers, product
from .pipeline import global_enable, stage


__all__ = ["Requantizer"]


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
            mul_plan.check(cfg)
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, cfg, *, mul_plan=None):
        self.cfg = cfg
        self.mul_plan = (plan_multipliers(cfg) if mul_plan is None else mul_plan).check(cfg)
        self.product_bits = cfg.acc_bits + cfg.m_bits
        self.sum_bits = max(self.product_bits, cfg.b_bits) + 1
        super().__init__({
            "i": In(stream.Signature(layouts.requant_input_layout(cfg))),
            "o": Out(stream.Signature(layouts.requant_output_layout(cfg))),
        })

    def _clamp(self, value):
        """``value`` (signed) clamped to ``[y_min, y_max]``.

        ``y_max`` is ``2^k - 1`` and ``y_min`` is ``-2^k`` or 0, so the clamp looks at the high
        bits of ``value`` instead of comparing with constants.
        """
        cfg = self.cfg
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

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()

        en = global_enable(m, self.i, self.o)

        # Stage 1: products; B, S, overflow and last travel alongside.
        products = [Signal(signed(self.product_bits), name=f"product_{r}")
                    for r in range(cfg.rows)]
        offsets = [Signal(signed(cfg.b_bits), name=f"offset_{r}") for r in range(cfg.rows)]
        s1_valid, s1_shift, s1_overflow, s1_last = stage(
            m, en, "product", valid=self.i.valid, shift=self.i.p.s,
            overflow=self.i.p.overflow, last=self.i.p.last)
        with m.If(en):
            for r in range(cfg.rows):
                m.d.sync += [
                    products[r].eq(product(self.i.p.acc[r], self.i.p.m[r],
                                          self.mul_plan.requant[r])),
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
        with m.If(en):
            m.d.sync += [
                self.o.valid.eq(s2_valid),
                self.o.p.overflow.eq(s2_overflow),
                self.o.p.last.eq(s2_last),
            ]
        for r in range(cfg.rows):
            amount = s2_shift if cfg.shared_shift else s2_shift[r]
            shifted = Signal(signed(self.sum_bits), name=f"shifted_{r}")
            m.d.comb += shifted.eq(sums[r] >> amount)
            with m.If(en):
                m.d.sync += self.o.p.y[r].eq(self._clamp(shifted))

        return m
