"""What the network commands do: ``qmac quantize`` (and the network side of the flow)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from .digits import load_digits
from .flow import UserError
from .network import NetworkError, forward, load_network
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
        path = Path(spec)
        try:
            archive = np.load(path, allow_pickle=False)
            arrays = {key: archive[key] for key in ("train_x", "test_x", "test_y")}
        except FileNotFoundError:
            raise UserError(f"--data {spec!r} does not exist") from None
        except KeyError as error:
            raise UserError(f"--data {spec!r} lacks array {error.args[0]!r} (needs train_x, "
                            f"test_x, test_y)") from None
        except Exception as error:  # noqa: BLE001 (numpy raises many kinds for a bad file)
            raise UserError(f"--data {spec!r} is not a valid .npz file: {error}") from None
        train_x, test_x, test_y = arrays["train_x"], arrays["test_x"], arrays["test_y"]
    for name, x in (("train_x", train_x), ("test_x", test_x)):
        if x.dtype.kind not in "iu" or x.ndim != 2 or x.shape[1] != network.in_features:
            raise UserError(f"--data {spec}: {name} must be integers of shape (n, "
                            f"{network.in_features}), not {x.dtype} {tuple(x.shape)}")
        if x.size and (x.min() < network.input_min or x.max() > network.input_max):
            raise UserError(f"--data {spec}: {name} leaves the network's input range "
                            f"[{network.input_min}, {network.input_max}]")
    if test_y.ndim != 1 or len(test_y) != len(test_x):
        raise UserError(f"--data {spec}: test_y must have shape ({len(test_x)},), not "
                        f"{tuple(test_y.shape)}")
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
    train_x, test_x, test_y = load_dataset(args.data, network)
    started = time.perf_counter()
    print(f"quantizing {args.model} at acc_bits = {args.acc_bits}, strategy {args.strategy} "
          f"({len(train_x)} calibration images) ...", file=sys.stderr)
    try:
        if args.auto:
            a_bits, w_bits, qnet = choose_widths(network, train_x, acc_bits=args.acc_bits,
                                                 strategy=args.strategy,
                                                 rounding=args.rounding)
        else:
            qnet = quantize_network(network, train_x, acc_bits=args.acc_bits,
                                    a_bits=args.a_bits, w_bits=args.w_bits,
                                    strategy=args.strategy, rounding=args.rounding)
    except QuantizeError as error:
        raise UserError(str(error)) from None
    path = save_quantized(qnet, args.output)
    print(f"{'layer':<8} {'K x N':>9} {'a/w':>5} {'reachable accumulator':>26} {'safe':>5} "
          f"{'datatype':>8} {'acc':>4} {'M/B/S bits':>11}")
    for layer in qnet.layers:
        cfg = layer.cfg
        span = f"[{min(layer.acc_lo)}, {max(layer.acc_hi)}]"
        print(f"{cfg.name:<8} {f'{cfg.K}x{cfg.N}':>9} {f'{cfg.a_bits}/{cfg.w_bits}':>5} "
              f"{span:>26} {layer.min_acc_bits:>5} {layer.datatype_bits:>8} {cfg.acc_bits:>4} "
              f"{f'{cfg.m_bits}/{cfg.b_bits}/{cfg.s_max}':>11}")
    scores = accuracy_report(network, qnet, test_x, test_y)
    print(f"accuracy on {scores['images']} test images: float {scores['float']:.4f}, "
          f"integer {scores['integer']:.4f} (same class for {scores['agree']:.2%})")
    print(f"wrote {path} and {3 * len(qnet.layers)} layer files in "
          f"{time.perf_counter() - started:.1f} s", file=sys.stderr)
    return 0
