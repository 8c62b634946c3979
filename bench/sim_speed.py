"""Simulation speed of the layer engine: cocotb + Verilator against the Amaranth simulator.

For one mid-size layer (K=64, N=32, 4x4 MAC array, 8-bit operands, 24-bit accumulator) this
prints cycles per second and microseconds per cycle of

- the cocotb stream testbench on the Verilated engine (the path ``qmac simulate`` uses), with the
  simulator's start-up time measured separately and taken out;
- the Amaranth Python simulator running the same engine with a per-cycle testbench;

their ratio, the reference figures of the research note (shared/notes/fpga-performance.md §4.1)
beside them, and the wall time of ``qmac simulate`` on 1,000 vectors (cold, with the Verilator
build, and warm, reusing it). Every run is checked against the golden model.

Run: ``python bench/sim_speed.py [--vectors N] [--amaranth-vectors N] [--json PATH]``.
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qmac.hw import layouts  # noqa: E402
from qmac.hw.config import LayerConfig  # noqa: E402
from qmac.hw.engine import LayerEngine  # noqa: E402
from qmac.sim import beats, golden  # noqa: E402
from qmac.sim.runner import build, run_stream  # noqa: E402

# Research note §4.1 (same kind of machine): cocotb 2.1 costs about 14 µs per cycle when driving
# two signals per cycle with trusted inertial writes (Verilator's default), i.e. about 70 k
# cycles/s at best; the Amaranth simulator ran a 4x4 8-bit array at 5.3 k cycles/s with its
# testbench setting two inputs every cycle.
REF_COCOTB_US_PER_CYCLE = 14.0
REF_AMARANTH_CYCLES_PER_S = 5.3e3

CFG = LayerConfig(name="bench_layer", in_features=64, out_features=32, rows=4, cols=4, a_bits=8,
                  a_signed=False, w_bits=8, acc_bits=24, overflow="wrap", m_bits=16, b_bits=32,
                  s_max=24, out_bits=8, out_signed=False, relu=True)


def problem(vectors, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 127, (CFG.N, CFG.K), endpoint=True)
    x = rng.integers(0, 255, (vectors, CFG.K), endpoint=True)
    M = rng.integers(1, 200, CFG.N)
    B = rng.integers(-(1 << 20), 1 << 20, CFG.N)
    S = np.full(CFG.N, 16)
    return x, w, M, B, S


def cocotb_verilator(vectors, build_dir):
    x, w, M, B, S = problem(vectors)
    engine = LayerEngine(CFG, w, M, B, S)
    built = build(engine, name=CFG.name, build_dir=build_dir)
    width = layouts.engine_input_layout(CFG).size
    runs = {}
    for label, count in (("startup", 1), ("batch", vectors)):
        inputs = beats.engine_beats(CFG, x[:count])
        expected = beats.engine_expected(CFG, x[:count], w, M, B, S)
        run = run_stream(built, inputs, n_outputs=len(expected), expected=expected,
                         in_width=width, label=label)
        assert run.passed and run.outputs == expected, "cocotb run disagrees with golden model"
        runs[label] = run
    cycles = runs["batch"].cycles - runs["startup"].cycles
    seconds = runs["batch"].seconds - runs["startup"].seconds
    return {"build_s": built.build_seconds, "cycles": runs["batch"].cycles,
            "wall_s": runs["batch"].seconds, "startup_s": runs["startup"].seconds,
            "cycles_per_s": cycles / seconds, "us_per_cycle": 1e6 * seconds / cycles}


def amaranth_sim(vectors):
    from amaranth.sim import Simulator
    x, w, M, B, S = problem(vectors)
    engine = LayerEngine(CFG, w, M, B, S)
    in_beats = [{"x": [int(v) for v in row[i * CFG.cols:(i + 1) * CFG.cols]]}
                for row in x for i in range(CFG.beats)]
    n_out = vectors * CFG.out_beats
    got = []
    counter = {"cycles": 0}

    async def bench(ctx):
        sent = 0
        ctx.set(engine.o.ready, 1)
        while len(got) < n_out:
            if sent < len(in_beats):
                ctx.set(engine.i.payload, in_beats[sent])
                ctx.set(engine.i.valid, 1)
            else:
                ctx.set(engine.i.valid, 0)
            _, _, in_ready, out_valid, payload = await ctx.tick().sample(
                engine.i.ready, engine.o.valid, engine.o.payload)
            counter["cycles"] += 1
            if sent < len(in_beats) and in_ready:
                sent += 1
            if out_valid:
                got.append(payload)

    sim = Simulator(engine)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    start = time.perf_counter()
    sim.run()
    seconds = time.perf_counter() - start
    want = golden.layer(CFG, x, w, M, B, S).y.reshape(n_out, CFG.rows)
    assert [[int(v) for v in beat.y] for beat in got] == want.tolist(), \
        "Amaranth simulation disagrees with golden model"
    cycles = counter["cycles"]
    return {"cycles": cycles, "wall_s": seconds, "cycles_per_s": cycles / seconds,
            "us_per_cycle": 1e6 * seconds / cycles}


def qmac_simulate(vectors, workdir):
    x, w, M, B, S = problem(vectors, seed=1)
    workdir = Path(workdir)
    (workdir / "layer.toml").write_text(CFG.to_toml())
    np.save(workdir / "w.npy", w)
    np.savez(workdir / "r.npz", M=M, B=B, S=S)
    np.save(workdir / "x.npy", x)
    command = [sys.executable, "-m", "qmac.cli", "simulate", str(workdir / "layer.toml"),
               "--weights", str(workdir / "w.npy"), "--requant", str(workdir / "r.npz"),
               "--inputs", str(workdir / "x.npy"), "-o", str(workdir / "y.npy"), "--check",
               "--build-dir", str(workdir / "build")]
    times = {}
    for label in ("cold", "warm"):
        start = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True, cwd=ROOT)
        times[label] = time.perf_counter() - start
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=int, default=1000,
                        help="vectors for the cocotb + Verilator run (default 1000)")
    parser.add_argument("--amaranth-vectors", type=int, default=10,
                        help="vectors for the Amaranth simulator run (default 10)")
    parser.add_argument("--cli-vectors", type=int, default=1000,
                        help="vectors for `qmac simulate` (default 1000)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)

    print(f"layer: K={CFG.K} N={CFG.N}, {CFG.rows}x{CFG.cols} array, {CFG.out_beats * CFG.beats} "
          f"MAC cycles per vector", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="qmac-bench-") as scratch:
        print("cocotb + Verilator ...", file=sys.stderr)
        verilated = cocotb_verilator(args.vectors, Path(scratch) / "verilator")
        print("Amaranth simulator ...", file=sys.stderr)
        pysim = amaranth_sim(args.amaranth_vectors)
        print(f"qmac simulate on {args.cli_vectors} vectors ...", file=sys.stderr)
        cli = qmac_simulate(args.cli_vectors, scratch)

    ref_cocotb = 1e6 / REF_COCOTB_US_PER_CYCLE
    rows = [
        ("cocotb+Verilator cycles/s", verilated["cycles_per_s"], ref_cocotb,
         "note §4.1: cocotb at 14 µs/cycle"),
        ("cocotb+Verilator µs/cycle", verilated["us_per_cycle"], REF_COCOTB_US_PER_CYCLE,
         "note §4.1"),
        ("Amaranth sim cycles/s", pysim["cycles_per_s"], REF_AMARANTH_CYCLES_PER_S,
         "note §4.1: 4x4 array, 2 inputs/cycle"),
        ("Amaranth sim µs/cycle", pysim["us_per_cycle"], 1e6 / REF_AMARANTH_CYCLES_PER_S,
         "note §4.1"),
        ("Verilator / Amaranth speed", verilated["cycles_per_s"] / pysim["cycles_per_s"],
         ref_cocotb / REF_AMARANTH_CYCLES_PER_S, "ratio of the two references"),
    ]
    print(f"\n{'figure':<30} {'measured':>12} {'reference':>12} {'ratio':>7}  reference source")
    for name, value, ref, source in rows:
        print(f"{name:<30} {value:>12,.1f} {ref:>12,.1f} {value / ref:>7.2f}  {source}")
    print(f"\ncocotb+Verilator: {verilated['cycles']:,} cycles for {args.vectors} vectors in "
          f"{verilated['wall_s']:.2f} s wall (of which {verilated['startup_s']:.2f} s "
          f"start-up), build {verilated['build_s']:.1f} s")
    print(f"Amaranth simulator: {pysim['cycles']:,} cycles for {args.amaranth_vectors} vectors "
          f"in {pysim['wall_s']:.2f} s")
    print(f"qmac simulate --check, {args.cli_vectors} vectors: {cli['cold']:.1f} s cold (with "
          f"the Verilator build), {cli['warm']:.1f} s warm (build reused)")
    if args.json:
        args.json.write_text(json.dumps({"config": CFG.to_dict(), "verilator": verilated,
                                         "amaranth": pysim, "qmac_simulate_s": cli,
                                         "vectors": {"verilator": args.vectors,
                                                     "amaranth": args.amaranth_vectors,
                                                     "cli": args.cli_vectors}}, indent=2))


if __name__ == "__main__":
    main()
