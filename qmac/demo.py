"""``qmac demo``: the main job in one command, on the bundled digits network.

1. quantize the float network (``qmac/data/digits_mlp.json``, 64→64→32→10 with batch norm) for a
   default accumulator width, choosing the widest operands that fit it;
2. score the float and the integer (golden-model) networks on the 360 test images;
3. generate the network's hardware and run the test images through its Verilog under Verilator,
   checking every layer's output against the golden model;
4. synthesize, place and route it for the smallest supported part it fits (UP5K, then ECP5
   25k/45k/85k);
5. print one report (``--json`` writes it too): accuracies, RTL mismatches, per-layer widths,
   LUT/FF/DSP/Fmax and images per second at Fmax.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import numpy as np

from .digits import load_digits
from .files import UserError, check_output_file
from .network import NetworkError, load_network
from .netflow import (_network_build_dir, accuracy_report, first_mismatch, golden_outputs,
                      simulate_network_rtl, synthesize_network)
from .quantize import QuantizeError, choose_widths


__all__ = ["demo", "run_demo", "DEFAULT_ACC_BITS", "DEFAULT_STRATEGY", "TARGET_ORDER"]

DEFAULT_ACC_BITS = 16
DEFAULT_STRATEGY = "l1"
TARGET_ORDER = ("ice40-up5k", "ecp5-25k", "ecp5-45k", "ecp5-85k")


class _Steps:
    """Progress: one line per step with its elapsed time."""

    def __init__(self, stream, total):
        self.stream, self.total, self.step = stream, total, 0
        self.started = time.perf_counter()

    def __call__(self, text):
        self.step += 1
        elapsed = time.perf_counter() - self.started
        print(f"[{self.step}/{self.total} {elapsed:6.1f} s] {text}", file=self.stream,
              flush=True)

    def note(self, text):
        print(f"             {text}", file=self.stream, flush=True)


def run_demo(*, model=None, acc_bits=DEFAULT_ACC_BITS, strategy=DEFAULT_STRATEGY, macs=16,
             images=None, synth=True, targets=TARGET_ORDER, seed=1, workdir=None,
             stream=None):
    """Run the demo; return the report as a dict. Progress goes to ``stream`` (stderr)."""
    steps = _Steps(stream or sys.stderr, 5 if synth else 4)
    model = Path(model) if model else resources.files("qmac").joinpath("data/digits_mlp.json")
    try:
        network = load_network(model)
    except NetworkError as error:
        raise UserError(str(error)) from None
    data = load_digits()
    test_x, test_y = data.test_x, data.test_y
    if images is not None:
        test_x, test_y = test_x[:images], test_y[:images]
    steps(f"quantizing {Path(str(model)).name} for {acc_bits}-bit accumulators (strategy "
          f"{strategy}, widest operands that fit) ...")
    try:
        a_bits, w_bits, qnet = choose_widths(network, data.train_x, acc_bits=acc_bits,
                                             strategy=strategy, macs=macs)
    except QuantizeError as error:
        raise UserError(str(error)) from None
    layers = [(layer.cfg, layer.weights, layer.M, layer.B, layer.S) for layer in qnet.layers]
    steps(f"scoring the float and integer networks on {len(test_y)} test images ...")
    scores = accuracy_report(network, qnet, test_x, test_y)
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="qmac-demo-"))
    steps(f"running {len(test_y)} images through the network's Verilog under Verilator ...")
    rtl, run = simulate_network_rtl(layers, test_x, build_dir=_network_build_dir(layers, None),
                                    log=steps.note)
    want = golden_outputs(layers, test_x)
    mismatches = int(sum(np.sum(np.asarray(g != np.asarray(w, dtype=np.int64), dtype=bool))
                         for g, w in zip(rtl, want)))
    problem = first_mismatch(layers, rtl, want)
    rtl_accuracy = float((np.argmax(rtl[-1], axis=1) == test_y).mean())
    report = {
        "model": str(model), "acc_bits": acc_bits, "strategy": strategy,
        "a_bits": a_bits, "w_bits": w_bits,
        "accuracy": {"float": scores["float"], "integer": scores["integer"],
                     "rtl": rtl_accuracy, "images": int(len(test_y))},
        "rtl": {"mismatches": mismatches, "outputs_checked": int(sum(o.size for o in rtl)),
                "first_mismatch": problem, "cycles": run.cycles,
                "seconds": round(run.seconds, 2)},
        "layers": [_layer_entry(layer) for layer in qnet.layers],
        "synthesis": None,
    }
    if synth:
        report["synthesis"] = _synthesize(layers, targets, workdir, seed, steps)
    return report


def _layer_entry(layer):
    cfg = layer.cfg
    return {"name": cfg.name, "in_features": cfg.K, "out_features": cfg.N,
            "array": [cfg.rows, cfg.cols], "a_bits": cfg.a_bits, "w_bits": cfg.w_bits,
            "acc_bits": cfg.acc_bits, "min_acc_bits": layer.min_acc_bits,
            "datatype_bits": layer.datatype_bits, "m_bits": cfg.m_bits, "b_bits": cfg.b_bits,
            "s_max": cfg.s_max, "out_bits": cfg.out_bits, "out_signed": cfg.out_signed,
            "acc_range": [int(min(layer.acc_lo)), int(max(layer.acc_hi))]}


def _synthesize(layers, targets, workdir, seed, steps):
    from .synth import DoesNotFitError, SynthError
    tried = []
    for target in targets:
        steps(f"synthesizing for {target} (Yosys, nextpnr) ...")
        try:
            result = synthesize_network(layers, target, workdir / f"synth-{target}", seed=seed,
                                        progress=steps.note)
        except DoesNotFitError as error:
            steps.note(f"does not fit: {error}")
            tried.append({"target": target, "fits": False, "reason": str(error)})
            steps.step -= 1         # the same step, on the next part
            continue
        except SynthError as error:
            raise UserError(f"synthesis for {target} failed: {error}") from None
        fmax = result.get("fmax_mhz")
        cycles = result["cycles_per_vector"]
        return {"target": target, "fits": True, "tried": tried,
                **{key: result[key] for key in ("luts", "ffs", "carries", "dsps", "brams")},
                "available": result["available"], "fmax_mhz": fmax,
                "critical_path": (result.get("critical_path") or {}).get("kind"),
                "cycles_per_image": cycles,
                "images_per_second": round(fmax * 1e6 / cycles) if fmax else None,
                "notes": result.get("notes", [])}
    return {"target": None, "fits": False, "tried": tried}


def format_report(report):
    acc = report["accuracy"]
    rtl = report["rtl"]
    lines = ["", f"qmac demo: {Path(report['model']).name}, {report['acc_bits']}-bit "
                 f"accumulators, strategy {report['strategy']}, hidden activations "
                 f"{report['a_bits']} bits, weights {report['w_bits']} bits (the first layer "
                 f"takes the input's own width)", ""]
    lines.append(f"  accuracy on {acc['images']} test images: float {acc['float']:.2%}, "
                 f"integer {acc['integer']:.2%}, RTL {acc['rtl']:.2%}")
    lines.append(f"  RTL against the golden model: {rtl['mismatches']} mismatches in "
                 f"{rtl['outputs_checked']} outputs of every layer ({rtl['cycles']} cycles, "
                 f"{rtl['seconds']} s under Verilator)")
    lines.append("")
    lines.append(f"  {'layer':<6} {'K x N':>7} {'array':>6} {'a/w':>5} {'acc':>4} {'needs':>6} "
                 f"{'datatype':>8} {'M/B/S bits':>11} {'out':>5}")
    for layer in report["layers"]:
        shape = f"{layer['in_features']}x{layer['out_features']}"
        array = f"{layer['array'][0]}x{layer['array'][1]}"
        operands = f"{layer['a_bits']}/{layer['w_bits']}"
        widths = f"{layer['m_bits']}/{layer['b_bits']}/{layer['s_max']}"
        out = ("s" if layer["out_signed"] else "u") + str(layer["out_bits"])
        lines.append(f"  {layer['name']:<6} {shape:>7} {array:>6} {operands:>5} "
                     f"{layer['acc_bits']:>4} {layer['min_acc_bits']:>6} "
                     f"{layer['datatype_bits']:>8} {widths:>11} {out:>5}")
    synth = report.get("synthesis")
    lines.append("")
    if synth is None:
        lines.append("  synthesis: skipped (--no-synth)")
    elif not synth["fits"]:
        lines.append("  synthesis: fits none of the parts tried: " +
                     "; ".join(t["reason"] for t in synth["tried"]))
    else:
        available = synth["available"]
        for tried in synth["tried"]:
            lines.append(f"  {tried['target']}: {tried['reason']}")
        lines.append(f"  smallest part it fits: {synth['target']}: LUT {synth['luts']}/"
                     f"{available['luts']}, FF {synth['ffs']}, DSP {synth['dsps']}/"
                     f"{available['dsps']}, BRAM {synth['brams']}/{available['brams']}")
        fmax = synth["fmax_mhz"]
        lines.append(f"  Fmax {fmax} MHz (nextpnr estimate; critical path: "
                     f"{synth['critical_path']}); {synth['cycles_per_image']} cycles per image: "
                     f"{synth['images_per_second']:,} images/s at Fmax")
        for note in synth["notes"]:
            lines.append(f"  note: {note}")
    return "\n".join(lines)


def demo(args):
    """``qmac demo``."""
    if args.json is not None:
        check_output_file(args.json, "--json", suffixes=(".json",))
    if not 2 <= args.acc_bits <= 64:
        raise UserError(f"--acc-bits must be between 2 and 64, not {args.acc_bits}")
    if args.images is not None and not 1 <= args.images <= 360:
        raise UserError(f"--images must be between 1 and 360, not {args.images}")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, not {args.seed}")
    targets = TARGET_ORDER if args.target is None else (args.target,)
    report = run_demo(model=args.model, acc_bits=args.acc_bits, strategy=args.strategy,
                      macs=args.macs, images=args.images, synth=not args.no_synth,
                      targets=targets, seed=args.seed)
    print(format_report(report))
    if args.json is not None:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}", file=sys.stderr)
    if report["rtl"]["mismatches"]:
        print(f"MISMATCH: {report['rtl']['first_mismatch']}", file=sys.stderr)
        return 1
    return 0
