"""A whole network's Verilog under Verilator (cocotb), every layer checked against the golden model,
through the ``qmac generate`` / ``qmac simulate`` commands."""

import json

import numpy as np
import pytest

from qmac import cli
from qmac.netflow import first_mismatch, golden_outputs, load_quantized_network
from test_network_hw import tiny_network


def write_network(folder, layers):
    entries = []
    for cfg, w, M, B, S in layers:
        (folder / f"{cfg.name}.toml").write_text(cfg.to_toml())
        np.save(folder / f"{cfg.name}_w.npy", np.asarray(w, dtype=np.int64))
        np.savez(folder / f"{cfg.name}_r.npz", M=M, B=B, S=S)
        entries.append({"name": cfg.name, "config": f"{cfg.name}.toml",
                        "weights": f"{cfg.name}_w.npy", "requant": f"{cfg.name}_r.npz"})
    path = folder / "network.json"
    path.write_text(json.dumps({"format": "qmac-quantized-network", "version": 1,
                                "layers": entries}))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    layers = tiny_network(np.random.default_rng(11))
    path = write_network(folder, layers)
    x = np.random.default_rng(12).integers(0, 16, size=(40, layers[0][0].K))
    np.save(folder / "x.npy", x)
    return folder, path, layers, x


def test_network_simulation_is_bit_exact_under_stalls(tiny, capsys):
    folder, path, layers, x = tiny
    code = cli.main(["simulate", str(path), "--inputs", str(folder / "x.npy"), "-o",
                     str(folder / "y.npy"), "--check", "--stall", "0.3", "--seed", "4",
                     "--build-dir", str(folder / "build")])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "check passed: every layer's" in err
    want = golden_outputs(layers, x)
    assert np.array_equal(np.load(folder / "y.npy"), want[-1])


def test_network_generate_writes_lint_clean_verilog(tiny, capsys):
    from qmac.sim.runner import lint
    folder, path, layers, _ = tiny
    assert cli.main(["generate", str(path), "-o", str(folder / "gen")]) == 0
    manifest = json.loads((folder / "gen" / "manifest.json").read_text())
    verilog = folder / "gen" / manifest["verilog"]
    assert lint(verilog) == ""
    assert [entry["config"]["name"] for entry in manifest["layers"]] == ["l0", "l1", "l2"]
    assert manifest["cycles_per_vector"] >= max(cfg.K * cfg.N // (cfg.rows * cfg.cols)
                                                for cfg, *_ in layers)


def test_first_mismatch_names_layer_vector_channel(tiny):
    _, path, layers, x = tiny
    want = golden_outputs(layers, x)
    got = [np.asarray(w, dtype=np.int64).copy() for w in want]
    assert first_mismatch(layers, got, want) is None
    got[1][5, 2] += 1
    assert first_mismatch(layers, got, want) == (
        f"layer l1: 1 outputs differ; first at vector 5, channel 2: expected {want[1][5, 2]}, "
        f"got {want[1][5, 2] + 1}")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(format="other"), "is not a quantized network"),
    (lambda d: d.update(layers=[]), "field 'layers' must be a non-empty list"),
    (lambda d: d["layers"][0].update(config="../x.toml"), "field 'config' must name a file"),
    (lambda d: d["layers"].reverse(), "does not match out_features"),
])
def test_bad_network_file(tiny, tmp_path, capsys, edit, message):
    folder, path, _, _ = tiny
    document = json.loads(path.read_text())
    edit(document)
    for file in folder.iterdir():
        if file.is_file() and file.suffix in (".toml", ".npy", ".npz"):
            (tmp_path / file.name).write_bytes(file.read_bytes())
    bad = tmp_path / "network.json"
    bad.write_text(json.dumps(document))
    code = cli.main(["simulate", str(bad), "--inputs", str(tmp_path / "x.npy"), "-o",
                     str(tmp_path / "y.npy")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_loader_checks_every_layer_file(tiny):
    _, path, layers, _ = tiny
    loaded = load_quantized_network(path)
    for (cfg, w, M, B, S), (cfg2, w2, M2, B2, S2) in zip(layers, loaded):
        assert cfg == cfg2 and np.array_equal(w, w2) and np.array_equal(S, S2)


@pytest.mark.slow
def test_digits_test_split_through_the_rtl(tmp_path, capsys):
    """The bundled network, quantized, runs the whole digits test split through its Verilog."""
    from importlib import resources
    from qmac.digits import load_digits
    model = resources.files("qmac").joinpath("data/digits_mlp.json")
    assert cli.main(["quantize", str(model), "--acc-bits", "16", "--auto", "--strategy", "l1",
                     "-o", str(tmp_path / "q")]) == 0
    data = load_digits()
    np.save(tmp_path / "x.npy", data.test_x)
    assert cli.main(["simulate", str(tmp_path / "q" / "network.json"), "--inputs",
                     str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"), "--check"]) == 0
    scores = np.load(tmp_path / "y.npy")
    assert (scores.argmax(1) == data.test_y).mean() > 0.95


def test_output_that_is_a_layer_file_is_refused(tiny, capsys):
    folder, path, _, _ = tiny
    target = folder / "l1_w.npy"
    before = target.read_bytes()
    code = cli.main(["simulate", str(path), "--inputs", str(folder / "x.npy"), "-o",
                     str(target)])
    err = capsys.readouterr().err
    assert code == 2 and "weights of layers[1]" in err and "never overwrites an input" in err
    assert target.read_bytes() == before
