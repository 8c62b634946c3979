"""A read-only memory with a registered output: on ECP5, ``DP16KD`` block RAMs with their output
registers on (``REGMODE = "OUTREG"``).

Yosys maps a memory to ``DP16KD`` only without its output register (``REGMODE = "NOREG"``), so
the block's clock-to-output (5.8 ns in nextpnr's timing for speed grade 6) and the routing from
the RAM column both fall into the cycle of whatever reads the data. With the output register
used, the read data leaves a register inside the block. Elsewhere (and in simulation) the layer
engine builds the same two stages with the same enables as a memory read port and a fabric
register (:func:`registered_rom`); ``tests/test_ecp5_rom.py`` checks the instance's
``INITVAL`` packing against the one Yosys makes for the same contents.

Each ``DP16KD`` serves 36 bits of the word: its two ports read in 1024×18 mode, port A the low
18 bits from words ``0..511`` of the block, port B the high 18 bits from words ``512..1023``
(the top address bit of B is tied high), so a ROM of at most :data:`MAX_DEPTH` words takes
``ceil(width / 36)`` blocks, as many as Yosys's 512×36 mapping.
"""

from amaranth.hdl import ClockSignal, Const, Instance, Module, Mux, ShapeCastable, Signal, \
    Value
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out


__all__ = ["RegisteredRom", "registered_rom", "logic_rom", "MAX_DEPTH", "PORT_BITS", "initval",
           "block_words", "rom_words"]


#: Words of one ROM (each port of a block reads one half of its 1024 18-bit words).
MAX_DEPTH = 512

#: Bits one port of a ``DP16KD`` reads in 1024×18 mode.
PORT_BITS = 18


def rom_words(shape, init):
    """The words ``init`` of a ROM of ``shape`` (as :class:`~amaranth.lib.memory.Memory` takes
    them) as unsigned ints of the shape's width."""
    width = Value.cast(Signal(shape)).shape().width
    mask = (1 << width) - 1
    words = []
    for word in init:
        value = Const.cast(shape.const(word)) if isinstance(shape, ShapeCastable) \
            else Const(word, shape)
        words.append(value.value & mask)
    return words


def block_words(words, width, block):
    """The 1024 18-bit words of block ``block`` of a ROM of ``width``-bit ``words`` (ints):
    word ``k`` holds bits ``[36·block, 36·block + 18)`` of ``words[k]`` (port A) and word ``512
    + k`` the next 18 bits (port B); bits past ``width`` are zero."""
    mask = (1 << PORT_BITS) - 1
    low = [(w >> (36 * block)) & mask for w in words]
    high = [(w >> (36 * block + PORT_BITS)) & mask for w in words]
    pad = [0] * (MAX_DEPTH - len(words))
    return low + pad + high + pad


def initval(contents, index):
    """``INITVAL_{index:02X}`` of a ``DP16KD`` holding the 18-bit ``contents`` (1024 words) in
    1024×18 mode: words ``16·index .. 16·index + 15``, each in a 20-bit slot (as Yosys's
    ``brams_map_16kd.v`` packs them)."""
    value = 0
    for i in range(16):
        value |= contents[16 * index + i] << (20 * i)
    return Const(value, 320)


class RegisteredRom(wiring.Component):
    """A ROM in ``DP16KD`` blocks whose read data leaves the blocks' output registers: ``data``
    is the word at ``addr`` of the last cycle with ``en`` high, taken in the last cycle with
    ``oce`` high after it. For synthesis on ECP5 (the Amaranth simulator cannot run it; see
    :func:`registered_rom`).

    Parameters
    ----------
    shape : shape-castable
        The word's shape.
    depth : int
        Words, 1 to :data:`MAX_DEPTH`.
    init : sequence
        The words (as :class:`~amaranth.lib.memory.Memory` takes them); the rest are zero.

    Members
    -------
    addr : In(range(depth))
    en : In(1)
        Read enable: in a cycle with ``en`` high, the word at ``addr`` is read (the block's
        ``CE``).
    oce : In(1)
        Output register enable: in a cycle with ``oce`` high, ``data`` takes the word read last
        (the block's ``OCE``).
    data : Out(shape)

    Timing: two register stages, the read and the output register; no reset on either (the
    reader tracks which data is valid).

    Raises
    ------
    ValueError
        ``depth`` is not 1 to :data:`MAX_DEPTH`.
    """

    def __new__(cls, *, shape, depth, init):
        # Refuse a bad depth before the component exists (no UnusedElaboratable warning).
        if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= MAX_DEPTH:
            raise ValueError(f"depth of a DP16KD ROM must be 1 to {MAX_DEPTH}, not {depth!r}")
        return super().__new__(cls, src_loc_at=1)

    def __init__(self, *, shape, depth, init):
        self.shape = shape
        self.depth = depth
        self._init = list(init)
        self.width = Value.cast(Signal(shape)).shape().width
        #: ``DP16KD`` blocks of the instance (36 bits each).
        self.blocks = -(-self.width // (2 * PORT_BITS))
        super().__init__({"addr": In(range(max(2, depth))), "en": In(1), "oce": In(1),
                          "data": Out(shape)})

    def words(self):
        """The contents as unsigned ints of ``width`` bits."""
        return rom_words(self.shape, self._init)

    def elaborate(self, platform):
        m = Module()
        words = self.words()
        data = Signal(2 * PORT_BITS * self.blocks, name="rom_data")
        addr = Signal(9, name="rom_addr")
        m.d.comb += addr.eq(self.addr)
        for block in range(self.blocks):
            contents = block_words(words, self.width, block)
            ports = {}
            for side, top in (("A", 0), ("B", 1)):
                for k in range(14):
                    if k < 4:
                        bit = Const(0, 1)
                    elif k < 13:
                        bit = addr[k - 4]
                    else:
                        bit = Const(top, 1)
                    ports[f"i_AD{side}{k}"] = bit
                for k in range(PORT_BITS):
                    ports[f"i_DI{side}{k}"] = Const(0, 1)
                    ports[f"o_DO{side}{k}"] = data[2 * PORT_BITS * block + PORT_BITS * top + k]
                ports.update({f"i_CLK{side}": ClockSignal("sync"), f"i_CE{side}": self.en,
                              f"i_OCE{side}": self.oce, f"i_WE{side}": Const(0, 1),
                              f"i_RST{side}": Const(0, 1), f"i_CS{side}0": Const(0, 1),
                              f"i_CS{side}1": Const(0, 1), f"i_CS{side}2": Const(0, 1)})
            params = {f"p_INITVAL_{index:02X}": initval(contents, index) for index in range(64)}
            params.update({
                "p_DATA_WIDTH_A": 18, "p_DATA_WIDTH_B": 18,
                "p_REGMODE_A": "OUTREG", "p_REGMODE_B": "OUTREG",
                "p_RESETMODE": "SYNC", "p_ASYNC_RESET_RELEASE": "SYNC",
                "p_CSDECODE_A": "0b000", "p_CSDECODE_B": "0b000",
                "p_WRITEMODE_A": "NORMAL", "p_WRITEMODE_B": "NORMAL", "p_GSR": "DISABLED",
            })
            m.submodules[f"dp16kd_{block}"] = Instance("DP16KD", **params, **ports)
        m.d.comb += self.data.eq(data[:self.width])
        return m


def registered_rom(m, name, *, shape, depth, init, primitive):
    """A ROM with its read data in a register, added to ``m`` as submodule ``name``: a
    :class:`RegisteredRom` (``primitive``, for ECP5, when ``depth`` is at most
    :data:`MAX_DEPTH`), else a memory read port (``en``) and a register (``oce``) in ``m``, the
    same two stages. Returns its ``(addr, en, oce, data)``."""
    if primitive and depth <= MAX_DEPTH:
        m.submodules[name] = rom = RegisteredRom(shape=shape, depth=depth, init=init)
        return rom.addr, rom.en, rom.oce, rom.data
    m.submodules[name] = memory = Memory(shape=shape, depth=depth, init=init)
    read = memory.read_port()
    oce = Signal(name=f"{name}_oce")
    data = Signal(shape, name=f"{name}_data", reset_less=True)     # data: no reset
    with m.If(oce):
        m.d.sync += data.eq(read.data)
    return read.addr, read.en, oce, data


def logic_rom(m, name, *, shape, depth, init):
    """A ROM in logic with the two register stages of :func:`registered_rom`: an address
    register (``en``), a table of constants (LUTs), then the data register (``oce``); the
    registers and table are added to ``m``, named after ``name``. Both registers can sit beside
    the logic that drives the address and reads the data, where a block RAM's fixed site may be
    far from both. For small ROMs (a LUT6 per bit, four LUT4 and two wide-function
    multiplexers, holds 64 words). The address register is two copies, each addressing the
    table of half the bits, to halve its fan-out; their power-up values differ (all zeros, all
    ones; the data register takes no word before a read) so that Yosys does not merge them.
    Returns its ``(addr, en, oce, data)``: ``data`` is the word at ``addr`` of the last cycle
    with ``en`` high, taken in the last cycle with ``oce`` high after it (as
    :class:`RegisteredRom`)."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth of a logic ROM must be a positive integer, not {depth!r}")
    words = rom_words(shape, list(init))
    width = Value.cast(Signal(shape)).shape().width
    words += [0] * (depth - len(words))
    addr = Signal(range(max(2, depth)), name=f"{name}_addr")
    en = Signal(name=f"{name}_en")
    oce = Signal(name=f"{name}_oce")
    table = Signal(width, name=f"{name}_table")
    data = Signal(shape, name=f"{name}_data", reset_less=True)     # data: no reset
    halves = [(0, (width + 1) // 2), ((width + 1) // 2, width)]
    for copy, (start, stop) in enumerate(halves):
        if start == stop:
            continue
        addr_reg = Signal(len(addr), name=f"{name}_addr_reg{copy}", reset_less=True,
                          init=-copy & ((1 << len(addr)) - 1))
        with m.If(en):
            m.d.sync += addr_reg.eq(addr)
        mask = (1 << (stop - start)) - 1
        # A tree of multiplexers on constants, not a `Switch`: Yosys turns a switch of
        # constants into a memory (`proc_rom`), which it may then map to a block RAM.
        m.d.comb += table[start:stop].eq(
            _mux_tree([Const((word >> start) & mask, stop - start) for word in words],
                      addr_reg))
    with m.If(oce):
        m.d.sync += Value.cast(data).eq(table)
    return addr, en, oce, data


def _mux_tree(values, select):
    """``values[select]`` as a binary tree of multiplexers (``values`` past the end: the last
    one; the caller pads to the depth it addresses)."""
    level, bit = list(values), 0
    while len(level) > 1:
        level = [Mux(select[bit], level[k + 1], level[k]) if k + 1 < len(level) else level[k]
                 for k in range(0, len(level), 2)]
        bit += 1
    return level[0]
