"""The float network format: a JSON description of a sequence of layers plus an ``.npz`` of arrays.

A network file ``NAME.json`` reads::

    {
      "format": "qmac-network",
      "version": 1,
      "arrays": "NAME.npz",
      "input": {"features": 64, "scale": 0.0625, "min": 0, "max": 16},
      "layers": [
        {"kind": "linear", "name": "fc1", "in_features": 64, "out_features": 32, "bias": true},
        {"kind": "batchnorm1d", "name": "bn1", "features": 32, "eps": 1e-05},
        {"kind": "relu"},
        {"kind": "linear", "name": "fc2", "in_features": 32, "out_features": 10, "bias": true}
      ]
    }

- ``arrays`` names the ``.npz`` file beside the JSON file. Its arrays carry PyTorch's
  ``state_dict`` names: ``<name>.weight`` (out × in) and ``<name>.bias`` of a linear layer;
  ``<name>.weight`` (γ), ``<name>.bias`` (β), ``<name>.running_mean`` (μ),
  ``<name>.running_var`` (σ²) of a batch norm. ``<name>.num_batches_tracked`` is accepted and
  ignored. Any other array is an error.
- ``input`` says how the integers the hardware receives relate to the reals the float network
  was trained on: real input = ``scale`` × integer input, integers in ``[min, max]``.
- ``layers`` is a sequence of blocks ``linear [batchnorm1d] [relu]``. ``conv2d`` is reserved for
  later and refused with a clear message today.

:func:`load_network` checks every field and array and names the layer and the field of anything
malformed or unsupported; :func:`save_network` writes the pair; :func:`from_torch` converts a
PyTorch ``nn.Sequential`` of ``Linear``, ``BatchNorm1d`` and ``ReLU`` (PyTorch is optional and is
imported only there).
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


__all__ = ["NetworkError", "Linear", "BatchNorm", "ReLU", "Block", "Network", "load_network",
           "save_network", "from_torch", "forward"]

FORMAT = "qmac-network"
VERSION = 1
_KINDS = ("linear", "batchnorm1d", "relu")
_RESERVED_KINDS = ("conv2d",)
# The largest JSON description and arrays file accepted (a guard against special files).
_MAX_JSON_BYTES = 1 << 20
_MAX_ARRAYS_BYTES = 1 << 30


class NetworkError(ValueError):
    """A network file is malformed or describes something qmac does not support."""


@dataclass(frozen=True)
class Linear:
    """``y = W·x + bias``; ``W`` has shape (out_features, in_features)."""
    name: str
    W: np.ndarray
    bias: np.ndarray | None

    @property
    def in_features(self):
        return self.W.shape[1]

    @property
    def out_features(self):
        return self.W.shape[0]


@dataclass(frozen=True)
class BatchNorm:
    """``y = γ·(x - μ)/sqrt(σ² + eps) + β`` per feature (inference form, running statistics)."""
    name: str
    gamma: np.ndarray
    beta: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    eps: float

    @property
    def features(self):
        return self.gamma.shape[0]


@dataclass(frozen=True)
class ReLU:
    """``y = max(x, 0)``."""


@dataclass(frozen=True)
class Block:
    """One hardware layer: a linear layer, its batch norm if any, and whether a ReLU follows."""
    linear: Linear
    bn: BatchNorm | None
    relu: bool

    @property
    def name(self):
        return self.linear.name


@dataclass(frozen=True)
class Network:
    """A float network: its layers and how the integer input maps to the real input.

    Parameters
    ----------
    layers : tuple of Linear, BatchNorm, ReLU
        In order; they must form blocks ``linear [batchnorm1d] [relu]``.
    input_scale : float
        Real input = ``input_scale`` × integer input.
    input_min, input_max : int
        The range of the integer input.
    """
    layers: tuple
    input_scale: float
    input_min: int
    input_max: int

    def __post_init__(self):
        self.blocks()   # checks the sequence

    @property
    def in_features(self):
        return self.blocks()[0].linear.in_features

    @property
    def out_features(self):
        return self.blocks()[-1].linear.out_features

    def blocks(self):
        """The layers grouped into :class:`Block` s; raises :class:`NetworkError` on a sequence
        that is not ``linear [batchnorm1d] [relu]`` repeated, or whose widths do not chain."""
        blocks, i, layers = [], 0, self.layers
        if not layers:
            raise NetworkError("layers: the network has no layer")
        while i < len(layers):
            layer = layers[i]
            if not isinstance(layer, Linear):
                raise NetworkError(f"layers[{i}]: expected a linear layer to start a block, not "
                                   f"{_kind(layer)} (blocks are linear [batchnorm1d] [relu])")
            bn, relu, j = None, False, i + 1
            if j < len(layers) and isinstance(layers[j], BatchNorm):
                bn, j = layers[j], j + 1
                if bn.features != layer.out_features:
                    raise NetworkError(f"layers[{i + 1}] ({bn.name}): features = {bn.features} "
                                       f"does not match out_features = {layer.out_features} of "
                                       f"{layer.name}")
            if j < len(layers) and isinstance(layers[j], ReLU):
                relu, j = True, j + 1
            if blocks and blocks[-1].linear.out_features != layer.in_features:
                raise NetworkError(f"layers[{i}] ({layer.name}): in_features = "
                                   f"{layer.in_features} does not match out_features = "
                                   f"{blocks[-1].linear.out_features} of the layer before")
            blocks.append(Block(layer, bn, relu))
            i = j
        return blocks


def _kind(layer):
    return {Linear: "linear", BatchNorm: "batchnorm1d", ReLU: "relu"}[type(layer)]


def forward(network, x, *, upto=None):
    """The float network on real inputs ``x`` (batch × in_features), in float64.

    Returns the output of the last block, or a list of every block's output with ``upto="all"``.
    """
    x = np.asarray(x, dtype=np.float64)
    outputs = []
    for block in network.blocks():
        x = _block_forward(block, x)
        outputs.append(x)
    return outputs if upto == "all" else x


def _block_forward(block, x):
    y = x @ block.linear.W.T
    if block.linear.bias is not None:
        y = y + block.linear.bias
    if block.bn is not None:
        bn = block.bn
        y = bn.gamma * (y - bn.mean) / np.sqrt(bn.var + bn.eps) + bn.beta
    if block.relu:
        y = np.maximum(y, 0.0)
    return y


# -- loading -----------------------------------------------------------------------------------

def _read_limited(path, limit, what):
    path = Path(path)
    try:
        if not path.is_file():
            if path.exists():
                raise NetworkError(f"{what} {str(path)!r} is not a regular file")
            raise NetworkError(f"{what} {str(path)!r} does not exist")
        size = path.stat().st_size
        if size > limit:
            raise NetworkError(f"{what} {str(path)!r} is {size} bytes, more than the "
                               f"{limit} bytes a network file may have")
        return path.read_bytes()
    except OSError as error:
        raise NetworkError(f"cannot read {what} {str(path)!r}: {error.strerror}") from None


def _field(where, entry, key, kinds, *, required=True, default=None):
    if key not in entry:
        if required:
            raise NetworkError(f"{where}: missing field {key!r}")
        return default
    value = entry[key]
    if isinstance(value, bool) and bool not in kinds:
        raise NetworkError(f"{where}: field {key!r} must be {_kinds_text(kinds)}, not {value!r}")
    if not isinstance(value, kinds):
        raise NetworkError(f"{where}: field {key!r} must be {_kinds_text(kinds)}, not {value!r}")
    return value


def _kinds_text(kinds):
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "an object", list: "a list"}
    return " or ".join(dict.fromkeys(names[k] for k in kinds))


def _check_keys(where, entry, allowed):
    unknown = sorted(set(entry) - set(allowed))
    if unknown:
        raise NetworkError(f"{where}: unknown field {unknown[0]!r} (known: "
                           f"{', '.join(allowed)})")


def _positive_int(where, entry, key):
    value = _field(where, entry, key, (int,))
    if value < 1 or value > 1 << 20:
        raise NetworkError(f"{where}: field {key!r} must be between 1 and {1 << 20}, not {value}")
    return value


class _Arrays:
    """The arrays of the ``.npz`` file; remembers which were used so that extras are refused."""

    def __init__(self, path):
        self.path = path
        data = _read_limited(path, _MAX_ARRAYS_BYTES, "arrays file")
        import io
        try:
            archive = np.load(io.BytesIO(data), allow_pickle=False)
            if not hasattr(archive, "files"):
                raise NetworkError(f"arrays file {str(path)!r} must be an .npz archive, not one "
                                   f"array")
            self.arrays = {key: archive[key] for key in archive.files}
        except NetworkError:
            raise
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as error:
            raise NetworkError(f"arrays file {str(path)!r} is not a valid .npz file: "
                               f"{error}") from None
        self.used = set()

    def get(self, where, key, shape, *, required=True):
        if key not in self.arrays:
            if required:
                raise NetworkError(f"{where}: array {key!r} is missing from {self.path.name}")
            return None
        self.used.add(key)
        array = self.arrays[key]
        if array.dtype.kind not in "fiu":
            raise NetworkError(f"{where}: array {key!r} must hold real numbers, not "
                               f"{array.dtype}")
        if array.shape != shape:
            raise NetworkError(f"{where}: array {key!r} must have shape {shape}, not "
                               f"{tuple(array.shape)}")
        array = array.astype(np.float64)
        bad = ~np.isfinite(array)
        if bad.any():
            index = [int(i) for i in np.argwhere(bad)[0]]
            raise NetworkError(f"{where}: array {key!r}{index} = {array[tuple(index)]} is not "
                               f"finite")
        return array

    def check_all_used(self):
        extra = sorted(key for key in set(self.arrays) - self.used
                       if not key.endswith(".num_batches_tracked"))
        if extra:
            raise NetworkError(f"arrays file {self.path.name}: array {extra[0]!r} belongs to no "
                               f"layer of the description")


def load_network(path):
    """Load a network from its JSON description (and the ``.npz`` it names).

    Raises
    ------
    NetworkError
        Anything malformed or unsupported, naming the file, the layer and the field.
    """
    path = Path(path)
    data = _read_limited(path, _MAX_JSON_BYTES, "network file")
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise NetworkError(f"network file {str(path)!r} is not UTF-8 text (a JSON description "
                           f"is expected)") from None
    except json.JSONDecodeError as error:
        raise NetworkError(f"network file {str(path)!r} is not valid JSON: {error}") from None
    where = str(path)
    if not isinstance(document, dict):
        raise NetworkError(f"{where}: the top level must be an object")
    _check_keys(where, document, ("format", "version", "arrays", "input", "layers"))
    if document.get("format") != FORMAT:
        raise NetworkError(f"{where}: field 'format' must be {FORMAT!r}, not "
                           f"{document.get('format')!r}")
    if document.get("version") != VERSION:
        raise NetworkError(f"{where}: field 'version' must be {VERSION}, not "
                           f"{document.get('version')!r}")
    arrays_name = _field(where, document, "arrays", (str,))
    if Path(arrays_name).name != arrays_name:
        raise NetworkError(f"{where}: field 'arrays' must name a file beside the description, "
                           f"not {arrays_name!r}")
    arrays = _Arrays(path.parent / arrays_name)
    entry = _field(where, document, "input", (dict,))
    input_where = f"{where}: input"
    _check_keys(input_where, entry, ("features", "scale", "min", "max"))
    features = _positive_int(input_where, entry, "features")
    scale = float(_field(input_where, entry, "scale", (int, float)))
    if not (math.isfinite(scale) and scale > 0):
        raise NetworkError(f"{input_where}: field 'scale' must be positive and finite, not "
                           f"{scale!r}")
    x_min = _field(input_where, entry, "min", (int,))
    x_max = _field(input_where, entry, "max", (int,))
    if x_min > x_max:
        raise NetworkError(f"{input_where}: min = {x_min} is above max = {x_max}")
    for key, value in (("min", x_min), ("max", x_max)):
        if abs(value) >= 1 << 32:
            raise NetworkError(f"{input_where}: field {key!r} = {value} is outside the 32-bit "
                               f"integers qmac's inputs can be")
    entries = _field(where, document, "layers", (list,))
    layers = []
    for i, entry in enumerate(entries):
        layers.append(_load_layer(f"{where}: layers[{i}]", entry, arrays))
    names = [layer.name for layer in layers if not isinstance(layer, ReLU)]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise NetworkError(f"{where}: two layers are named {duplicate!r}")
    network = _network(where, layers, scale, x_min, x_max)
    arrays.check_all_used()
    if network.in_features != features:
        raise NetworkError(f"{input_where}: features = {features} does not match in_features = "
                           f"{network.in_features} of the first layer")
    return network


def _network(where, layers, scale, x_min, x_max):
    try:
        return Network(tuple(layers), scale, x_min, x_max)
    except NetworkError as error:
        raise NetworkError(f"{where}: {error}") from None


def _load_layer(where, entry, arrays):
    if not isinstance(entry, dict):
        raise NetworkError(f"{where}: a layer must be an object, not {entry!r}")
    kind = _field(where, entry, "kind", (str,))
    if kind in _RESERVED_KINDS:
        raise NetworkError(f"{where}: kind {kind!r} is not supported yet (supported: "
                           f"{', '.join(_KINDS)})")
    if kind not in _KINDS:
        raise NetworkError(f"{where}: unknown kind {kind!r} (supported: {', '.join(_KINDS)})")
    if kind == "relu":
        _check_keys(where, entry, ("kind",))
        return ReLU()
    name = _field(where, entry, "name", (str,))
    if not name.isidentifier() or not name.isascii() or len(name) > 64:
        raise NetworkError(f"{where}: field 'name' must be an identifier of at most 64 ASCII "
                           f"characters, not {name!r}")
    from .hw.config import ConfigError, LayerConfig
    try:
        LayerConfig(name=name)          # it names the layer's hardware module
    except ConfigError as error:
        raise NetworkError(f"{where}: field 'name': {error}") from None
    where = f"{where} ({name})"
    if kind == "linear":
        _check_keys(where, entry, ("kind", "name", "in_features", "out_features", "bias"))
        k = _positive_int(where, entry, "in_features")
        n = _positive_int(where, entry, "out_features")
        has_bias = _field(where, entry, "bias", (bool,), required=False, default=True)
        W = arrays.get(where, f"{name}.weight", (n, k))
        bias = arrays.get(where, f"{name}.bias", (n,), required=has_bias) if has_bias else None
        if not has_bias and f"{name}.bias" in arrays.arrays:
            raise NetworkError(f"{where}: 'bias' is false but {name}.bias is in the arrays")
        return Linear(name, W, bias)
    _check_keys(where, entry, ("kind", "name", "features", "eps"))
    c = _positive_int(where, entry, "features")
    eps = float(_field(where, entry, "eps", (int, float), required=False, default=1e-5))
    if not (math.isfinite(eps) and eps >= 0):
        raise NetworkError(f"{where}: field 'eps' must be a finite number >= 0, not {eps!r}")
    gamma = arrays.get(where, f"{name}.weight", (c,))
    beta = arrays.get(where, f"{name}.bias", (c,))
    mean = arrays.get(where, f"{name}.running_mean", (c,))
    var = arrays.get(where, f"{name}.running_var", (c,))
    bad = ~(var + eps > 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise NetworkError(f"{where}: running_var[{i}] + eps = {float(var[i] + eps)!r} must "
                           f"be positive")
    return BatchNorm(name, gamma, beta, mean, var, eps)


# -- writing -----------------------------------------------------------------------------------

def save_network(network, path):
    """Write ``network`` as ``path`` (JSON) and ``path`` with suffix ``.npz`` (arrays).

    Returns the two paths written.
    """
    path = Path(path)
    if path.suffix != ".json":
        raise NetworkError(f"a network description must be a .json file, not {str(path)!r}")
    arrays_path = path.with_suffix(".npz")
    entries, arrays = [], {}
    for layer in network.layers:
        if isinstance(layer, Linear):
            entries.append({"kind": "linear", "name": layer.name,
                            "in_features": int(layer.in_features),
                            "out_features": int(layer.out_features),
                            "bias": layer.bias is not None})
            arrays[f"{layer.name}.weight"] = layer.W
            if layer.bias is not None:
                arrays[f"{layer.name}.bias"] = layer.bias
        elif isinstance(layer, BatchNorm):
            entries.append({"kind": "batchnorm1d", "name": layer.name,
                            "features": int(layer.features), "eps": float(layer.eps)})
            arrays.update({f"{layer.name}.weight": layer.gamma, f"{layer.name}.bias": layer.beta,
                           f"{layer.name}.running_mean": layer.mean,
                           f"{layer.name}.running_var": layer.var})
        else:
            entries.append({"kind": "relu"})
    document = {"format": FORMAT, "version": VERSION, "arrays": arrays_path.name,
                "input": {"features": int(network.in_features),
                          "scale": float(network.input_scale),
                          "min": int(network.input_min), "max": int(network.input_max)},
                "layers": entries}
    with open(arrays_path, "wb") as file:
        np.savez(file, **{key: np.asarray(value, dtype=np.float64)
                          for key, value in arrays.items()})
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path, arrays_path


def from_torch(model, *, input_scale, input_min, input_max, names=None):
    """Convert a PyTorch ``nn.Sequential`` of ``Linear``, ``BatchNorm1d`` and ``ReLU``.

    Parameters
    ----------
    model : torch.nn.Sequential
        In eval form (running statistics are used, whatever ``model.training`` says).
    input_scale, input_min, input_max
        How the integer hardware input relates to the model's real input.
    names : list of str, optional
        One name per Linear/BatchNorm1d module; default ``fc1, bn1, fc2, ...``.

    Raises
    ------
    NetworkError
        A module of another kind (named with its index), or an affine-free batch norm.
    """
    import torch   # optional dependency: only this function needs it

    layers, counts = [], {"fc": 0, "bn": 0}
    named = iter(names) if names is not None else None
    for index, module in enumerate(model):
        if isinstance(module, torch.nn.Linear):
            counts["fc"] += 1
            name = next(named) if named else f"fc{counts['fc']}"
            W = module.weight.detach().double().numpy().copy()
            bias = None if module.bias is None else module.bias.detach().double().numpy().copy()
            layers.append(Linear(name, W, bias))
        elif isinstance(module, torch.nn.BatchNorm1d):
            counts["bn"] += 1
            name = next(named) if named else f"bn{counts['bn']}"
            if not module.affine or module.running_mean is None:
                raise NetworkError(f"module {index} ({type(module).__name__}): batch norm needs "
                                   f"affine=True and track_running_stats=True")
            layers.append(BatchNorm(
                name, module.weight.detach().double().numpy().copy(),
                module.bias.detach().double().numpy().copy(),
                module.running_mean.detach().double().numpy().copy(),
                module.running_var.detach().double().numpy().copy(), float(module.eps)))
        elif isinstance(module, torch.nn.ReLU):
            layers.append(ReLU())
        else:
            raise NetworkError(f"module {index} ({type(module).__name__}) is not supported "
                               f"(supported: Linear, BatchNorm1d, ReLU)")
    return Network(tuple(layers), float(input_scale), int(input_min), int(input_max))
