"""Files: fitted models (safetensors) and data sets (``.npz``).

Model file (one safetensors file)::

    tensors   A1 (d_h, d_x), U (d_h, d_h), A2 (d_h, d_y)           float64, row j = hidden unit j
              + B1 (d_h, d_x), V (d_h, d_h), B2 (d_h, d_y)          for a BRNN (backward chain)
    metadata  format = "spectral-rnn", format_version = "1",
              kind = "iornn" | "brnn", activation = "tanh" | "c0,c1,...",
              backward_activation = "tanh" | "c0,c1,..."           (BRNN only)

Data file (``numpy.savez``)::

    inputs   (n_sequences, T, d_x)   real numbers
    outputs  (n_sequences, T, d_y)   real numbers (optional where only inputs are needed)
    lengths  (n_sequences,)          optional integers in [1, T]; later steps are padding

Every write goes to a temporary file in the target's directory, then replaces the
target in one ``os.replace``: an existing file is never left half-written.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterable
from typing import BinaryIO

import numpy as np

from ._checks import InputError, as_sequences, check_finite, check_lengths
from .activations import parse_activation
from .models import BRNN, IORNN

__all__ = ["save_model", "load_model", "load_data", "save_data", "check_output_path"]

FORMAT = "spectral-rnn"
FORMAT_VERSION = "1"

_KINDS: dict[str, type] = {"iornn": IORNN, "brnn": BRNN}


# ---------------------------------------------------------------- writing
def check_output_path(path: str | os.PathLike, read_paths: Iterable[str | os.PathLike] = ()) -> None:
    """Raise :class:`InputError` unless ``path`` can be written as an output.

    Refuses a path that names one of ``read_paths`` (the files a command reads),
    an existing directory, or a file in a directory that does not exist.
    Call it before long work so that a bad output path fails fast.
    """
    path = os.fspath(path)
    if not path:
        raise InputError("the output path is empty")
    for src in read_paths:
        src = os.fspath(src)
        same = os.path.realpath(src) == os.path.realpath(path)
        if not same and os.path.exists(src) and os.path.exists(path):
            same = os.path.samefile(src, path)
        if same:
            raise InputError(f"the output {path} is also an input of this command: choose another output path")
    if os.path.isdir(path):
        raise InputError(f"the output {path} is a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise InputError(f"cannot write {path}: directory {parent} does not exist")


def _atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Write ``path`` through ``write(file)`` into a temporary sibling, then ``os.replace``."""
    path = os.fspath(path)
    check_output_path(path)
    directory, base = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours the umask
    except OSError as exc:
        raise OSError(exc.errno, f"cannot write {path} ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise OSError(exc.errno, f"cannot write {path} ({exc.strerror or exc})") from None
        raise


# ------------------------------------------------------------------ models
def save_model(model: IORNN | BRNN, path: str | os.PathLike) -> None:
    """Save an :class:`IORNN` or :class:`BRNN` to one safetensors file (atomically)."""
    from safetensors.numpy import save

    if not isinstance(model, (IORNN, BRNN)):
        raise InputError(f"save_model expects an IORNN or a BRNN, got {type(model).__name__}")
    # safetensors writes an array's memory as it lies: a transposed view would be scrambled
    tensors = {k: np.ascontiguousarray(getattr(model, k), dtype=np.float64) for k in model._names}
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": model.kind,
        "activation": model.activation.to_string(),
    }
    if isinstance(model, BRNN):
        metadata["backward_activation"] = model.backward_activation.to_string()
    blob = save(tensors, metadata=metadata)
    _atomic_write(path, lambda fh: fh.write(blob))


def _check_input_file(path: str, what: str) -> None:
    if not os.path.exists(path):
        raise InputError(f"{what} file {path} does not exist")
    if os.path.isdir(path):
        raise InputError(f"{what} file {path} is a directory")


def load_model(path: str | os.PathLike) -> IORNN | BRNN:
    """Load a model saved by :func:`save_model`; anything else raises :class:`InputError`."""
    from safetensors import safe_open

    path = os.fspath(path)
    _check_input_file(path, "model")
    try:
        with safe_open(path, framework="numpy") as fh:
            meta = fh.metadata() or {}
            names = set(fh.keys())
            tensors = {k: fh.get_tensor(k) for k in names}
    except OSError as exc:
        raise InputError(f"cannot read model file {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # safetensors raises its own error type on garbage
        detail = " ".join(str(exc).split())
        raise InputError(f"{path} is not a safetensors model file ({detail})") from None
    if meta.get("format") != FORMAT:
        raise InputError(f"{path} is not a spectral-rnn model file (metadata 'format' is {meta.get('format')!r})")
    if meta.get("format_version") != FORMAT_VERSION:
        raise InputError(
            f"{path} has model format version {meta.get('format_version')!r}; this version reads {FORMAT_VERSION!r}"
        )
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise InputError(f"{path}: unknown model kind {kind!r} (expected one of {sorted(_KINDS)})")
    cls = _KINDS[kind]
    want = set(cls._names)
    if names != want:
        missing, extra = sorted(want - names), sorted(names - want)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unexpected {', '.join(extra)}"] if extra else [])
        raise InputError(f"{path}: a model file of kind {kind!r} holds tensors {', '.join(cls._names)}; {'; '.join(parts)}")
    for k, a in tensors.items():
        if a.ndim != 2 or a.dtype.kind != "f":
            raise InputError(f"{path}: tensor {k} must be a 2-d float matrix, got shape {a.shape} and dtype {a.dtype}")
    if "activation" not in meta:
        raise InputError(f"{path}: metadata 'activation' is missing")
    acts = {"activation": meta["activation"]}
    if kind == "brnn":
        if "backward_activation" not in meta:
            raise InputError(f"{path}: metadata 'backward_activation' is missing")
        acts["backward_activation"] = meta["backward_activation"]
    try:
        parsed = {k: parse_activation(v) for k, v in acts.items()}
        weights = {k: tensors[k].astype(np.float64) for k in cls._names}
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
    path = os.fspath(path)
    _check_input_file(path, "data")
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
            raw = {k: z[k] for k in ("inputs", "outputs", "lengths") if k in z.files}
    except Exception as exc:  # truncated members, object arrays...
        raise InputError(f"{path} is not a readable .npz data file ({' '.join(str(exc).split())})") from None
    if "inputs" not in raw:
        raise InputError(f"{path} has no array 'inputs' (shape (n_sequences, T, d_x))")
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
    if not arrays:
        raise InputError("save_data needs at least one array")
    data = {k: np.asarray(v) for k, v in arrays.items() if v is not None}
    _atomic_write(path, lambda fh: np.savez(fh, **data))
