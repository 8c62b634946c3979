"""The MAC array: ``rows × cols`` multipliers, one exact adder tree per row, ``rows``
accumulators with the overflow mode and sticky overflow flag of the arithmetic contract."""

from amaranth.hdl import C, Module, Mux, Signal, signed
from amaranth.lib.memory import Memory
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from . import layouts
from .ecp5_mac import RegisteredProduct
from .ecp5_pack import PackedProducts
from .ice40_mac import DualProduct8x8
from .multiply import plan_multipliers, product
from .pipeline import global_enable, stage


__all__ = ["MacArray", "check_levels_per_stage"]


def check_levels_per_stage(levels_per_stage):
    """Raise ``ValueError`` unless ``levels_per_stage`` is a positive integer."""
    if isinstance(levels_per_stage, bool) or not isinstance(levels_per_stage, int) or \
            levels_per_stage < 1:
        raise ValueError(f"levels_per_stage must be a positive integer, "
                         f"not {levels_per_stage!r}")


class MacArray(wiring.Component):
    """``rows`` dot products computed ``cols`` products per beat.

    Each input beat carries ``cols`` activations and a ``rows × cols`` weight tile. Row ``r``
    forms the ``cols`` exact products ``x[c]·w[r][c]``, sums them in an exact adder tree (the
    beat sum, ``cfg.beat_sum_bits`` wide) and updates its ``acc_bits`` signed accumulator::

        acc = OV(beat_sum)          on a beat marked ``first``
        acc = OV(acc + beat_sum)    on every other beat

    ``OV`` wraps or saturates (``cfg.overflow``); the sticky ``overflow`` flag of a row is set
    when ``OV`` changed a value and cleared by the next ``first`` beat. A beat marked ``last``
    (it may also be ``first``) produces one output beat holding the ``rows`` accumulators.

    Pipeline: with ``operand_registers`` a register on every operand, then registered
    products, then the adder tree with one register every ``levels_per_stage`` adder levels
    (``ceil(log2(cols))`` levels in all), then the accumulator register, which is also the
    output register (or, with ``free_running``, feeds the output buffer); with
    ``route_registers`` each stage's inputs are registered once more.
    When the plan packs products two per iCE40 ``SB_MAC16`` (style ``"dsp2"``,
    :class:`~qmac.hw.ice40_mac.DualProduct8x8`), the products take two register stages (the
    block's input and product registers); the other products of the array then register their
    operands first too, so that all stay aligned.
    Likewise with ECP5 ``MULT18X18D`` products (style ``"dspreg"``,
    :class:`~qmac.hw.ecp5_mac.RegisteredProduct`): the products take the block's register
    stages (``mul_plan.product_stages``: 2, or 3 with input, pipeline and output registers).
    Products of style ``"pack"`` (a column's rows sharing one multiply,
    :class:`~qmac.hw.ecp5_pack.PackedProducts`) keep the single product stage.

    Parameters
    ----------
    cfg : LayerConfig
        Uses ``rows``, ``cols``, ``a_bits``, ``a_signed``, ``w_bits``, ``acc_bits``, ``overflow``.
    levels_per_stage : int
        Adder-tree levels between two pipeline registers (default 1: a register after every
        level).
    mul_plan : MulPlan, optional
        How each product is built (``"dsp"``: ``*``; ``"lut"``: Booth logic; ``"dsp2"``: two per
        ``SB_MAC16``, an instance when the plan's ``family`` is ``"ice40"``, else its
        behavioural model; ``"dspreg"``: one registered ``MULT18X18D``, an instance when the
        plan's ``family`` is ``"ecp5"``, else its behavioural model); default :func:`~qmac.hw.multiply.plan_multipliers` of ``cfg`` with
        no target part.
    free_running : bool, optional
        A data path without enable and an output buffer with credits (see Timing); default:
        when the plan has ``"dspreg"`` products, or ``"dsp2"`` products and dot products of more
        than :attr:`latency` beats (an output buffer of two results).
    route_registers : bool, optional
        A register on every adder input: before each tree stage (the products included) and
        before the accumulators, so that the route between two adders (or from a DSP block,
        which may sit far across the part) has a cycle of its own, apart from the carry
        chain; ``ceil(ceil(log2(cols)) / levels_per_stage) + 1`` stages more. Default: with
        ``free_running`` with ``"dspreg"`` products.
    operand_registers : bool, optional
        A fabric register on every multiplier operand before the products (one per weight,
        one per activation column), so that the route into a DSP block from whatever feeds
        ``i`` (a block RAM's output register across the part, in the layer engine) has a cycle
        of its own; one stage more. Default: with ``route_registers`` when the plan has
        ``"dspreg"`` products.

    Members
    -------
    i : In(stream.Signature(layouts.mac_input_layout(cfg)))
        Input beats.
    o : Out(stream.Signature(layouts.mac_output_layout(cfg)))
        One beat per input beat marked ``last``.
    i_ready_next : Out(1)
        With ``free_running`` only: the value ``i.ready`` (a register) takes in the next cycle,
        so that the producer can register its own enable.

    Timing: a ``last`` beat transferred on ``i`` in cycle ``t`` makes ``o.valid`` high in cycle
    ``t + latency`` when ``o`` does not stall, with
    ``latency = 1 + operand_registers + product_stages + tree_stages + route_stages +
    free_running``, with
    ``tree_stages = ceil(ceil(log2(cols)) / levels_per_stage)``, ``route_stages`` that number
    plus one with ``route_registers`` (else 0) and
    ``product_stages = mul_plan.product_stages``: 2 when the plan has ``"dsp2"`` products,
    2 or 3 (``mul_plan.dsp_registers``) with ``"dspreg"`` products, else 1. Throughput is one
    beat per cycle. ``o.valid`` is a register and never depends on ``o.ready``; nothing is lost,
    duplicated or reordered under any pattern of stalls.

    Without ``free_running`` the pipeline has one global enable, ``en = ~o.valid | o.ready``,
    and ``i.ready = en``: a stall on ``o`` freezes every stage.

    With ``free_running`` (default: with ``"dspreg"`` products, and ``"dsp2"`` products on
    dot products of more than ``latency`` beats: arrays large or slow-routed enough for an
    enable's fan-out to set the clock) there is no
    enable: the products (their DSP blocks' clock enables tied high), the adder tree and the
    side band move on in every cycle, and the accumulators take only the beats marked valid. An
    output buffer of :attr:`buffer_depth` results (the output register and a small first-in first-out
    memory; ``1 + ceil(latency / cfg.beats)`` results, so that ``i`` never waits at full rate)
    catches every result in flight. ``i.ready`` is a register (its next value is
    ``i_ready_next``): high inside a dot product, and between dot products while the buffer has
    room for one more result beyond those reserved (credits: the first beat of a dot product
    on ``i`` takes one, a beat on ``o`` gives one back in the next cycle). ``o.ready`` drives
    only the buffer. The latency is one cycle more than without.

    Raises
    ------
    ValueError
        ``levels_per_stage`` is not a positive integer.
    """

    def __new__(cls, cfg, *, levels_per_stage=1, mul_plan=None, free_running=None,
                route_registers=None, operand_registers=None):
        # Refuse bad arguments before the component exists: one created but never elaborated
        # would make Amaranth warn (UnusedElaboratable) when it is collected.
        check_levels_per_stage(levels_per_stage)
        if mul_plan is not None:
            mul_plan.check(cfg)
        return super().__new__(cls, src_loc_at=1)       # the warning location is the caller's

    def __init__(self, cfg, *, levels_per_stage=1, mul_plan=None, free_running=None,
                route_registers=None, operand_registers=None):
        self.cfg = cfg
        self.levels_per_stage = levels_per_stage
        self.mul_plan = (plan_multipliers(cfg) if mul_plan is None else mul_plan).check(cfg)
        self.tree_levels = (cfg.cols - 1).bit_length()           # ceil(log2(cols))
        self.tree_stages = -(-self.tree_levels // levels_per_stage)
        #: Register stages of the products: 2 with ``"dsp2"`` products (input and product
        #: registers of the DSP block), those of the ``MULT18X18D`` with ``"dspreg"`` products,
        #: else 1.
        self.product_stages = self.mul_plan.product_stages
        #: Whether the data path runs free (no enable; an output buffer with credits, see
        #: Timing) rather than stalling as a whole under one global enable.
        if free_running is None:
            # With "dsp2" products (iCE40: no distributed RAM, the output buffer is flip-flops
            # and multiplexers) only where it holds at most two results: dot products of more
            # than `latency` beats.
            free_running = self.mul_plan.registered or (
                self.mul_plan.packed and 3 + self.product_stages + self.tree_stages <= cfg.beats)
        self.free_running = bool(free_running)
        #: Whether every adder input (each tree stage's operands and each accumulator's beat
        #: sum) passes through a register of its own before the adder.
        self.route_registers = (self.free_running and self.mul_plan.registered) \
            if route_registers is None else bool(route_registers)
        #: Register stages of :attr:`route_registers`: one before each tree stage and one
        #: before the accumulators (else 0).
        self.route_stages = (self.tree_stages + 1) if self.route_registers else 0
        #: Whether every multiplier operand passes through a fabric register of its own before
        #: the products (one stage).
        self.operand_registers = (self.route_registers and "mac_dspreg" in
                                  self.mul_plan.counts()) \
            if operand_registers is None else bool(operand_registers)
        #: Cycles from the transfer of a ``last`` beat on ``i`` to ``o.valid``, without stalls.
        self.latency = 1 + int(self.operand_registers) + self.product_stages + \
            self.tree_stages + self.route_stages + int(self.free_running)
        #: Results the output buffer holds (free-running data path only; else 0): enough that
        #: ``i`` never waits at full rate with dot products of ``cfg.beats`` beats (a result's
        #: place is reserved at the dot product's first beat, for ``beats + latency + 1``
        #: cycles: its credit comes back in the cycle after its transfer on ``o``).
        self.buffer_depth = 1 + -(-(self.latency + 1) // cfg.beats) if self.free_running else 0
        members = {
            "i": In(stream.Signature(layouts.mac_input_layout(cfg))),
            "o": Out(stream.Signature(layouts.mac_output_layout(cfg))),
        }
        if self.free_running:
            members["i_ready_next"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        cfg = self.cfg
        m = Module()

        if self.free_running:
            # No enable: every product, tree and side-band register takes its input in every
            # cycle, and the accumulators take only the beats marked valid. ``i.ready`` comes
            # from the output buffer's credits (_output_buffer), so nothing in flight is lost.
            en = C(1, 1)
            done_valid = Signal(name="done_valid")
            done = Signal(layouts.mac_output_layout(cfg), name="done")
        else:
            en = global_enable(m, self.i, self.o)
            done_valid, done = self.o.valid, self.o.p
        reset_less = self.free_running      # data registers of a free-running path: no reset
        # A beat enters the pipeline when it is transferred (with a global enable, ``en`` is
        # ``i.ready`` and holds the first stage).
        in_valid = self.i.valid & self.i.ready
        first, last = self.i.p.first, self.i.p.last
        # The multiplier operands: ``x[c]`` of each column, ``w[r][c]`` of each product.
        x = [self.i.p.x[c] for c in range(cfg.cols)]
        w = [[self.i.p.w[r][c] for c in range(cfg.cols)] for r in range(cfg.rows)]
        if self.operand_registers:
            # One register per operand (a weight feeds one product, so each weight register
            # can sit by its DSP block), one stage like the side band.
            x = [self._register(m, en, value, f"x_op_{c}", reset_less)
                 for c, value in enumerate(x)]
            w = [[self._register(m, en, value, f"w_op_{r}_{c}", reset_less)
                  for c, value in enumerate(row)] for r, row in enumerate(w)]
            in_valid, first, last = stage(m, en, "operand", valid=in_valid, first=first,
                                          last=last)

        # Registered products. ``x·w`` fits ``exact_product_bits`` signed for either signedness of
        # ``x``; the slice drops the extra bit of an unsigned-by-signed product.
        exact_product_bits = cfg.sum_bits(1)
        if self.mul_plan.packed:
            products = self._packed_products(m, en, x, w, exact_product_bits)
            valid, first, last = stage(m, en, "dsp_input", valid=in_valid, first=first,
                                       last=last)
            valid, first, last = stage(m, en, "product", valid=valid, first=first, last=last)
        elif self.mul_plan.registered:
            products = self._registered_products(m, en, x, w, exact_product_bits)
            valid = in_valid
            for k in range(self.product_stages):
                valid, first, last = stage(m, en, f"product{k}", valid=valid, first=first,
                                           last=last)
        else:
            products = self._pack_products(m, en, x, w, exact_product_bits)
            for r in range(cfg.rows):
                for c in range(cfg.cols):
                    if (r, c) in products:
                        continue
                    product_reg = Signal(signed(exact_product_bits), name=f"product_{r}_{c}",
                                         reset_less=self.free_running)
                    with m.If(en):
                        m.d.sync += product_reg.eq(
                            product(x[c], w[r][c], self.mul_plan.mac[r][c])
                            [:exact_product_bits].as_signed())
                    products[r, c] = product_reg
            valid, first, last = stage(m, en, "product", valid=in_valid, first=first, last=last)
        rows = [[(products[r, c], 1) for c in range(cfg.cols)] for r in range(cfg.rows)]

        # Adder tree: each node is (signal, number of products it sums), so that every node has
        # exactly the width its range needs. A register after every `levels_per_stage` levels.
        for level in range(self.tree_levels):
            if self.route_registers and level % self.levels_per_stage == 0:
                rows = self._route_register(m, en, rows, f"route_l{level + 1}", reset_less)
                valid, first, last = stage(m, en, f"route_l{level + 1}", valid=valid,
                                           first=first, last=last)
            registered = (level + 1) % self.levels_per_stage == 0 or \
                level + 1 == self.tree_levels
            next_rows = []
            for r, row in enumerate(rows):
                next_row = []
                for k in range(0, len(row), 2):
                    pair = row[k:k + 2]
                    count = sum(n for _, n in pair)
                    node = Signal(signed(cfg.sum_bits(count)),
                                  name=f"sum_l{level + 1}_{r}_{k // 2}", reset_less=reset_less)
                    if len(pair) == 2:
                        (a, _), (b, _) = pair
                        value = (a + b)[:len(node)].as_signed()
                    else:
                        value = pair[0][0]
                    if registered:
                        with m.If(en):
                            m.d.sync += node.eq(value)
                    else:
                        m.d.comb += node.eq(value)
                    next_row.append((node, count))
                next_rows.append(next_row)
            rows = next_rows
            if registered:
                valid, first, last = stage(m, en, f"sum_l{level + 1}", valid=valid,
                                           first=first, last=last)

        if self.route_registers:
            rows = self._route_register(m, en, rows, "route_acc", reset_less)
            valid, first, last = stage(m, en, "route_acc", valid=valid, first=first, last=last)

        # Accumulators, which are also the output registers.
        acc_lo = -(1 << (cfg.acc_bits - 1))
        acc_hi = (1 << (cfg.acc_bits - 1)) - 1
        beat_sum_bits = cfg.beat_sum_bits
        exact_bits = max(cfg.acc_bits, beat_sum_bits) + 1
        for r, row in enumerate(rows):
            (beat_sum, count), = row
            assert count == cfg.cols and len(beat_sum) == beat_sum_bits
            # On a free-running path (large, fast arrays) the data registers have no reset: the
            # first beat of a dot product overwrites both, and the reset net's fan-out shrinks to
            # the valid flags.
            acc = Signal(signed(cfg.acc_bits), name=f"acc_{r}", reset_less=reset_less)
            flag = Signal(name=f"overflow_{r}", reset_less=reset_less)
            exact = Signal(signed(exact_bits), name=f"exact_{r}")
            acc_next = Signal(signed(cfg.acc_bits), name=f"acc_next_{r}")
            changed = Signal(name=f"changed_{r}")
            m.d.comb += exact.eq(Mux(first, beat_sum, acc + beat_sum))
            # OV changes the value exactly when the bits from acc_bits - 1 up are not all equal.
            top = exact[cfg.acc_bits - 1:]
            m.d.comb += changed.eq(~(top.all() | ~top.any()))
            if cfg.overflow == "wrap":
                m.d.comb += acc_next.eq(exact[:cfg.acc_bits].as_signed())
            else:
                m.d.comb += acc_next.eq(Mux(changed,
                                            Mux(exact[-1], acc_lo, acc_hi),
                                            exact[:cfg.acc_bits].as_signed()))
            with m.If(en & valid):
                m.d.sync += [
                    acc.eq(acc_next),
                    flag.eq(changed | (flag & ~first)),
                ]
            m.d.comb += [
                done.acc[r].eq(acc),
                done.overflow[r].eq(flag),
            ]
        with m.If(en):
            m.d.sync += done_valid.eq(valid & last)

        if self.free_running:
            self._output_buffer(m, done_valid, done)
        return m

    @staticmethod
    def _register(m, en, value, name, reset_less):
        """``value`` through one register named ``name``, taking it while ``en`` is high."""
        register = Signal(value.shape(), name=name, reset_less=reset_less)
        with m.If(en):
            m.d.sync += register.eq(value)
        return register

    @staticmethod
    def _route_register(m, en, rows, prefix, reset_less):
        """``rows`` (of tree nodes ``(signal, count)``) through one register each, named
        ``{prefix}_{row}_{k}``: a cycle for the route to the adder that takes them."""
        registered_rows = []
        for r, row in enumerate(rows):
            registered_row = []
            for k, (node, count) in enumerate(row):
                register = Signal(node.shape(), name=f"{prefix}_{r}_{k}", reset_less=reset_less)
                with m.If(en):
                    m.d.sync += register.eq(node)
                registered_row.append((register, count))
            registered_rows.append(registered_row)
        return registered_rows

    def _pack_products(self, m, en, x, w, exact_product_bits):
        """The ``"pack"`` products: each group of :meth:`MulPlan.pack_groups` (rows of one
        column) in one :class:`PackedProducts` block, one register stage like the other styles.
        Returns ``{(r, c): product}``."""
        cfg = self.cfg
        products = {}
        if "mac_pack" not in self.mul_plan.counts():
            return products
        for k, group in enumerate(self.mul_plan.pack_groups(cfg)):
            block = PackedProducts(a_bits=cfg.a_bits, a_signed=cfg.a_signed, w_bits=cfg.w_bits,
                                   count=len(group))
            m.submodules[f"pack_{k}"] = block
            m.d.comb += [block.en.eq(en), block.x.eq(x[group[0][1]])]
            for i, (r, c) in enumerate(group):
                node = Signal(signed(exact_product_bits), name=f"product_{r}_{c}")
                m.d.comb += [block.w[i].eq(w[r][c]),
                             node.eq(block.p[i][:exact_product_bits].as_signed())]
                products[r, c] = node
        return products

    def _output_buffer(self, m, done_valid, done):
        """The output buffer of a free-running data path: the output register ``o`` and a
        first-in first-out memory of ``buffer_depth - 1`` results (distributed RAM on an FPGA).

        A finished result (``done``, while ``done_valid``) goes straight to ``o`` when ``o`` is
        empty or being read and the memory is empty, else to the memory; ``o`` takes the oldest
        stored result first. The buffer never overflows: ``credits`` counts the results it can
        still take minus those reserved; the first beat of a dot product transferred on ``i``
        (any beat while ``inside``, a dot product begun, is low) takes one, a beat transferred
        on ``o`` gives one back in the next cycle. ``i.ready`` is a register (``i_ready_next``
        its next value): high inside a dot product (its result has its place) and, between
        dot products, while a credit is left."""
        cfg = self.cfg
        layout = layouts.mac_output_layout(cfg)
        depth = self.buffer_depth
        # The counters are thermometer codes (bit k: the count exceeds k), so that "a credit
        # left" and "a result stored" are flip-flops and each bit's next value is a small
        # function of its neighbours: two logic levels however deep the buffer.
        inside = Signal(name="inside")
        inside_next = Signal(name="inside_next")
        ready = Signal(init=1, name="ready")
        take = Signal(name="take")
        give = Signal(name="give")
        m.d.comb += [
            self.i.ready.eq(ready),
            take.eq(self.i.valid & ready & ~inside),
            inside_next.eq(Mux(self.i.valid & ready, ~self.i.p.last, inside)),
        ]
        # `give` is the transfer on `o` of the last cycle: a register, so that the consumer's
        # `o.ready` ends at one flip-flop here and not in the credit logic.
        m.d.sync += give.eq(self.o.valid & self.o.ready)
        credits = _thermometer(m, "credits", depth, init=depth, up=give, down=take)
        m.d.comb += self.i_ready_next.eq(inside_next |
                                         _thermometer_next(credits, 0, up=give, down=take))
        m.d.sync += [inside.eq(inside_next), ready.eq(self.i_ready_next)]

        out_free = Signal(name="out_free")
        out = Signal(layout, name="out", reset_less=True)     # data: no reset
        m.d.comb += [out_free.eq(~self.o.valid | self.o.ready), self.o.p.eq(out)]
        store_depth = depth - 1                                 # at least 1
        # A power-of-two memory (its pointers wrap by themselves); the credits never let more
        # than `store_depth` results wait in it.
        mem_depth = 1 << (store_depth - 1).bit_length()
        m.submodules.results = results = Memory(shape=layout, depth=mem_depth, init=[])
        write = results.write_port()
        read = results.read_port(domain="comb")
        produce = Signal(range(mem_depth), name="produce")
        consume = Signal(range(mem_depth), name="consume")
        pop = Signal(name="pop")
        push = Signal(name="push")
        stored = _thermometer(m, "stored", store_depth, init=0, up=push, down=pop)
        m.d.comb += [
            pop.eq(out_free & stored[0]),
            push.eq(done_valid & ~(out_free & ~stored[0])),
            read.addr.eq(consume),
            write.addr.eq(produce),
            write.data.eq(done),
            # Every finished result is written at `produce`, so that the write enable of the
            # (wide, distributed) memory is the flip-flop `done_valid` alone and not a function
            # of `o.ready`. Only a pushed one advances `produce`: one that went to `o` instead
            # was written while the memory was empty, into a free place.
            write.en.eq(done_valid),
        ]
        with m.If(out_free):
            with m.If(stored[0]):
                m.d.sync += [out.eq(read.data), self.o.valid.eq(1)]
            with m.Else():
                m.d.sync += [out.eq(done), self.o.valid.eq(done_valid)]
        with m.If(push):
            m.d.sync += produce.eq(produce + 1)
        with m.If(pop):
            m.d.sync += consume.eq(consume + 1)

    def _packed_products(self, m, en, x, w, exact_product_bits):
        """The products of a plan with ``"dsp2"`` products, two register stages each: pairs of
        ``"dsp2"`` products in :class:`DualProduct8x8` blocks (enabled by ``en``), the others as
        registered operands, then a registered product. Returns ``{(r, c): product}``."""
        cfg = self.cfg
        plan = self.mul_plan
        products = {}
        for k, pair in enumerate(plan.pairs()):
            block = DualProduct8x8(a_bits=cfg.a_bits, a_signed=cfg.a_signed, b_bits=cfg.w_bits,
                                   b_signed=True, primitive=plan.primitives)
            m.submodules[f"mac16_{k}"] = block
            m.d.comb += block.en.eq(en)
            for half, (r, c) in zip(("top", "bot"), pair):
                m.d.comb += [
                    getattr(block, f"a_{half}").eq(x[c]),
                    getattr(block, f"b_{half}").eq(w[r][c]),
                ]
                node = Signal(signed(exact_product_bits), name=f"product_{r}_{c}")
                m.d.comb += node.eq(getattr(block, f"p_{half}")[:exact_product_bits].as_signed())
                products[r, c] = node
        for r in range(cfg.rows):
            for c in range(cfg.cols):
                if plan.mac[r][c] == "dsp2":
                    continue
                x_reg = Signal(x[c].shape(), name=f"x_reg_{r}_{c}")
                w_reg = Signal(w[r][c].shape(), name=f"w_reg_{r}_{c}")
                product_reg = Signal(signed(exact_product_bits), name=f"product_{r}_{c}")
                with m.If(en):
                    m.d.sync += [
                        x_reg.eq(x[c]),
                        w_reg.eq(w[r][c]),
                        product_reg.eq(product(x_reg, w_reg, plan.mac[r][c])
                                       [:exact_product_bits].as_signed()),
                    ]
                products[r, c] = product_reg
        return products

    def _registered_products(self, m, en, x, w, exact_product_bits):
        """The products of a plan with ``"dspreg"`` products, ``product_stages`` register stages
        each: ``"dspreg"`` products in :class:`RegisteredProduct` blocks (enabled by ``en``), the
        others as registered operands, a registered product, then delay registers. Returns
        ``{(r, c): product}``."""
        cfg = self.cfg
        plan = self.mul_plan
        products = {}
        for r in range(cfg.rows):
            for c in range(cfg.cols):
                a, b = x[c], w[r][c]
                if plan.mac[r][c] == "dspreg":
                    block = RegisteredProduct(a_bits=cfg.a_bits, a_signed=cfg.a_signed,
                                              b_bits=cfg.w_bits, b_signed=True,
                                              registers=plan.dsp_registers,
                                              primitive=plan.primitives)
                    m.submodules[f"mult18_{r}_{c}"] = block
                    m.d.comb += [block.en.eq(en), block.a.eq(a), block.b.eq(b)]
                    node = Signal(signed(exact_product_bits), name=f"product_{r}_{c}")
                    m.d.comb += node.eq(block.p[:exact_product_bits].as_signed())
                    products[r, c] = node
                    continue
                x_reg = Signal(a.shape(), name=f"x_reg_{r}_{c}", reset_less=True)
                w_reg = Signal(b.shape(), name=f"w_reg_{r}_{c}", reset_less=True)
                value = product(x_reg, w_reg, plan.mac[r][c])[:exact_product_bits].as_signed()
                with m.If(en):
                    m.d.sync += [x_reg.eq(a), w_reg.eq(b)]
                for k in range(1, self.product_stages):
                    register = Signal(signed(exact_product_bits), name=f"product{k}_{r}_{c}",
                                      reset_less=True)
                    with m.If(en):
                        m.d.sync += register.eq(value)
                    value = register
                products[r, c] = value
        return products


def _thermometer_next(bits, k, *, up, down):
    """The next value of bit ``k`` of the thermometer counter ``bits``."""
    below = bits[k - 1] if k else C(1, 1)
    above = bits[k + 1] if k + 1 < len(bits) else C(0, 1)
    return Mux(up & ~down, below, Mux(down & ~up, above, bits[k]))


def _thermometer(m, name, size, *, init, up, down):
    """A counter of ``0..size`` as ``size`` flip-flops, bit ``k`` high while the count exceeds
    ``k``: it counts ``up`` and ``down`` (both: no change; the caller keeps it within range)."""
    bits = [Signal(name=f"{name}_gt{k}", init=int(init > k)) for k in range(size)]
    for k, bit in enumerate(bits):
        m.d.sync += bit.eq(_thermometer_next(bits, k, up=up, down=down))
    return bits
