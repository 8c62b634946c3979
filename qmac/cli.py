"""The ``qmac`` command line."""

from __future__ import annotations

import argparse
import sys


def _text(paragraph):
    """One paragraph of help text, written as an indented triple-quoted string."""
    return " ".join(paragraph.split())


def _command(module, function):
    """The ``run`` of a subcommand: imports ``qmac.<module>`` only when the command runs, so that
    ``qmac --help`` stays fast."""
    def run(args):
        import importlib
        return getattr(importlib.import_module(f"qmac.{module}"), function)(args)
    return run


def _layer_or_network(parser, *, required):
    """CONFIG (a layer or a quantized network), its --weights and --requant, --allow-overflow."""
    parser.add_argument("config", metavar="CONFIG.toml|NETWORK.json",
                        help="layer configuration, or a network written by qmac quantize")
    parser.add_argument("--weights", metavar="W.npy",
                        help=f"integer weights, shape (out_features, in_features); needed "
                             f"{required}")
    parser.add_argument("--requant", metavar="R.npz",
                        help=f"requantization parameters: integer arrays M, B, S; needed "
                             f"{required}")
    parser.add_argument("--allow-overflow", action="store_true",
                        help="accept weights that can overflow the accumulator")
    _requant_style_options(parser)


def _requant_style_options(parser, *, random_default=False):
    """--thresholds and --requant-style: the threshold requantizer from the command line."""
    parser.add_argument("--thresholds", metavar="T.npz",
                        help="instead of --requant: exact thresholds, integer arrays T "
                             "(out_features x (y_max - y_min), ascending) and D (+1/-1), as "
                             "qmac fold --thresholds-out writes them")
    parser.add_argument("--requant-style", choices=("multiply", "threshold", "auto"),
                        help="requantizer (default: the configuration's requant_style): "
                             "'multiply' (M, B, S), 'threshold' (T, D; made from M, B, S over "
                             "the reachable accumulator range when --requant is given), 'auto' "
                             "(the smaller by the measured rule of qmac.thresholds."
                             "choose_style: thresholds up to 3 per channel, i.e. out_bits 2)"
                             + (" ; random parameters of that form without --weights"
                                if random_default else ""))


def _network_options(parser, *, strategy, acc_bits_default=None):
    """The quantization options ``qmac quantize`` and ``qmac demo`` share."""
    parser.add_argument("--acc-bits", type=int, metavar="P", default=acc_bits_default,
                        required=acc_bits_default is None,
                        help="accumulator width of every layer" +
                        ("" if acc_bits_default is None else f" (default {acc_bits_default})"))
    parser.add_argument("--strategy", choices=("databound", "exact", "l1"), default=strategy,
                        help="what must fit the accumulator: the data-type bound, the exact "
                             "reachable range, or the L1 bound (A2Q-style scaling); default "
                             f"{strategy}")
    parser.add_argument("--macs", type=int, default=16, metavar="N",
                        help="processing elements of the largest layer's MAC array; the "
                             "other layers get the fewest that keep pace with it (default 16)")


def build_parser():
    parser = argparse.ArgumentParser(
        prog="qmac",
        description=_text("""
        Generate bit-exact FPGA hardware for quantized neural-network layers.
        """))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    doctor = commands.add_parser(
        "doctor", help="check that every tool of the flow is installed",
        description=_text("""
        Print each tool the flow uses, where it was found and its version. Exits non-zero,
        naming what is missing, when a tool is absent.
        """))
    doctor.set_defaults(run=_command("doctor", "doctor_command"))

    demo = commands.add_parser(
        "demo", help="the whole flow on the bundled digits network, in one command",
        description=_text("""
        Quantize the bundled digits network (64-64-32-10 with batch norm) for --acc-bits, score
        the float and integer networks on the 360 test images, run the images through the
        network's Verilog under Verilator (every layer checked against the golden model),
        synthesize it for the smallest part it fits, and print one report. Exits 1 on any RTL
        mismatch.
        """))
    demo.add_argument("--model", metavar="MODEL.json",
                      help="a float network description (default: the bundled digits MLP)")
    _network_options(demo, strategy="l1", acc_bits_default=16)
    demo.add_argument("--images", type=int, metavar="N",
                      help="run only the first N test images (default: all 360)")
    demo.add_argument("--target", choices=("ice40-up5k", "ecp5-25k", "ecp5-45k", "ecp5-85k"),
                      help="synthesize for this part only (default: the smallest that fits)")
    demo.add_argument("--no-synth", action="store_true", help="skip synthesis")
    demo.add_argument("--seed", type=int, default=1, metavar="N",
                      help="nextpnr placement seed (default 1)")
    demo.add_argument("--json", metavar="OUT.json", help="also write the report as JSON")
    demo.set_defaults(run=_command("demo", "demo"))

    fold = commands.add_parser(
        "fold", help="quantize a float layer with batch norm into weights and exact M, B, S",
        description=_text("""
        Quantize the weights of a float layer BN(W·x + bias) per channel (symmetric, w_bits) and
        fold batch norm and the scales into exact requantization parameters M, B, S: the
        hardware output equals clamp(round(BN(...)/s_y)) for every accumulator value the weights
        can reach, with the smallest shift.
        """))
    fold.add_argument("config", metavar="CONFIG.toml", help="layer configuration")
    fold.add_argument("--layer", metavar="FLOAT.npz", required=True,
                      help="float layer: W (out x in), gamma, beta, mu, var; optional bias, "
                           "eps (default 1e-5), s_x, s_y")
    fold.add_argument("--s-x", type=float, metavar="SCALE",
                      help="input scale: real input = s_x * integer input")
    fold.add_argument("--s-y", type=float, metavar="SCALE",
                      help="output scale: real output = s_y * integer output")
    fold.add_argument("--rounding", choices=("half_up", "half_even", "half_away"),
                      default="half_up", help="rounding of the float reference (default "
                                              "half_up)")
    fold.add_argument("--allow-overflow", action="store_true",
                      help="write the files even if the quantized weights can overflow the "
                           "accumulator")
    fold.add_argument("--weights-out", metavar="W.npy", required=True)
    fold.add_argument("--requant-out", metavar="R.npz",
                      help="write M, B, S (needed unless --thresholds-out is given)")
    fold.add_argument("--thresholds-out", metavar="T.npz",
                      help="write the exact thresholds T, D of the same target (for "
                           "requant_style threshold; exact also where no M, B, S exists, "
                           "e.g. half_even with reachable ties)")
    fold.set_defaults(run=_command("flow", "fold"))

    analyze = commands.add_parser(
        "analyze", help="reachable accumulator range and the widths it needs",
        description=_text("""
        Report the exact reachable accumulator range of every channel, the minimal safe
        acc_bits, and the L1 and data-type bounds beside it. Exits 1 when the configured
        acc_bits can overflow.
        """))
    analyze.add_argument("config", metavar="CONFIG.toml", help="layer configuration")
    analyze.add_argument("--weights", metavar="W.npy", required=True,
                         help="integer weights, shape (out_features, in_features)")
    analyze.add_argument("--channels", action="store_true", help="list every channel")
    analyze.set_defaults(run=_command("flow", "analyze"))

    generate = commands.add_parser(
        "generate", help="write the Verilog of a layer engine, of the bare blocks, or of a "
                         "network",
        description=_text("""
        Write DIR/<name>.v (the layer engine with its weights and requantization parameters
        baked in) and DIR/manifest.json. Without --weights/--requant, write the bare MAC array
        (DIR/<name>_mac.v) and requantization unit (DIR/<name>_requant.v). Given a network.json
        of qmac quantize instead of a layer configuration, write the whole network (layer
        engines chained by streams) as one module.
        """))
    _layer_or_network(generate, required="to write a layer engine")
    generate.add_argument("-o", "--output", metavar="DIR", required=True,
                          help="output folder (created if absent)")
    generate.set_defaults(run=_command("flow", "generate"))

    simulate = commands.add_parser(
        "simulate", help="run a batch through the generated layer engine (or network) under "
                         "Verilator",
        description=_text("""
        Run input vectors through the layer engine's Verilog under Verilator (cocotb testbench)
        and write the outputs. Given a network.json of qmac quantize, run them through the whole
        network; --check then compares every layer's output with the golden model.
        """))
    _layer_or_network(simulate, required="with a layer configuration")
    simulate.add_argument("--inputs", metavar="X.npy", required=True,
                          help="integer input vectors, shape (batch, in_features)")
    simulate.add_argument("-o", "--output", metavar="Y.npy", required=True,
                          help="where to write the outputs, shape (batch, out_features)")
    simulate.add_argument("--check", action="store_true",
                          help="compare with the golden model; exit 1 on any mismatch")
    simulate.add_argument("--stall", type=float, default=0.0, metavar="P",
                          help="probability of an input gap and of ready low per cycle, "
                               "0 to 0.95 (default 0)")
    simulate.add_argument("--seed", type=int, default=0, metavar="N",
                          help="seed of the stall pattern, 0 or more (default 0)")
    simulate.add_argument("--waves", metavar="FILE",
                          help="write a trace (.fst or .vcd)")
    simulate.add_argument("--build-dir", metavar="DIR",
                          help="Verilator build folder (default: a cache folder per design)")
    simulate.set_defaults(run=_command("flow", "simulate"))

    quantize = commands.add_parser(
        "quantize", help="quantize a float network for an accumulator width, exactly",
        description=_text("""
        Quantize a float network (JSON + npz, see qmac.network) for accumulator width
        --acc-bits: per-channel weights, activation scales calibrated on the training data, and exact
        requantization M, B, S for every layer. Writes one config, weights and requant file per
        layer and DIR/network.json with every scale; prints each layer's reachable range and
        widths, and the float and integer accuracy on the test split.
        """))
    quantize.add_argument("model", metavar="MODEL.json", help="float network description")
    _network_options(quantize, strategy="exact")
    quantize.add_argument("--a-bits", type=int, metavar="N",
                          help="activation width of the hidden layers (unsigned)")
    quantize.add_argument("--w-bits", type=int, metavar="M", help="weight width (signed)")
    quantize.add_argument("--auto", action="store_true",
                          help="pick the widest --a-bits/--w-bits (up to 8) that fit --acc-bits")
    quantize.add_argument("--rounding", choices=("half_up", "half_even", "half_away"),
                          default="half_up", help="rounding of the float reference")
    quantize.add_argument("--data", default="digits", metavar="digits|DATA.npz",
                          help="calibration and test data: the bundled digits (default) or an "
                               ".npz with integer train_x, test_x, test_y")
    quantize.add_argument("-o", "--output", metavar="DIR", required=True,
                          help="output folder (created if absent)")
    quantize.set_defaults(run=_command("netflow", "quantize"))

    from .synth import TARGETS
    synth = commands.add_parser(
        "synth", help="synthesize, place and route a layer engine; report resources and Fmax",
        description=_text("""
        Generate the layer engine, synthesize it with Yosys and place and route it with nextpnr
        inside a fair-timing harness (registered inputs from one pin, outputs XOR-reduced into
        one pin). Reports LUTs, flip-flops, carry cells, DSPs and block RAMs (used and
        available), Fmax and the kind of critical path, and the area per block. Exits 1 when the
        design does not fit the part, naming the resource.
        """))
    synth.add_argument("config", metavar="CONFIG.toml", help="layer configuration")
    synth.add_argument("--weights", metavar="W.npy",
                       help="integer weights (default: random full-range weights)")
    synth.add_argument("--requant", metavar="R.npz",
                       help="requantization parameters M, B, S (default: random)")
    _requant_style_options(synth, random_default=True)
    synth.add_argument("--target", required=True, choices=tuple(TARGETS), metavar="TARGET",
                       help=f"FPGA part: {', '.join(TARGETS)}")
    synth.add_argument("--seed", type=int, default=1, metavar="N",
                       help="nextpnr placement seed (default 1)")
    synth.add_argument("--freq", type=float, metavar="MHZ",
                       help="timing target for nextpnr (default 50 on iCE40, 100 on ECP5); "
                            "Fmax is reported whether it is met or not")
    synth.add_argument("--json", metavar="OUT.json", help="write the figures as JSON")
    synth.add_argument("--bitstream", action="store_true",
                       help="also build the board top (UART) for the target's board with its "
                            "constraint file and write <name>-<board>.bin/.bit here")
    synth.add_argument("--build-dir", metavar="DIR",
                       help="run folder with the tools' logs and outputs (default: a new "
                            "folder under the system temp folder)")
    synth.add_argument("--no-blocks", action="store_true",
                       help="skip the hierarchical synthesis that gives the area per block")
    synth.add_argument("--pnr-timeout", type=float, metavar="SECONDS",
                       help="stop nextpnr after this many seconds and fail (default: no "
                            "limit); a design near the part's limits can take long to route: "
                            "try another --seed or a lower --freq")
    synth.set_defaults(run=_command("synth", "synth"))
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("qmac: interrupted", file=sys.stderr)
        return 130
    except Exception as error:  # noqa: BLE001
        from .files import UserError
        if isinstance(error, UserError):
            print(f"qmac {args.command}: error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, OSError):
            # Last resort: the checks before each command should have caught this.
            where = f"{error.filename}: " if error.filename else ""
            print(f"qmac {args.command}: error: {where}{error.strerror or error}",
                  file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
