"""``qmac demo``: the whole flow on the bundled network, and the network synthesis it uses."""

import json

import pytest

from qmac import cli


def test_demo_without_synthesis(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert cli.main(["demo", "--images", "30", "--no-synth", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["rtl"]["mismatches"] == 0 and report["rtl"]["first_mismatch"] is None
    # every layer's outputs were compared: 30 images x (64 + 32 + 10) outputs
    assert report["rtl"]["outputs_checked"] == 30 * (64 + 32 + 10)
    acc = report["accuracy"]
    assert acc["images"] == 30 and acc["rtl"] == acc["integer"]
    assert acc["float"] >= 0.8          # a real, trained network on real images
    assert [layer["name"] for layer in report["layers"]] == ["fc1", "fc2", "fc3"]
    for layer in report["layers"]:
        assert layer["min_acc_bits"] <= layer["acc_bits"] == 16
    assert report["synthesis"] is None
    assert "RTL against the golden model: 0 mismatches" in text
    assert "synthesis: skipped" in text


@pytest.mark.parametrize("args, message", [
    (["--images", "0"], "--images must be between 1 and 360, not 0"),
    (["--acc-bits", "1"], "--acc-bits must be between 2 and 64, not 1"),
    (["--acc-bits", "8", "--strategy", "exact"], "no operand widths of 2..8 bits fit acc_bits = 8"),
    (["--seed", "-1"], "--seed must be a non-negative integer, not -1"),
    (["--model", "/dev/zero"], "is not a regular file"),
])
def test_demo_bad_input(capsys, args, message):
    assert cli.main(["demo", "--no-synth", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_demo_json_path_checked_before_work(tmp_path, capsys):
    assert cli.main(["demo", "--no-synth", "--json", str(tmp_path)]) == 2
    assert "--json must name a .json file" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_with_synthesis(tmp_path, capsys):
    out = tmp_path / "demo.json"
    assert cli.main(["demo", "--images", "20", "--target", "ecp5-85k", "--json",
                     str(out)]) == 0
    synth = json.loads(out.read_text())["synthesis"]
    assert synth["fits"] and synth["target"] == "ecp5-85k"
    assert synth["luts"] > 0 and synth["fmax_mhz"] > 0
    assert synth["images_per_second"] == round(synth["fmax_mhz"] * 1e6 /
                                                synth["cycles_per_image"])
