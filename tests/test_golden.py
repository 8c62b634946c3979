"""The golden model against a plain Python-integer loop written straight from the contract in
docs/arithmetic.md."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from qmac.hw.config import LayerConfig
from qmac.accumulator import analyze, extreme_inputs, reachable_range
from qmac.sim import golden


def reference_mac(cfg, x, w):
    """One dot product at a time, one beat at a time, Python ints only."""
    lo, hi = -(1 << (cfg.acc_bits - 1)), (1 << (cfg.acc_bits - 1)) - 1
    accs, flags = [], []
    for vector in x:
        acc_row, flag_row = [], []
        for weights in w:
            acc, flag = 0, False
            for beat in range(cfg.in_features // cfg.cols):
                beat_sum = sum(int(vector[i]) * int(weights[i])
                               for i in range(beat * cfg.cols, (beat + 1) * cfg.cols))
                exact = beat_sum if beat == 0 else acc + beat_sum
                if cfg.overflow == "wrap":
                    acc = (exact - lo) % (1 << cfg.acc_bits) + lo
                else:
                    acc = min(max(exact, lo), hi)
                flag = flag or acc != exact
            acc_row.append(acc)
            flag_row.append(flag)
        accs.append(acc_row)
        flags.append(flag_row)
    return accs, flags


def reference_requant(cfg, acc, M, B, S):
    out = []
    for row in acc:
        out.append([min(max((int(a) * int(m) + int(b)) >> int(s), cfg.y_min), cfg.y_max)
                    for a, m, b, s in zip(row, M, B, S)])
    return out


@st.composite
def layers(draw):
    cols = draw(st.integers(1, 4))
    rows = draw(st.integers(1, 3))
    beats = draw(st.integers(1, 4))
    a_bits = draw(st.integers(1, 12))
    w_bits = draw(st.integers(2, 12))
    a_signed = draw(st.booleans())
    acc_bits = draw(st.integers(a_bits + w_bits, a_bits + w_bits + 4) | st.integers(28, 64))
    m_bits = draw(st.integers(2, 40))
    cfg = LayerConfig(in_features=cols * beats, out_features=rows * draw(st.integers(1, 3)),
                      rows=rows, cols=cols, a_bits=a_bits, a_signed=a_signed, w_bits=w_bits,
                      acc_bits=acc_bits, overflow=draw(st.sampled_from(["wrap", "saturate"])),
                      m_bits=m_bits, b_bits=draw(st.integers(1, 64)),
                      s_max=draw(st.integers(0, 80)), out_bits=draw(st.integers(2, 16)),
                      out_signed=draw(st.booleans()), relu=draw(st.booleans()))
    batch = draw(st.integers(1, 4))
    ints = lambda lo, hi, n: draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n))
    x = np.array(ints(cfg.x_min, cfg.x_max, batch * cfg.K), dtype=object).reshape(batch, cfg.K)
    w = np.array(ints(cfg.w_min, cfg.w_max, cfg.N * cfg.K), dtype=object).reshape(cfg.N, cfg.K)
    M = ints(cfg.m_min, cfg.m_max, cfg.N)
    B = ints(cfg.b_min, cfg.b_max, cfg.N)
    S = ints(0, cfg.s_max, cfg.N)
    return cfg, x, w, M, B, S


@settings(max_examples=300, deadline=None, derandomize=True)
@given(layers())
def test_golden_matches_python_int_loop(case):
    cfg, x, w, M, B, S = case
    acc, flags = golden.mac(cfg, x, w)
    want_acc, want_flags = reference_mac(cfg, x, w)
    assert acc.tolist() == want_acc
    assert flags.tolist() == want_flags
    y = golden.requantize(cfg, acc, M, B, S)
    assert y.tolist() == reference_requant(cfg, want_acc, M, B, S)


@pytest.mark.parametrize("overflow", ["wrap", "saturate"])
def test_overflow_flag_set_exactly_when_a_value_changed(overflow):
    cfg = LayerConfig(in_features=4, out_features=1, cols=1, a_bits=4, w_bits=4, acc_bits=8,
                      overflow=overflow)
    # 15·7 = 105 per beat: 105, 210 -> overflow on beat 2; then -8·15 = -120 ...
    x = np.array([[15, 15, 15, 15], [15, 0, 0, 0], [8, 8, 0, 0]])
    w = np.array([[7, 7, -8, -8]])
    acc, flags = golden.mac(cfg, x, w)
    if overflow == "wrap":
        # 105, 210 -> -46, -46 - 120 = -166 -> 90, 90 - 120 = -30: true sum -30 fits.
        assert acc[:, 0].tolist() == [-30, 105, 112]
        assert flags[:, 0].tolist() == [True, False, False]
    else:
        # 105, 127 (clamped), 127 - 120 = 7, 7 - 120 = -113.
        assert acc[:, 0].tolist() == [-113, 105, 112]
        assert flags[:, 0].tolist() == [True, False, False]


def test_flag_clears_at_next_dot_product():
    cfg = LayerConfig(in_features=2, out_features=1, a_bits=4, w_bits=4, acc_bits=8,
                      overflow="saturate")
    x = np.array([[15, 15], [1, 1]])
    acc, flags = golden.mac(cfg, x, np.array([[7, 7]]))
    assert flags[:, 0].tolist() == [True, False]
    assert acc[:, 0].tolist() == [127, 14]


def test_first_beat_can_overflow():
    cfg = LayerConfig(in_features=4, out_features=1, cols=4, a_bits=4, w_bits=4, acc_bits=8)
    acc, flags = golden.mac(cfg, np.array([[15, 15, 15, 15]]), np.array([[7, 7, 7, 7]]))
    assert flags[0, 0] and acc[0, 0] == 420 - 512


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.data())
def test_extreme_inputs_reach_the_exact_range(data):
    K = data.draw(st.integers(1, 24))
    N = data.draw(st.integers(1, 6))
    a_bits = data.draw(st.integers(1, 10))
    w_bits = data.draw(st.integers(2, 10))
    a_signed = data.draw(st.booleans())
    cfg = LayerConfig(in_features=K, out_features=N, a_bits=a_bits, a_signed=a_signed,
                      w_bits=w_bits, acc_bits=64)
    w = np.array(data.draw(st.lists(st.integers(cfg.w_min, cfg.w_max), min_size=N * K,
                                    max_size=N * K))).reshape(N, K)
    lo, hi = reachable_range(w, cfg.x_min, cfg.x_max)
    x_hi, x_lo = extreme_inputs(w, cfg.x_min, cfg.x_max)
    acc_hi, _ = golden.mac(cfg, x_hi, w)
    acc_lo, _ = golden.mac(cfg, x_lo, w)
    assert [acc_hi[c, c] for c in range(N)] == hi
    assert [acc_lo[c, c] for c in range(N)] == lo
    # No input vector exceeds the range: random vectors stay inside.
    x = np.array(data.draw(st.lists(st.integers(cfg.x_min, cfg.x_max), min_size=8 * K,
                                    max_size=8 * K))).reshape(8, K)
    acc, _ = golden.mac(cfg, x, w)
    assert all(lo[c] <= acc[b, c] <= hi[c] for b in range(8) for c in range(N))
    report = analyze(cfg, w)
    assert report.datatype_bits >= report.min_acc_bits
    assert report.l1_bits >= report.min_acc_bits


def test_wide_widths_stay_exact():
    cfg = LayerConfig(in_features=2, out_features=1, a_bits=32, a_signed=True, w_bits=32,
                      acc_bits=64, m_bits=64, b_bits=64, s_max=100, out_bits=64,
                      out_signed=True)
    x = np.array([[-2**31, -2**31]])
    w = np.array([[-2**31, -2**31]])
    acc, flags = golden.mac(cfg, x, w)
    assert acc[0, 0] == 2**63 - 2**64 and flags[0, 0]  # 2^63 wraps to -2^63
    y = golden.requantize(cfg, np.array([[2**63 - 1]], dtype=object), [2**63 - 1], [-2**63],
                          [1])
    assert y[0, 0] == min(((2**63 - 1) ** 2 - 2**63) >> 1, 2**63 - 1)


@pytest.mark.parametrize("bad, message", [
    (dict(x=[[256, 0]]), r"inputs\[0, 0\] = 256 does not fit \[0, 255\]"),
    (dict(w=[[0, -129]]), r"weights\[0, 1\] = -129 does not fit \[-128, 127\]"),
    (dict(M=[1 << 15]), r"M\[0\] = 32768 does not fit"),
    (dict(S=[32]), r"S\[0\] = 32 does not fit \[0, 31\]"),
    (dict(x=[[0.5, 1]]), "inputs must hold integers"),
])
def test_bad_values_are_named(bad, message):
    cfg = LayerConfig(in_features=2, out_features=1)
    args = dict(x=[[1, 2]], w=[[3, 4]], M=[1], B=[0], S=[0]) | bad
    with pytest.raises(golden.RangeError, match=message):
        golden.layer(cfg, args["x"], args["w"], args["M"], args["B"], args["S"])


def test_shared_shift_must_be_shared():
    cfg = LayerConfig(in_features=2, out_features=2, shared_shift=True)
    with pytest.raises(golden.RangeError, match=r"S\[1\] = 3 differs from S\[0\] = 2"):
        golden.requantize(cfg, [[0, 0]], [1, 1], [0, 0], [2, 3])
