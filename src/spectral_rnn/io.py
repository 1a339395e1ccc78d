"""Files: fitted models (safetensors) and data sets (``.npz``).

Model file (one safetensors file)::

    tensors   A1 (d_h, d_x), U (d_h, d_h), A2 (d_h, d_y)           float64, row j = hidden unit j
              + B1 (d_h, d_x), V (d_h, d_h), B2 (d_h, d_y)          for a BRNN (backward chain)
    metadata  format = "spectral-rnn", format_version = "1",
              kind = "iornn" | "brnn" (a name in spectral_rnn.kinds.KINDS),
              activation = "tanh" | "c0,c1,...",
              backward_activation = "tanh" | "c0,c1,..."           (BRNN only: one per chain)

Data file (``numpy.savez``)::

    inputs   (n_sequences, T, d_x)   real numbers
    outputs  (n_sequences, T, d_y)   real numbers (optional where only inputs are needed)
    lengths  (n_sequences,)          optional integers in [1, T]; later steps are padding

Every write goes to a temporary file in the target's directory, then replaces the
target in one ``os.replace``: an existing file is never left half-written, and the
temporary file is removed on every exit path (errors, ``KeyboardInterrupt`` and the
command line's SIGTERM included). Outputs must be regular files: character and block
devices, named pipes, sockets and directories are refused, as is a path that names one
of the command's inputs (through symbolic or hard links too). Input files must be
regular files as well, so a named pipe is never opened for a blocking read.

Files are byte-identical for identical content: the safetensors header is written with
sorted keys, and ``.npz`` members carry a fixed timestamp.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import struct
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import BinaryIO

import numpy as np

from ._checks import InputError, _short, as_sequences, check_finite, check_lengths
from .activations import parse_activation
from .kinds import KINDS, get_kind, kind_of
from .models import RNNModel

__all__ = ["save_model", "load_model", "load_data", "save_data", "check_output_path", "check_input_file",
           "write_atomically", "model_bytes", "data_writer"]

FORMAT = "spectral-rnn"
FORMAT_VERSION = "1"

# ---------------------------------------------------------------- writing
def _kind_of(mode: int) -> str | None:
    """What a non-regular file is, in words (``None`` for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    for test, what in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _name_max(directory: str) -> int:
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def check_output_path(path: str | os.PathLike, read_paths: Iterable[str | os.PathLike | None] = ()) -> None:
    """Raise :class:`InputError` unless ``path`` can be written as an output.

    Refuses a path that names one of ``read_paths`` (the files a command reads; the same
    real path, or the same file through a hard link), an existing directory, device,
    named pipe or socket (only regular files are replaced), a file in a directory that
    does not exist or cannot be written, and a file name longer than the file system allows.
    Call it before long work so that a bad output path fails fast.
    """
    path = os.fspath(path)
    if not path:
        raise InputError("the output path is empty")
    if "\0" in path:
        raise InputError(f"the output path {_short(path)} contains a NUL character")
    for src in read_paths:
        if src is None:
            continue
        src = os.fspath(src)
        same = os.path.realpath(src) == os.path.realpath(path)
        if not same:
            try:
                same = os.path.samefile(src, path)
            except (OSError, ValueError):
                same = False
        if same:
            raise InputError(f"the output {path} is also an input of this command: choose another output path")
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise InputError(f"the output {path} ends with a path separator: give a file name")
    directory, base = os.path.split(os.path.abspath(path))
    if len(os.fsencode(base)) > _name_max(directory if os.path.isdir(directory) else "/"):
        raise InputError(f"cannot write {_short(path)}: the file name is longer than {_name_max(directory)} bytes")
    try:
        st = os.stat(path)  # follows symbolic links: a link to /dev/null is a device
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"cannot write {_short(path)}: {exc.strerror or exc}") from None
    if st is not None:
        what = _kind_of(st.st_mode)
        if what is not None:
            raise InputError(f"the output {path} is {what}: outputs must be regular files")
    if not os.path.isdir(directory):
        raise InputError(f"cannot write {path}: directory {directory} does not exist")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise InputError(f"cannot write {path}: directory {directory} is not writable")


def check_input_file(path: str | os.PathLike, what: str) -> str:
    """Raise :class:`InputError` unless ``path`` is an existing regular file (a named pipe or a
    device is refused without being opened: reading it could block forever). Returns ``path``."""
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read {what} file {_short(path)}: {getattr(exc, 'strerror', None) or exc}") from None
    kind = _kind_of(st.st_mode)
    if kind is not None:
        raise InputError(f"{what} file {path} is {kind}, not a regular file")
    return path


_DEFERRED = tuple(s for s in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if s is not None)


@contextmanager
def _signals_deferred():
    """Hold SIGINT and SIGTERM back (they are delivered on exit) where a cleanup must not be cut short."""
    mask = getattr(signal, "pthread_sigmask", None)
    old = None
    if mask is not None and _DEFERRED:
        try:
            old = mask(signal.SIG_BLOCK, _DEFERRED)
        except (OSError, ValueError):
            old = None
    try:
        yield
    finally:
        if old is not None:
            mask(signal.SIG_SETMASK, old)


def _temp_name(path: str) -> str:
    """A fresh hidden sibling of ``path``, short enough for any file-name limit (a 250-character
    name must still work) and recognisably the target's: ``.<first 40 bytes of the name>.<random>.tmp``."""
    directory, base = os.path.split(os.path.abspath(path))
    stem = os.fsencode(base)[:40].decode("utf-8", "ignore") or "out"
    return os.path.join(directory, f".{stem}.{secrets.token_hex(6)}.tmp")


def write_atomically(outputs: Sequence[tuple[str | os.PathLike, Callable[[BinaryIO], None]]]) -> None:
    """Write several files all or nothing: each ``(path, write)`` writes ``path`` through
    ``write(file)``. Every file goes to a temporary sibling first; only when all are
    complete and synced do they replace their targets (in the order given). On any
    failure or interrupt before that, no target changes and every temporary file is removed.
    """
    items = [(os.fspath(p), w) for p, w in outputs]
    for p, _ in items:
        check_output_path(p)
    temps: list[str] = []
    try:
        for path, write in items:
            tmp = _temp_name(path)
            temps.append(tmp)  # before the file exists: an interrupt right after os.open still removes it
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
            except OSError as exc:
                raise OSError(exc.errno, f"cannot write {path} ({exc.strerror or exc})") from None
            try:
                with os.fdopen(fd, "wb") as fh:
                    write(fh)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                raise OSError(exc.errno, f"cannot write {path} ({exc.strerror or exc})") from None
        for (path, _), tmp in zip(items, temps):
            check_output_path(path)  # still not a directory, device or pipe
            try:
                os.replace(tmp, path)
            except OSError as exc:
                raise OSError(exc.errno, f"cannot write {path} ({exc.strerror or exc})") from None
    except BaseException:
        with _signals_deferred():
            for tmp in temps:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        raise


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary sibling, then ``os.replace``."""
    write_atomically([(path, write)])


# ------------------------------------------------------------------ models
def _sorted_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header keys sorted (metadata included), so that
    equal models give equal bytes: safetensors orders metadata keys differently from run to run."""
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the data stay 8-byte aligned, as safetensors writes them
    return struct.pack("<Q", len(text)) + text + blob[8 + n :]


def model_bytes(model: RNNModel) -> bytes:
    """The model file's content (what :func:`save_model` writes): safetensors, sorted header."""
    from safetensors.numpy import save

    kind = kind_of(model, "save_model")
    # safetensors writes an array's memory as it lies: a transposed view would be scrambled
    tensors = {k: np.ascontiguousarray(getattr(model, k), dtype=np.float64) for k in kind.parameter_names}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind.name,
        **{name: f.to_string() for name, f in model.activations().items()},
    }
    return _sorted_safetensors(save(tensors, metadata=metadata))


def save_model(model: RNNModel, path: str | os.PathLike) -> None:
    """Save a model of a registered kind (:class:`IORNN`, :class:`BRNN`, ...) to one safetensors file (atomically;
    equal models give byte-identical files)."""
    blob = model_bytes(model)
    _atomic_write(path, lambda fh: fh.write(blob))


def load_model(path: str | os.PathLike) -> RNNModel:
    """Load a model saved by :func:`save_model`; anything else raises :class:`InputError`."""
    from safetensors import safe_open

    path = check_input_file(path, "model")
    try:
        with safe_open(path, framework="numpy") as fh:
            meta = fh.metadata() or {}
            names = set(fh.keys())
            tensors = {k: fh.get_tensor(k) for k in names}
    except OSError as exc:
        raise InputError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # safetensors raises its own error type on garbage
        detail = " ".join(str(exc).split())[:200]
        raise InputError(f"{path} is not a safetensors model file ({detail})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a spectral-rnn model file (metadata 'format' is {_short(meta.get('format'))})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path} has model format version {_short(meta.get('format_version'))}; this version reads {FORMAT_VERSION!r}"
        )
    kind = meta.get("kind")
    if kind not in KINDS:
        raise InputError(f"{path}: unknown model kind {_short(kind)} (expected one of {sorted(KINDS)})")
    cls = get_kind(kind).cls
    names_want = cls.parameter_names()
    want = set(names_want)
    if names != want:
        missing, extra = sorted(want - names), [_short(k, 30) for k in sorted(names - want)[:5]]
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
        raise InputError(f"{path}: a model file of kind {kind!r} holds tensors {', '.join(names_want)}; {'; '.join(parts)}")
    for k, a in tensors.items():
        if a.ndim != 2 or a.dtype.kind != "f":
            raise InputError(f"{path}: tensor {k} must be a 2-d float matrix, got shape {a.shape} and dtype {a.dtype}")
    acts = {}
    for c in cls.chains:
        if c.activation not in meta:
            raise InputError(f"{path}: metadata {c.activation!r} is missing")
        acts[c.activation] = meta[c.activation]
    try:
        parsed = {k: parse_activation(v) for k, v in acts.items()}
        weights = {k: tensors[k].astype(np.float64) for k in names_want}
        model = cls(**weights, **parsed)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return model


# -------------------------------------------------------------------- data
def load_data(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Read a data file: ``(X, Y, lengths)``; ``Y`` is ``None`` when the file has no
    ``outputs``, ``lengths`` is ``None`` when absent or when every sequence is full.

    Raises :class:`InputError` for a missing or unreadable file, a missing
    ``inputs`` array, wrong ranks or shapes, non-numeric dtypes, NaN or inf on
    valid steps, inputs and outputs of different sizes, or bad lengths.
    """
    path = check_input_file(path, "data")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as exc:
        raise InputError(f"cannot read data file {path}: {exc.strerror or ' '.join(str(exc).split())}") from None
    if magic == b"\x93NUMPY":
        raise InputError(f"{path} holds a single array, not an .npz file with 'inputs' (and 'outputs')")
    if not magic.startswith(b"PK"):
        raise InputError(f"{path} is not an .npz data file (no zip header; write it with numpy.savez)")
    try:
        z = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise InputError(f"cannot read data file {path}: {exc.strerror or ' '.join(str(exc).split())}") from None
    except Exception as exc:  # not a numpy file at all, or a pickle
        raise InputError(f"{path} is not an .npz data file ({' '.join(str(exc).split())})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise InputError(f"{path} holds a single array, not an .npz file with 'inputs' (and 'outputs')")
    try:
        with z:
            found = list(z.files)
            raw = {k: z[k] for k in ("inputs", "outputs", "lengths") if k in found}
    except Exception as exc:  # truncated members, object arrays...
        raise InputError(f"{path} is not a readable .npz data file ({' '.join(str(exc).split())})") from None
    if "inputs" not in raw:
        held = ", ".join(repr(k) for k in found[:8]) + (", ..." if len(found) > 8 else "") or "none"
        raise InputError(f"{path} has no array 'inputs' (shape (n_sequences, T, d_x)); it holds {held}: "
                         "save with numpy.savez(path, inputs=X, outputs=Y[, lengths=L])")
    try:
        X = as_sequences(raw["inputs"], "inputs")
        Y = as_sequences(raw["outputs"], "outputs") if "outputs" in raw else None
        if Y is not None and Y.shape[:2] != X.shape[:2]:
            raise InputError(
                f"inputs and outputs disagree: inputs have {X.shape[0]} sequences of {X.shape[1]} steps, "
                f"outputs {Y.shape[0]} of {Y.shape[1]}"
            )
        lengths = check_lengths(raw["lengths"], X.shape[0], X.shape[1]) if "lengths" in raw else None
        check_finite(X, lengths, "inputs")
        if Y is not None:
            check_finite(Y, lengths, "outputs")
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return X, Y, lengths


def save_data(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays (``inputs``, ``outputs``, ``lengths``...) to an ``.npz`` file, atomically.

    The file is written at ``path`` exactly (no ``.npz`` suffix is added).
    """
    _atomic_write(path, data_writer(**arrays))


def data_writer(**arrays: np.ndarray) -> Callable[[BinaryIO], None]:
    """Check ``arrays`` as :func:`save_data` does and return the function that writes them
    to an open file (for :func:`write_atomically`)."""
    if not arrays:
        raise InputError("save_data needs at least one array")
    data = {}
    for k, v in arrays.items():
        if v is None:
            continue
        try:
            a = np.asarray(v)
        except Exception:  # a ragged nesting
            raise InputError(f"save_data: {k} is not an array (a ragged nesting?)") from None
        if a.dtype.hasobject or a.dtype.kind == "V":
            raise InputError(f"save_data: {k} has dtype {a.dtype}; data files hold numbers only (no pickled objects)")
        data[k] = a
    if not data:
        raise InputError("save_data needs at least one array")
    return lambda fh: np.savez(fh, **data)
