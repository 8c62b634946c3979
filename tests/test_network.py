"""The float network format, the bundled digits example, and whole-network quantization."""

import json
import math
from importlib import resources

import numpy as np
import pytest

from qmac import cli
from qmac.digits import load_digits
from qmac.network import (BatchNorm, Linear, Network, NetworkError, ReLU, forward, load_network,
                          save_network)
from qmac.quantize import (QuantizeError, _candidates, choose_widths, quantize_network,
                           save_quantized)
from qmac.sim import golden

DATA = resources.files("qmac").joinpath("data")
CHECKPOINTS = ("digits_mlp.json", "digits_mlp_gl1.json")


def small_network(rng, sizes=(12, 8, 6, 4)):
    layers = []
    for i, (k, n) in enumerate(zip(sizes, sizes[1:])):
        layers.append(Linear(f"fc{i + 1}", rng.normal(size=(n, k)), rng.normal(size=n)))
        if i < len(sizes) - 2:
            layers.append(BatchNorm(f"bn{i + 1}", rng.uniform(0.5, 2, n), rng.normal(size=n),
                                    rng.normal(size=n), rng.uniform(0.5, 2, n), 1e-5))
            layers.append(ReLU())
    return Network(tuple(layers), 1 / 16, 0, 16)


# -- the format ---------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    network = small_network(rng)
    save_network(network, tmp_path / "net.json")
    loaded = load_network(tmp_path / "net.json")
    assert len(loaded.layers) == len(network.layers)
    x = rng.integers(0, 17, size=(20, 12)) / 16
    assert np.array_equal(forward(loaded, x), forward(network, x))
    assert (loaded.input_scale, loaded.input_min, loaded.input_max) == (1 / 16, 0, 16)


def _write(tmp_path, document, arrays):
    np.savez(tmp_path / "net.npz", **arrays)
    (tmp_path / "net.json").write_text(json.dumps(document))
    return tmp_path / "net.json"


def _valid():
    document = {"format": "qmac-network", "version": 1, "arrays": "net.npz",
                "input": {"features": 3, "scale": 0.5, "min": 0, "max": 3},
                "layers": [{"kind": "linear", "name": "fc1", "in_features": 3,
                            "out_features": 2, "bias": True},
                           {"kind": "batchnorm1d", "name": "bn1", "features": 2, "eps": 1e-5},
                           {"kind": "relu"}]}
    arrays = {"fc1.weight": np.ones((2, 3)), "fc1.bias": np.zeros(2),
              "bn1.weight": np.ones(2), "bn1.bias": np.zeros(2),
              "bn1.running_mean": np.zeros(2), "bn1.running_var": np.ones(2),
              "bn1.num_batches_tracked": np.array(7)}
    return document, arrays


def test_valid_file_loads_and_ignores_num_batches_tracked(tmp_path):
    network = load_network(_write(tmp_path, *_valid()))
    assert [type(layer) for layer in network.layers] == [Linear, BatchNorm, ReLU]
    assert network.blocks()[0].relu and network.blocks()[0].bn.name == "bn1"


def _edit(path, value):
    def apply(document, arrays):
        target = document
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


_DELETE = object()

BAD_DOCUMENTS = [
    ("format", _edit(["format"], "onnx"), "field 'format' must be 'qmac-network'"),
    ("version", _edit(["version"], 2), "field 'version' must be 1"),
    ("unknown-top", _edit(["extra"], 1), "unknown field 'extra'"),
    ("arrays-path", _edit(["arrays"], "../net.npz"), "must name a file beside"),
    ("input-scale", _edit(["input", "scale"], -1), "field 'scale' must be positive"),
    ("input-range", _edit(["input", "min"], 9), "min = 9 is above max = 3"),
    ("input-features", _edit(["input", "features"], 4), "features = 4 does not match"),
    ("kind", _edit(["layers", 0, "kind"], "lstm"), "layers[0]: unknown kind 'lstm'"),
    ("conv2d", _edit(["layers", 0, "kind"], "conv2d"), "kind 'conv2d' is not supported yet"),
    ("no-name", _edit(["layers", 0, "name"], _DELETE), "layers[0]: missing field 'name'"),
    ("bad-name", _edit(["layers", 0, "name"], "fc 1"), "field 'name' must be an identifier"),
    ("type", _edit(["layers", 0, "in_features"], "3"), "(fc1): field 'in_features' must be"),
    ("bool-int", _edit(["layers", 0, "in_features"], True), "field 'in_features' must be"),
    ("shape", _edit(["layers", 0, "in_features"], 4), "array 'fc1.weight' must have shape"),
    ("bn-features", _edit(["layers", 1, "features"], 3), "array 'bn1.weight' must have shape"),
    ("eps", _edit(["layers", 1, "eps"], -1.0), "field 'eps' must be a finite number >= 0"),
    ("unknown-field", _edit(["layers", 2, "name"], "r"), "layers[2]: unknown field 'name'"),
    ("starts-with-bn", _edit(["layers"], [{"kind": "relu"}]), "expected a linear layer"),
    ("empty", _edit(["layers"], []), "the network has no layer"),
]


@pytest.mark.parametrize("edit, message", [pytest.param(e, m, id=i) for i, e, m in BAD_DOCUMENTS])
def test_malformed_description_names_the_field(tmp_path, edit, message):
    document, arrays = _valid()
    edit(document, arrays)
    with pytest.raises(NetworkError, match=None) as error:
        load_network(_write(tmp_path, document, arrays))
    assert message in str(error.value)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("bn1.running_var"), "array 'bn1.running_var' is missing"),
    (lambda a: a.update({"fc9.weight": np.ones(2)}), "array 'fc9.weight' belongs to no layer"),
    (lambda a: a.update({"fc1.weight": np.full((2, 3), np.nan)}), "is not finite"),
    (lambda a: a.update({"fc1.weight": np.array([["a"] * 3] * 2)}), "must hold real numbers"),
    (lambda a: a.update({"bn1.running_var": -np.ones(2)}), "running_var[0] + eps"),
])
def test_bad_arrays_name_the_array(tmp_path, change, message):
    document, arrays = _valid()
    change(arrays)
    with pytest.raises(NetworkError) as error:
        load_network(_write(tmp_path, document, arrays))
    assert message in str(error.value)


@pytest.mark.parametrize("content, message", [
    (b"\x93NUMPY\x01\x00garbage\xff\xfe", "is not UTF-8 text"),
    (b"{not json", "is not valid JSON"),
    (b"[1, 2]", "the top level must be an object"),
])
def test_unreadable_description(tmp_path, content, message):
    path = tmp_path / "net.json"
    path.write_bytes(content)
    with pytest.raises(NetworkError, match=message):
        load_network(path)


def test_special_and_missing_files(tmp_path):
    with pytest.raises(NetworkError, match="is not a regular file"):
        load_network("/dev/zero")
    with pytest.raises(NetworkError, match="does not exist"):
        load_network(tmp_path / "absent.json")
    document, arrays = _valid()
    path = _write(tmp_path, document, arrays)
    (tmp_path / "net.npz").write_bytes(b"")
    with pytest.raises(NetworkError, match="is not a valid .npz file"):
        load_network(path)


def test_widths_must_chain():
    with pytest.raises(NetworkError, match="in_features = 3 does not match out_features = 2"):
        Network((Linear("a", np.ones((2, 3)), None), Linear("b", np.ones((1, 3)), None)),
                1.0, 0, 1)


# -- the bundled example ------------------------------------------------------------------------

def test_digits_split_is_fixed_and_real():
    data = load_digits()
    assert (len(data.train_y), len(data.test_y)) == (1437, 360)
    assert data.train_x.shape[1] == 64 and data.train_x.min() == 0 and data.train_x.max() == 16
    # Stratified: every class is in the test split in proportion (35 or 36 of 360 each).
    assert set(np.bincount(data.test_y)) <= {35, 36, 37}
    folds = list(data.folds(5))
    assert sum(len(f[3]) for f in folds) == 1797


@pytest.mark.parametrize("name", CHECKPOINTS)
def test_committed_checkpoints_are_accurate(name):
    network = load_network(DATA / name)
    data = load_digits()
    accuracy = (forward(network, data.test_x / 16).argmax(1) == data.test_y).mean()
    assert accuracy >= 0.97, f"{name}: float accuracy {accuracy}"
    assert [b.relu for b in network.blocks()] == [True, True, False]


# -- quantization -------------------------------------------------------------------------------

def _round_half_up(v):
    return np.floor(v + 0.5)


def reference_layer_outputs(network, qnet, x):
    """Each layer's integer output recomputed from the float network in float64 NumPy, with the
    quantized weights ``W_q·s_w``, the layer's batch norm, and round-half-up; fed with the
    golden model's integer outputs of the layer before. Returns (outputs, near-tie counts)."""
    outputs, near = [], 0
    for block, layer in zip(network.blocks(), qnet.layers):
        real_x = x * layer.s_x
        y = real_x @ (layer.weights * layer.s_w[:, None]).T
        if block.linear.bias is not None:
            y = y + block.linear.bias
        if block.bn is not None:
            bn = block.bn
            y = (y - bn.mean) / np.sqrt(bn.var + bn.eps) * bn.gamma + bn.beta
        if block.relu:
            y = np.maximum(y, 0)
        scaled = y / layer.s_y
        near += int(np.sum(np.abs(scaled - np.floor(scaled) - 0.5) < 1e-9))
        outputs.append(np.clip(_round_half_up(scaled), layer.cfg.y_min, layer.cfg.y_max))
        x = golden.layer(layer.cfg, x, layer.weights, layer.M, layer.B, layer.S).y
    return outputs, near


@pytest.mark.parametrize("strategy, acc_bits, bits", [
    ("exact", 32, 8), ("exact", 16, 4), ("databound", 18, 5), ("l1", 14, 6)])
def test_integer_network_equals_float_reference(strategy, acc_bits, bits):
    network = load_network(DATA / "digits_mlp.json")
    data = load_digits()
    qnet = quantize_network(network, data.train_x, acc_bits=acc_bits, a_bits=bits, w_bits=bits,
                            strategy=strategy)
    got = qnet.run(data.test_x)
    want, near = reference_layer_outputs(network, qnet, data.test_x)
    for layer, g, w in zip(qnet.layers, got, want):
        mismatches = int(np.sum(np.asarray(g, dtype=np.int64) != w))
        assert mismatches <= near, f"{layer.cfg.name}: {mismatches} outputs differ"
    assert near == 0
    for layer in qnet.layers:
        assert layer.min_acc_bits <= acc_bits
        if strategy == "databound":
            assert layer.cfg.datatype_acc_bits <= acc_bits
        if strategy == "l1":
            x_peak = max(abs(layer.cfg.x_min), abs(layer.cfg.x_max))
            assert np.abs(layer.weights).sum(axis=1).max() * x_peak < 2 ** (acc_bits - 1)


def test_next_layer_input_scale_is_previous_output_scale():
    network = load_network(DATA / "digits_mlp.json")
    data = load_digits()
    qnet = quantize_network(network, data.train_x[:300], acc_bits=24, a_bits=6, w_bits=6)
    for before, after in zip(qnet.layers, qnet.layers[1:]):
        assert after.s_x == before.s_y
        assert after.cfg.a_bits == before.cfg.out_bits and not after.cfg.a_signed
    assert qnet.layers[0].s_x == network.input_scale


def test_databound_and_exact_refuse_what_does_not_fit():
    network = load_network(DATA / "digits_mlp.json")
    x = load_digits().train_x[:200]
    with pytest.raises(QuantizeError, match=r"fc1: the data-type bound .* = 19 does not fit"):
        quantize_network(network, x, acc_bits=16, a_bits=8, w_bits=8, strategy="databound")
    with pytest.raises(QuantizeError, match=r"needs acc_bits >= \d+, not 14"):
        quantize_network(network, x, acc_bits=14, a_bits=8, w_bits=6, strategy="exact")


@pytest.mark.parametrize("strategy", ["databound", "exact"])
def test_auto_picks_the_widest_widths_that_fit(strategy):
    network = load_network(DATA / "digits_mlp.json")
    x = load_digits().train_x[:200]
    a_bits, w_bits, qnet = choose_widths(network, x, acc_bits=15, strategy=strategy)
    order = _candidates(15)
    chosen = order.index((a_bits, w_bits))
    for wider in order[:chosen]:       # every wider candidate fails
        with pytest.raises(QuantizeError):
            quantize_network(network, x, acc_bits=15, a_bits=wider[0], w_bits=wider[1],
                             strategy=strategy)
    assert max(layer.min_acc_bits for layer in qnet.layers) <= 15


@pytest.mark.parametrize("sizes, macs", [([(64, 64), (64, 32), (32, 10)], 16),
                                         ([(64, 64), (64, 32), (32, 10)], 64),
                                         ([(12, 30), (30, 7)], 6)])
def test_array_shapes_are_balanced_and_minimal(sizes, macs):
    from qmac.quantize import array_shapes
    shapes = array_shapes(sizes, macs)
    cycles = [k * n // (r * c) for (k, n), (r, c) in zip(sizes, shapes)]
    largest = max(range(len(sizes)), key=lambda i: sizes[i][0] * sizes[i][1])
    assert shapes[largest][0] * shapes[largest][1] <= macs
    for (k, n), (r, c), cyc in zip(sizes, shapes, cycles):
        assert k % c == 0 and n % r == 0 and cyc <= cycles[largest]
        fewer = [(r2, c2) for r2 in range(1, n + 1) for c2 in range(1, k + 1)
                 if n % r2 == 0 and k % c2 == 0 and r2 * c2 < r * c]
        assert all(k * n > cycles[largest] * r2 * c2 for r2, c2 in fewer)


def test_save_quantized_files_reload(tmp_path):
    network = load_network(DATA / "digits_mlp.json")
    data = load_digits()
    qnet = quantize_network(network, data.train_x[:200], acc_bits=20, a_bits=6, w_bits=6)
    path = save_quantized(qnet, tmp_path)
    document = json.loads(path.read_text())
    assert [entry["name"] for entry in document["layers"]] == ["fc1", "fc2", "fc3"]
    from qmac.hw.config import LayerConfig
    for entry, layer in zip(document["layers"], qnet.layers):
        assert LayerConfig.from_toml(tmp_path / entry["config"]) == layer.cfg
        assert np.array_equal(np.load(tmp_path / entry["weights"]), layer.weights)
        assert len(entry["s_w"]) == layer.cfg.N and math.isclose(entry["s_y"], layer.s_y)


def test_quantize_command(tmp_path, capsys):
    assert cli.main(["quantize", str(DATA / "digits_mlp.json"), "--acc-bits", "16", "--auto",
                     "--strategy", "l1", "-o", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "accuracy on 360 test images: float" in out
    assert "fc3" in out and (tmp_path / "q" / "network.json").is_file()


@pytest.mark.parametrize("args, message", [
    (["--acc-bits", "16", "--auto", "--a-bits", "4"], "give --a-bits and --w-bits, or --auto"),
    (["--acc-bits", "16", "--a-bits", "4"], "give both --a-bits and --w-bits"),
    (["--acc-bits", "1", "--auto"], "--acc-bits must be between 2 and 64, not 1"),
    (["--acc-bits", "8", "--a-bits", "8", "--w-bits", "8"], "acc_bits must be at least"),
])
def test_quantize_command_bad_input(tmp_path, capsys, args, message):
    code = cli.main(["quantize", str(DATA / "digits_mlp.json"), *args, "-o", str(tmp_path)])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# -- PyTorch (optional) ------------------------------------------------------------------------

def test_pytorch_round_trip_and_float64_agreement(tmp_path):
    torch = pytest.importorskip("torch")
    from qmac.network import from_torch
    from qmac.train import make_model
    torch.manual_seed(3)
    model = make_model(torch, hidden=(16, 8), features=64).double()
    model.train()
    with torch.no_grad():
        model(torch.rand(256, 64, dtype=torch.float64) * 2)   # give BN real running statistics
    model.eval()
    network = from_torch(model, input_scale=1 / 16, input_min=0, input_max=16)
    save_network(network, tmp_path / "m.json")
    network = load_network(tmp_path / "m.json")
    data = load_digits()
    x = data.test_x / 16
    with torch.no_grad():
        want = model(torch.tensor(x)).numpy()
    assert np.allclose(forward(network, x), want, rtol=1e-12, atol=1e-12)
    qnet = quantize_network(network, data.train_x, acc_bits=24, a_bits=8, w_bits=8)
    # PyTorch in float64 with the quantized weights and the same rounding, layer by layer.
    x_int, near, total, float32_differ = data.test_x, 0, 0, 0
    modules = [m for m in model]
    linear_index = [i for i, m in enumerate(modules) if isinstance(m, torch.nn.Linear)]
    for n, (layer, start) in enumerate(zip(qnet.layers, linear_index)):
        end = linear_index[n + 1] if n + 1 < len(linear_index) else len(modules)
        block = torch.nn.Sequential(*modules[start:end])
        with torch.no_grad():
            saved = block[0].weight.clone()
            block[0].weight.copy_(torch.tensor(layer.weights * layer.s_w[:, None]))
            y = block(torch.tensor(x_int * layer.s_x)).numpy() / layer.s_y
            block[0].weight.copy_(saved)
        torch_int = np.clip(np.floor(y + 0.5), layer.cfg.y_min, layer.cfg.y_max)
        ours = golden.layer(layer.cfg, x_int, layer.weights, layer.M, layer.B, layer.S).y
        near += int(np.sum(np.abs(y - np.floor(y) - 0.5) < 1e-9))
        mismatches = int(np.sum(np.asarray(ours, dtype=np.int64) != torch_int))
        assert mismatches <= near, f"{layer.cfg.name}: {mismatches} of {y.size} outputs differ"
        # float32 PyTorch: any difference lies within 1e-3 of a rounding tie (in float64).
        block32 = torch.nn.Sequential(*modules[start:end]).float()
        with torch.no_grad():
            saved = block32[0].weight.clone()
            block32[0].weight.copy_(torch.tensor(layer.weights * layer.s_w[:, None]))
            y32 = block32(torch.tensor(x_int * layer.s_x, dtype=torch.float32)).double().numpy()
            block32[0].weight.copy_(saved)
        model.double()
        y32 = y32 / layer.s_y
        int32 = np.clip(np.floor(y32 + 0.5), layer.cfg.y_min, layer.cfg.y_max)
        differ = np.asarray(ours, dtype=np.int64) != int32
        float32_differ += int(differ.sum())
        assert np.all(np.abs(y[differ] - np.floor(y[differ]) - 0.5) < 1e-3)
        total += y.size
        x_int = ours
    assert near == 0 and total == 360 * (16 + 8 + 10)
    print(f"float32 PyTorch differs on {float32_differ} of {total} outputs, each within 1e-3 of "
          f"a rounding tie")


def test_training_is_reproducible_and_grad_l1_changes_it():
    torch = pytest.importorskip("torch")
    from qmac.network import from_torch
    from qmac.train import train
    data = load_digits()
    x, y = data.train_x[:256], data.train_y[:256]

    def weights(**kwargs):
        model = train(x, y, epochs=2, hidden=(16, 8), **kwargs)
        network = from_torch(model, input_scale=1 / 16, input_min=0, input_max=16)
        return [b.linear.W for b in network.blocks()]

    first, second = weights(seed=5), weights(seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not all(np.array_equal(a, b) for a, b in zip(first, weights(seed=5, grad_l1=0.01)))
    assert torch is not None


# -- what a hostile tester found ----------------------------------------------------------------

def test_hidden_block_without_relu_has_signed_activations(tmp_path):
    rng = np.random.default_rng(5)
    network = small_network(rng, sizes=(16, 12, 8, 4))
    layers = [layer for layer in network.layers]
    del layers[2]                                   # fc1, bn1, (no ReLU), fc2, bn2, ReLU, fc3
    network = Network(tuple(layers), 1 / 16, 0, 16)
    x = rng.integers(0, 17, size=(200, 16))
    qnet = quantize_network(network, x, acc_bits=24, a_bits=6, w_bits=6)
    assert qnet.layers[0].cfg.out_signed and qnet.layers[1].cfg.a_signed
    assert not qnet.layers[1].cfg.out_signed and not qnet.layers[2].cfg.a_signed
    got = qnet.run(x)
    want, near = reference_layer_outputs(network, qnet, x)
    assert near == 0 and all(np.array_equal(np.asarray(g, dtype=np.int64), w)
                             for g, w in zip(got, want))


def _data(tmp_path, **changes):
    data = load_digits()
    arrays = {"train_x": data.train_x, "test_x": data.test_x, "test_y": data.test_y, **changes}
    np.savez(tmp_path / "d.npz", **arrays)
    return str(tmp_path / "d.npz")


@pytest.mark.parametrize("changes, message", [
    ({"train_x": np.zeros((0, 64), dtype=np.int64)}, "train_x has no rows"),
    ({"test_x": np.zeros((0, 64), dtype=np.int64), "test_y": np.zeros(0, dtype=np.int64)},
     "test_x has no rows"),
    ({"test_y": np.full(360, 10)}, "test_y holds the label 10; labels are classes 0..9"),
    ({"test_y": np.full(360, -1)}, "test_y holds the label -1"),
])
def test_quantize_bad_data(tmp_path, capsys, changes, message):
    code = cli.main(["quantize", str(DATA / "digits_mlp.json"), "--acc-bits", "16", "--auto",
                     "--data", _data(tmp_path, **changes), "-o", str(tmp_path / "q")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "q").exists()


def test_quantize_never_overwrites_its_inputs(tmp_path, capsys):
    model = tmp_path / "network.json"
    save_network(load_network(DATA / "digits_mlp.json"), model)
    before = model.read_bytes()
    code = cli.main(["quantize", str(model), "--acc-bits", "16", "--auto", "-o", str(tmp_path)])
    assert code == 2 and "qmac never overwrites an input" in capsys.readouterr().err
    assert model.read_bytes() == before
    data = _data(tmp_path)
    (tmp_path / "q").mkdir()
    (tmp_path / "q" / "fc1_requant.npz").write_bytes((tmp_path / "d.npz").read_bytes())
    code = cli.main(["quantize", str(DATA / "digits_mlp.json"), "--acc-bits", "16", "--auto",
                     "--data", str(tmp_path / "q" / "fc1_requant.npz"), "-o", str(tmp_path / "q")])
    assert code == 2 and "is the same file as --data" in capsys.readouterr().err
    assert data


@pytest.mark.parametrize("args, message", [
    (["--auto", "-o", ""], "-o is empty; name a folder"),
    (["--a-bits", "0", "--w-bits", "4"], "--a-bits must be between 2 and 32, not 0"),
    (["--a-bits", "4", "--w-bits", "1"], "--w-bits must be between 2 and 32, not 1"),
])
def test_quantize_flags_named(tmp_path, capsys, args, message):
    argv = ["quantize", str(DATA / "digits_mlp.json"), "--acc-bits", "16", *args]
    if "-o" not in args:
        argv += ["-o", str(tmp_path / "q")]
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


def test_quantize_warns_about_dead_channels(tmp_path, capsys):
    assert cli.main(["quantize", str(DATA / "digits_mlp.json"), "--acc-bits", "8", "--auto",
                     "--strategy", "l1", "-o", str(tmp_path / "q")]) == 0
    assert "have a constant accumulator (all their" in capsys.readouterr().err


def test_layer_named_like_a_verilog_keyword_is_refused_at_load(tmp_path):
    document, arrays = _valid()
    document["layers"][0]["name"] = "module"
    arrays = {key.replace("fc1.", "module."): value for key, value in arrays.items()}
    with pytest.raises(NetworkError, match=r"layers\[0\]: field 'name': .*Verilog keyword"):
        load_network(_write(tmp_path, document, arrays))
