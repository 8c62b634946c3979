"""The threshold requantizer: lanes that count, by binary search, the channel's thresholds at or
below the accumulator (``docs/arithmetic.md``, "Requantization by thresholds")."""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import layouts
from .checks import RangeError
from .config import signed_width
from .pipeline import output_enable, stage
from .threshold_table import check_thresholds
from .ecp5_mux import lut_mux


__all__ = ["ThresholdRequantizer", "threshold_count",
           "check_engine_thresholds", "requant_style"]


def threshold_count(cfg):
    """Thresholds per channel, ``y_max - y_min``."""
    return cfg.y_max - cfg.y_min


def check_engine_thresholds(cfg, thresholds):
    """Check a layer's ``(T, D)`` against ``cfg`` and return them as exact arrays.

    Raises
    ------
    RangeError
        Not a pair ``(T, D)``, a wrong shape, a ``D`` other than ``±1``, a row that decreases,
        or a threshold outside ``[acc_min, acc_max + 1]``; the message names the value.
    """
    try:
        T, D = thresholds
    except (TypeError, ValueError):
        raise RangeError(f"thresholds must be a pair (T, D), not {thresholds!r}") from None
    return check_thresholds(T, D, y_min=cfg.y_min, y_max=cfg.y_max, channels=cfg.out_features,
                            lo=cfg.acc_min, hi=cfg.acc_max + 1)


def requant_style(cfg, M, B, S, thresholds):
    """Which requantizer a layer engine builds from the parameters it is given.

    ``requant_style = "multiply"`` needs ``M``, ``B``, ``S``; ``"threshold"`` needs
    ``thresholds``; ``"auto"`` builds the form it is given (exactly one of the two).

    Raises
    ------
    ValueError
        Parameters that do not match ``cfg.requant_style``, or both forms or neither.
    """
    given_mbs = not (M is None and B is None and S is None)
    given_t = thresholds is not None
    style = cfg.requant_style
    if given_mbs and given_t:
        raise ValueError("give either M, B, S or thresholds, not both")
    if style == "multiply" and not given_mbs:
        raise ValueError("requant_style = 'multiply' needs M, B and S")
    if style == "threshold" and not given_t:
        raise ValueError("requant_style = 'threshold' needs thresholds (T, D), not M, B, S")
    if style == "auto" and not (given_mbs or given_t):
        raise ValueError("requant_style = 'auto' needs M, B, S or thresholds (T, D)")
    return "threshold" if given_t else "multiply"


class ThresholdRequantizer(wiring.Component):
    """The layer engine's threshold requantizer: a binary search over the channel's thresholds,
    with lanes sized to the rate of the MAC array, and the thresholds in its own memories.

    The MAC array yields the ``rows`` accumulators of a fold once every ``beats = K/cols``
    cycles; ``lanes = cfg.requant_lanes`` lanes take them in ``groups = ceil(rows / lanes)``
    steps of one cycle (lane ``l`` handles channels ``g·lanes + l``, as in
    :class:`~qmac.hw.requant.FoldRequantizer`). A lane finds ``count = #{j : T[c, j] <= acc}``
    in ``levels = n.bit_length()`` comparisons, ``n = y_max - y_min``: with the thresholds
    padded to ``2^levels - 1`` by ``acc_max + 1`` (above every accumulator, so never counted),
    level ``k`` compares ``acc`` with ``T[c, ((2·p + 1) << (levels - 1 - k)) - 1]``, where the
    prefix ``p`` holds the ``k`` results so far, high first, and appends the new one; after the
    last level ``p = count`` (the padded row is sorted, so each comparison halves the
    candidates exactly). Then ``y = y_min + count`` (``y_max - count`` where ``D[c] = -1``):
    in ``[y_min, y_max]`` by construction, exactly :func:`qmac.sim.golden.requantize_thresholds`.

    Each lane has one comparator and one read-only memory per level: memory ``k`` of lane ``l``
    holds at word ``s·2^k + p`` the threshold that level ``k`` compares for prefix ``p`` at step
    ``s = f·groups + g`` (fold ``f``, group ``g``); level 0's words also hold ``D``. A level is
    two register stages: the memory read (addressed from the previous stage's registers), then
    the comparison, registered: ``lanes · levels`` comparators in all, and the thresholds sit in
    memories that the tools may map to block RAM. (An earlier unit compared ``acc`` with all ``n`` thresholds of
    every row at once; it needed ``rows·n`` comparators and lost to the multiply unit at 4 bits.)

    Parameters
    ----------
    cfg : LayerConfig
    T, D : arrays
        The threshold table, checked by :func:`check_engine_thresholds`.
    registered_enable : bool
        Make the global enable a flip-flop (for its fan-out and its path into the MAC array's
        enable): the consumer of ``o`` must then tell, on ``o_ready_next``, the value
        ``o.ready`` will have in the next cycle (a :class:`~qmac.hw.pipeline.SkidBuffer`'s
        ``ready_next``), as with :class:`~qmac.hw.requant.FoldRequantizer`.
    primitive : bool
        Build the channel multiplexer of ECP5 slices (``LUT4`` + ``PFUMX``,
        :func:`~qmac.hw.ecp5_mux.lut_mux`), for ECP5 synthesis; the Amaranth simulator cannot
        run it.

    Members
    -------
    i : In(stream.Signature(layouts.mac_output_layout(cfg)))
        The accumulators and overflow flags of one fold, folds in order ``0..folds-1`` (the
        unit counts them and sets ``last`` on fold ``folds - 1``).
    o : Out(stream.Signature(layouts.requant_output_layout(cfg)))
        One output beat per input beat, in order.
    o_ready_next : In(1)
        With ``registered_enable`` only: ``o.ready`` of the next cycle.

    Timing: a beat transferred on ``i`` in cycle ``t`` makes ``o.valid`` high in cycle ``t +
    latency``, ``latency = groups + 2·levels + 2``, without stalls (its steps are issued from a
    buffer in cycles ``t+1 .. t+groups``); ``i`` takes a new beat every ``groups <= beats``
    cycles, so the MAC array never waits at full rate. One global enable ``en = ~o.valid |
    o.ready`` freezes every stage and memory read while ``o`` stalls (``i.ready`` is ``en`` and a
    register that says the buffer has room), so nothing is lost, duplicated or reordered;
    ``o.valid`` never depends on ``o.ready``.

    Raises
    ------
    RangeError
        A threshold table that :func:`check_engine_thresholds` refuses.
    """

    def __init__(self, cfg, T, D, *, registered_enable=False, primitive=False):
        self.cfg = cfg
        self.registered_enable = bool(registered_enable)
        #: Whether the channel multiplexer is built of ECP5 slices
        #: (:func:`~qmac.hw.ecp5_mux.lut_mux`; for ECP5 synthesis only).
        self.primitive = bool(primitive)
        self.T, self.D = check_engine_thresholds(cfg, (T, D))
        self.count = threshold_count(cfg)
        #: Comparisons per channel.
        self.levels = self.count.bit_length()
        self.lanes = cfg.requant_lanes
        self.groups = -(-cfg.rows // self.lanes)
        #: Steps of a layer (a step: the ``lanes`` channels of one group of one fold).
        self.steps = cfg.out_beats * self.groups
        padded = (1 << self.levels) - 1
        self.pad = cfg.acc_max + 1
        values = [int(v) for v in self.T.flat] + ([self.pad] if padded > self.count else [])
        #: Signed width of a stored threshold.
        self.t_bits = signed_width(min(values, default=0), max(values, default=0))
        self.latency = self.groups + 2 * self.levels + 2
        members = {
            "i": In(stream.Signature(layouts.mac_output_layout(cfg))),
            "o": Out(stream.Signature(layouts.requant_output_layout(cfg))),
        }
        if self.registered_enable:
            members["o_ready_next"] = In(1)
        super().__init__(members)

    def channel(self, step, lane):
        """The channel of ``lane`` at ``step``, or None past the last row of a fold."""
        fold, group = divmod(step, self.groups)
        row = group * self.lanes + lane
        return fold * self.cfg.rows + row if row < self.cfg.rows else None

    def probe(self, level, prefix):
        """The index of the threshold that ``level`` compares after the results ``prefix``."""
        return (((prefix << 1) | 1) << (self.levels - 1 - level)) - 1

    def memory_image(self, lane, level):
        """The words of memory ``level`` of ``lane``: ``(threshold, d)`` pairs, word ``s·2^level
        + p`` for step ``s`` and prefix ``p`` (``d`` is 1 for a decreasing channel)."""
        words = []
        for step in range(self.steps):
            c = self.channel(step, lane)
            for prefix in range(1 << level):
                if c is None:
                    words.append((0, 0))
                    continue
                j = self.probe(level, prefix)
                t = int(self.T[c, j]) if j < self.count else self.pad
                words.append((t, int(self.D[c] < 0)))
        return words

    def elaborate(self, platform):
        cfg = self.cfg
        lanes, groups = self.lanes, self.groups
        m = Module()
        en, out_valid = output_enable(
            m, self.o, ready_next=self.o_ready_next if self.registered_enable else None)

        # -- sequencer: a buffered fold, issued one group per cycle ----------------------------
        busy = Signal()
        room = Signal(init=1)                # the buffer may take a fold in this cycle
        group = Signal(range(max(2, groups)), name="step_group")
        step = Signal(range(max(2, self.steps)), name="step")
        accept, issue, group_last = Signal(), Signal(), Signal()
        m.d.comb += [
            self.i.ready.eq(en & room),
            accept.eq(self.i.valid & self.i.ready),
            issue.eq(busy & en),
            group_last.eq(group == groups - 1),
        ]
        with m.If(accept):
            m.d.sync += [busy.eq(1), room.eq(groups == 1)]
        with m.Elif(issue):
            m.d.sync += room.eq(group_last | (group == groups - 2))
            with m.If(group_last):
                m.d.sync += busy.eq(0)
        with m.If(issue):
            m.d.sync += [group.eq(Mux(group_last, 0, group + 1)),
                         step.eq(Mux(step == self.steps - 1, 0, step + 1))]
        buffer_acc = Signal.like(self.i.p.acc, name="buffer_acc", reset_less=True)
        buffer_overflow = Signal.like(self.i.p.overflow, name="buffer_overflow",
                                      reset_less=True)
        with m.If(accept):
            m.d.sync += [buffer_acc.eq(self.i.p.acc), buffer_overflow.eq(self.i.p.overflow)]

        def channel_of(source, lane, name):
            return lut_mux(m, f"{name}_{lane}",
                           [source[g * lanes + lane] if g * lanes + lane < cfg.rows else 0
                            for g in range(groups)], group, primitive=self.primitive)

        # -- the issued step: control and each lane's accumulator, registered -----------------
        control = stage(m, en, "issue", valid=issue, group=group,
                        last=step == self.steps - 1)
        where = stage(m, en, "issue", reset_less=True, step=step)[0]
        acc = [stage(m, en, f"issue_{lane}", reset_less=True,
                     acc=channel_of(buffer_acc, lane, "channel_acc").as_signed(),
                     overflow=channel_of(buffer_overflow, lane, "channel_overflow"))
               for lane in range(lanes)]
        found = [Const(0, 0)] * lanes        # each lane's results so far, the first one high
        d = [None] * lanes

        # -- levels: read the threshold, then compare and append the result -------------------
        t_layout = data.StructLayout({"t": signed(self.t_bits), "d": unsigned(1)})
        for level in range(self.levels):
            read = []
            for lane in range(lanes):
                image = self.memory_image(lane, level)
                # Level 0 also holds `d` (the later levels carry it along).
                memory = Memory(shape=t_layout if level == 0 else signed(self.t_bits),
                                depth=max(2, len(image)),
                                init=[{"t": t, "d": k} if level == 0 else t for t, k in image])
                m.submodules[f"thresholds_{lane}_l{level}"] = memory
                port = memory.read_port()
                m.d.comb += [port.addr.eq(Cat(found[lane], where)), port.en.eq(en)]
                read.append(port.data)
            control = stage(m, en, f"read_l{level}", valid=control[0], group=control[1],
                            last=control[2])
            where = stage(m, en, f"read_l{level}", reset_less=True, step=where)[0]
            for lane in range(lanes):
                kept = {"acc": acc[lane][0], "overflow": acc[lane][1]}
                if level:
                    kept.update(found=found[lane], d=d[lane])
                held = dict(zip(kept, stage(m, en, f"read_l{level}_{lane}", reset_less=True,
                                            **kept)))
                threshold = read[lane].t if level == 0 else read[lane]
                at_or_below = threshold <= held["acc"]
                result = {"acc": held["acc"], "overflow": held["overflow"],
                          "found": Cat(at_or_below, held["found"]) if level else at_or_below,
                          "d": held["d"] if level else read[lane].d}
                regs = dict(zip(result, stage(m, en, f"compare_l{level}_{lane}",
                                              reset_less=True, **result)))
                acc[lane] = (regs["acc"], regs["overflow"])
                found[lane], d[lane] = regs["found"], regs["d"]
            control = stage(m, en, f"compare_l{level}", valid=control[0], group=control[1],
                            last=control[2])
            where = stage(m, en, f"compare_l{level}", reset_less=True, step=where)[0]

        # -- output: y of each lane into its row of the beat ----------------------------------
        valid, out_group, last = control
        m.d.comb += out_valid.eq(valid & (out_group == groups - 1))
        with m.If(en):
            m.d.sync += self.o.valid.eq(out_valid)
            with m.If(out_valid):
                m.d.sync += self.o.p.last.eq(last)
        for lane in range(lanes):
            count = found[lane]
            y = Mux(d[lane], cfg.y_max - count, cfg.y_min + count)
            for g in range(groups):
                r = g * lanes + lane
                if r >= cfg.rows:
                    continue
                with m.If(en & valid & (out_group == g)):
                    m.d.sync += [self.o.p.y[r].eq(y), self.o.p.overflow[r].eq(acc[lane][1])]
        return m
