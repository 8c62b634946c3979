"""cocotb test of qmac's MULT18X18D model (``hw/models/mult18x18d.v``) on its own, run by
``tests/test_ecp5_mac.py::test_mult18x18d_model``: the wrapper there instantiates the model once
per register configuration (``QMAC_MULT18_CONFIGS``, JSON); this test drives random operands,
sign controls, clock enables and resets, and checks every product against a cycle model of the
register stages written from the usage guide, in Python."""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge


def exact(a, signeda, b, signedb):
    """``P`` and ``SIGNEDP`` of 18-bit operands, from Python integers."""
    def value(v, is_signed):
        return v - (1 << 18) if is_signed and v >> 17 else v
    return (value(a, signeda) * value(b, signedb)) % (1 << 36), int(signeda or signedb)


class Reference:
    """The register stages of one instance: each ``(clock, ce index, rst index)`` or ``None``
    (bypassed); every stage here is clocked by the one test clock."""

    def __init__(self, config):
        self.config = config
        self.regs = {name: 0 for name in ("a", "b", "pipeline", "output")}

    def _stage(self, name):
        return self.config["stages"].get(name)

    def outputs(self, inputs):
        a = self.regs["a"] if self._stage("a") else (inputs["signeda"] << 18) | inputs["a"]
        b = self.regs["b"] if self._stage("b") else (inputs["signedb"] << 18) | inputs["b"]
        p, s = exact(a & 0x3FFFF, a >> 18, b & 0x3FFFF, b >> 18)
        product = (s << 36) | p
        pipe = self.regs["pipeline"] if self._stage("pipeline") else product
        out = self.regs["output"] if self._stage("output") else pipe
        return {"a": (inputs["signeda"] << 18) | inputs["a"],
                "b": (inputs["signedb"] << 18) | inputs["b"],
                "pipeline": product, "output": pipe, "value": out}

    def edge(self, inputs):
        d = self.outputs(inputs)
        new = dict(self.regs)
        for name in self.regs:
            stage = self._stage(name)
            if not stage:
                continue
            ce, rst = stage
            if inputs["rst"][rst]:
                new[name] = 0
            elif inputs["ce"][ce]:
                new[name] = d[name]
        self.regs = new

    def async_reset(self, inputs):
        for name in self.regs:
            stage = self._stage(name)
            if stage and inputs["rst"][stage[1]]:
                self.regs[name] = 0


@cocotb.test()
async def mult18x18d_model(dut):
    configs = json.loads(os.environ["QMAC_MULT18_CONFIGS"])
    refs = [Reference(c) for c in configs]
    rng = random.Random(int(os.environ.get("QMAC_SEED", "1")))
    Clock(dut.clk, 10, unit="ns").start()
    corners = [0, 1, 0x1FFFF, 0x20000, 0x3FFFF, 0x2AAAA, 0x15555]
    checked = 0
    await FallingEdge(dut.clk)
    for cycle in range(int(os.environ.get("QMAC_CYCLES", "600"))):
        phase = cycle // 150            # sign controls: fixed per phase, then random
        signs = [(0, 0), (1, 1), (0, 1), (1, 0)][phase] if phase < 4 else None
        inputs = {
            "a": rng.choice(corners) if rng.random() < 0.3 else rng.getrandbits(18),
            "b": rng.choice(corners) if rng.random() < 0.3 else rng.getrandbits(18),
            "signeda": signs[0] if signs else rng.getrandbits(1),
            "signedb": signs[1] if signs else rng.getrandbits(1),
            "ce": [int(rng.random() < 0.7) for _ in range(4)],
            "rst": [int(rng.random() < 0.04) for _ in range(4)],
        }
        dut.a.value = inputs["a"]
        dut.b.value = inputs["b"]
        dut.signeda.value = inputs["signeda"]
        dut.signedb.value = inputs["signedb"]
        dut.ce.value = sum(v << k for k, v in enumerate(inputs["ce"]))
        dut.rst.value = sum(v << k for k, v in enumerate(inputs["rst"]))
        await ReadOnly()
        for ref, config in zip(refs, configs):
            if config["async"]:
                ref.async_reset(inputs)
            expected = ref.outputs(inputs)["value"]
            got = (int(getattr(dut, f"signedp_{config['name']}").value) << 36) | \
                int(getattr(dut, f"p_{config['name']}").value)
            assert got == expected, (
                f"cycle {cycle}, {config['name']}: P/SIGNEDP {got:#x}, expected {expected:#x} "
                f"(inputs {inputs})")
            checked += 1
        await RisingEdge(dut.clk)
        for ref in refs:
            ref.edge(inputs)
        await FallingEdge(dut.clk)
    dut._log.info(f"{checked} products checked")
