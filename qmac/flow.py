"""What the commands do: check the files and flags, build, simulate, report.

The file formats and their checks live in :mod:`qmac.files`; this module holds the commands.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from amaranth.lib import wiring

from qmac.hw import layouts
from qmac.hw.engine import LayerEngine
from qmac.hw.mac_array import MacArray
from qmac.hw.requant import Requantizer
from qmac.hw.verilog import convert, yosys_version
from qmac.sim import beats, golden
from qmac.sim.runner import BuildChangedError, WavesError, build, run_stream
from qmac.sim.tools import verilator_version
from .accumulator import AccumulatorOverflowError, analyze as analyze_weights, check_accumulator
from .files import (UserError, check_output_file, check_output_folder, load_config,
                    load_float_layer, load_inputs, load_requant, load_weights,
                    prepare_build_dir, write_npy, write_npz)
from . import netflow
from .thresholds import engine_requant, layer_thresholds, load_thresholds, save_thresholds
from .fold import fold_layer
from .solver import InfeasibleError, solve_layer


__all__ = ["UserError", "MAX_STALL", "manifest", "generate", "simulate", "analyze", "fold"]


#: The largest ``--stall``: each side then moves a beat in one cycle of 20 on average, and a run
#: takes about 1 / (1 - 0.95) = 20 times the cycles of a run without stalls. Closer to 1 the run
#: time grows without bound (0.9999999 would take ten million times as long).
MAX_STALL = 0.95


def _versions():
    versions = {}
    for package in ("qmac", "amaranth", "numpy", "cocotb"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    versions["yosys"] = yosys_version()
    versions["verilator"] = verilator_version()
    return versions


def _ports(component):
    """Port list of a component as ``[{name, direction, width}]`` (with clk and rst)."""
    ports = [{"name": "clk", "direction": "input", "width": 1},
             {"name": "rst", "direction": "input", "width": 1}]
    for path, member, value in component.signature.flatten(component):
        ports.append({"name": "__".join(map(str, path)),
                      "direction": "input" if member.flow == wiring.In else "output",
                      "width": len(value.as_value()) if hasattr(value, "as_value")
                      else len(value)})
    return ports


def _stream_fields(layout):
    return [{"field": ".".join(map(str, path)), "offset": offset, "width": width,
             "signed": is_signed} for path, offset, width, is_signed in layouts.flat_fields(layout)]


def manifest(cfg, component, *, kind, verilog_file, extra=None):
    """The manifest of one generated module: ports, payload layouts, latency, tool versions."""
    payloads = {
        "mac": (layouts.mac_input_layout(cfg), layouts.mac_output_layout(cfg)),
        "requant": (layouts.requant_input_layout(cfg), layouts.requant_output_layout(cfg)),
        "engine": (layouts.engine_input_layout(cfg), layouts.engine_output_layout(cfg)),
    }[kind]
    entry = {
        "kind": kind,
        "module": verilog_file.removesuffix(".v"),
        "verilog": verilog_file,
        "ports": _ports(component),
        "streams": {"i": {"payload_width": payloads[0].size, "fields": _stream_fields(payloads[0])},
                    "o": {"payload_width": payloads[1].size,
                          "fields": _stream_fields(payloads[1])}},
        "latency_cycles": getattr(component, "latency", None),
    }
    entry.update(extra or {})
    return entry


def _sha256(array):
    return hashlib.sha256(np.ascontiguousarray(np.asarray(array, dtype=np.int64)).tobytes()
                          ).hexdigest()


def _inputs(args, *flags):
    """``{flag: path}`` of the input files among ``flags`` that were given."""
    given = {"CONFIG": args.config}
    for flag in flags:
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is not None:
            given[flag] = value
    return given


def engine_parameters(cfg, args, report, family=None):
    """The requantizer of the layer engine from ``--requant-style`` and ``--requant`` (M, B, S)
    or ``--thresholds`` (T, D): an :class:`~qmac.thresholds.EngineRequant`. Thresholds made from
    ``M, B, S`` cover the reachable range of ``report`` (the whole accumulator range when the
    weights can overflow), so they equal the multiply form wherever the accumulator can be.
    ``auto`` follows :func:`qmac.thresholds.choose_style` for ``family`` (``qmac synth``'s
    target; ``None`` for generate and simulate: the rule that holds on both families)."""
    style = getattr(args, "requant_style", None)
    thresholds_file = getattr(args, "thresholds", None)
    if args.requant is not None and thresholds_file is not None:
        raise UserError("give either --requant (M, B, S) or --thresholds (T, D), not both")
    M = B = S = thresholds = None
    if args.requant is not None:
        M, B, S = load_requant(cfg, args.requant)
    else:
        try:
            thresholds = load_thresholds(cfg, thresholds_file)
        except (ValueError, OSError) as error:
            raise UserError(f"--thresholds file {thresholds_file}: {error}") from None
    lo, hi = (report.lo, report.hi) if report.safe else (None, None)
    try:
        chosen = engine_requant(cfg, style, M=M, B=B, S=S, thresholds=thresholds,
                                acc_lo=lo, acc_hi=hi, family=family)
        if chosen.thresholds is not None:
            from qmac.hw.threshold import check_engine_thresholds
            check_engine_thresholds(chosen.cfg, chosen.thresholds)
    except ValueError as error:
        what = f"--requant-style {style}" if style is not None else \
            f"requant_style = {cfg.requant_style!r} in {args.config}"
        raise UserError(f"{what}: {error}") from None
    if chosen.style != cfg.requant_style or chosen.source == "from M, B, S":
        print(f"requantizer: {chosen.style}"
              + (f" (thresholds {chosen.source})" if chosen.thresholds is not None else ""),
              file=sys.stderr)
    return chosen


def _refuse_layer_options(args):
    for flag in ("requant_style", "thresholds"):
        if getattr(args, flag, None) is not None:
            raise UserError(f"--{flag.replace('_', '-')} applies to a layer configuration, "
                            f"not to a network ({args.config})")


def _check_requant_style_without_parameters(cfg, args):
    """The bare blocks hold the multiply requantizer: refuse a threshold style there."""
    style = args.requant_style if getattr(args, "requant_style", None) else cfg.requant_style
    if style == "threshold":
        raise UserError("requant_style 'threshold' needs a layer engine: give --weights and "
                        "--requant (M, B, S) or --thresholds (T, D)")


def generate(args):
    """``qmac generate``: write Verilog and ``manifest.json``."""
    if netflow.is_network_file(args.config):
        _refuse_layer_options(args)
        return netflow.generate_network(args)
    cfg = load_config(args.config)
    has_requant = args.requant is not None or args.thresholds is not None
    if (args.weights is None) == has_requant:
        raise UserError("give both --weights and --requant (or --thresholds) (a layer engine), "
                        "or neither (the bare MAC array and requantization unit)")
    engine = args.weights is not None
    if not engine:
        _check_requant_style_without_parameters(cfg, args)
    files = [f"{cfg.name}.v"] if engine else [f"{cfg.name}_mac.v", f"{cfg.name}_requant.v"]
    out = check_output_folder(args.output, "-o", files=files + ["manifest.json"],
                              inputs=_inputs(args, "--weights", "--requant", "--thresholds"))
    modules = []
    started = time.perf_counter()
    if engine:
        weights = load_weights(cfg, args.weights)
        try:
            report = check_accumulator(cfg, weights, allow_overflow=args.allow_overflow)
        except AccumulatorOverflowError as error:
            raise UserError(f"{error}; use --allow-overflow to accept this") from None
        chosen = engine_parameters(cfg, args, report)
        cfg = chosen.cfg
        engine = LayerEngine(cfg, weights, **chosen.engine_kwargs())
        out.mkdir(parents=True, exist_ok=True)
        verilog_file = f"{cfg.name}.v"
        print(f"generating layer engine {cfg.name}: K={cfg.K} N={cfg.N} array "
              f"{cfg.rows}x{cfg.cols} ...", file=sys.stderr)
        (out / verilog_file).write_text(convert(engine, name=cfg.name))
        modules.append(manifest(cfg, engine, kind="engine", verilog_file=verilog_file, extra={
            "cycles_per_vector": engine.cycles_per_vector,
            "cycles_formula": "cycles(batch) = batch * cycles_per_vector + latency_cycles "
                              "(input always valid, output always ready)",
            "parameters": {
                "weights_sha256": _sha256(weights),
                **({"M": [int(v) for v in chosen.M], "B": [int(v) for v in chosen.B],
                    "S": [int(v) for v in chosen.S]} if chosen.thresholds is None else
                   {"T": [[int(v) for v in row] for row in chosen.thresholds.T],
                    "D": [int(v) for v in chosen.thresholds.D],
                    "thresholds_source": chosen.source}),
            },
            "accumulator": {"acc_bits": cfg.acc_bits, "min_safe_acc_bits": report.min_acc_bits,
                            "datatype_bound_bits": report.datatype_bits,
                            "l1_bound_bits": report.l1_bits, "safe": report.safe,
                            "channel_lo": [int(v) for v in report.lo],
                            "channel_hi": [int(v) for v in report.hi]},
        }))
    else:
        out.mkdir(parents=True, exist_ok=True)
        for kind, component, suffix in (("mac", MacArray(cfg), "mac"),
                                        ("requant", Requantizer(cfg), "requant")):
            verilog_file = f"{cfg.name}_{suffix}.v"
            print(f"generating {kind} block {verilog_file} ...", file=sys.stderr)
            (out / verilog_file).write_text(convert(component, name=f"{cfg.name}_{suffix}"))
            modules.append(manifest(cfg, component, kind=kind, verilog_file=verilog_file))
    document = {"name": cfg.name, "config": cfg.to_dict(), "modules": modules,
                "tools": _versions()}
    (out / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
    for module in modules:
        print(f"wrote {out / module['verilog']}", file=sys.stderr)
    print(f"wrote {out / 'manifest.json'} ({time.perf_counter() - started:.1f} s)",
          file=sys.stderr)
    return 0


def _build_dir(cfg, args, verilog_key):
    if args.build_dir:
        return Path(args.build_dir)
    digest = hashlib.sha256(verilog_key.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / "qmac-build" / f"{cfg.name}-{digest}"


def _duration(seconds):
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class _ProgressLine:
    """On a terminal, one line rewritten in place: vectors done, cycles per second, time left.
    Elsewhere (a file, a pipe, a CI log) nothing: the summary line at the end says it all."""

    def __init__(self, stream, n_vectors, folds):
        self.stream, self.n_vectors, self.out_beats = stream, n_vectors, folds
        self.shown = False

    def __call__(self, outputs, cycles, seconds):
        vectors = outputs // self.out_beats
        rate = cycles / seconds if seconds else 0.0
        done = vectors / self.n_vectors if self.n_vectors else 1.0
        left = _duration(seconds * (1 - done) / done) if done else "?"
        self.stream.write(f"\r  {vectors}/{self.n_vectors} vectors, {rate:,.0f} cycles/s, "
                          f"{left} left   ")
        self.stream.flush()
        self.shown = True

    def close(self):
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()


def _check_simulate_flags(args):
    if not 0.0 <= args.stall <= MAX_STALL:
        raise UserError(f"--stall must be between 0 and {MAX_STALL}, not {args.stall} (each "
                        f"side moves a beat in only 1-P of the cycles: a run takes about "
                        f"1/(1-P) times as long, {1 / (1 - MAX_STALL):.0f} times at "
                        f"{MAX_STALL}, and without bound as P nears 1)")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, not {args.seed}")


def simulate(args):
    """``qmac simulate``: run a batch through the layer engine under Verilator + cocotb."""
    if netflow.is_network_file(args.config):
        _refuse_layer_options(args)
        return netflow.simulate_network(args)
    _check_simulate_flags(args)
    if args.weights is None:
        raise UserError("--weights is required with a layer configuration")
    if args.requant is None and args.thresholds is None:
        raise UserError("--requant (or --thresholds) is required with a layer configuration")
    cfg = load_config(args.config)
    inputs = _inputs(args, "--weights", "--requant", "--thresholds", "--inputs")
    output = check_output_file(args.output, "-o", suffixes=(".npy",), inputs=inputs)
    if args.waves is not None:
        waves_path = check_output_file(args.waves, "--waves", suffixes=(".fst", ".vcd"),
                                       inputs={**inputs, "-o": output})
    weights = load_weights(cfg, args.weights)
    x = load_inputs(cfg, args.inputs)
    try:
        report = check_accumulator(cfg, weights, allow_overflow=args.allow_overflow)
    except AccumulatorOverflowError as error:
        raise UserError(f"{error}; use --allow-overflow to accept this") from None
    chosen = engine_parameters(cfg, args, report)
    cfg = chosen.cfg
    waves = None if args.waves is None else waves_path.suffix[1:]
    if chosen.thresholds is None:
        params = [[int(v) for v in chosen.M], [int(v) for v in chosen.B],
                  [int(v) for v in chosen.S]]
    else:
        params = [[[int(v) for v in row] for row in chosen.thresholds.T],
                  [int(v) for v in chosen.thresholds.D]]
    key = json.dumps([cfg.to_dict(), _sha256(weights), params, waves])
    build_dir = prepare_build_dir(_build_dir(cfg, args, key), cache=not args.build_dir)
    engine = LayerEngine(cfg, weights, **chosen.engine_kwargs())
    print(f"building {cfg.name} under Verilator in {build_dir} ...", file=sys.stderr)
    try:
        built = build(engine, name=cfg.name, build_dir=build_dir, waves=waves)
    except WavesError as error:
        raise UserError(f"--waves {args.waves}: {error}") from None
    if built.build_seconds:
        print(f"built in {built.build_seconds:.1f} s", file=sys.stderr)
    else:
        print("reused the cached build", file=sys.stderr)
    in_beats = beats.engine_beats(cfg, x)
    n_outputs = len(x) * cfg.out_beats
    print(f"simulating {len(x)} vectors ({len(in_beats)} input beats, {n_outputs} output beats, "
          f"stall {args.stall}) ...", file=sys.stderr)
    progress = _ProgressLine(sys.stderr, len(x), cfg.out_beats) if sys.stderr.isatty() else None
    try:
        run = run_stream(built, in_beats, n_outputs=n_outputs, stall=args.stall, seed=args.seed,
                         in_width=layouts.engine_input_layout(cfg).size,
                         waves_file=args.waves, label="simulate", progress=progress)
    except BuildChangedError as error:
        raise UserError(f"--build-dir: {error}") from None
    finally:
        if progress is not None:
            progress.close()
    netflow.check_stream_run(run, n_outputs, sender="the engine")
    y, flags, last = beats.engine_outputs(cfg, run.outputs)
    write_npy(output, y)
    rate = run.cycles / run.seconds if run.seconds else 0.0
    print(f"wrote {output}: {len(x)} vectors in {run.cycles} cycles, {run.seconds:.2f} s "
          f"({rate:,.0f} cycles/s)", file=sys.stderr)
    if args.waves is not None:
        if waves_path.is_file():
            print(f"wrote {waves_path}", file=sys.stderr)
        else:
            print(f"warning: the simulator did not write the trace {waves_path}",
                  file=sys.stderr)
    if flags.any():
        print(f"note: accumulator overflow flag set in {int(flags.sum())} of {flags.size} "
              f"outputs", file=sys.stderr)
    if args.check:
        want = golden.layer(cfg, x, weights, chosen.M, chosen.B, chosen.S) \
            if chosen.thresholds is None else \
            golden.layer_thresholds(cfg, x, weights, chosen.thresholds.T, chosen.thresholds.D)
        want_last = np.tile(np.arange(cfg.out_beats) == cfg.out_beats - 1, len(x))
        mismatch = np.argwhere(np.asarray(y != want.y, dtype=bool))
        flag_mismatch = np.argwhere(flags != want.overflow)
        if len(mismatch):
            v, c = (int(i) for i in mismatch[0])
            print(f"MISMATCH: {len(mismatch)} outputs differ; first at vector {v}, channel {c}: "
                  f"expected {int(want.y[v, c])}, got {int(y[v, c])}", file=sys.stderr)
            return 1
        if len(flag_mismatch):
            v, c = (int(i) for i in flag_mismatch[0])
            print(f"MISMATCH: overflow flag at vector {v}, channel {c}: expected "
                  f"{bool(want.overflow[v, c])}, got {bool(flags[v, c])}", file=sys.stderr)
            return 1
        if not np.array_equal(last, want_last):
            beat = int(np.argmax(last != want_last))
            print(f"MISMATCH: 'last' mark of output beat {beat}: expected "
                  f"{bool(want_last[beat])}, got {bool(last[beat])}", file=sys.stderr)
            return 1
        print(f"check passed: {y.size} outputs equal the golden model bit for bit",
              file=sys.stderr)
    return 0


def analyze(args):
    """``qmac analyze``: the accumulator range of every channel and the widths it needs."""
    cfg = load_config(args.config)
    weights = load_weights(cfg, args.weights)
    report = analyze_weights(cfg, weights)
    print(f"layer {cfg.name}: K={cfg.K}, N={cfg.N}, inputs [{cfg.x_min}, {cfg.x_max}], "
          f"weights [{cfg.w_min}, {cfg.w_max}]")
    print(f"{'accumulator width':<34} {'bits':>5}")
    print(f"{'configured acc_bits':<34} {cfg.acc_bits:>5}")
    print(f"{'exact minimum (widest channel)':<34} {report.min_acc_bits:>5}")
    print(f"{'L1 bound ||w||_1 * max|x|':<34} {report.l1_bits:>5}")
    print(f"{'data-type bound a+w+ceil(log2 K)':<34} {report.datatype_bits:>5}")
    if args.channels:
        print(f"\n{'channel':>7} {'min':>14} {'max':>14} {'bits':>5}")
        for c, (lo, hi, bits) in enumerate(zip(report.lo, report.hi, report.channel_bits)):
            print(f"{c:>7} {lo:>14} {hi:>14} {bits:>5}")
    if not report.safe:
        bad = report.unsafe_channels()
        print(f"\nUNSAFE: {len(bad)} channel(s) can overflow acc_bits = {cfg.acc_bits} "
              f"(first: channel {bad[0]}, range [{report.lo[bad[0]]}, {report.hi[bad[0]]}])")
        return 1
    print(f"\nsafe: no input vector can overflow acc_bits = {cfg.acc_bits}")
    return 0


def _channel_list(channels, limit=16):
    text = ", ".join(str(c) for c in channels[:limit])
    return text + (f", ... ({len(channels) - limit} more)" if len(channels) > limit else "")


def fold(args):
    """``qmac fold``: a float layer with batch norm -> integer weights and exact M, B, S."""
    cfg = load_config(args.config)
    inputs = _inputs(args, "--layer")
    if args.requant_out is None and args.thresholds_out is None:
        raise UserError("give --requant-out (M, B, S), --thresholds-out (T, D) or both")
    weights_out = check_output_file(args.weights_out, "--weights-out", suffixes=(".npy",),
                                    inputs=inputs)
    outputs = {**inputs, "--weights-out": weights_out}
    requant_out = thresholds_out = None
    if args.requant_out is not None:
        requant_out = check_output_file(args.requant_out, "--requant-out", suffixes=(".npz",),
                                        inputs=outputs)
        outputs["--requant-out"] = requant_out
    if args.thresholds_out is not None:
        thresholds_out = check_output_file(args.thresholds_out, "--thresholds-out",
                                           suffixes=(".npz",), inputs=outputs)
    layer = load_float_layer(cfg, args.layer)
    W = layer["W"]
    if W.shape != (cfg.out_features, cfg.in_features):
        raise UserError(f"{args.layer}: W must have shape ({cfg.out_features}, "
                        f"{cfg.in_features}) for layer {cfg.name}, not {tuple(W.shape)}")
    s_x = args.s_x if args.s_x is not None else layer.get("s_x")
    s_y = args.s_y if args.s_y is not None else layer.get("s_y")
    for name, value in (("s_x", s_x), ("s_y", s_y)):
        if value is None:
            raise UserError(f"the scale {name} is neither in {args.layer} nor given as "
                            f"--{name.replace('_', '-')}")
    eps = layer.get("eps", 1e-5)
    try:
        folded = fold_layer(W, layer.get("bias"), layer["gamma"], layer["beta"], layer["mu"],
                            layer["var"], eps, s_x=s_x, s_y=s_y, w_bits=cfg.w_bits)
    except ValueError as error:
        raise UserError(f"{args.layer}: {error}") from None
    try:
        report = check_accumulator(cfg, folded.q, allow_overflow=args.allow_overflow,
                                   source="the quantized weights")
    except golden.RangeError as error:
        raise UserError(f"quantized weights: {error}") from None
    except AccumulatorOverflowError as error:
        raise UserError(f"{error}; raise acc_bits in {args.config}, or use --allow-overflow"
                        ) from None
    requant = table = None
    if requant_out is not None:
        try:
            requant = solve_layer(cfg, folded.k, folded.b, report.lo, report.hi,
                                  rounding=args.rounding)
        except InfeasibleError as error:
            hint = "" if thresholds_out is not None else \
                "; or write exact thresholds instead with --thresholds-out alone"
            raise UserError(f"{error}\n(raise m_bits, b_bits or s_max in {args.config}"
                            f"{hint})") from None
        except ValueError as error:
            raise UserError(str(error)) from None
    if thresholds_out is not None:
        lo = np.maximum(report.lo, cfg.acc_min)
        hi = np.minimum(report.hi, cfg.acc_max)
        try:
            table = layer_thresholds(folded.k, folded.b, lo, hi, y_min=cfg.y_min,
                                     y_max=cfg.y_max, rounding=args.rounding)
        except ValueError as error:
            raise UserError(f"--thresholds-out: {error}") from None
    write_npy(weights_out, folded.q)
    written = []
    if requant is not None:
        write_npz(requant_out, M=np.asarray(requant.M, dtype=np.int64),
                  B=np.asarray(requant.B, dtype=np.int64),
                  S=np.asarray(requant.S, dtype=np.int64))
        written.append(str(requant_out))
    if table is not None:
        save_thresholds(thresholds_out, table)
        written.append(str(thresholds_out))
    print(f"wrote {weights_out} ({cfg.w_bits}-bit weights, per-channel scales) and "
          f"{' and '.join(written)}")
    caveat = "" if report.safe else " (before any accumulator overflow: --allow-overflow)"
    if requant is not None:
        print(f"requantization exact for every reachable accumulator value{caveat} "
              f"({args.rounding}): "
              f"S <= {requant.s_needed}, needs m_bits {requant.m_bits} (have {cfg.m_bits}), "
              f"b_bits {requant.b_bits} (have {cfg.b_bits})")
    if table is not None:
        print(f"thresholds exact for every reachable accumulator value{caveat} "
              f"({args.rounding}): {cfg.y_max - cfg.y_min} per channel")
    print(f"accumulator: exact minimum {report.min_acc_bits} bits, L1 bound {report.l1_bits}, "
          f"data-type bound {report.datatype_bits}; configured {cfg.acc_bits}"
          + ("" if report.safe else "  -- UNSAFE: raise acc_bits"))
    constant = [c.index for c in requant.channels if c.runs == 1] if requant is not None \
        else [c for c in range(cfg.N)
              if all(v <= lo[c] or v > hi[c] for v in table.T[c])]
    if constant:
        everything = " (every channel: the layer's output never changes)" \
            if len(constant) == cfg.N else ""
        print(f"warning: {len(constant)} of {cfg.N} channel(s) give one constant output over "
              f"the whole reachable accumulator range{everything}: channel(s) "
              f"{_channel_list(constant)}; an all-zero gamma or W row, or a scale k = "
              f"gamma*s_x*s_w/(sigma*s_y) too small to reach the next output level, does this",
              file=sys.stderr)
    return 0
