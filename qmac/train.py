"""Train the bundled example network on the digits, optionally with gradient-L1 regularization.

Needs PyTorch (``pip install -e ".[train]"``); nothing else in qmac does. ::

    python -m qmac.train -o mlp.json                      # plain training
    python -m qmac.train -o mlp_gl1.json --grad-l1 0.05   # with the gradient-L1 term

The network is ``64 → 64 → 32 → 10``: ``Linear, BatchNorm1d, ReLU`` twice, then ``Linear``.
Inputs are ``pixels / 16``. Training is reproducible from ``--seed``: one thread, deterministic
algorithms, a seeded generator for the initial weights and the batch order.

Gradient-L1 regularization (Alizadeh et al., ICLR 2020): quantizing a weight tensor moves it by at
most half a step per element, an l∞-bounded perturbation Δ, and to first order the loss then
changes by ``<∇_W L, Δ> <= δ·||∇_W L||_1``. Penalizing ``λ · Σ_layers ||∇_W L||_1`` keeps that
first-order term small for every step size at once, so one weight set tolerates several bit
widths. The gradient is computed with ``create_graph=True`` and the penalty is backpropagated
through it (double backpropagation), about twice the cost of a plain step.
"""

from __future__ import annotations

import argparse
import sys
import time


__all__ = ["make_model", "train", "main"]


def make_model(torch, hidden=(64, 32), features=64, classes=10):
    """The example network as an ``nn.Sequential``."""
    nn = torch.nn
    layers, width = [], features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def train(train_x, train_y, *, seed=0, epochs=60, batch=64, lr=3e-3, grad_l1=0.0,
          hidden=(64, 32), log=None):
    """Train the example network on integer images (0..16) and labels; return the model.

    ``grad_l1`` is the weight λ of the gradient-L1 term (0 turns it off).
    """
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    generator = torch.Generator().manual_seed(seed)
    x = torch.tensor(train_x, dtype=torch.float32) / 16.0
    y = torch.tensor(train_y, dtype=torch.long)
    model = make_model(torch, hidden=hidden, features=x.shape[1])
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    weights = [m.weight for m in model if isinstance(m, torch.nn.Linear)]
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total, penalty_total = 0.0, 0.0
        for start in range(0, len(x), batch):
            index = order[start:start + batch]
            if len(index) < 2:      # batch norm needs two samples
                continue
            loss = loss_fn(model(x[index]), y[index])
            objective = loss
            if grad_l1:
                grads = torch.autograd.grad(loss, weights, create_graph=True)
                penalty = sum(g.abs().sum() for g in grads)
                objective = loss + grad_l1 * penalty
                penalty_total += float(penalty.detach()) * len(index)
            optimizer.zero_grad()
            objective.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        schedule.step()
        if log is not None and (epoch + 1) % 10 == 0:
            extra = f", grad-L1 {penalty_total / len(x):.4f}" if grad_l1 else ""
            log(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}{extra}")
    model.eval()
    return model


def accuracy(model, test_x, test_y):
    """Float accuracy of a trained model on integer images."""
    import torch
    with torch.no_grad():
        logits = model(torch.tensor(test_x, dtype=torch.float32) / 16.0)
    return float((logits.argmax(1).numpy() == test_y).mean())


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m qmac.train", description=__doc__.split(
        "\n\n")[0])
    parser.add_argument("-o", "--output", required=True, metavar="NET.json",
                        help="the network description to write (arrays go beside it as .npz)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights and the batch order (default 0)")
    parser.add_argument("--epochs", type=int, default=60, help="epochs (default 60)")
    parser.add_argument("--grad-l1", type=float, default=0.0, metavar="LAMBDA",
                        help="weight of the gradient-L1 term (default 0: off)")
    args = parser.parse_args(argv)
    import math
    for flag, bad in (("--seed", args.seed < 0), ("--epochs", args.epochs < 1),
                      ("--grad-l1", not (args.grad_l1 >= 0 and math.isfinite(args.grad_l1)))):
        if bad:
            value = getattr(args, flag[2:].replace("-", "_"))
            parser.error(f"{flag} must be {'>= 1' if flag == '--epochs' else '>= 0'}, not "
                         f"{value}")
    if not args.output.endswith(".json"):
        parser.error(f"-o must name a .json file, not {args.output!r}")
    try:
        import torch  # noqa: F401
    except ImportError:
        parser.exit(2, f"{parser.prog}: error: PyTorch is not installed "
                       f"(pip install -e \".[train]\")\n")
    from .digits import INPUT_MAX, INPUT_MIN, INPUT_SCALE, load_digits
    from .network import from_torch, save_network
    data = load_digits()
    started = time.perf_counter()
    model = train(data.train_x, data.train_y, seed=args.seed, epochs=args.epochs,
                  grad_l1=args.grad_l1, log=lambda text: print(text, file=sys.stderr))
    network = from_torch(model, input_scale=INPUT_SCALE, input_min=INPUT_MIN,
                         input_max=INPUT_MAX)
    written = save_network(network, args.output)
    print(f"trained in {time.perf_counter() - started:.1f} s; test accuracy (float32 PyTorch) "
          f"{accuracy(model, data.test_x, data.test_y):.4f}; wrote "
          f"{', '.join(map(str, written))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
