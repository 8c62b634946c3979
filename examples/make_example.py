"""Make the example layer in this folder from real data.

Trains a 64-64(BN, ReLU)-10 MLP on scikit-learn's digits data set (8×8 images, shipped with
scikit-learn, no download) in NumPy, then turns its hidden layer into qmac's files:

- ``weights.npy``: the per-channel symmetric 8-bit weights (:func:`qmac.fold.fold_layer`);
- ``requant.npz``: exact ``M``, ``B``, ``S`` from :func:`qmac.solver.solve_layer` for the folded
  batch norm, for every accumulator value the weights can reach;
- ``inputs.npy``: 100 test images as unsigned 8-bit pixels;
- ``float_layer.npz``: the trained float layer (``W``, ``bias``, BN ``gamma``, ``beta``,
  ``mu``, ``var``, ``eps``) and its scales ``s_x``, ``s_y``: the input of ``qmac fold``, which
  reproduces ``weights.npy`` and ``requant.npz`` from it;
- ``layer.toml``: the layer configuration, with the smallest safe ``acc_bits`` and the ``m_bits``
  and ``b_bits`` the solver needed.

Run from the repository root: ``pip install -e ".[bench]" && python examples/make_example.py``.
"""

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bn_bits import float_forward, train_digits_mlp  # noqa: E402

from qmac.hw.config import LayerConfig  # noqa: E402
from qmac.accumulator import analyze, reachable_range  # noqa: E402
from qmac.fold import fold_layer  # noqa: E402
from qmac.solver import solve_layer  # noqa: E402
from qmac.sim import golden  # noqa: E402


def main():
    here = Path(__file__).resolve().parent
    p, X, labels, train, test = train_digits_mlp(seed=0)
    s_x = 1 / 255
    s_y = float(float_forward(p, X[train]).max()) / 255
    layer = fold_layer(p["W1"], p["b1"], p["gamma"], p["beta"], p["mu"], p["var"], p["eps"],
                       s_x=s_x, s_y=s_y, w_bits=8)
    draft = LayerConfig(name="digits_fc1", in_features=64, out_features=64, rows=4, cols=4,
                        a_bits=8, a_signed=False, w_bits=8, acc_bits=32, overflow="wrap",
                        m_bits=32, b_bits=48, s_max=40, out_bits=8, out_signed=False,
                        relu=True)
    report = analyze(draft, layer.q)
    acc_lo, acc_hi = reachable_range(layer.q, draft.x_min, draft.x_max)
    requant = solve_layer(draft, layer.k, layer.b, acc_lo, acc_hi)
    cfg = draft.replace(acc_bits=report.min_acc_bits, m_bits=requant.m_bits,
                        b_bits=requant.b_bits, s_max=requant.s_needed)
    x = np.clip(np.round(X[test[:100]] * 255), 0, 255).astype(np.int64)
    M, B, S = golden.check_requant(cfg, requant.M, requant.B, requant.S)
    np.save(here / "weights.npy", layer.q.astype(np.int64))
    np.savez(here / "requant.npz", M=M.astype(np.int64), B=B.astype(np.int64),
             S=S.astype(np.int64))
    np.save(here / "inputs.npy", x)
    np.savez(here / "float_layer.npz", W=p["W1"], bias=p["b1"], gamma=p["gamma"],
             beta=p["beta"], mu=p["mu"], var=p["var"], eps=p["eps"], s_x=s_x, s_y=s_y)
    (here / "layer.toml").write_text(
        "# The hidden layer of a digits MLP (see make_example.py), 4x4 MAC array.\n"
        + cfg.to_toml())
    y = golden.layer(cfg, x, layer.q, M, B, S).y
    print(f"acc_bits {cfg.acc_bits} (data-type bound {report.datatype_bits}), "
          f"m_bits {cfg.m_bits}, b_bits {cfg.b_bits}, S up to {cfg.s_max}; "
          f"{len(x)} inputs, {int((y > 0).sum())} of {y.size} outputs non-zero")


if __name__ == "__main__":
    main()
