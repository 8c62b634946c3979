"""Folding a float layer with batch norm, and its chosen scales, into the solver's ``k``, ``b``.

A float layer ``y = BN(W·x + bias)`` whose input is quantized with scale ``s_x``, whose weights are
quantized per output channel with scale ``s_w[c]`` and whose output is quantized with scale ``s_y``
computes, on the integer accumulator ``acc = Σ q·x_int``, the real value ``k[c]·acc + b[c]`` in
output units (``docs/arithmetic.md``, "What the solver guarantees"):

    σ = sqrt(var + eps)
    k = γ·s_x·s_w / (σ·s_y)
    b = (γ·(bias - μ)/σ + β) / s_y

:func:`fold_bn` evaluates exactly these float64 expressions, in the written order, so the result is
reproducible bit for bit; :mod:`qmac.solver` then treats ``k`` and ``b`` as exact rationals.
:func:`quantize_weights` is the symmetric, narrow-range, per-channel weight quantizer, and
:func:`fold_layer` does both.

Every bad input (NaN or infinity, ``var + eps <= 0``, a non-positive scale, a shape that does not
match the number of channels) is a :class:`ValueError` naming the parameter, the channel index and
the value, e.g. ``"var[3] + eps = -0.5 must be positive"``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


__all__ = ["FoldedLayer", "quantize_weights", "fold_bn", "fold_layer"]


def _real_array(name, values):
    array = np.asarray(values)
    if array.dtype.kind not in "iuf" or array.dtype.kind == "b":
        raise ValueError(f"{name} must hold real numbers, not {array.dtype} values")
    return array.astype(np.float64)


def _index_text(index):
    return ", ".join(str(int(i)) for i in index)


def _check_finite(name, array):
    bad = ~np.isfinite(array)
    if np.any(bad):
        index = tuple(np.argwhere(bad)[0])
        value = float(array[index])
        raise ValueError(f"{name}[{_index_text(index)}] = {value!r} must be finite")


def _channel_vector(name, values, channels, like):
    array = _real_array(name, values)
    if array.shape != (channels,):
        raise ValueError(f"{name} must have shape ({channels},), one value per output channel "
                         f"like {like}, not {tuple(array.shape)}")
    _check_finite(name, array)
    return array


def _positive_scalar(name, value):
    array = _real_array(name, value)
    if array.shape != ():
        raise ValueError(f"{name} must be a scalar, not an array of shape {tuple(array.shape)}")
    value = float(array)
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} = {value!r} must be positive and finite")
    return value


def quantize_weights(W, w_bits):
    """Quantize float weights symmetrically, per output channel, to ``w_bits`` signed integers.

    ``s_w[c] = max|W[c, :]| / (2^(w_bits-1) - 1)`` and
    ``q = clip(round_half_even(W / s_w), -(2^(w_bits-1) - 1), 2^(w_bits-1) - 1)``: narrow range,
    so ``-2^(w_bits-1)`` is never used and the range is symmetric. A channel whose weights are
    all zero gets ``s_w = 1`` and ``q = 0`` (any scale represents it exactly; 1 keeps ``k``
    finite and harmless).

    Parameters
    ----------
    W : array_like of float, shape (out_features, in_features)
    w_bits : int
        At least 2.

    Returns
    -------
    q : ndarray of int64, shape (out_features, in_features)
    s_w : ndarray of float64, shape (out_features,)

    Raises
    ------
    ValueError
        ``W`` not 2-D or holding NaN/infinity (naming the element), ``w_bits < 2``, or a channel
        whose largest weight is so small (subnormal) that its scale underflows to 0.
    """
    if isinstance(w_bits, (bool, np.bool_)) or not isinstance(w_bits, (int, np.integer)) \
            or w_bits < 2 or w_bits > 64:
        raise ValueError(f"w_bits must be an integer between 2 and 64, not {w_bits!r}")
    W = _real_array("W", W)
    if W.ndim != 2:
        raise ValueError(f"W must have shape (out_features, in_features), "
                         f"not {tuple(W.shape)}")
    _check_finite("W", W)
    q_max = (1 << (int(w_bits) - 1)) - 1
    peak = np.max(np.abs(W), axis=1) if W.shape[1] else np.zeros(W.shape[0])
    s_w = np.where(peak > 0, peak / q_max, 1.0)
    underflow = (peak > 0) & (s_w == 0)
    if np.any(underflow):
        c = int(np.argmax(underflow))
        raise ValueError(f"W[{c}, :] has max |W| = {float(peak[c])!r}, too small for a "
                         f"float64 scale at w_bits = {w_bits}")
    rounded = np.round(W / s_w[:, None])
    if w_bits <= 53:
        # q_max is exact in float64: clip there.
        q = np.clip(rounded, -q_max, q_max).astype(np.int64)
    else:
        # q_max is not a float64 (it rounds up to 2^(w_bits-1)): clip exact integers.
        q = np.array([[min(max(int(v), -q_max), q_max) for v in row] for row in rounded],
                     dtype=np.int64).reshape(rounded.shape)
    return q, s_w


def fold_bn(*, gamma, beta, mu, var, eps, s_x, s_w, s_y, bias=None):
    """Fold batch norm and the scales into float64 ``k[c]``, ``b[c]``.

    ``σ = sqrt(var + eps)``; ``k = ((γ·s_x)·s_w) / (σ·s_y)``;
    ``b = ((γ·(bias - μ)) / σ + β) / s_y``; all float64, evaluated in this order.

    Parameters
    ----------
    gamma, beta, mu, var : array_like of float, shape (C,)
        Batch-norm scale, shift, running mean and running variance.
    eps : float
        Batch-norm epsilon.
    s_x : float
        Input (activation) scale, positive.
    s_w : array_like of float, shape (C,)
        Per-channel weight scales, positive (see :func:`quantize_weights`).
    s_y : float
        Output scale, positive.
    bias : array_like of float, shape (C,), optional
        The layer's own bias before batch norm; zero if omitted.

    Returns
    -------
    k, b : ndarray of float64, shape (C,)

    Raises
    ------
    ValueError
        NaN or infinity anywhere, ``var[c] + eps <= 0``, a scale that is not positive, a shape
        mismatch, or a ``k``/``b`` that overflows float64; naming the parameter, channel and
        value.
    """
    gamma = _real_array("gamma", gamma)
    if gamma.ndim != 1:
        raise ValueError(f"gamma must have shape (C,), one value per output channel, "
                         f"not {tuple(gamma.shape)}")
    _check_finite("gamma", gamma)
    channels = gamma.shape[0]
    beta = _channel_vector("beta", beta, channels, "gamma")
    mu = _channel_vector("mu", mu, channels, "gamma")
    var = _channel_vector("var", var, channels, "gamma")
    s_w = _channel_vector("s_w", s_w, channels, "gamma")
    bias = np.zeros(channels) if bias is None else _channel_vector("bias", bias, channels,
                                                                   "gamma")
    eps_array = _real_array("eps", eps)
    if eps_array.shape != ():
        raise ValueError(f"eps must be a scalar, not an array of shape {tuple(eps_array.shape)}")
    eps = float(eps_array)
    if not np.isfinite(eps):
        raise ValueError(f"eps = {eps!r} must be finite")
    s_x = _positive_scalar("s_x", s_x)
    s_y = _positive_scalar("s_y", s_y)
    bad = s_w <= 0
    if np.any(bad):
        c = int(np.argmax(bad))
        raise ValueError(f"s_w[{c}] = {float(s_w[c])!r} must be positive")

    variance = var + eps
    bad = ~(variance > 0)
    if np.any(bad):
        c = int(np.argmax(bad))
        raise ValueError(f"var[{c}] + eps = {float(variance[c])!r} must be positive")
    with np.errstate(over="ignore", invalid="ignore", under="ignore"):
        sigma = np.sqrt(variance)
        k = ((gamma * s_x) * s_w) / (sigma * s_y)
        b = ((gamma * (bias - mu)) / sigma + beta) / s_y
    for name, array in (("k", k), ("b", b)):
        bad = ~np.isfinite(array)
        if np.any(bad):
            c = int(np.argmax(bad))
            raise ValueError(f"{name}[{c}] = {float(array[c])!r}: the folded value of "
                             f"channel {c} overflows float64")
    return k, b


@dataclass(frozen=True)
class FoldedLayer:
    """A float layer with batch norm, quantized and folded for :func:`qmac.solver.solve`.

    Attributes
    ----------
    q : ndarray of int64, shape (out_features, in_features)
        Integer weights.
    s_w : ndarray of float64, shape (out_features,)
        Their per-channel scales.
    k, b : ndarray of float64, shape (out_features,)
        The affine map of the accumulator, in output units.
    """

    q: np.ndarray
    s_w: np.ndarray
    k: np.ndarray
    b: np.ndarray


def fold_layer(W, bias, gamma, beta, mu, var, eps, *, s_x, s_y, w_bits):
    """Quantize the weights of ``BN(W·x + bias)`` per channel and fold everything into ``k``, ``b``.

    ``bias`` may be ``None``. See :func:`quantize_weights` and :func:`fold_bn`.
    """
    q, s_w = quantize_weights(W, w_bits)
    channels = q.shape[0]
    gamma_array = _real_array("gamma", gamma)
    if gamma_array.shape != (channels,):
        raise ValueError(f"gamma must have shape ({channels},), one value per row of W, "
                         f"not {tuple(gamma_array.shape)}")
    k, b = fold_bn(gamma=gamma, beta=beta, mu=mu, var=var, eps=eps, s_x=s_x, s_w=s_w, s_y=s_y,
                   bias=bias)
    return FoldedLayer(q=q, s_w=s_w, k=k, b=b)
