"""The file-format contract of the command line: what qmac reads and writes, with every check.

Inputs
    A layer configuration (TOML, UTF-8 text), integer arrays in ``.npy`` files (weights, input
    vectors), integer arrays ``M``, ``B``, ``S`` in an ``.npz`` archive, and a float layer in an
    ``.npz`` archive. Each input must be a regular file (not a device, pipe or folder), not
    empty, and no larger than its format can need for the configured layer; an ``.npy`` header
    is read and checked (magic, version, dtype, size) before any data, object (pickled) arrays
    are refused without being unpickled, and every ``.npz`` member is read in full so that its
    CRC is checked.
Outputs
    Every output location is checked before any work starts: the folder exists and is writable,
    the name has the format's extension, the path is not one of the inputs. Files are written at
    exactly the path given.
Build folders
    A build folder that qmac did not make is refused unless it is empty; qmac marks its own with
    a ``.qmac-build`` file.

Every problem is a :class:`UserError` whose one-line message names the flag and the file.
"""

from __future__ import annotations

import math
import os
import stat
import zipfile
import zlib
from pathlib import Path

import numpy as np

from qmac.hw.config import ConfigError, LayerConfig
from qmac.sim import golden


__all__ = ["UserError", "read_text_file", "BUILD_MARK", "MAX_CONFIG_BYTES", "MAX_INPUTS_BYTES", "load_config",
           "load_weights", "load_inputs", "load_requant", "load_float_layer",
           "check_output_file", "check_output_folder", "prepare_build_dir", "write_npy",
           "write_npz"]


class UserError(Exception):
    """A problem with what the user gave us: a file, a value, a flag."""


#: The largest configuration file read (a real one is under 1 kB).
MAX_CONFIG_BYTES = 1 << 20
#: The largest input-vector file read; a larger batch is beyond what one simulation can run.
MAX_INPUTS_BYTES = 256 << 20
#: Room for an ``.npy`` header (NumPy itself refuses headers over 10,000 bytes).
_NPY_HEADER_BYTES = 1 << 16
#: Room for the zip structures around each ``.npz`` member.
_ZIP_MEMBER_BYTES = 1 << 12
#: The name of the file that marks a folder as one of qmac's build folders.
BUILD_MARK = ".qmac-build"

_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGIC = b"PK\x03\x04"
_FLOAT_LAYER_KEYS = ("W", "gamma", "beta", "mu", "var")
_FLOAT_LAYER_OPTIONAL = ("bias", "eps", "s_x", "s_y")


def _quote(path):
    return repr(str(path))


def _size_text(size):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("kiB", 10)):
        if size >= 1 << shift:
            return f"{size / (1 << shift):.1f} {unit}"
    return f"{size} bytes"


# -- inputs ---------------------------------------------------------------------------------------

def _regular_file(path, label, *, max_bytes, kind):
    """Check that ``path`` is a readable, non-empty regular file of at most ``max_bytes``; return
    its size."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise UserError(f"{label} does not exist") from None
    except OSError as error:
        raise UserError(f"{label} cannot be read: {error.strerror}") from None
    except ValueError as error:                 # a NUL byte in the name
        raise UserError(f"{label} is not a valid file name: {error}") from None
    if stat.S_ISDIR(info.st_mode):
        raise UserError(f"{label} is a folder, not a {kind} file")
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"{label} is not a regular file (a device, pipe or socket); "
                        f"give a {kind} file")
    if info.st_size == 0:
        raise UserError(f"{label} is empty (0 bytes), not a {kind} file")
    if info.st_size > max_bytes:
        raise UserError(f"{label} is {_size_text(info.st_size)}, far more than a {kind} file "
                        f"for this layer can need (at most {_size_text(max_bytes)})")
    if not os.access(path, os.R_OK):
        raise UserError(f"{label} cannot be read: permission denied")
    return info.st_size


def _open(path, label):
    try:
        return open(path, "rb")
    except OSError as error:
        raise UserError(f"{label} cannot be read: {error.strerror}") from None


def _kind_text(kinds):
    return "integers" if kinds == "iu" else "numbers"


def _read_npy(stream, size, label, kinds):
    """Read one array from the ``.npy`` bytes in ``stream`` (``size`` bytes long), checking the
    header before the data and never unpickling anything."""
    head = stream.read(len(_NPY_MAGIC))
    if head != _NPY_MAGIC:
        if head.startswith(_ZIP_MAGIC):
            raise UserError(f"{label} is not an .npy file (it is a zip archive, like an .npz)")
        raise UserError(f"{label} is not an .npy file (it does not start with the .npy "
                        f"signature)")
    version = tuple(stream.read(2))
    try:
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise UserError(f"{label} is an .npy file of version {version}, which qmac does "
                            f"not read (versions 1.0 and 2.0)")
    except (ValueError, SyntaxError, EOFError) as error:
        raise UserError(f"{label} has a malformed .npy header: "
                        f"{str(error).splitlines()[0]}") from None
    if dtype.hasobject:
        raise UserError(f"{label} holds Python objects (a pickled array), which qmac never "
                        f"loads; save plain {_kind_text(kinds)}")
    if dtype.kind not in kinds or dtype.fields is not None:
        raise UserError(f"{label} must hold {_kind_text(kinds)}, not {dtype}")
    header_bytes = stream.tell()            # the stream started at the magic
    data_bytes = math.prod(shape) * dtype.itemsize
    if size - header_bytes < data_bytes:
        raise UserError(f"{label} is truncated: its header declares shape {shape} of {dtype} "
                        f"({data_bytes} bytes) but {size - header_bytes} bytes follow")
    if size - header_bytes > data_bytes:
        raise UserError(f"{label} has {size - header_bytes - data_bytes} unexpected bytes after "
                        f"its array of shape {shape}; it is not a valid .npy file")
    data = stream.read(data_bytes)
    if len(data) != data_bytes:
        raise UserError(f"{label} is truncated: {len(data)} of {data_bytes} data bytes")
    array = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    return array.copy()


def _npy_limit(count, itemsize=8):
    return count * itemsize + _NPY_HEADER_BYTES


def _load_npy_file(path, label, *, max_bytes, kinds="iu"):
    size = _regular_file(path, label, max_bytes=max_bytes, kind=".npy")
    with _open(path, label) as stream:
        return _read_npy(stream, size, label, kinds)


def _load_npz_file(path, label, *, keys, max_member_bytes, kinds):
    """Read every member of an ``.npz`` archive into a dict ``{name: array}``; every member must
    be one of ``keys``."""
    _regular_file(path, label, kind=".npz",
                  max_bytes=len(keys) * (max_member_bytes + _ZIP_MEMBER_BYTES))
    with _open(path, label) as file:
        if file.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
            raise UserError(f"{label} is an .npy file (one array), not an .npz archive")
        file.seek(0)
        try:
            with zipfile.ZipFile(file) as archive:
                arrays = {}
                for member in archive.infolist():
                    name = member.filename
                    if not name.endswith(".npy") or "/" in name:
                        raise UserError(f"{label} holds {name!r}, which is not an .npy array")
                    key = name.removesuffix(".npy")
                    if key not in keys:
                        raise UserError(f"{label} holds an unknown array {key!r} (known: "
                                        f"{', '.join(keys)})")
                    if key in arrays:
                        raise UserError(f"{label} holds array {key!r} twice")
                    if member.file_size > max_member_bytes:
                        raise UserError(f"{label}: array {key!r} is "
                                        f"{_size_text(member.file_size)}, far more than the "
                                        f"format needs for this layer")
                    with archive.open(member) as stream:
                        arrays[key] = _read_npy(_Counted(stream), member.file_size,
                                                f"{label}: array {key!r}", kinds)
                        stream.read(1)              # reach the end, so that the CRC is checked
                return arrays
        except zipfile.BadZipFile as error:
            raise UserError(f"{label} is not a valid .npz archive: {error}") from None
        except (zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
            raise UserError(f"{label} is not a valid .npz archive: "
                            f"{type(error).__name__}: {error}") from None


class _Counted:
    """A read-only stream that counts what was read (zip members cannot ``tell``)."""

    def __init__(self, stream):
        self._stream, self._position = stream, 0

    def read(self, size=-1):
        data = self._stream.read(size)
        self._position += len(data)
        return data

    def tell(self):
        return self._position


def read_text_file(path, label, *, kind="TOML", what="TOML configuration",
                   max_bytes=MAX_CONFIG_BYTES):
    """Read a small UTF-8 text file (a configuration or a network description), refusing special
    files, oversized files, ``.npy``/``.npz`` files and binary data with one-line errors."""
    _regular_file(path, label, max_bytes=max_bytes, kind=kind)
    with _open(path, label) as file:
        data = file.read(max_bytes + 1)
    if data.startswith(_NPY_MAGIC):
        raise UserError(f"{label} is an .npy file, not a {what}")
    if data.startswith(_ZIP_MAGIC):
        raise UserError(f"{label} is a zip archive (an .npz?), not a {what}")
    if b"\0" in data:
        raise UserError(f"{label} is binary (it holds NUL bytes), not a {kind} text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UserError(f"{label} is not UTF-8 text (byte {data[error.start]:#04x} at offset "
                        f"{error.start}); {kind} files are UTF-8") from None


def load_config(path):
    """Load a layer configuration from a TOML file (UTF-8 text with one ``[layer]`` table)."""
    label = f"config file {_quote(path)}"
    read_text_file(path, label)
    try:
        return LayerConfig.from_toml(path)
    except ConfigError as error:
        raise UserError(str(error)) from None
    except UnicodeDecodeError:
        raise UserError(f"{label} cannot be decoded in this system's locale; run with "
                        f"PYTHONUTF8=1") from None


def load_weights(cfg, path, flag="--weights"):
    """Load and check integer weights ``(out_features, in_features)`` from an ``.npy`` file."""
    array = _load_npy_file(path, f"{flag} file {_quote(path)}",
                           max_bytes=_npy_limit(cfg.N * cfg.K))
    try:
        return golden.check_weights(cfg, array)
    except golden.RangeError as error:
        raise UserError(f"{path}: {error}") from None


def load_inputs(cfg, path, flag="--inputs"):
    """Load and check integer inputs ``(batch, in_features)`` from an ``.npy`` file."""
    array = _load_npy_file(path, f"{flag} file {_quote(path)}", max_bytes=MAX_INPUTS_BYTES)
    try:
        return golden.check_inputs(cfg, array)
    except golden.RangeError as error:
        raise UserError(f"{path}: {error}") from None


def load_requant(cfg, path, flag="--requant"):
    """Load and check requantization parameters ``M``, ``B``, ``S`` from an ``.npz`` file."""
    label = f"{flag} file {_quote(path)}"
    arrays = _load_npz_file(path, label, keys=("M", "B", "S"),
                            max_member_bytes=_npy_limit(cfg.N), kinds="iu")
    missing = [key for key in ("M", "B", "S") if key not in arrays]
    if missing:
        raise UserError(f"{label} lacks array {missing[0]!r} "
                        f"(it holds {', '.join(arrays) or 'nothing'})")
    try:
        return golden.check_requant(cfg, arrays["M"], arrays["B"], arrays["S"])
    except golden.RangeError as error:
        raise UserError(f"{path}: {error}") from None


def load_float_layer(cfg, path, flag="--layer"):
    """Load a float layer with batch norm from an ``.npz``: ``W`` (N×K), ``gamma``, ``beta``,
    ``mu`` (the running mean), ``var`` (N each), optional ``bias`` (N), ``eps``, ``s_x``, ``s_y``
    (scalars). Values are checked further by :func:`qmac.fold.fold_layer`."""
    label = f"{flag} file {_quote(path)}"
    layer = _load_npz_file(path, label, keys=_FLOAT_LAYER_KEYS + _FLOAT_LAYER_OPTIONAL,
                           max_member_bytes=_npy_limit(cfg.N * cfg.K), kinds="fiu")
    missing = [key for key in _FLOAT_LAYER_KEYS if key not in layer]
    if missing:
        raise UserError(f"{label} lacks array {missing[0]!r} (needs "
                        f"{', '.join(_FLOAT_LAYER_KEYS)}; optional "
                        f"{', '.join(_FLOAT_LAYER_OPTIONAL)})")
    for key in ("eps", "s_x", "s_y"):
        if key in layer:
            if layer[key].size != 1:
                raise UserError(f"{path}: {key} must be a scalar, not shape "
                                f"{tuple(layer[key].shape)}")
            layer[key] = float(layer[key].reshape(()))
    return layer


# -- outputs --------------------------------------------------------------------------------------

def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _check_not_input(path, flag, inputs):
    for in_flag, in_path in inputs.items():
        if in_path is not None and _same_file(path, in_path):
            raise UserError(f"{flag} {_quote(path)} is the same file as {in_flag} "
                            f"{_quote(in_path)}; qmac never overwrites an input")


def _writable_folder(folder, flag, path):
    """The folder that will hold ``path`` must exist, be a folder and be writable."""
    if not folder.exists():
        raise UserError(f"{flag} {_quote(path)}: the folder {_quote(folder)} does not exist")
    if not folder.is_dir():
        raise UserError(f"{flag} {_quote(path)}: {_quote(folder)} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"{flag} {_quote(path)}: the folder {_quote(folder)} is not writable")


def check_output_file(path, flag, *, suffixes, inputs=None):
    """Check, before any work, that ``path`` can be written as an output file.

    Parameters
    ----------
    path : path
    flag : str
        The option that named it, e.g. ``"-o"``; every message names it.
    suffixes : tuple of str
        Accepted extensions, e.g. ``(".npy",)``.
    inputs : dict of {flag: path}, optional
        Input files that ``path`` must not be.
    """
    path = Path(path)
    if path.suffix not in suffixes:
        raise UserError(f"{flag} must name a {' or '.join(suffixes)} file, not {_quote(path)}")
    _writable_folder(path.parent, flag, path)
    if path.exists() or path.is_symlink():
        if path.is_dir():
            raise UserError(f"{flag} {_quote(path)} is a folder, not a file")
        if not path.is_file():
            raise UserError(f"{flag} {_quote(path)} exists and is not a regular file")
        if not os.access(path, os.W_OK):
            raise UserError(f"{flag} {_quote(path)} exists and is read-only")
    _check_not_input(path, flag, inputs or {})
    return path


def check_output_folder(path, flag, *, files=(), inputs=None):
    """Check, before any work, that ``path`` is (or can be made) a writable folder and that the
    ``files`` to be written in it are none of the ``inputs``."""
    if str(path) == "":
        raise UserError(f"{flag} is empty; name a folder")
    path = Path(path)
    if path.exists():
        if not path.is_dir():
            raise UserError(f"{flag} {_quote(path)} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            raise UserError(f"{flag} {_quote(path)}: the folder is not writable")
        for name in files:
            target = path / name
            if target.is_dir():
                raise UserError(f"{flag} {_quote(path)}: {name!r} in it is a folder")
            _check_not_input(target, flag, inputs or {})
    else:
        ancestor = path.parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        _writable_folder(ancestor, flag, path)
    return path


def prepare_build_dir(path, flag="--build-dir", *, cache=False):
    """Make sure ``path`` is a build folder of qmac's (a new or empty folder is made one).

    ``cache`` says that ``path`` is in qmac's own build cache (which versions before the mark
    filled without one): it is marked rather than refused."""
    path = Path(path)
    check_output_folder(path, flag)
    if path.exists() and not cache and not (path / BUILD_MARK).is_file():
        if any(path.iterdir()):
            raise UserError(f"{flag} {_quote(path)} is a folder qmac did not make and it is not "
                            f"empty; give a new or empty folder (qmac marks its build folders "
                            f"with a {BUILD_MARK} file)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        mark = path / BUILD_MARK
        if not mark.is_file():
            mark.write_text("A qmac build folder: qmac may overwrite or delete anything here.\n")
    except OSError as error:
        raise UserError(f"{flag} {_quote(path)}: cannot make it a build folder: "
                        f"{error.strerror}") from None
    return path


def write_npy(path, array):
    """Write ``array`` at exactly ``path`` (``np.save`` on a path would append ``.npy``)."""
    with open(path, "wb") as file:
        np.save(file, array, allow_pickle=False)


def write_npz(path, **arrays):
    """Write ``arrays`` into an ``.npz`` archive at exactly ``path``."""
    with open(path, "wb") as file:
        np.savez(file, **arrays)
