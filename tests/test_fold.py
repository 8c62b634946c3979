"""Tests of BN folding and the per-channel weight quantizer."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qmac.fold import fold_bn, fold_layer, quantize_weights


FAST = settings(max_examples=60, deadline=None, derandomize=True, database=None)


# -- quantize_weights -------------------------------------------------------------------------

def test_quantize_hand_values():
    # Row 0: max |W| = 127, so s_w = 1 and ties round to even; row 1 is all zero.
    W = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -126.5], [0.0] * 6])
    q, s_w = quantize_weights(W, 8)
    assert s_w.tolist() == [1.0, 1.0]
    assert q.tolist() == [[127, 0, 2, 2, 0, -126], [0] * 6]
    assert q.dtype == np.int64


def test_quantize_narrow_range():
    W = np.array([[-3.0, 1.0, 2.0], [0.25, -0.25, 0.0]])
    q, s_w = quantize_weights(W, 2)
    assert q.tolist() == [[-1, 0, 1], [1, -1, 0]]            # never -2: narrow range
    assert s_w.tolist() == [3.0, 0.25]


@FAST
@given(st.integers(2, 16), st.integers(1, 6), st.integers(1, 40), st.integers(0, 2 ** 32 - 1))
def test_quantize_random(w_bits, rows, cols, seed):
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(rows, cols)) * 10.0 ** rng.uniform(-6, 3, size=(rows, 1))
    W[rng.random(size=W.shape) < 0.1] = 0.0
    q, s_w = quantize_weights(W, w_bits)
    q_max = 2 ** (w_bits - 1) - 1
    assert np.all(np.abs(q) <= q_max)
    for c in range(rows):
        peak = np.max(np.abs(W[c]))
        if peak == 0:
            assert s_w[c] == 1.0 and np.all(q[c] == 0)
            continue
        assert s_w[c] == peak / q_max
        # The largest weight maps to ±q_max; every weight is within half a step.
        j = int(np.argmax(np.abs(W[c])))
        assert q[c, j] == math.copysign(q_max, W[c, j])
        assert np.all(np.abs(W[c] - q[c] * s_w[c]) <= 0.5 * s_w[c] * (1 + 1e-12))


@pytest.mark.parametrize("W, w_bits, message", [
    ([[1.0, float("nan")], [0.0, 1.0]], 8, r"W\[0, 1\] = nan must be finite"),
    ([[1.0, 2.0], [float("-inf"), 1.0]], 8, r"W\[1, 0\] = -inf must be finite"),
    ([1.0, 2.0], 8, r"W must have shape \(out_features, in_features\), not \(2,\)"),
    ([[1.0]], 1, r"w_bits must be an integer between 2 and 64, not 1"),
    ([[1.0]], 8.0, r"w_bits must be an integer"),
])
def test_quantize_bad_input(W, w_bits, message):
    with pytest.raises(ValueError, match=message):
        quantize_weights(W, w_bits)


# -- fold_bn ----------------------------------------------------------------------------------

def test_fold_hand_values():
    # sigma = sqrt(3 + 1) = 2; k = 2·0.5·0.25 / (2·0.125) = 1; b = (2·(3 - 1)/2 + 0.5)/0.125 = 20.
    k, b = fold_bn(gamma=[2.0], beta=[0.5], mu=[1.0], var=[3.0], eps=1.0, s_x=0.5, s_w=[0.25],
                   s_y=0.125, bias=[3.0])
    assert k.tolist() == [1.0] and b.tolist() == [20.0]
    k, b = fold_bn(gamma=[-2.0, 0.0], beta=[0.5, 7.0], mu=[1.0, 1.0], var=[3.0, 3.0], eps=1.0,
                   s_x=0.5, s_w=[0.25, 0.25], s_y=0.125)
    assert k.tolist() == [-1.0, 0.0] and b.tolist() == [(1.0 + 0.5) / 0.125, 56.0]


@FAST
@given(st.integers(1, 8), st.integers(0, 2 ** 32 - 1))
def test_fold_is_the_documented_float64_expression(channels, seed):
    rng = np.random.default_rng(seed)
    gamma, beta, mu, bias = (rng.normal(size=channels) for _ in range(4))
    var = rng.uniform(0, 4, size=channels)
    eps, s_x, s_y = 1e-5, rng.uniform(1e-3, 1), rng.uniform(1e-3, 1)
    s_w = rng.uniform(1e-4, 1, size=channels)
    k, b = fold_bn(gamma=gamma, beta=beta, mu=mu, var=var, eps=eps, s_x=s_x, s_w=s_w, s_y=s_y,
                   bias=bias)
    for c in range(channels):
        sigma = math.sqrt(float(var[c]) + eps)
        assert k[c] == (float(gamma[c]) * s_x * float(s_w[c])) / (sigma * s_y)
        assert b[c] == (float(gamma[c]) * (float(bias[c]) - float(mu[c])) / sigma
                        + float(beta[c])) / s_y


@FAST
@given(st.integers(0, 2 ** 32 - 1))
def test_folded_layer_computes_the_float_layer(seed):
    """``k·acc + b`` equals ``BN(W_q·x + bias) / s_y`` for the quantized weights and inputs."""
    rng = np.random.default_rng(seed)
    out_features, in_features = 6, 20
    W = rng.normal(size=(out_features, in_features))
    bias, gamma, beta, mu = (rng.normal(size=out_features) for _ in range(4))
    gamma[0] = -abs(gamma[0])
    var = rng.uniform(0.1, 3, size=out_features)
    eps, s_x, s_y = 1e-3, 1 / 255, 0.05
    layer = fold_layer(W, bias, gamma, beta, mu, var, eps, s_x=s_x, s_y=s_y, w_bits=8)
    x_int = rng.integers(0, 256, size=(10, in_features))
    acc = x_int @ layer.q.T                                   # exact integers
    W_q = layer.q * layer.s_w[:, None]                         # dequantized weights
    z = (x_int * s_x) @ W_q.T + bias
    y = (gamma * (z - mu) / np.sqrt(var + eps) + beta) / s_y
    np.testing.assert_allclose(layer.k * acc + layer.b, y, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("change, message", [
    (dict(var=[1.0, 1.0, 1.0, -1.5], eps=1.0), r"var\[3\] \+ eps = -0.5 must be positive"),
    (dict(var=[1.0, 0.0, 1.0, 1.0], eps=0.0), r"var\[1\] \+ eps = 0.0 must be positive"),
    (dict(gamma=[1.0, float("nan"), 1.0, 1.0]), r"gamma\[1\] = nan must be finite"),
    (dict(beta=[1.0, 1.0, float("inf"), 1.0]), r"beta\[2\] = inf must be finite"),
    (dict(mu=[float("nan")] * 4), r"mu\[0\] = nan must be finite"),
    (dict(bias=[0.0, 0.0, 0.0, float("-inf")]), r"bias\[3\] = -inf must be finite"),
    (dict(s_w=[0.1, 0.1, 0.0, 0.1]), r"s_w\[2\] = 0.0 must be positive"),
    (dict(s_w=[0.1, -0.1, 0.1, 0.1]), r"s_w\[1\] = -0.1 must be positive"),
    (dict(s_w=[0.1, 0.1, 0.1, float("nan")]), r"s_w\[3\] = nan must be finite"),
    (dict(s_x=0.0), r"s_x = 0.0 must be positive"),
    (dict(s_y=float("inf")), r"s_y = inf must be positive and finite"),
    (dict(s_y=-2.0), r"s_y = -2.0 must be positive"),
    (dict(eps=float("nan")), r"eps = nan must be finite"),
    (dict(beta=[1.0, 2.0]), r"beta must have shape \(4,\).*not \(2,\)"),
    (dict(s_w=[[0.1] * 4]), r"s_w must have shape \(4,\).*not \(1, 4\)"),
    (dict(gamma=[[1.0] * 4]), r"gamma must have shape \(C,\)"),
    (dict(s_x=[0.1, 0.2]), r"s_x must be a scalar"),
    (dict(gamma=[1e300] * 4, s_x=1e300), r"k\[0\] = inf: the folded value of channel 0 "
                                         r"overflows float64"),
])
def test_fold_bad_input(change, message):
    args = dict(gamma=[1.0] * 4, beta=[0.0] * 4, mu=[0.0] * 4, var=[1.0] * 4, eps=1e-5,
                s_x=0.1, s_w=[0.1] * 4, s_y=0.5, bias=[0.0] * 4)
    args.update(change)
    with pytest.raises(ValueError, match=message):
        fold_bn(**args)


def test_fold_layer_shape_mismatch():
    W = np.ones((3, 4))
    with pytest.raises(ValueError, match=r"gamma must have shape \(3,\)"):
        fold_layer(W, None, [1.0] * 2, [0.0] * 2, [0.0] * 2, [1.0] * 2, 1e-5, s_x=0.1, s_y=0.1,
                   w_bits=8)
    with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
        fold_layer(W, [0.0] * 4, [1.0] * 3, [0.0] * 3, [0.0] * 3, [1.0] * 3, 1e-5, s_x=0.1,
                   s_y=0.1, w_bits=8)


def test_fold_layer_zero_channel():
    W = np.array([[0.0, 0.0], [1.0, -2.0]])
    layer = fold_layer(W, None, [1.0, 1.0], [0.5, 0.0], [0.0, 0.0], [1.0, 1.0], 0.0, s_x=1.0,
                       s_y=1.0, w_bits=8)
    assert layer.q.tolist() == [[0, 0], [64, -127]]
    assert layer.s_w[0] == 1.0 and layer.k[0] == 1.0 and layer.b[0] == 0.5


@pytest.mark.parametrize("w_bits", [53, 54, 55, 63, 64])
def test_quantize_wide_weights_stay_in_range(w_bits):
    """At widths where 2^(w_bits-1) - 1 is not a float64, the largest weight must still map to
    exactly ±(2^(w_bits-1) - 1), never to ±2^(w_bits-1) (nor wrap in int64)."""
    q_max = (1 << (w_bits - 1)) - 1
    q, _ = quantize_weights([[1.0, -1.0, 0.5, 0.0], [-3.0, 3.0, -1.5, 1e-300]], w_bits)
    assert q.dtype == np.int64
    assert all(-q_max <= int(v) <= q_max for v in q.ravel())
    # Within float64 resolution of ±q_max (exactly ±q_max where q_max is a float64).
    slack = 2 ** max(0, w_bits - 52)
    for got, want in zip(q[:, :2].ravel(), [q_max, -q_max, -q_max, q_max]):
        assert abs(int(got) - want) <= slack and (int(got) > 0) == (want > 0)
    # The half-scale weight lands within float64 resolution of q_max / 2, with the right sign.
    assert abs(int(q[0, 2]) - q_max / 2) <= 2 ** max(0, w_bits - 53) and int(q[1, 2]) < 0
