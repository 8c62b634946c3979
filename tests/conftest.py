"""Fixtures shared by the whole test run.

``verilator_build`` builds each design once per run: tests that stream through the same design
(the same Amaranth netlist, hence the same Verilog) share one Verilated model, linted once.
"""

import hashlib

import pytest
from amaranth.back import rtlil

from qmac.sim.runner import build, lint


@pytest.fixture(scope="session")
def verilator_build(tmp_path_factory):
    """A function ``(component, kind) -> Built``: the component's Verilog, checked lint-clean by
    ``verilator --lint-only -Wall`` and built under Verilator, as ``<kind>_dut``.

    The cache key is the component's RTLIL, which Amaranth writes in milliseconds (the Verilog
    conversion runs Yosys twice); equal RTLIL gives equal Verilog. A design that fails the lint
    is not kept, so every test that builds it fails.
    """
    cache = {}

    def build_once(component, kind):
        name = f"{kind}_dut"
        key = hashlib.sha256(rtlil.convert(component, name=name, emit_src=False).encode())
        key = key.hexdigest()
        if key not in cache:
            folder = tmp_path_factory.mktemp(f"{kind}-{key[:12]}")
            built = build(component, name=name, build_dir=folder)
            warnings = lint(built.verilog)
            assert warnings == "", f"verilator --lint-only -Wall:\n{warnings}"
            cache[key] = built
        return cache[key]

    return build_once
