"""The "today" of issue 8, rebuilt in the same run: designs that qmac generated before the issue's
work began, synthesized, placed and routed by the current flow.

The baseline is the source tree at :data:`BASELINE_COMMIT` (the merge of ``qmac synth``, the last
commit before any of issue 8's changes), taken with ``git archive`` into a scratch folder. A child
Python process imports that tree's ``qmac`` (never the installed one: it checks), builds the
design inside today's fair-timing harness (``hw/harness.py`` of this tree, loaded from its file,
so that old and new designs sit in the same wrapper) and writes its RTLIL; :func:`measure` then
runs the current Yosys/nextpnr flow on it (:func:`qmac.synth.implement_rtlil`), so the tools,
the seeds and the figures are the same as for the designs of today.

What the old tree builds: the layer engine with its full-width ``Requantizer`` (``rows`` lanes,
one multiply and one barrel shifter each), multipliers as ``cfg.mul_style`` says (``"dsp"``: a
plain ``*`` that Yosys maps to a combinational DSP), no packed or registered DSP products, no
block-RAM output registers and no skid buffer.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parent.parent

#: ``Merge branch 'synth'``: qmac synth, the fair-timing harness and mul_style, before the lean
#: requantizer, the threshold unit and the packed SB_MAC16 products.
BASELINE_COMMIT = "8e582f5"

_BUILD = r'''
import json, sys
from pathlib import Path
import numpy as np
from amaranth.back import rtlil

root = Path(sys.argv[1])
spec = json.loads(sys.argv[2])
import qmac
assert Path(qmac.__file__).resolve().is_relative_to(root.resolve()), \
    f"the baseline imported {qmac.__file__}, not the tree in {root}"
from qmac.hw.config import LayerConfig
from qmac.hw.engine import LayerEngine
from qmac.hw.mac_array import MacArray
import importlib.util
# Today's harness (not the baseline tree's): the same wrapper for old and new designs.
_harness = importlib.util.spec_from_file_location("today_harness", spec["harness"])
_module = importlib.util.module_from_spec(_harness)
_harness.loader.exec_module(_module)
FairTimingHarness = _module.FairTimingHarness

cfg = LayerConfig.from_dict(spec["config"], source="baseline spec")
plan = None
if spec.get("family") and cfg.mul_style == "auto":
    # What the old `qmac synth` did: plan the multipliers against the part's DSPs.
    from qmac.hw.multiply import plan_multipliers
    plan = plan_multipliers(cfg, family=spec["family"], dsp_budget=spec["dsp_budget"])
if spec["kind"] == "engine":
    p = spec["parameters"]
    dut = LayerEngine(cfg, np.array(p["weights"]), np.array(p["M"]), np.array(p["B"]),
                      np.array(p["S"]), mul_plan=plan)
elif spec["kind"] == "mac":
    dut = MacArray(cfg, mul_plan=plan)
else:
    raise SystemExit(f"unknown baseline kind {spec['kind']!r}")
top = FairTimingHarness(dut)
Path(spec["out"]).write_text(rtlil.convert(top, name="top", emit_src=False))
print(json.dumps({"input_bits": top.input_bits, "output_bits": top.output_bits, "pins": 4}))
'''


class BaselineError(RuntimeError):
    pass


def checkout(scratch):
    """The baseline tree as an importable ``qmac`` package under ``scratch``; returns the folder
    to put on ``PYTHONPATH`` (made once per scratch folder)."""
    scratch = Path(scratch)
    pkg = scratch / "baseline-pkg"
    if (pkg / "qmac" / "__init__.py").exists():
        return pkg
    try:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar",
                                  BASELINE_COMMIT, "qmac", "hw", "sim"],
                                 check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        raise BaselineError(f"cannot take the baseline tree {BASELINE_COMMIT} from the git "
                            f"history of {ROOT} (a clone with history is needed): "
                            f"{detail.decode(errors='replace').strip() or error}") from None
    src = scratch / "baseline-src"
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(src, filter="data")
    # The installed layout: hw/ and sim/ are the packages qmac.hw and qmac.sim.
    pkg.mkdir(parents=True, exist_ok=True)
    (src / "qmac").rename(pkg / "qmac")
    (src / "hw").rename(pkg / "qmac" / "hw")
    (src / "sim").rename(pkg / "qmac" / "sim")
    return pkg


def old_config(cfg, **changes):
    """``cfg`` (a current ``LayerConfig``) with ``changes``, as the old ``LayerConfig`` keys:
    ``requant_style`` did not exist (the old engine always multiplies)."""
    table = {**cfg.to_dict(), **changes}
    style = table.pop("requant_style", "multiply")
    if style == "threshold":
        raise BaselineError("the baseline has no threshold requantizer")
    return table


def rtlil(scratch, kind, cfg_dict, workdir, parameters=None, *, target=None):
    """RTLIL of the baseline's ``kind`` (``"engine"`` or ``"mac"``) for the configuration
    ``cfg_dict`` (keys of the old ``LayerConfig``: :func:`old_config`), inside today's harness.
    With ``target`` (a :class:`qmac.synth.Target`) and ``mul_style = "auto"``, the multipliers
    are planned against its DSPs as the old ``qmac synth`` did. Returns
    ``(rtlil_text, harness_info)``."""
    pkg = checkout(scratch)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "baseline.il"
    spec = {"kind": kind, "config": cfg_dict, "out": str(out),
            "harness": str(ROOT / "hw" / "harness.py")}
    if target is not None:
        spec.update(family=target.family, dsp_budget=target.available["dsps"])
    if parameters is not None:
        spec["parameters"] = {key: np.asarray(value).tolist()
                              for key, value in parameters.items()}
    env = dict(os.environ, PYTHONPATH=str(pkg))
    done = subprocess.run([sys.executable, "-c", _BUILD, str(pkg), json.dumps(spec)],
                          env=env, capture_output=True, text=True, cwd=workdir)
    if done.returncode != 0:
        raise BaselineError(f"the baseline ({BASELINE_COMMIT}) could not build {kind}: "
                            f"{done.stderr.strip()[-2000:]}")
    return out.read_text(), json.loads(done.stdout.strip().splitlines()[-1])
