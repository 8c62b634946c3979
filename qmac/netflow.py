"""What the network commands do: ``qmac quantize`` (and the network side of the flow)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from .digits import load_digits
from .files import UserError, _load_npz_file, check_output_folder
from .network import NetworkError, forward, load_network
from .sim import golden
from .quantize import QuantizeError, choose_widths, quantize_network, save_quantized


__all__ = ["load_dataset", "quantize", "accuracy_report"]


def load_dataset(spec, network):
    """The data a network is calibrated and scored on: ``"digits"`` (bundled) or an ``.npz``
    with integer arrays ``train_x``, ``test_x`` and ``test_y``.

    Returns ``(train_x, test_x, test_y)``.
    """
    if spec == "digits":
        data = load_digits()
        train_x, test_x, test_y = data.train_x, data.test_x, data.test_y
    else:
        arrays = _load_npz_file(Path(spec), f"--data {spec!r}",
                                keys=("train_x", "train_y", "test_x", "test_y"),
                                max_member_bytes=1 << 30, kinds="iu")
        missing = [key for key in ("train_x", "test_x", "test_y") if key not in arrays]
        if missing:
            raise UserError(f"--data {spec!r} lacks array {missing[0]!r} (needs train_x, "
                            f"test_x, test_y)")
        train_x, test_x, test_y = arrays["train_x"], arrays["test_x"], arrays["test_y"]
    for name, x in (("train_x", train_x), ("test_x", test_x)):
        if x.dtype.kind not in "iu" or x.ndim != 2 or x.shape[1] != network.in_features:
            raise UserError(f"--data {spec}: {name} must be integers of shape (n, "
                            f"{network.in_features}), not {x.dtype} {tuple(x.shape)}")
        if not len(x):
            raise UserError(f"--data {spec}: {name} has no rows (it calibrates or scores the "
                            f"network)")
        if x.size and (x.min() < network.input_min or x.max() > network.input_max):
            raise UserError(f"--data {spec}: {name} leaves the network's input range "
                            f"[{network.input_min}, {network.input_max}]")
    if test_y.ndim != 1 or len(test_y) != len(test_x):
        raise UserError(f"--data {spec}: test_y must have shape ({len(test_x)},), not "
                        f"{tuple(test_y.shape)}")
    if test_y.min() < 0 or test_y.max() >= network.out_features:
        bad = int(test_y.min()) if test_y.min() < 0 else int(test_y.max())
        raise UserError(f"--data {spec}: test_y holds the label {bad}; labels are classes "
                        f"0..{network.out_features - 1} (the network's outputs)")
    return train_x, test_x, test_y


def accuracy_report(network, qnet, test_x, test_y):
    """Float and integer (golden model) accuracy on the test split."""
    float_pred = forward(network, test_x * network.input_scale).argmax(1)
    int_pred = qnet.predict(test_x)
    return {"float": float((float_pred == test_y).mean()),
            "integer": float((int_pred == test_y).mean()),
            "agree": float((float_pred == int_pred).mean()), "images": int(len(test_y))}


def _load(path):
    try:
        return load_network(path)
    except NetworkError as error:
        raise UserError(str(error)) from None


def quantize(args):
    """``qmac quantize``: a float network -> per-layer configs, weights and exact M, B, S."""
    network = _load(args.model)
    if args.auto == (args.a_bits is not None or args.w_bits is not None):
        raise UserError("give --a-bits and --w-bits, or --auto (the widest widths that fit "
                        "--acc-bits)")
    if not args.auto and (args.a_bits is None or args.w_bits is None):
        raise UserError("give both --a-bits and --w-bits")
    if not 2 <= args.acc_bits <= 64:
        raise UserError(f"--acc-bits must be between 2 and 64, not {args.acc_bits}")
    if not 1 <= args.macs <= 4096:
        raise UserError(f"--macs must be between 1 and 4096, not {args.macs}")
    for flag, value in (("--a-bits", args.a_bits), ("--w-bits", args.w_bits)):
        if value is not None and not 2 <= value <= 32:
            raise UserError(f"{flag} must be between 2 and 32, not {value}")
    model_path = Path(args.model)
    inputs = {"MODEL": model_path, "MODEL arrays": model_path.with_suffix(".npz")}
    if args.data != "digits":
        inputs["--data"] = args.data
    names = ["network.json"] + [f"{block.name}{suffix}" for block in network.blocks()
                                for suffix in (".toml", "_weights.npy", "_requant.npz")]
    out = check_output_folder(args.output, "-o", files=names, inputs=inputs)
    train_x, test_x, test_y = load_dataset(args.data, network)
    started = time.perf_counter()
    print(f"quantizing {args.model} at acc_bits = {args.acc_bits}, strategy {args.strategy} "
          f"({len(train_x)} calibration images) ...", file=sys.stderr)
    try:
        if args.auto:
            a_bits, w_bits, qnet = choose_widths(network, train_x, acc_bits=args.acc_bits,
                                                 strategy=args.strategy,
                                                 rounding=args.rounding, macs=args.macs)
        else:
            qnet = quantize_network(network, train_x, acc_bits=args.acc_bits,
                                    a_bits=args.a_bits, w_bits=args.w_bits,
                                    strategy=args.strategy, rounding=args.rounding,
                                    macs=args.macs)
    except QuantizeError as error:
        raise UserError(str(error)) from None
    path = save_quantized(qnet, out)
    print(f"{'layer':<8} {'K x N':>9} {'array':>6} {'a/w':>5} {'reachable accumulator':>26} "
          f"{'safe':>5} {'datatype':>8} {'acc':>4} {'M/B/S bits':>11}")
    for layer in qnet.layers:
        cfg = layer.cfg
        span = f"[{min(layer.acc_lo)}, {max(layer.acc_hi)}]"
        print(f"{cfg.name:<8} {f'{cfg.K}x{cfg.N}':>9} {f'{cfg.rows}x{cfg.cols}':>6} "
              f"{f'{cfg.a_bits}/{cfg.w_bits}':>5} "
              f"{span:>26} {layer.min_acc_bits:>5} {layer.datatype_bits:>8} {cfg.acc_bits:>4} "
              f"{f'{cfg.m_bits}/{cfg.b_bits}/{cfg.s_max}':>11}")
    for layer in qnet.layers:
        dead = [c for c in range(layer.cfg.N) if layer.acc_lo[c] == layer.acc_hi[c]]
        if dead:
            print(f"warning: layer {layer.cfg.name}: {len(dead)} of {layer.cfg.N} channel(s) "
                  f"have a constant accumulator (all their {layer.cfg.w_bits}-bit weights are "
                  f"0): channels {', '.join(map(str, dead[:10]))}"
                  f"{' ...' if len(dead) > 10 else ''}", file=sys.stderr)
    scores = accuracy_report(network, qnet, test_x, test_y)
    print(f"accuracy on {scores['images']} test images: float {scores['float']:.4f}, "
          f"integer {scores['integer']:.4f} (same class for {scores['agree']:.2%})")
    print(f"wrote {path} and {3 * len(qnet.layers)} layer files in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0


# -- network hardware: generate and simulate ---------------------------------------------------

QUANTIZED_FORMAT = "qmac-quantized-network"


def is_network_file(path):
    """Whether a CONFIG argument names a quantized network (``network.json``), not a layer."""
    return str(path).endswith(".json")


def load_quantized_network(path):
    """Load the layers of a quantized network written by ``qmac quantize``.

    Returns ``[(cfg, weights, M, B, S), ...]``; every file is checked as for one layer, and the
    chain (one layer's output is the next layer's input) too.
    """
    from .files import load_config, load_requant, load_weights, read_text_file
    from .hw.network import check_chain
    path = Path(path)
    text = read_text_file(path, f"network file {str(path)!r}", kind="JSON",
                          what="network description")
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"network file {str(path)!r} is not valid JSON: {error}") from None
    if not isinstance(document, dict) or document.get("format") != QUANTIZED_FORMAT:
        raise UserError(f"network file {str(path)!r} is not a quantized network (format "
                        f"{QUANTIZED_FORMAT!r}, written by qmac quantize)")
    entries = document.get("layers")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{path}: field 'layers' must be a non-empty list")
    layers = []
    for index, entry in enumerate(entries):
        where = f"{path}: layers[{index}]"
        if not isinstance(entry, dict):
            raise UserError(f"{where} must be an object")
        names = {}
        for key in ("config", "weights", "requant"):
            name = entry.get(key)
            if not isinstance(name, str) or Path(name).name != name:
                raise UserError(f"{where}: field {key!r} must name a file beside {path.name}, "
                                f"not {name!r}")
            names[key] = path.parent / name
        cfg = load_config(names["config"])
        weights = load_weights(cfg, names["weights"], flag=f"{where} weights")
        M, B, S = load_requant(cfg, names["requant"], flag=f"{where} requant")
        layers.append((cfg, weights, M, B, S))
    try:
        check_chain([layer[0] for layer in layers])
    except ValueError as error:
        raise UserError(f"{path}: {error}") from None
    return layers


def network_files(path):
    """``{label: path}`` of every file a quantized network file names (for output checks);
    empty when the file cannot be read (the loader then reports why)."""
    try:
        document = json.loads(Path(path).read_text())
        return {f"{key} of layers[{index}]": Path(path).parent / entry[key]
                for index, entry in enumerate(document["layers"])
                for key in ("config", "weights", "requant") if isinstance(entry[key], str)}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def golden_outputs(layers, x):
    """Every layer's output of the golden model."""
    outputs = []
    for cfg, weights, M, B, S in layers:
        x = golden.layer(cfg, x, weights, M, B, S).y
        outputs.append(x)
    return outputs


def network_name(layers):
    return "network_" + "_".join(layer[0].name for layer in layers)


def _decode_tap(cfg, tap_beats, batch):
    """The outputs of a layer from its tapped beats (``rows`` values of ``out_bits`` each)."""
    bits, mask = cfg.out_bits, (1 << cfg.out_bits) - 1
    values = [(beat >> (k * bits)) & mask for beat in tap_beats for k in range(cfg.rows)]
    if cfg.out_signed:
        values = [v - (1 << bits) if v >> (bits - 1) else v for v in values]
    array = np.array(values, dtype=np.int64)
    if array.size != batch * cfg.out_features:
        raise RuntimeError(f"layer {cfg.name}: the tap saw {array.size} outputs, not "
                           f"{batch * cfg.out_features}")
    return array.reshape(batch, cfg.out_features)


def simulate_network_rtl(layers, x, *, build_dir, stall=0.0, seed=0, progress=None,
                         log=print):
    """Run ``x`` through the network's Verilog under Verilator; return ``(outputs, run)`` where
    ``outputs[l]`` is layer ``l``'s output as the hardware computed it."""
    from .hw.layouts import engine_input_layout
    from .hw.network import NetworkTop
    from .sim import beats
    from .sim.runner import build, run_stream
    top = NetworkTop(layers, taps=True)
    name = network_name(layers)
    log(f"building {name} under Verilator in {build_dir} ...")
    built = build(top, name=name, build_dir=build_dir)
    log(f"built in {built.build_seconds:.1f} s" if built.build_seconds else
        "reused the cached build")
    first, last = layers[0][0], layers[-1][0]
    in_beats = beats.engine_beats(first, x)
    n_outputs = len(x) * (last.out_features // last.rows)
    max_cycles = int(len(x) * top.cycles_per_vector * 4 / (1 - stall) ** 2) + 20_000
    run = run_stream(built, in_beats, n_outputs=n_outputs, stall=stall, seed=seed,
                     in_width=engine_input_layout(first).size, label="network",
                     progress=progress, taps=len(layers) - 1, max_cycles=max_cycles)
    check_stream_run(run, n_outputs, sender="the network")
    y, _, _ = beats.engine_outputs(last, run.outputs)
    outputs = [_decode_tap(layer[0], tap, len(x)) for layer, tap in zip(layers, run.taps)]
    outputs.append(np.asarray(y, dtype=np.int64))
    return outputs, run


def check_stream_run(run, n_outputs, *, sender):
    """Raise :class:`UserError` when a stream run timed out or ``sender`` sent extra beats."""
    if run.timed_out:
        raise UserError(f"the simulation timed out after {run.cycles} cycles with "
                        f"{len(run.outputs)} of {n_outputs} output beats")
    if run.extra:
        raise UserError(f"{sender} sent {len(run.extra)} output beat(s) more than {n_outputs}")


def first_mismatch(layers, got, want):
    """``None``, or a message naming the first layer, vector and channel that differ."""
    for (cfg, *_), g, w in zip(layers, got, want):
        bad = np.argwhere(np.asarray(g != np.asarray(w, dtype=np.int64), dtype=bool))
        if len(bad):
            v, c = (int(i) for i in bad[0])
            return (f"layer {cfg.name}: {len(bad)} outputs differ; first at vector {v}, "
                    f"channel {c}: expected {int(w[v, c])}, got {int(g[v, c])}")
    return None


def _network_build_dir(layers, build_dir_flag):
    from .flow import _sha256
    from .files import prepare_build_dir
    import hashlib
    import tempfile
    if build_dir_flag:
        return prepare_build_dir(build_dir_flag)
    key = json.dumps([[cfg.to_dict(), _sha256(w), [int(v) for v in M], [int(v) for v in B],
                       [int(v) for v in S]] for cfg, w, M, B, S in layers])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / "qmac-build" / f"{network_name(layers)}-{digest}"
    return prepare_build_dir(path, cache=True)


def simulate_network(args):
    """``qmac simulate network.json``: images through the whole network under Verilator."""
    from .files import check_output_file, load_inputs, write_npy
    from .flow import _ProgressLine, _check_simulate_flags
    from .sim.runner import BuildChangedError
    _check_simulate_flags(args)
    if args.weights is not None or args.requant is not None:
        raise UserError("a network file names its layers' weights and requantization files; "
                        "do not give --weights or --requant with it")
    if args.waves is not None:
        raise UserError("--waves is not supported for a network yet; simulate one layer")
    output = check_output_file(args.output, "-o", suffixes=(".npy",),
                               inputs={"CONFIG": args.config, "--inputs": args.inputs,
                                       **network_files(args.config)})
    layers = load_quantized_network(args.config)
    x = load_inputs(layers[0][0], args.inputs)
    build_dir = _network_build_dir(layers, args.build_dir)
    last = layers[-1][0]
    out_beats = last.out_features // last.rows
    progress = _ProgressLine(sys.stderr, len(x), out_beats) if sys.stderr.isatty() else None
    try:
        outputs, run = simulate_network_rtl(
            layers, x, build_dir=build_dir, stall=args.stall, seed=args.seed, progress=progress,
            log=lambda text: print(text, file=sys.stderr))
    except BuildChangedError as error:
        raise UserError(f"--build-dir: {error}") from None
    finally:
        if progress is not None:
            progress.close()
    write_npy(output, outputs[-1])
    rate = run.cycles / run.seconds if run.seconds else 0.0
    print(f"wrote {output}: {len(x)} vectors through {len(layers)} layers in {run.cycles} "
          f"cycles, {run.seconds:.2f} s ({rate:,.0f} cycles/s)", file=sys.stderr)
    if args.check:
        problem = first_mismatch(layers, outputs, golden_outputs(layers, x))
        if problem:
            print(f"MISMATCH: {problem}", file=sys.stderr)
            return 1
        total = sum(o.size for o in outputs)
        print(f"check passed: every layer's {total} outputs equal the golden model bit for bit",
              file=sys.stderr)
    return 0


def generate_network(args):
    """``qmac generate network.json -o DIR``: the network top's Verilog and its manifest."""
    from .files import check_output_folder
    from .flow import _versions, manifest
    from .hw.network import NetworkTop
    from .hw.verilog import convert
    if args.weights is not None or args.requant is not None:
        raise UserError("a network file names its layers' weights and requantization files; "
                        "do not give --weights or --requant with it")
    layers = load_quantized_network(args.config)
    name = network_name(layers)
    out = check_output_folder(args.output, "-o", files=(f"{name}.v", "manifest.json"),
                              inputs={"CONFIG": args.config, **network_files(args.config)})
    for cfg, weights, *_ in layers:
        from .accumulator import AccumulatorOverflowError, check_accumulator
        try:
            check_accumulator(cfg, weights, allow_overflow=args.allow_overflow)
        except AccumulatorOverflowError as error:
            raise UserError(f"layer {cfg.name}: {error}; use --allow-overflow to accept "
                            f"this") from None
    top = NetworkTop(layers)
    started = time.perf_counter()
    print(f"generating network {name}: {len(layers)} layers ...", file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.v").write_text(convert(top, name=name))
    document = {"name": name, "kind": "network", "verilog": f"{name}.v",
                "cycles_per_vector": top.cycles_per_vector,
                "layers": [manifest(cfg, engine, kind="engine", verilog_file=f"{name}.v")
                           | {"config": cfg.to_dict()}
                           for (cfg, *_), engine in zip(layers, top.engines)],
                "tools": _versions()}
    (out / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {out / (name + '.v')} and {out / 'manifest.json'} "
          f"({time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def synthesize_network(layers, target, workdir, *, seed=1, freq=None, progress=None):
    """Synthesize, place and route the network top on ``target`` (inside the fair-timing
    harness); return the figures of :func:`qmac.synth.implement` plus ``cycles_per_vector``.

    Layers with ``mul_style = "auto"`` share the part's DSPs in proportion to their multipliers;
    if the netlist still needs more than the part has, every share shrinks and the network is
    synthesized again (at most three times).

    Raises
    ------
    qmac.synth.DoesNotFitError
        The network does not fit ``target`` (the message names the resource).
    """
    from .hw.multiply import plan_multipliers
    from .hw.network import NetworkTop
    from .synth import TARGETS, DoesNotFitError, implement
    target = TARGETS[target] if isinstance(target, str) else target
    progress = progress or (lambda text: print(text, file=sys.stderr))
    budget = target.available["dsps"]
    weights = [cfg.rows * (cfg.cols + 1) for cfg, *_ in layers]
    for attempt in range(4):
        plans = []
        for (cfg, *_), weight in zip(layers, weights):
            share = budget * weight // sum(weights)
            plans.append(plan_multipliers(cfg, family=target.family, dsp_budget=share)
                         if cfg.mul_style == "auto" else plan_multipliers(cfg))
        top = NetworkTop(layers, mul_plans=plans)
        result = implement(top, target, Path(workdir) / f"run{attempt}", seed=seed, freq=freq,
                           progress=progress, allow_unfit=True)
        if result["dsps"] <= target.available["dsps"] or budget == 0:
            break
        progress(f"auto: the network used {result['dsps']} DSPs; moving more multipliers to "
                 f"LUTs")
        budget = max(0, budget - (result["dsps"] - target.available["dsps"]))
    result["cycles_per_vector"] = top.cycles_per_vector
    if result["fits"] is False:
        raise DoesNotFitError(f"the network does not fit {target.name}: "
                              + "; ".join(result.get("fit_problems", [])), result)
    return result
