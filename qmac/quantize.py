"""Accumulator-aware quantization of a whole float network into exact integer layers.

:func:`quantize_network` turns a :class:`qmac.network.Network` into one integer layer per block
(``linear [batchnorm1d] [relu]``): a :class:`LayerConfig`, integer weights, and exact
requantization parameters ``M, B, S`` from the solver, so that each layer's integer output equals
``clamp(R(BN(W_q·x)/s_y))`` for every accumulator value the layer can reach. The accumulator width
``acc_bits = P`` is the constraint; the operand widths come from one of three strategies:

``databound`` (de Bruin et al., 2020)
    Every layer's data-type bound ``a_bits + w_bits + ceil(log2 K)`` must fit ``P``. With
    ``--auto``, the widest ``(a_bits, w_bits)`` for which it does.
``exact``
    The exact reachable range of the real quantized weights (what ``qmac analyze`` computes,
    ``x_max·P+ + x_min·P-``) must fit ``P``. With ``--auto``, the widest widths for which it does.
``l1`` (A2Q-style)
    Each channel's weight scale is raised, where needed, until ``||w_q||_1 · max|x|`` fits ``P``,
    and weights are rounded toward zero there, so the bound holds by construction.

Scales (documented rules, never chosen by hand):

- the first layer's input scale and range come from the network file (digits: 1/16, 0..16), and
  its ``a_bits`` is the fewest unsigned (or signed) bits holding that range;
- weights: symmetric, per output channel, ``s_w[c] = max|W[c,:]| / (2^(w_bits-1) - 1)``
  (:func:`qmac.fold.quantize_weights`);
- activations: each block's output scale is calibrated on the training data:
  ``s_y = percentile(|float output|, 99.99) / y_max`` over the float network's block outputs,
  and it is the next block's input scale. Hidden blocks output ``a_bits`` unsigned integers (they
  end in ReLU); the last block outputs ``LOGIT_BITS`` = 8-bit signed integers, the class scores
  (the predicted class is the first largest score, as ``numpy.argmax`` picks it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .accumulator import analyze, reachable_range
from .fold import fold_bn, quantize_weights
from .hw.config import LayerConfig
from .network import Network, forward
from .sim import golden
from .solver import InfeasibleError, solve_layer


__all__ = ["STRATEGIES", "LOGIT_BITS", "QuantizeError", "QuantizedLayer", "QuantizedNetwork",
           "quantize_network", "choose_widths", "save_quantized"]

STRATEGIES = ("databound", "exact", "l1")
LOGIT_BITS = 8
CALIBRATION_PERCENTILE = 99.99
# Generous solver limits; each layer's config then records the widths actually needed.
_M_LIMIT, _B_LIMIT, _S_LIMIT = 40, 60, 60


class QuantizeError(ValueError):
    """The network cannot be quantized as asked (widths that do not fit, an inexact channel)."""


@dataclass(frozen=True)
class QuantizedLayer:
    """One integer layer and the scales that relate it to the float network."""
    cfg: LayerConfig
    weights: np.ndarray
    M: np.ndarray
    B: np.ndarray
    S: np.ndarray
    s_x: float
    s_w: np.ndarray
    s_y: float
    acc_lo: list
    acc_hi: list
    min_acc_bits: int
    datatype_bits: int
    l1_bits: int


@dataclass(frozen=True)
class QuantizedNetwork:
    layers: tuple
    strategy: str
    acc_bits: int
    a_bits: int
    w_bits: int
    rounding: str

    def run(self, x):
        """Every layer's integer output (golden model) for integer inputs ``x``."""
        outputs = []
        for layer in self.layers:
            x = golden.layer(layer.cfg, x, layer.weights, layer.M, layer.B, layer.S).y
            outputs.append(x)
        return outputs

    def predict(self, x):
        """Class of each integer input: the argmax of the last layer's integer scores."""
        return np.argmax(np.asarray(self.run(x)[-1], dtype=np.int64), axis=1)


def _unsigned_bits(hi):
    return max(1, int(hi).bit_length())


def _input_bits(network):
    """(a_bits, a_signed) holding the network's integer input range."""
    lo, hi = network.input_min, network.input_max
    if lo >= 0:
        return _unsigned_bits(hi), False
    return max((-lo - 1).bit_length(), hi.bit_length()) + 1, True


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


def array_shapes(sizes, macs=16):
    """A MAC array shape ``(rows, cols)`` per layer that balances the network's stages.

    ``sizes`` is ``[(K, N), ...]``. The layer with the most multiplies gets (at most) ``macs``
    processing elements; every other layer gets the fewest that keep its cycles per vector,
    ``K·N / (rows·cols)``, at or below that layer's, so no stage idles the others for long.
    ``cols`` divides ``K`` and ``rows`` divides ``N``; among equal counts the squarer shape wins.
    """
    def best(k, n, limit=None, budget=None):
        options = [(r * c, abs(r - c), r, c) for r in _divisors(n) for c in _divisors(k)]
        if budget is not None:
            options = [o for o in options if o[0] <= budget]
            return max(options, key=lambda o: (o[0], -o[1]))[2:]
        options = [o for o in options if k * n <= limit * o[0]]
        return min(options, key=lambda o: (o[0], o[1]))[2:]

    k0, n0 = max(sizes, key=lambda s: s[0] * s[1])
    rows0, cols0 = best(k0, n0, budget=macs)
    cycles = k0 * n0 // (rows0 * cols0)
    return [best(k, n, limit=cycles) for k, n in sizes]


def _calibrate(outputs, y_max):
    peak = float(np.percentile(np.abs(outputs), CALIBRATION_PERCENTILE))
    if not peak > 0:
        peak = float(np.max(np.abs(outputs))) or 1.0
    return peak / y_max


def _l1_weights(W, w_bits, acc_bits, x_peak):
    """A2Q-style: per channel, the smallest scale >= the max-abs scale for which
    ``||q||_1 · x_peak <= 2^(acc_bits-1) - 1`` with ``q`` rounded toward zero."""
    q_max = (1 << (w_bits - 1)) - 1
    budget = ((1 << (acc_bits - 1)) - 1) // max(1, x_peak)
    _, s_w = quantize_weights(W, w_bits)
    l1 = np.abs(W).sum(axis=1)
    needed = np.where(l1 > 0, l1 / max(budget, 1), 0.0)
    s_w = np.maximum(s_w, needed * (1 + 1e-12))
    q = np.trunc(W / s_w[:, None])
    q = np.clip(q, -q_max, q_max).astype(np.int64)
    # Float division may land exactly on the budget's edge: shrink until the bound holds.
    for c in range(len(q)):
        while int(np.abs(q[c]).sum()) * x_peak > (1 << (acc_bits - 1)) - 1:
            s_w[c] *= 1 + 1e-6
            q[c] = np.clip(np.trunc(W[c] / s_w[c]), -q_max, q_max).astype(np.int64)
    return q, s_w


def quantize_network(network, calibration_x, *, acc_bits, a_bits, w_bits, strategy="exact",
                     rounding="half_up", overflow="wrap", macs=16):
    """Quantize ``network`` at accumulator width ``acc_bits``.

    Parameters
    ----------
    network : Network
    calibration_x : ndarray of int, shape (n, in_features)
        Integer training inputs; they set every activation scale.
    acc_bits : int
        The accumulator width ``P`` of every layer.
    a_bits, w_bits : int
        Activation width of the hidden layers' inputs (unsigned, after ReLU) and weight width.
    strategy : {"databound", "exact", "l1"}
    macs : int
        Processing elements of the largest layer's MAC array (:func:`array_shapes`).

    Raises
    ------
    QuantizeError
        The widths do not fit ``acc_bits`` under the strategy (naming the layer and the bound),
        or a channel has no exact requantization within the solver's limits.
    """
    if strategy not in STRATEGIES:
        raise QuantizeError(f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}")
    blocks = network.blocks()
    float_outputs = forward(network, np.asarray(calibration_x) * network.input_scale, upto="all")
    s_x = network.input_scale
    in_bits, in_signed = _input_bits(network)
    shapes = array_shapes([(b.linear.in_features, b.linear.out_features) for b in blocks], macs)
    layers = []
    for index, block in enumerate(blocks):
        last = index == len(blocks) - 1
        W = block.linear.W
        n, k = W.shape
        rows, cols = shapes[index]
        layer_a_bits, layer_a_signed = (in_bits, in_signed) if index == 0 else \
            (a_bits, prev_signed)
        if not last:
            # A hidden block outputs the next block's activations: unsigned after a ReLU.
            out_bits, out_signed = a_bits, not block.relu
        else:
            out_bits, out_signed = LOGIT_BITS, True
        try:
            cfg = LayerConfig(name=block.name, in_features=k, out_features=n, rows=rows, cols=cols,
                              a_bits=layer_a_bits, a_signed=layer_a_signed, w_bits=w_bits,
                              acc_bits=acc_bits, overflow=overflow, m_bits=_M_LIMIT,
                              b_bits=_B_LIMIT, s_max=_S_LIMIT, out_bits=out_bits,
                              out_signed=out_signed, relu=block.relu)
        except ValueError as error:
            raise QuantizeError(f"layer {block.name}: {error}") from None
        if strategy == "databound" and cfg.datatype_acc_bits > acc_bits:
            raise QuantizeError(
                f"layer {block.name}: the data-type bound a_bits + w_bits + ceil(log2 K) = "
                f"{layer_a_bits} + {w_bits} + {math.ceil(math.log2(k))} = "
                f"{cfg.datatype_acc_bits} does not fit acc_bits = {acc_bits}")
        if strategy == "l1":
            x_peak = max(abs(cfg.x_min), abs(cfg.x_max))
            q, s_w = _l1_weights(W, w_bits, acc_bits, x_peak)
        else:
            q, s_w = quantize_weights(W, w_bits)
        report = analyze(cfg, q)
        if not report.safe:
            bad = report.unsafe_channels()[0]
            raise QuantizeError(
                f"layer {block.name}: channel {bad} of the {w_bits}-bit weights reaches "
                f"[{report.lo[bad]}, {report.hi[bad]}], which needs acc_bits >= "
                f"{report.min_acc_bits}, not {acc_bits}")
        s_y = _calibrate(float_outputs[index], cfg.y_max)
        bn = block.bn
        if bn is None:
            gamma, beta, mean, var, eps = (np.ones(n), np.zeros(n), np.zeros(n), np.ones(n),
                                           0.0)
        else:
            gamma, beta, mean, var, eps = bn.gamma, bn.beta, bn.mean, bn.var, bn.eps
        kk, bb = fold_bn(gamma=gamma, beta=beta, mu=mean, var=var, eps=eps, s_x=s_x, s_w=s_w,
                         s_y=s_y, bias=block.linear.bias)
        try:
            requant = solve_layer(cfg, kk, bb, report.lo, report.hi, rounding=rounding)
        except InfeasibleError as error:
            raise QuantizeError(f"layer {block.name}: {error}") from None
        cfg = replace(cfg, m_bits=max(2, requant.m_bits), b_bits=max(1, requant.b_bits),
                      s_max=requant.s_needed)
        layers.append(QuantizedLayer(
            cfg=cfg, weights=q, M=np.asarray(requant.M, dtype=np.int64),
            B=np.asarray(requant.B, dtype=np.int64), S=np.asarray(requant.S, dtype=np.int64),
            s_x=s_x, s_w=s_w, s_y=s_y, acc_lo=list(report.lo), acc_hi=list(report.hi),
            min_acc_bits=report.min_acc_bits, datatype_bits=report.datatype_bits,
            l1_bits=report.l1_bits))
        s_x, prev_signed = s_y, out_signed
    return QuantizedNetwork(tuple(layers), strategy, acc_bits, a_bits, w_bits, rounding)


def _candidates(acc_bits, max_bits=8):
    """(a_bits, w_bits) pairs, widest first: by a_bits + w_bits, then by the narrower one."""
    pairs = [(a, w) for a in range(2, max_bits + 1) for w in range(2, max_bits + 1)
             if a + w <= acc_bits]
    return sorted(pairs, key=lambda p: (p[0] + p[1], min(p), p[1]), reverse=True)


def choose_widths(network, calibration_x, *, acc_bits, strategy, rounding="half_up",
                  max_bits=8, macs=16):
    """The widest ``(a_bits, w_bits)`` (each at most ``max_bits``) that quantize ``network`` at
    ``acc_bits`` under ``strategy``; returns ``(a_bits, w_bits, quantized)``."""
    reasons = []
    for a_bits, w_bits in _candidates(acc_bits, max_bits):
        try:
            return a_bits, w_bits, quantize_network(
                network, calibration_x, acc_bits=acc_bits, a_bits=a_bits, w_bits=w_bits,
                strategy=strategy, rounding=rounding, macs=macs)
        except QuantizeError as error:
            reasons.append(str(error))
    raise QuantizeError(f"no operand widths of 2..{max_bits} bits fit acc_bits = {acc_bits} "
                        f"under strategy {strategy!r}" +
                        (f" (narrowest tried: {reasons[-1]})" if reasons else ""))


def save_quantized(qnet, out_dir):
    """Write one config, weights and requantization file per layer, and ``network.json``.

    ``network.json`` lists the layers in order with their files and every scale (``s_x``,
    per-channel ``s_w``, ``s_y``): real value = scale × integer. Returns its path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entries = []
    for layer in qnet.layers:
        name = layer.cfg.name
        files = {"config": f"{name}.toml", "weights": f"{name}_weights.npy",
                 "requant": f"{name}_requant.npz"}
        (out / files["config"]).write_text(layer.cfg.to_toml())
        with open(out / files["weights"], "wb") as file:
            np.save(file, layer.weights)
        with open(out / files["requant"], "wb") as file:
            np.savez(file, M=layer.M, B=layer.B, S=layer.S)
        entries.append({"name": name, **files, "s_x": layer.s_x,
                        "s_w": [float(v) for v in layer.s_w], "s_y": layer.s_y,
                        "acc_range": [int(min(layer.acc_lo)), int(max(layer.acc_hi))],
                        "min_acc_bits": layer.min_acc_bits})
    document = {"format": "qmac-quantized-network", "version": 1, "strategy": qnet.strategy,
                "acc_bits": qnet.acc_bits, "a_bits": qnet.a_bits, "w_bits": qnet.w_bits,
                "rounding": qnet.rounding, "layers": entries}
    path = out / "network.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def reachable_check(layer):
    """The exact reachable range of a quantized layer, recomputed (for tests)."""
    return reachable_range(layer.weights, layer.cfg.x_min, layer.cfg.x_max)
