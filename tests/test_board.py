"""The board top end to end: cocotb on its generated Verilog under Verilator, a host sending
bytes on ``rx`` and decoding bytes from ``tx``, every result compared with the golden model.

Also: the boards and their constraint files, and the host module's protocol helpers and sender
(with a fake serial link, so no board is needed).
"""

import re
import sys

import numpy as np
import pytest

from qmac import host
from qmac.hw import board
from qmac.hw.board import BOARDS, UartEngineTop, board_for_target
from qmac.hw.config import LayerConfig
from qmac.hw.verilog import convert
from qmac.sim import golden
from qmac.sim.runner import build, lint
from qmac.sim.uart_runner import run_uart
from vectors import engine_params, mac_inputs, mac_weights


# -- boards and constraint files --------------------------------------------------------------

def constraint_ports(path):
    """Port names a .pcf or .lpf file places."""
    text = path.read_text()
    if path.suffix == ".pcf":
        return set(re.findall(r"^\s*set_io\s+(?:-\S+\s+)*(\w+)\s+\S+", text, re.M))
    return set(re.findall(r'^\s*LOCATE\s+COMP\s+"(\w+)"\s+SITE', text, re.M))


def test_boards():
    assert board_for_target("ice40-up5k") is BOARDS["icebreaker"]
    assert board_for_target("ecp5-25k") is BOARDS["ulx3s"]
    for name, item in BOARDS.items():
        assert item.name == name
        assert board_for_target(item.target) is item
        assert item.constraints_path.is_absolute() and item.constraints_path.is_file()
    icebreaker, ulx3s = BOARDS["icebreaker"], BOARDS["ulx3s"]
    assert (icebreaker.family, icebreaker.device, icebreaker.package, icebreaker.clk_hz) == \
        ("ice40", "up5k", "sg48", 12_000_000)
    assert (ulx3s.family, ulx3s.device, ulx3s.package, ulx3s.clk_hz) == \
        ("ecp5", "25k", "CABGA381", 25_000_000)


@pytest.mark.parametrize("target", ["ice40-hx8k", "ecp5-85k", "", None, "icebreaker"])
def test_unknown_target(target):
    with pytest.raises(ValueError, match=rf"no board for target {re.escape(repr(target))}; "
                                         r"the boards are: icebreaker \(ice40-up5k\), "
                                         r"ulx3s \(ecp5-25k\)"):
        board_for_target(target)


def test_constraint_pins():
    """The pins and clocks of the issue's boards, and nothing else placed."""
    pcf = BOARDS["icebreaker"].constraints_path.read_text()
    assert re.search(r"^set_io clk 35$", pcf, re.M)
    assert re.search(r"^set_io rx 6$", pcf, re.M)
    assert re.search(r"^set_io tx 9$", pcf, re.M)
    assert re.search(r"^set_frequency clk 12$", pcf, re.M)
    lpf = BOARDS["ulx3s"].constraints_path.read_text()
    assert re.search(r'^LOCATE COMP "clk" SITE "G2";$', lpf, re.M)
    assert re.search(r'^LOCATE COMP "rx" SITE "M1";$', lpf, re.M)
    assert re.search(r'^LOCATE COMP "tx" SITE "L4";$', lpf, re.M)
    assert re.search(r'^FREQUENCY PORT "clk" 25 MHZ;$', lpf, re.M)


def small_layer(**changes):
    cfg = LayerConfig(name="board_top", in_features=4, out_features=6, rows=2, cols=2,
                      a_bits=8, a_signed=True, w_bits=8, acc_bits=20, out_bits=12,
                      out_signed=True, m_bits=16, b_bits=24, s_max=20)
    return cfg.replace(**changes)


def layer_params(cfg, seed):
    rng = np.random.default_rng(seed)
    w = mac_weights(cfg, rng)
    M, B, S = engine_params(cfg, w, rng)
    return w, M, B, S


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_top_ports_match_constraints(name):
    """The converted top has exactly the ports its board's constraint file places: the
    power-on reset replaces a ``rst`` pin."""
    item = BOARDS[name]
    cfg = small_layer()
    top = UartEngineTop(cfg, *layer_params(cfg, 0), clk_hz=item.clk_hz)
    verilog = convert(top, name="top")
    header = re.search(r"module top\((.*?)\);", verilog, re.S).group(1)
    ports = {port.strip() for port in header.split(",")}
    assert ports == {"clk", "rx", "tx"}
    assert ports == constraint_ports(item.constraints_path)


# -- the host protocol without hardware --------------------------------------------------------

def test_encode_bytes():
    """Little endian, two's complement, ceil(a_bits/8) bytes: spelled out by hand."""
    cfg = LayerConfig(in_features=2, out_features=1, a_bits=12, a_signed=True, acc_bits=32)
    assert host.encode_inputs(cfg, [[-2, 0x123]]) == bytes([0xFE, 0xFF, 0x23, 0x01])
    cfg = LayerConfig(in_features=3, out_features=1, a_bits=4, a_signed=False)
    assert host.encode_inputs(cfg, [[15, 0, 7]]) == bytes([15, 0, 7])


def test_encode_refuses_bad_inputs():
    cfg = LayerConfig(in_features=2, out_features=1, a_bits=4, a_signed=True)
    with pytest.raises(ValueError, match="inputs"):
        host.encode_inputs(cfg, [[8, 0]])
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        host.encode_inputs(cfg, [[1, 2, 3]])


def test_decode_bytes_and_errors():
    cfg = LayerConfig(in_features=1, out_features=2, out_bits=12, out_signed=True,
                      acc_bits=32)
    status = board.STATUS_MARKER | board.STATUS_OVERFLOW
    response = host.decode_outputs(cfg, bytes([0xFF, 0xFF, 0xFF, 0x07, status]))
    assert response.y.tolist() == [[-1, 2047]]
    assert response.overflow.tolist() == [True] and response.lost.tolist() == [False]
    with pytest.raises(host.ProtocolError, match="4 bytes is not a whole number of responses"):
        host.decode_outputs(cfg, bytes(4))
    with pytest.raises(host.ProtocolError, match="result 2048 is outside"):
        host.decode_outputs(cfg, bytes([0, 0, 0x00, 0x08, board.STATUS_MARKER]))
    with pytest.raises(host.ProtocolError, match="status byte 0x04"):
        host.decode_outputs(cfg, bytes([0, 0, 0, 0, 0x04]))


class FakeBoard:
    """A serial link whose far end computes responses with the golden model, and fails the test
    when the host has more than two vectors outstanding."""

    def __init__(self, cfg, w, M, B, S):
        self.cfg, self.params = cfg, (w, M, B, S)
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.outstanding = 0

    def write(self, data):
        self.inbox += data
        size = board.request_bytes(self.cfg)
        while len(self.inbox) >= size:
            vector = np.frombuffer(bytes(self.inbox[:size]), dtype=np.uint8)
            del self.inbox[:size]
            self.outstanding += 1
            assert self.outstanding <= host.MAX_WINDOW, "more than two vectors outstanding"
            x = vector.astype(np.int64).reshape(1, -1)
            if self.cfg.a_signed:
                x = np.where(x >= 128, x - 256, x)
            result = golden.layer(self.cfg, x, *self.params)
            for value in result.y[0]:
                self.outbox += int(value).to_bytes(board.out_value_bytes(self.cfg), "little",
                                                   signed=self.cfg.out_signed)
            self.outbox.append(board.STATUS_MARKER | int(result.overflow[0].any()))

    def read(self, count):
        data = bytes(self.outbox[:count])
        del self.outbox[:count]
        if len(data) == count == board.response_bytes(self.cfg):
            self.outstanding -= 1
        return data


@pytest.mark.parametrize("window", [1, 2])
def test_exchange_with_a_fake_board(window):
    cfg = small_layer(out_bits=8)
    w, M, B, S = layer_params(cfg, 1)
    x = np.random.default_rng(2).integers(cfg.x_min, cfg.x_max, (9, cfg.in_features),
                                          endpoint=True)
    link = FakeBoard(cfg, w, M, B, S)
    response = host.exchange(link, cfg, x, window=window)
    expected = golden.layer(cfg, x, w, M, B, S)
    assert response.y.tolist() == np.asarray(expected.y).tolist()


def test_exchange_errors():
    cfg = small_layer()
    x = np.zeros((2, cfg.in_features), dtype=int)
    for window in (0, 3, True, 1.5):
        with pytest.raises(ValueError, match=f"window must be 1 or 2 vectors, not {window!r}"):
            host.exchange(FakeBoard(cfg, *layer_params(cfg, 0)), cfg, x, window=window)

    class Silent:
        def write(self, data):
            pass

        def read(self, count):
            return b"\xa0"

    with pytest.raises(TimeoutError, match=f"vector 0: got 1 of {board.response_bytes(cfg)}"):
        host.exchange(Silent(), cfg, x)


def test_sender_without_pyserial(monkeypatch, tmp_path, capsys):
    cfg = small_layer()
    (tmp_path / "layer.toml").write_text(cfg.to_toml())
    np.save(tmp_path / "x.npy", np.zeros((1, cfg.in_features), dtype=np.int64))
    monkeypatch.setitem(sys.modules, "serial", None)        # import serial -> ImportError
    status = host.main([str(tmp_path / "layer.toml"), "--inputs", str(tmp_path / "x.npy"),
                        "-o", str(tmp_path / "y.npy"), "--port", "/dev/null"])
    assert status == 1
    assert "needs pyserial: pip install pyserial" in capsys.readouterr().err


def test_sender_with_fake_serial(monkeypatch, tmp_path, capsys):
    """The command line end to end, with ``serial.Serial`` replaced by the fake board."""
    import types
    cfg = small_layer()
    w, M, B, S = layer_params(cfg, 3)
    x = np.random.default_rng(4).integers(cfg.x_min, cfg.x_max, (5, cfg.in_features),
                                          endpoint=True)
    (tmp_path / "layer.toml").write_text(cfg.to_toml())
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "w.npy", w)
    np.savez(tmp_path / "r.npz", M=M, B=B, S=S)
    opened = {}

    class Serial(FakeBoard):
        def __init__(self, port, **options):
            opened.update(options, port=port)
            super().__init__(cfg, w, M, B, S)

        def reset_input_buffer(self):
            pass

        def close(self):
            opened["closed"] = True

    monkeypatch.setitem(sys.modules, "serial", types.SimpleNamespace(Serial=Serial))
    status = host.main([str(tmp_path / "layer.toml"), "--inputs", str(tmp_path / "x.npy"),
                        "-o", str(tmp_path / "y.npy"), "--port", "/dev/ttyUSB1",
                        "--baud", "57600", "--weights", str(tmp_path / "w.npy"),
                        "--requant", str(tmp_path / "r.npz")])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "all results equal the golden model" in out
    assert opened["port"] == "/dev/ttyUSB1" and opened["baudrate"] == 57600 and opened["closed"]
    assert np.load(tmp_path / "y.npy").tolist() == \
        np.asarray(golden.layer(cfg, x, w, M, B, S).y).tolist()


# -- cocotb end to end --------------------------------------------------------------------------

def check_responses(cfg, run, x, w, M, B, S):
    assert run.passed and not run.timed_out, run.log[-3000:]
    response = host.decode_outputs(cfg, run.received)
    expected = golden.layer(cfg, x, w, M, B, S)
    y = np.asarray(expected.y, dtype=object)
    assert response.y.shape == y.shape
    for n, c in np.argwhere(response.y.astype(object) != y):
        pytest.fail(f"vector {n}, channel {c}: expected {y[n, c]}, got {response.y[n, c]}")
    assert response.overflow.tolist() == np.asarray(expected.overflow).any(axis=1).tolist()
    return response


# Each top runs at a clock of `divisor` cycles per bit of 115200 baud.
E2E = [
    # Responses longer than requests (6 results of 2 bytes, 4 activations of 2 bytes): the
    # engine's output waits on the UART and the host's window keeps the receiver from
    # overrunning. The 16-bit wrapping accumulator overflows on some vectors.
    pytest.param(small_layer(a_bits=10, w_bits=6, acc_bits=16), 4,
                 id="2x2-a10s-acc16-y12s-response-bound"),
    # Requests longer than responses.
    pytest.param(LayerConfig(name="board_top", in_features=12, out_features=2, rows=1, cols=3,
                             a_bits=8, a_signed=False, w_bits=6, acc_bits=24,
                             overflow="saturate", out_bits=8, out_signed=False, m_bits=12,
                             b_bits=20, s_max=16), 5, id="1x3-a8u-y8u-request-bound",
                 marks=pytest.mark.slow),
]


@pytest.mark.parametrize("cfg, divisor", E2E)
def test_uart_top_end_to_end(cfg, divisor, tmp_path_factory):
    w, M, B, S = layer_params(cfg, 5)
    rng = np.random.default_rng(6)
    x = mac_inputs(cfg, w, rng, n_random=6).astype(np.int64)
    top = UartEngineTop(cfg, w, M, B, S, clk_hz=divisor * 115200)
    assert top.divisor == divisor
    built = build(top, name="board_top", build_dir=tmp_path_factory.mktemp("board"))
    warnings = lint(built.verilog)
    assert warnings == "", f"verilator --lint-only -Wall:\n{warnings}"

    # Random gaps between host bytes.
    run = run_uart(built, cfg, x, divisor=divisor, reset_cycles=top.reset_cycles, gap=0.4,
                   seed=7, label="gaps")
    response = check_responses(cfg, run, x, w, M, B, S)
    assert not response.lost.any()
    if cfg.acc_bits < cfg.datatype_acc_bits:
        assert response.overflow.any() and not response.overflow.all()

    # Back to back: the link runs full duplex, so a vector costs the longer of its request
    # and its response, not their sum.
    run = run_uart(built, cfg, x, divisor=divisor, reset_cycles=top.reset_cycles, gap=0.0,
                   seed=8, label="full-rate")
    check_responses(cfg, run, x, w, M, B, S)
    request, response_size = board.request_bytes(cfg), board.response_bytes(cfg)
    frame = 10 * divisor
    bound = (len(x) * max(request, response_size) + min(request, response_size) + 2) * frame
    assert run.cycles <= bound, f"{run.cycles} cycles, more than {bound}"

    # A frame with a low stop bit between two vectors is dropped, and reported once.
    run = run_uart(built, cfg, x, divisor=divisor, reset_cycles=top.reset_cycles, gap=0.2,
                   bad_frame_after=3, seed=9, label="framing-error")
    response = check_responses(cfg, run, x, w, M, B, S)
    assert response.lost.sum() == 1 and response.lost.argmax() >= 2
