"""The layer engine: a MAC array and a requantizer with baked-in weights and requantization
parameters, turning each input vector (``K/cols`` beats) into ``N/rows`` output beats."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from . import checks

from . import layouts
from .mac_array import MacArray, check_levels_per_stage
from .pipeline import SkidBuffer
from .ecp5_rom import logic_rom, registered_rom
from .requant import FoldRequantizer, distinct_shifts
from . import threshold


__all__ = ["LayerEngine", "LOGIC_PARAM_DEPTH"]


#: The deepest requantizer parameter memory that a plan for ECP5 keeps in LUTs by default (a
#: LUT6, four LUT4 and two wide-function multiplexers of one slice pair, per bit).
LOGIC_PARAM_DEPTH = 64


class LayerEngine(wiring.Component):
    """One fully connected layer, ``y = requant(W·x)``, with weights and ``M``, ``B``, ``S`` baked
    in from NumPy.

    An input vector arrives as ``beats = K/cols`` beats of ``cols`` consecutive activations. It is
    written into one bank of a double-buffered input memory (``2·beats`` words) and re-read once
    per output fold; fold ``j`` issues ``beats`` MAC beats with the weight tiles of output
    channels ``[j·rows, (j+1)·rows)``. A beat of fold 0 is issued in the cycle after it was
    written (the reader's ``available`` depends on registers only, not on ``i.valid``), so fold 0
    needs no extra pass; the next vector is loaded into the other bank while the current one
    computes its later folds.
    The MAC results go through the requantizer (:class:`FoldRequantizer`: ``cfg.requant_lanes``
    lanes time-multiplexed over the ``rows`` results of a fold, with ``M``, ``B`` and the shift
    index of each step read from a parameter memory, and a shifter over only the shifts ``S``
    uses), giving ``out_beats = N/rows`` output beats per vector; beat ``j`` holds channels
    ``[j·rows, (j+1)·rows)`` and the last one has ``last`` set.

    Parameters
    ----------
    cfg : LayerConfig
    weights : array_like of int, shape (out_features, in_features)
        Signed ``w_bits`` weights.
    M, B, S : array_like of int, shape (out_features,)
        Requantization parameters per output channel (every ``S`` equal with
        ``cfg.shared_shift``), for ``requant_style`` ``"multiply"`` (or ``"auto"``).
    thresholds : (T, D), optional
        Instead of ``M``, ``B``, ``S`` (``requant_style`` ``"threshold"`` or ``"auto"``): the
        threshold table, ``T`` of shape ``(out_features, y_max - y_min)`` and ``D`` of shape
        ``(out_features,)``; the requantizer is then a
        :class:`~qmac.hw.threshold.ThresholdRequantizer` (a binary search, its thresholds in
        its own memories, as wide as the table needs), and ``latency`` grows with its levels.
    levels_per_stage : int
        Passed to :class:`MacArray`.
    mul_plan : MulPlan, optional
        Passed to :class:`MacArray` and :class:`FoldRequantizer`.
    param_rom : {"block", "logic"}, optional
        Where the multiply requantizer's parameter memory lives: ``"block"``, a block RAM
        (:func:`~qmac.hw.ecp5_rom.registered_rom`); ``"logic"``, a table in LUTs between an
        address register and the data register (:func:`~qmac.hw.ecp5_rom.logic_rom`), so that
        the requantizer's address logic does not route to a block RAM's fixed site across the
        part. Default: ``"logic"`` with a plan for ECP5 when the memory has at most
        :data:`LOGIC_PARAM_DEPTH` words, else ``"block"``. Both have the same two register
        stages and enables.

    Members
    -------
    i : In(stream.Signature(layouts.engine_input_layout(cfg)))
        Input beats: ``beats`` consecutive beats form one vector.
    o : Out(stream.Signature(layouts.engine_output_layout(cfg)))
        Output beats: ``out_beats`` per vector, ``last`` on the final one.

    Timing: the MAC array is the bottleneck and is never idle while input is available: a batch
    of ``n`` vectors takes ``out_beats·beats`` cycles per vector, exactly :meth:`cycles` ``(n) =
    n·out_beats·beats + latency`` cycles when ``i`` is valid from the first cycle and ``o`` is
    always ready. ``latency = 3 + MacArray.latency + FoldRequantizer.latency`` cycles pass from the
    transfer of the last input beat of a vector into an idle engine to ``o.valid`` of its first
    output beat; its other output beats follow every ``beats`` cycles. ``i`` accepts one beat per
    cycle while fewer than two vectors wait (the one being computed and the next one).
    (The 3 are the write of the last beat into the buffer, its read, and the register of the
    read data, so that no block-RAM output drives logic.) The weight tiles and the
    requantizer's parameters leave a register after their memory too: with a plan for ECP5
    (``mul_plan.family == "ecp5"``) the ``DP16KD`` blocks' own output registers
    (:class:`~qmac.hw.ecp5_rom.RegisteredRom`, ``REGMODE = "OUTREG"``; Yosys maps memories only
    without them, and the block's clock-to-output then sets the clock), elsewhere a fabric
    register after the memory's read port (a parameter memory in logic, ``param_rom``, has
    the same two stages). Backpressure on ``o`` stalls the whole
    pipeline (global enables) one cycle late: ``o`` leaves a
    :class:`~qmac.hw.pipeline.SkidBuffer`, so no enable inside depends on ``o.ready``. Nothing is
    lost, duplicated or reordered, and no ``valid`` depends on a ``ready``. A synchronous reset
    of the ``sync`` domain discards every partial vector and every result in flight.

    Raises
    ------
    hw.checks.RangeError
        ``weights``, ``M``, ``B`` or ``S`` of the wrong shape or out of range (the message names
        the index and the value).
    ValueError
        ``param_rom`` is not ``None``, ``"block"`` or ``"logic"``.
    """

    def __new__(cls, cfg, weights, M=None, B=None, S=None, *, thresholds=None,
                levels_per_stage=1, mul_plan=None, param_rom=None):
        # Refuse bad arguments before the component exists: one created but never elaborated
        # would make Amaranth warn (UnusedElaboratable) when it is collected.
        checks.check_weights(cfg, weights)
        if threshold.requant_style(cfg, M, B, S, thresholds) == "threshold":
            threshold.check_engine_thresholds(cfg, thresholds)
        else:
            checks.check_requant(cfg, M, B, S)
        check_levels_per_stage(levels_per_stage)
        if mul_plan is not None:
            mul_plan.check(cfg)
        if param_rom not in (None, "block", "logic"):
            raise ValueError(f"param_rom must be None, 'block' or 'logic', not {param_rom!r}")
        return super().__new__(cls, src_loc_at=1)       # the warning location is the caller's

    def __init__(self, cfg, weights, M=None, B=None, S=None, *, thresholds=None,
                 levels_per_stage=1, mul_plan=None, param_rom=None):
        self.cfg = cfg
        self.weights = checks.check_weights(cfg, weights)
        #: ``"multiply"`` or ``"threshold"``: the requantizer this engine builds.
        self.requant_style = threshold.requant_style(cfg, M, B, S, thresholds)
        self.levels_per_stage = levels_per_stage
        self._mac = MacArray(cfg, levels_per_stage=levels_per_stage, mul_plan=mul_plan)
        if self.requant_style == "threshold":
            self.M = self.B = self.S = None
            self.T, self.D = threshold.check_engine_thresholds(cfg, thresholds)
            self._requant = threshold.ThresholdRequantizer(
                cfg, self.T, self.D, registered_enable=True,
                primitive=self._mac.mul_plan.family == "ecp5")
        else:
            self.M, self.B, self.S = checks.check_requant(cfg, M, B, S)
            self._requant = FoldRequantizer(cfg, distinct_shifts(self.S), shift_style="auto",
                                            mul_plan=mul_plan, registered_enable=True,
                                            registered_params=True)
        #: ``"block"`` or ``"logic"``: where the requantizer's parameter memory lives (``None``
        #: with the threshold requantizer, which holds its own tables).
        self.param_rom = None
        if self.requant_style != "threshold":
            ecp5 = self._mac.mul_plan.family == "ecp5"
            self.param_rom = param_rom if param_rom is not None else \
                "logic" if ecp5 and self._requant.depth <= LOGIC_PARAM_DEPTH else "block"
            # The requantizer's copies of its enable, each of which can sit beside what it
            # enables: with a table in logic (a design whose DSPs are nearly all taken: the 8×8
            # example), and on iCE40, where the enable's path into the block RAM's address (an
            # adder after it) set the UP5K example's clock in three of six placements without
            # them. Not with an ECP5 block-RAM table: they cost the 4×4 example's requantizer 12
            # of its 74 LUTs there. Set before elaboration.
            self._requant.enable_copies = self.param_rom == "logic" or \
                self._mac.mul_plan.family == "ice40"
        #: Cycles from the transfer of the last input beat of a vector (idle engine) to
        #: ``o.valid`` of its first output beat, without stalls.
        self.latency = 3 + self._mac.latency + self._requant.latency
        #: MAC cycles per input vector at full rate.
        self.cycles_per_vector = cfg.out_beats * cfg.beats
        super().__init__({
            "i": In(stream.Signature(layouts.engine_input_layout(cfg))),
            "o": Out(stream.Signature(layouts.engine_output_layout(cfg))),
        })

    def cycles(self, batch):
        """Exact cycle count of a batch of ``batch`` vectors at full rate without stalls.

        With ``i.valid`` high from cycle 0 (and each next beat offered at once) and ``o.ready``
        always high, the last output beat is transferred in cycle ``cycles(batch) - 1``.
        """
        return batch * self.cycles_per_vector + self.latency

    # -- memory images ---------------------------------------------------------------------

    def _weight_tiles(self):
        """The weight memory image: word ``j·beats + i`` is the ``rows × cols`` tile of fold
        ``j`` and beat ``i``."""
        cfg = self.cfg
        tiles = self.weights.reshape(cfg.out_beats, cfg.rows, cfg.beats, cfg.cols)
        tiles = tiles.transpose(0, 2, 1, 3)
        return [[[int(v) for v in row] for row in tile]
                for tile in tiles.reshape(cfg.out_beats * cfg.beats, cfg.rows, cfg.cols)]

    # -- hardware --------------------------------------------------------------------------

    def elaborate(self, platform):
        cfg = self.cfg
        beats, folds = cfg.beats, cfg.out_beats
        m = Module()

        m.submodules.mac = mac = self._mac
        m.submodules.requant = requant = self._requant
        # The skid buffer makes the requantizer's enable (and through it the MAC array's and
        # the reader's) independent of `o.ready`.
        m.submodules.output = output = SkidBuffer(layouts.engine_output_layout(cfg))
        wiring.connect(m, requant.o, output.i)
        m.d.comb += requant.o_ready_next.eq(output.ready_next)
        wiring.connect(m, wiring.flipped(self.o), output.o)

        x_layout = layouts.engine_input_layout(cfg)["x"].shape
        w_layout = layouts.mac_input_layout(cfg)["w"].shape

        m.submodules.buffer = buffer = Memory(shape=x_layout, depth=2 * beats, init=[])
        # Depths and counters are at least 2 (never a zero-width address or counter).
        # The weight tiles leave the block RAM's output register (a DP16KD with REGMODE OUTREG
        # on ECP5, else a memory and a register): no block-RAM output drives a path.
        ecp5 = self._mac.mul_plan.family == "ecp5"
        weight_addr, weight_en, weight_oce, weight_data = registered_rom(
            m, "weights", shape=w_layout, depth=max(2, folds * beats),
            init=self._weight_tiles(), primitive=ecp5)
        if self.requant_style != "threshold":      # the threshold unit holds its own tables
            # Read by the requantizer through the memory's output register (a DP16KD with
            # REGMODE OUTREG on ECP5), which is its operand register for these fields.
            init = requant.param_words(self.M, self.B, self.S)
            if self.param_rom == "logic":
                params = logic_rom(m, "params", shape=requant.param_layout,
                                   depth=requant.depth, init=init)
            else:
                params = registered_rom(m, "params", shape=requant.param_layout,
                                        depth=requant.depth, init=init, primitive=ecp5)

        # -- writer: input beats into the buffer bank of the vector being loaded --------------
        # `pending` counts vectors between the writer and the reader: 0 when both work on the
        # same vector, 1 when the writer loads the next one, 2 when that one is complete and
        # waits for the reader to finish the current one (the writer then stalls).
        pending = Signal(range(3))
        # `pending != 0` and `pending == 2` as flip-flops of their own (set from the next
        # value of `pending`), so that `i.ready` and the reader's `available` start at a
        # register and not at a comparison.
        pending_any = Signal(name="pending_any")
        pending_full = Signal(name="pending_full")
        w_beat = Signal(range(max(2, beats)), name="write_beat")
        w_bank = Signal(name="write_bank")
        written = Signal(name="vector_written")
        buf_w = buffer.write_port()
        write = Signal()
        m.d.comb += [
            self.i.ready.eq(~pending_full),
            write.eq(self.i.valid & self.i.ready),
            buf_w.addr.eq(Mux(w_bank, beats, 0) + w_beat),
            buf_w.data.eq(self.i.p.x),
            buf_w.en.eq(write),
            written.eq(write & (w_beat == beats - 1)),
        ]
        with m.If(write):
            with m.If(w_beat == beats - 1):
                m.d.sync += [w_beat.eq(0), w_bank.eq(~w_bank)]
            with m.Else():
                m.d.sync += w_beat.eq(w_beat + 1)

        # -- reader: MAC beats (fold, beat) from the buffer and the weight memory -------------
        # Two stages: the memory read registers (`read_valid`), then a register of the read
        # data, the payload register of `mac.i` (so that no block-RAM output drives logic).
        # Both advance only when `mac.i` is free or transferring, so a stall holds them.
        r_beat = Signal(range(max(2, beats)), name="read_beat")
        r_fold = Signal(range(max(2, folds)), name="read_fold")
        r_beat_last = Signal(init=beats == 1, name="read_beat_last")
        r_fold_last = Signal(init=folds == 1, name="read_fold_last")
        r_bank = Signal(name="read_bank")
        w_addr = Signal(range(max(2, folds * beats)), name="weight_addr")
        buf_r = buffer.read_port()
        available = Signal()
        lead = Signal(name="write_lead")
        issue = Signal()
        finished = Signal(name="vector_finished")
        read_valid = Signal(name="read_valid")
        if mac.free_running:
            # `mac.i.ready` is a register whose next value the array tells: `advance` (the
            # enable of the reader, its memories' read and output registers included) is then
            # a flip-flop too, always equal to `~mac.i.valid | mac.i.ready`, for its fan-out.
            advance = Signal(init=1, name="advance")
            m.d.sync += advance.eq(~Mux(advance, read_valid, mac.i.valid) | mac.i_ready_next)
        else:
            advance = Signal(name="advance")
            m.d.comb += advance.eq(~mac.i.valid | mac.i.ready)
        m.d.comb += [
            # Beat `r_beat` of the vector being read is in the buffer (written in an earlier
            # cycle: the read never meets the write of the same word): the writer is on a later
            # vector, or (`lead`) on the same one and ahead of the reader.
            available.eq(pending_any | lead),
            issue.eq(advance & available),
            finished.eq(issue & r_fold_last & r_beat_last),
            buf_r.addr.eq(Mux(r_bank, beats, 0) + r_beat),
            buf_r.en.eq(advance),
            weight_addr.eq(w_addr),
            weight_en.eq(advance),
            weight_oce.eq(advance),
        ]
        read_first = Signal(name="read_first")
        read_last = Signal(name="read_last")
        x_reg = Signal(x_layout, name="x_reg", reset_less=True)
        m.d.comb += [mac.i.p.x.eq(x_reg), mac.i.p.w.eq(weight_data)]
        with m.If(advance):
            m.d.sync += [
                read_valid.eq(available),
                read_first.eq(~r_beat.any()),
                read_last.eq(r_beat_last),
                mac.i.valid.eq(read_valid),
                mac.i.p.first.eq(read_first),
                mac.i.p.last.eq(read_last),
                x_reg.eq(buf_r.data),
            ]
        with m.If(issue):
            # `r_beat_last` and `r_fold_last` are registers (the comparisons off the enable
            # chain): the position after this issue is the last when this one is the last but one.
            m.d.sync += r_beat_last.eq(Mux(r_beat_last, beats == 1, r_beat == max(0, beats - 2)))
            with m.If(r_beat_last):
                m.d.sync += [r_beat.eq(0),
                             r_fold_last.eq(Mux(r_fold_last, folds == 1,
                                                r_fold == max(0, folds - 2)))]
                with m.If(r_fold_last):
                    m.d.sync += [r_fold.eq(0), r_bank.eq(~r_bank), w_addr.eq(0)]
                with m.Else():
                    m.d.sync += [r_fold.eq(r_fold + 1), w_addr.eq(w_addr + 1)]
            with m.Else():
                m.d.sync += [r_beat.eq(r_beat + 1), w_addr.eq(w_addr + 1)]

        # `lead`: the writer, on the reader's vector, has written the beat that the reader issues
        # in the next cycle. A register from registers and `write` only (not from `issue`, whose
        # enable chain is long): with `d = (w_beat - r_beat) mod beats` after this cycle's write,
        # it is `d >= 1` when the reader cannot issue in this cycle (nothing `available`), else
        # `d >= 2` (as if it issued: under a stall this holds the reader back by one beat, never
        # lets it run ahead). When the writer finishes the vector, `pending` takes over.
        def d_is(k):
            ahead = r_beat + k
            return w_beat == Mux(ahead >= beats, ahead - beats, ahead)
        with m.If(write):            # d + 1 (mod beats) >= 1, >= 2
            m.d.sync += lead.eq(~d_is(beats - 1) & (~available | ~d_is(0)))
        with m.Else():
            m.d.sync += lead.eq(~d_is(0) & (~available | ~d_is(1)))

        # As one sum (no clock enable): the enable would be one more logic level after `issue`.
        pending_next = Signal(range(3), name="pending_next")
        m.d.comb += pending_next.eq(pending + written - finished)
        m.d.sync += [pending.eq(pending_next), pending_any.eq(pending_next != 0),
                     pending_full.eq(pending_next == 2)]

        wiring.connect(m, mac.o, requant.i)
        if self.requant_style != "threshold":
            # The multiply requantizer reads its parameters step by step itself.
            addr, en, oce, data = params
            m.d.comb += [addr.eq(requant.params.addr), en.eq(requant.params.en),
                         oce.eq(requant.params_oce), requant.params.data.eq(data)]

        return m
