"""The layer configuration: loading, validation and derived widths."""

import math

import pytest

from qmac.hw.config import ConfigError, LayerConfig, signed_width


def write(tmp_path, text):
    path = tmp_path / "layer.toml"
    path.write_text(text)
    return path


def test_toml_round_trip(tmp_path):
    cfg = LayerConfig(name="fc1", in_features=12, out_features=6, rows=3, cols=4, a_bits=4,
                      a_signed=True, w_bits=4, acc_bits=12, overflow="saturate",
                      shared_shift=True, relu=True)
    assert LayerConfig.from_toml(write(tmp_path, cfg.to_toml())) == cfg


def test_minimal_toml_uses_defaults(tmp_path):
    cfg = LayerConfig.from_toml(write(tmp_path, "[layer]\nin_features = 8\nout_features = 4\n"))
    assert (cfg.in_features, cfg.out_features, cfg.overflow) == (8, 4, "wrap")


@pytest.mark.parametrize("text, message", [
    ("[layer\nin_features = 8", "malformed TOML"),
    ("[layer]\nin_features = 8\nout_features = 4\ncolumns = 2\n", "unknown key 'columns'"),
    ("[layer]\nout_features = 4\n", "missing required key 'in_features'"),
    ("[other]\nin_features = 8\n", "unknown table or key 'other'"),
    ("[layer]\nin_features = 64\nout_features = 4\ncols = 5\n",
     r"cols must divide in_features \(64\), not 5"),
    ("[layer]\nin_features = 8\nout_features = 6\nrows = 4\n",
     r"rows must divide out_features \(6\), not 4"),
    ("[layer]\nin_features = 8\nout_features = 4\na_bits = 0\n",
     "a_bits must be between 1 and 64, not 0"),
    ("[layer]\nin_features = 8\nout_features = 4\nw_bits = 65\n",
     "w_bits must be between 1 and 64, not 65"),
    ("[layer]\nin_features = 8\nout_features = 4\nacc_bits = 15\n",
     "acc_bits must be at least the product width a_bits \\+ w_bits = 16, not 15"),
    ("[layer]\nin_features = 8\nout_features = 4\noverflow = \"clip\"\n",
     "overflow must be one of 'wrap', 'saturate', not 'clip'"),
    ("[layer]\nin_features = 8\nout_features = 4\na_signed = 1\n",
     "a_signed must be true or false, not 1"),
    ("[layer]\nin_features = 8.5\nout_features = 4\n", "in_features must be an integer"),
    ("[layer]\nin_features = 8\nout_features = 4\nname = \"9lives\"\n",
     "name must be a Verilog identifier"),
    ("[layer]\nin_features = 8\nout_features = 4\nname = \"module\"\n",
     "name must not be a Verilog keyword, not 'module'"),
    ("[layer]\nin_features = 8\nout_features = 4\nname = \"logic\"\n",
     "name must not be a Verilog keyword, not 'logic'"),
    ("[layer]\nin_features = 8\nout_features = 4\nmul_style = \"dsp3\"\n",
     "mul_style must be one of 'auto', 'dsp', 'lut', 'pack', not 'dsp3'"),
    ("[layer]\nin_features = 8\nout_features = 4\nmul_style = \"pack\"\n",
     "mul_style = 'pack' needs at least two MAC products per multiply; rows = 1, a_bits = 8, "
     "w_bits = 8 fit 1"),
    pytest.param("[layer]\nin_features = 8\nout_features = 4\nname = \"" + "n" * 2000 + "\"\n",
                 "name must be at most 64 characters \\(it names files and folders\\), not "
                 "2000 characters \\('nnnnnnnnnnnnnnnn'...\\)", id="name-2000-characters"),
])
def test_bad_toml_names_key_and_value(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        LayerConfig.from_toml(write(tmp_path, text))


def test_pack_style_plans_packed_products(tmp_path):
    from qmac.hw.multiply import plan_multipliers
    cfg = LayerConfig.from_toml(write(tmp_path, "[layer]\nin_features = 8\nout_features = 4\n"
                                                "rows = 2\na_bits = 4\nw_bits = 4\n"
                                                "acc_bits = 12\nmul_style = \"pack\"\n"))
    counts = plan_multipliers(cfg).counts()
    assert counts["mac_pack"] == cfg.rows * cfg.cols and counts["mac_dsp"] == 0


def test_name_length_bound_is_inclusive():
    assert LayerConfig(name="n" * 64).name == "n" * 64
    with pytest.raises(ConfigError, match="not 65 characters"):
        LayerConfig(name="n" * 65)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read configuration"):
        LayerConfig.from_toml(tmp_path / "absent.toml")


@pytest.mark.parametrize("a_bits, a_signed, w_bits", [(1, False, 2), (4, True, 4), (8, False, 8),
                                                      (3, True, 7), (16, False, 2)])
def test_product_bits_hold_every_product(a_bits, a_signed, w_bits):
    cfg = LayerConfig(a_bits=a_bits, a_signed=a_signed, w_bits=w_bits,
                      acc_bits=a_bits + w_bits)
    products = [x * w for x in (cfg.x_min, cfg.x_max) for w in (cfg.w_min, cfg.w_max)]
    assert signed_width(min(products), max(products)) <= cfg.product_bits
    beat = [cfg.cols * p for p in products]
    assert signed_width(min(beat), max(beat)) == cfg.beat_sum_bits


def test_output_range_with_relu():
    assert (LayerConfig(out_bits=4, out_signed=True).y_min,
            LayerConfig(out_bits=4, out_signed=True).y_max) == (-8, 7)
    assert LayerConfig(out_bits=4, out_signed=True, relu=True).y_min == 0
    assert (LayerConfig(out_bits=4).y_min, LayerConfig(out_bits=4).y_max) == (0, 15)


def test_datatype_bound():
    cfg = LayerConfig(in_features=100, a_bits=8, w_bits=8, acc_bits=32)
    assert cfg.datatype_acc_bits == 8 + 8 + math.ceil(math.log2(100))


@pytest.mark.parametrize("lo, hi, bits", [(0, 0, 1), (-1, 0, 1), (0, 1, 2), (-128, 127, 8),
                                          (-129, 0, 9), (0, 128, 9), (-2**63, 2**63 - 1, 64)])
def test_signed_width(lo, hi, bits):
    assert signed_width(lo, hi) == bits
