"""Bad input at the command line: one line naming the flag or file, exit code 2, nothing of the
user's changed (issue 6, sections 1-3). Simulations run only where the case needs one."""

import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from qmac import cli, flow
from qmac.files import BUILD_MARK, UserError, prepare_build_dir
from qmac.sim import golden, runner

from test_cli import EXAMPLES, small_layer

ROOT = os.geteuid() == 0
needs_non_root = pytest.mark.skipif(ROOT, reason="root ignores permission bits, so a read-only "
                                                 "folder is writable for it")


def digests(folder):
    """sha256 of every file under ``folder``: the user's files before and after a command."""
    return {path: hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(Path(folder).rglob("*")) if path.is_file()}


def refused(capsys, argv, pattern, *, unchanged):
    """Run ``qmac argv``: exit code 2, exactly one line ``qmac <command>: error: ...`` matching
    ``pattern``, and no file under ``unchanged`` changed, added or removed."""
    before = digests(unchanged)
    code = cli.main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"qmac {argv[0]}: error: "), err
    assert re.search(pattern, lines[0]), err
    assert "Traceback" not in err
    assert digests(unchanged) == before
    return lines[0]


def simulate_argv(paths, **changes):
    argv = {"--weights": paths["weights"], "--requant": paths["requant"],
            "--inputs": paths["inputs"], "-o": paths["config"].parent / "y.npy",
            "--build-dir": paths["config"].parent / "build"}
    argv.update(changes)
    out = ["simulate", paths["config"]]
    for flag, value in argv.items():
        if value is not None:
            out += [flag, value]
    return out


def fold_argv(tmp_path, **changes):
    argv = {"--layer": tmp_path / "f.npz", "--weights-out": tmp_path / "w.npy",
            "--requant-out": tmp_path / "r.npz"}
    argv.update(changes)
    return ["fold", tmp_path / "layer.toml", *[v for item in argv.items() for v in item]]


@pytest.fixture
def float_layer(tmp_path):
    """The example's float layer and configuration, copied where a test may damage them."""
    (tmp_path / "layer.toml").write_bytes((EXAMPLES / "layer.toml").read_bytes())
    (tmp_path / "f.npz").write_bytes((EXAMPLES / "float_layer.npz").read_bytes())
    return tmp_path


# -- 1. nothing of the user's is destroyed or silently changed ------------------------------------

def test_simulate_output_equal_to_inputs_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    refused(capsys, simulate_argv(paths, **{"-o": paths["inputs"]}),
            r"-o '.*x.npy' is the same file as --inputs '.*x.npy'; qmac never overwrites an "
            r"input", unchanged=tmp_path)


def test_simulate_output_equal_to_inputs_through_a_link_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    (tmp_path / "link.npy").symlink_to(paths["weights"])
    refused(capsys, simulate_argv(paths, **{"-o": tmp_path / "link.npy"}),
            r"-o '.*link.npy' is the same file as --weights", unchanged=tmp_path)


def test_fold_requant_out_equal_to_layer_is_refused(float_layer, capsys):
    refused(capsys, fold_argv(float_layer, **{"--requant-out": float_layer / "f.npz"}),
            r"--requant-out '.*f.npz' is the same file as --layer", unchanged=float_layer)


@pytest.mark.parametrize("flag, name, pattern", [
    ("--weights-out", "w_noext", r"--weights-out must name a .npy file, not '.*w_noext'"),
    ("--weights-out", "same.npz", r"--weights-out must name a .npy file, not '.*same.npz'"),
    ("--requant-out", "r.npy", r"--requant-out must name a .npz file, not '.*r.npy'"),
])
def test_fold_output_extension_is_checked(float_layer, capsys, flag, name, pattern):
    refused(capsys, fold_argv(float_layer, **{flag: float_layer / name}), pattern,
            unchanged=float_layer)


def test_simulate_output_extension_is_checked(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    refused(capsys, simulate_argv(paths, **{"-o": tmp_path / "y_noext"}),
            r"-o must name a .npy file, not '.*y_noext'", unchanged=tmp_path)


def test_fold_writes_exactly_the_paths_given(float_layer, capsys):
    """An output name with dots is written as given; the report names that path."""
    w_out, r_out = float_layer / "w.v1.npy", float_layer / "r.v1.npz"
    assert cli.main(["fold", str(float_layer / "layer.toml"), "--layer",
                     str(float_layer / "f.npz"), "--weights-out", str(w_out),
                     "--requant-out", str(r_out)]) == 0
    assert f"wrote {w_out} " in capsys.readouterr().out
    assert sorted(p.name for p in float_layer.iterdir()) == ["f.npz", "layer.toml", "r.v1.npz",
                                                             "w.v1.npy"]
    assert np.array_equal(np.load(w_out), np.load(EXAMPLES / "weights.npy"))


@pytest.mark.parametrize("flag", ["-o", "--waves"])
def test_simulate_output_in_a_missing_folder_is_refused_before_the_run(tmp_path, capsys, flag):
    _, paths = small_layer(tmp_path)
    target = tmp_path / "missing" / ("y.npy" if flag == "-o" else "trace.vcd")
    refused(capsys, simulate_argv(paths, **{flag: target}),
            rf"{flag} '.*': the folder '.*missing' does not exist", unchanged=tmp_path)
    assert not (tmp_path / "build").exists()            # nothing was built or run


def test_simulate_waves_into_a_file_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    refused(capsys, simulate_argv(paths, **{"--waves": paths["weights"] / "t.vcd"}),
            r"--waves '.*t.vcd': '.*w.npy' is not a folder", unchanged=tmp_path)


@needs_non_root
def test_simulate_waves_into_a_read_only_folder_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        refused(capsys, simulate_argv(paths, **{"--waves": locked / "t.vcd"}),
                r"--waves '.*t.vcd': the folder '.*locked' is not writable", unchanged=tmp_path)
    finally:
        locked.chmod(0o755)


def test_output_checks_use_access_not_the_mode_bits(float_layer, monkeypatch, capsys):
    """The writability check asks ``os.access`` (which knows about root, ACLs and read-only
    mounts); here it is made to say no, which works as any user."""
    tmp_path = float_layer
    _, paths = small_layer(tmp_path)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == tmp_path / "ro"
                        else real_access(path, mode))
    (tmp_path / "ro").mkdir()
    refused(capsys, simulate_argv(paths, **{"--waves": tmp_path / "ro" / "t.vcd"}),
            r"--waves '.*t.vcd': the folder '.*ro' is not writable", unchanged=tmp_path)
    refused(capsys, ["generate", paths["config"], "-o", tmp_path / "ro"],
            r"-o '.*ro': the folder is not writable", unchanged=tmp_path)
    refused(capsys, fold_argv(tmp_path, **{"--weights-out": tmp_path / "ro" / "w.npy"}),
            r"--weights-out '.*w.npy': the folder '.*ro' is not writable", unchanged=tmp_path)
    refused(capsys, simulate_argv(paths, **{"--build-dir": tmp_path / "ro"}),
            r"--build-dir '.*ro': the folder is not writable", unchanged=tmp_path)


def test_build_dir_of_the_user_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "build.log").write_text("my notes\n")
    refused(capsys, simulate_argv(paths, **{"--build-dir": mine}),
            r"--build-dir '.*mine' is a folder qmac did not make and it is not empty",
            unchanged=tmp_path)
    assert (mine / "build.log").read_text() == "my notes\n"


def test_build_dir_empty_or_marked_is_accepted(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (prepare_build_dir(empty) / BUILD_MARK).is_file()
    (empty / "build.log").write_text("qmac's own\n")
    prepare_build_dir(empty)                      # marked: accepted with content
    new = prepare_build_dir(tmp_path / "a" / "b")
    assert (new / BUILD_MARK).is_file()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x").write_text("")
    with pytest.raises(UserError, match="qmac did not make"):
        prepare_build_dir(tmp_path / "other")
    # A folder of qmac's own cache, filled before build folders were marked, is marked instead.
    assert (prepare_build_dir(tmp_path / "other", cache=True) / BUILD_MARK).is_file()


def test_build_dir_that_is_a_file_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    refused(capsys, simulate_argv(paths, **{"--build-dir": paths["weights"]}),
            r"--build-dir '.*w.npy' is a file, not a folder", unchanged=tmp_path)


@pytest.mark.parametrize("seed", ["-5", "-1"])
def test_negative_seed_is_refused(tmp_path, capsys, seed):
    _, paths = small_layer(tmp_path)
    refused(capsys, [*simulate_argv(paths), "--seed", seed],
            rf"--seed must be a non-negative integer, not {seed}", unchanged=tmp_path)


# -- 2. no tracebacks -----------------------------------------------------------------------------

def test_config_not_utf8_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    paths["config"].write_bytes(b'[layer]\nname = "caf\xe9"\nin_features = 8\n')
    refused(capsys, simulate_argv(paths),
            r"config file '.*small.toml' is not UTF-8 text \(byte 0xe9 at offset 19\)",
            unchanged=tmp_path)


@pytest.mark.parametrize("kind, pattern", [
    ("npy", r"config file '.*' is an .npy file, not a TOML configuration"),
    ("npz", r"config file '.*' is a zip archive \(an .npz\?\), not a TOML configuration"),
    ("nul", r"config file '.*' is binary \(it holds NUL bytes\), not a TOML text file"),
])
def test_binary_config_is_refused(tmp_path, capsys, kind, pattern):
    _, paths = small_layer(tmp_path)
    config = {"npy": paths["weights"], "npz": paths["requant"], "nul": tmp_path / "nul.toml"}
    (tmp_path / "nul.toml").write_bytes(b"[layer]\n\0\0\0")
    refused(capsys, ["analyze", config[kind], "--weights", paths["weights"]], pattern,
            unchanged=tmp_path)


@pytest.mark.parametrize("flag", ["config", "--weights", "--requant", "--inputs"])
@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_special_file_as_input_is_refused(tmp_path, capsys, flag, device):
    _, paths = small_layer(tmp_path)
    if flag == "config":
        argv = simulate_argv(paths)
        argv[1] = device
        label = "config file"
    else:
        argv = simulate_argv(paths, **{flag: device})
        label = f"{flag} file"
    refused(capsys, argv, rf"{label} '{device}' is not a regular file \(a device, pipe or "
                          rf"socket\)", unchanged=tmp_path)


def test_special_file_as_float_layer_is_refused(float_layer, capsys):
    refused(capsys, fold_argv(float_layer, **{"--layer": "/dev/zero"}),
            r"--layer file '/dev/zero' is not a regular file", unchanged=float_layer)


def test_folder_as_input_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    refused(capsys, simulate_argv(paths, **{"--inputs": tmp_path}),
            r"--inputs file '.*' is a folder, not a .npy file", unchanged=tmp_path)


@pytest.mark.parametrize("flag, limit", [("--weights", "64.2 kiB"), ("--inputs", "256.0 MiB"),
                                         ("--requant", "204.1 kiB")])
def test_file_far_larger_than_the_format_needs_is_refused(tmp_path, capsys, flag, limit):
    """A valid header, then a (sparse) file far past what the layer can need: refused from its
    size, without reading it."""
    _, paths = small_layer(tmp_path)
    big = tmp_path / ("big.npz" if flag == "--requant" else "big.npy")
    with open(big, "wb") as file:
        np.lib.format.write_array_header_1_0(
            file, {"descr": "<i8", "fortran_order": False, "shape": (1 << 26, 8)})
        file.truncate(1 << 29)
    refused(capsys, simulate_argv(paths, **{flag: big}),
            rf"{flag} file '.*big.np.' is 512.0 MiB, far more than a .np. file for this layer "
            rf"can need \(at most {limit}\)", unchanged=tmp_path)


@pytest.mark.parametrize("flag", ["--weights", "--requant", "--inputs"])
def test_empty_file_is_refused(tmp_path, capsys, flag):
    _, paths = small_layer(tmp_path)
    empty = tmp_path / ("empty.npz" if flag == "--requant" else "empty.npy")
    empty.write_bytes(b"")
    refused(capsys, simulate_argv(paths, **{flag: empty}),
            rf"{flag} file '.*empty.np.' is empty \(0 bytes\)", unchanged=tmp_path)


def test_empty_float_layer_is_refused(float_layer, capsys):
    (float_layer / "f.npz").write_bytes(b"")
    refused(capsys, fold_argv(float_layer), r"--layer file '.*f.npz' is empty \(0 bytes\)",
            unchanged=float_layer)


def test_text_file_as_npy_says_it_is_not_npy(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    paths["inputs"].write_text("1, 2, 3\n")
    refused(capsys, simulate_argv(paths),
            r"--inputs file '.*x.npy' is not an .npy file \(it does not start with the .npy "
            r"signature\)", unchanged=tmp_path)


def test_truncated_npy_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    data = paths["weights"].read_bytes()
    paths["weights"].write_bytes(data[:-8])
    refused(capsys, simulate_argv(paths),
            r"--weights file '.*w.npy' is truncated: its header declares shape \(4, 8\) of int64 "
            r"\(256 bytes\) but 248 bytes follow", unchanged=tmp_path)


def test_object_array_in_npz_is_refused_without_unpickling(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    np.savez(paths["requant"], M=np.array([1, 2, 3, None], dtype=object), B=np.zeros(4, int),
             S=np.zeros(4, int))
    refused(capsys, simulate_argv(paths),
            r"--requant file '.*r.npz': array 'M' holds Python objects \(a pickled array\), "
            r"which qmac never loads", unchanged=tmp_path)


def test_object_array_in_float_layer_is_refused(float_layer, capsys):
    layer = dict(np.load(float_layer / "f.npz"))
    layer["beta"] = layer["beta"].astype(object)
    np.savez(float_layer / "f.npz", **layer)
    refused(capsys, fold_argv(float_layer),
            r"--layer file '.*f.npz': array 'beta' holds Python objects", unchanged=float_layer)


def test_corrupted_npz_member_is_refused(tmp_path, capsys):
    """One data byte of ``M`` flipped: the member's CRC no longer matches."""
    _, paths = small_layer(tmp_path)
    data = bytearray(paths["requant"].read_bytes())
    at = data.index(np.array([3, -5, 7, 1], dtype=np.int64).tobytes())
    data[at] ^= 0x10
    paths["requant"].write_bytes(bytes(data))
    refused(capsys, simulate_argv(paths),
            r"--requant file '.*r.npz' is not a valid .npz archive: Bad CRC-32 for file 'M.npy'",
            unchanged=tmp_path)


def test_npz_with_a_foreign_member_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    with zipfile.ZipFile(paths["requant"], "a") as archive:
        archive.writestr("notes.txt", "hello")
    refused(capsys, simulate_argv(paths),
            r"--requant file '.*r.npz' holds 'notes.txt', which is not an .npy array",
            unchanged=tmp_path)


def test_npy_as_npz_and_npz_as_npy_are_named(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    refused(capsys, simulate_argv(paths, **{"--requant": paths["weights"]}),
            r"--requant file '.*w.npy' is an .npy file \(one array\), not an .npz archive",
            unchanged=tmp_path)
    refused(capsys, simulate_argv(paths, **{"--weights": paths["requant"]}),
            r"--weights file '.*r.npz' is not an .npy file \(it is a zip archive",
            unchanged=tmp_path)


def test_long_name_is_a_config_error(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    paths["config"].write_text(paths["config"].read_text().replace(
        'name = "fc_small"', 'name = "' + "n" * 2000 + '"'))
    refused(capsys, ["generate", paths["config"], "-o", tmp_path / "out"],
            r"name must be at most 64 characters", unchanged=tmp_path)


def test_generate_output_at_an_existing_file_is_refused(tmp_path, capsys):
    _, paths = small_layer(tmp_path)
    refused(capsys, ["generate", paths["config"], "-o", paths["weights"]],
            r"-o '.*w.npy' is a file, not a folder", unchanged=tmp_path)
    refused(capsys, ["generate", paths["config"], "-o", paths["weights"] / "sub"],
            r"-o '.*sub': '.*w.npy' is not a folder", unchanged=tmp_path)


def test_generate_never_overwrites_an_input_in_its_folder(tmp_path, capsys):
    """A weights file named like the Verilog generate would write into the same folder."""
    _, paths = small_layer(tmp_path)
    clash = tmp_path / "fc_small.v"
    clash.write_bytes(paths["weights"].read_bytes())
    refused(capsys, ["generate", paths["config"], "--weights", clash, "--requant",
                     paths["requant"], "-o", tmp_path],
            r"-o '.*' is the same file as --weights '.*fc_small.v'", unchanged=tmp_path)


def test_fold_output_in_a_missing_folder_is_refused(float_layer, capsys):
    refused(capsys, fold_argv(float_layer, **{"--requant-out": float_layer / "no" / "r.npz"}),
            r"--requant-out '.*r.npz': the folder '.*no' does not exist", unchanged=float_layer)
    assert not (float_layer / "w.npy").exists()


def test_unexpected_os_error_is_one_line(tmp_path, capsys, monkeypatch):
    """The last resort: an OSError no check foresaw still prints one line, exit 2."""
    _, paths = small_layer(tmp_path)

    def failing(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "manifest.json"))

    monkeypatch.setattr(flow, "_versions", failing)
    code = cli.main(["generate", str(paths["config"]), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert re.fullmatch(r"qmac generate: error: .*manifest.json: No space left on device",
                        err[-1]), err
    assert all("error" not in line for line in err[:-1])


# -- 3. long or degenerate work is visible --------------------------------------------------------

@pytest.mark.parametrize("stall", ["0.9999999", "0.96", "1", "-0.1", "nan"])
def test_stall_is_bounded(tmp_path, capsys, stall):
    _, paths = small_layer(tmp_path)
    refused(capsys, [*simulate_argv(paths), "--stall", stall],
            rf"--stall must be between 0 and 0.95, not {re.escape(str(float(stall)))} "
            rf"\(each side moves a beat in only 1-P of the cycles: a run takes about 1/\(1-P\) "
            rf"times as long, 20 times at 0.95", unchanged=tmp_path)


@pytest.mark.parametrize("change, channels", [
    ("gamma", "channel\\(s\\) 3, 5;"),
    ("W", "\\(every channel: the layer's output never changes\\)"),
    ("s_y", "\\(every channel: the layer's output never changes\\)"),
])
def test_fold_warns_about_constant_channels(float_layer, capsys, change, channels):
    layer = dict(np.load(float_layer / "f.npz"))
    if change == "gamma":
        layer["gamma"] = layer["gamma"].copy()
        layer["gamma"][[3, 5]] = 0.0
    elif change == "W":
        layer["W"] = np.zeros_like(layer["W"])
    else:
        layer["s_y"] = np.float64(1e9)          # nothing reaches the next output level
    np.savez(float_layer / "f.npz", **layer)
    assert cli.main([str(a) for a in fold_argv(float_layer)]) == 0
    err = capsys.readouterr().err
    assert re.search(r"warning: \d+ of 64 channel\(s\) give one constant output over the whole "
                     r"reachable accumulator range", err), err
    assert re.search(channels, err), err


def test_fold_of_the_example_does_not_warn(float_layer, capsys):
    assert cli.main([str(a) for a in fold_argv(float_layer)]) == 0
    assert "warning" not in capsys.readouterr().err


class _Terminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(scope="module")
def built_layer(tmp_path_factory):
    """The small layer's files and one build folder shared by the simulations below."""
    folder = tmp_path_factory.mktemp("built")
    cfg, paths = small_layer(folder)
    return cfg, paths, folder / "build"


def test_progress_on_a_terminal(built_layer, monkeypatch, tmp_path):
    cfg, paths, build_dir = built_layer
    x = np.random.default_rng(1).integers(0, 15, (60, cfg.K), endpoint=True)
    np.save(tmp_path / "x.npy", x)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    real = flow.run_stream
    monkeypatch.setattr(flow, "run_stream",
                        lambda *a, **k: real(*a, **k, progress_seconds=0))
    code = cli.main([str(a) for a in simulate_argv(
        paths, **{"--inputs": tmp_path / "x.npy", "-o": tmp_path / "y.npy",
                  "--build-dir": build_dir})] + ["--stall", "0.8", "--check"])
    text = terminal.getvalue()
    assert code == 0, text
    updates = re.findall(r"\r  (\d+)/60 vectors, ([\d,]+) cycles/s, (\d+:\d\d) left", text)
    assert updates, text
    assert all(0 <= int(done) <= 60 for done, _, _ in updates)
    assert "check passed" in text


def test_no_progress_line_when_not_a_terminal(built_layer, capsys, tmp_path):
    _, paths, build_dir = built_layer
    assert cli.main([str(a) for a in simulate_argv(
        paths, **{"-o": tmp_path / "y.npy", "--build-dir": build_dir})]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert re.search(r"wrote .*y.npy: 20 vectors in \d+ cycles, [\d.]+ s \([\d,]+ cycles/s\)",
                     err), err


def test_two_concurrent_simulations_of_one_design(tmp_path):
    """Two ``qmac simulate`` processes of one design start together on one empty build folder:
    one builds while the other waits for the lock and reuses the build; each run has its own
    folder; both results equal the golden model."""
    cfg, paths = small_layer(tmp_path)
    build_dir = tmp_path / "shared-build"
    processes = []
    for index, stall in enumerate(("0.3", "0.6")):
        argv = [str(a) for a in simulate_argv(paths, **{"-o": tmp_path / f"y{index}.npy",
                                                        "--build-dir": build_dir})]
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "qmac.cli", *argv, "--check", "--stall", stall,
             "--seed", str(index)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    errs = []
    for process in processes:
        _, err = process.communicate(timeout=600)
        errs.append(err)
        assert process.returncode == 0, err
    assert sum("built in" in err for err in errs) == 1, errs
    assert sum("reused the cached build" in err for err in errs) == 1, errs
    r = np.load(paths["requant"])
    want = golden.layer(cfg, np.load(paths["inputs"]), np.load(paths["weights"]), r["M"],
                        r["B"], r["S"]).y
    for index in range(2):
        assert np.array_equal(np.load(tmp_path / f"y{index}.npy"), want)
    assert list((build_dir / "runs").iterdir()) == []     # each run removed its own folder


def test_run_refuses_a_model_rebuilt_under_it(tmp_path):
    """A run whose build folder now holds another model (another process built there) stops
    instead of simulating the wrong design."""
    (tmp_path / "build.stamp").write_text("the stamp of another model")
    built = runner.Built("fc_small", tmp_path, tmp_path / "fc_small.v", None, 0.0,
                         stamp="the stamp of this model")
    with pytest.raises(runner.BuildChangedError, match="another model was built into"):
        runner.run_stream(built, [0], n_outputs=1, in_width=8)
