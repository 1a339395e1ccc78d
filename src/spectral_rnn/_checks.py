"""Errors and input validation shared by every module.

All errors the library raises on bad input derive from :class:`SpectralRNNError`,
itself a :class:`ValueError`, and carry a one-line message naming the problem.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import numbers
import os
import warnings

import numpy as np
import torch

__all__ = [
    "SpectralRNNError",
    "InputError",
    "DivergenceError",
    "IllConditionedError",
    "NotFittedError",
    "as_sequences",
    "DeviceSequences",
    "read_slice",
    "check_lengths",
    "check_xy",
    "inputs_checked_once",
    "valid_mask",
    "check_random_state",
    "resolve_device",
    "check_device",
    "check_dtype",
    "check_positive_int",
    "check_nonnegative_int",
    "check_real",
    "check_outlier_factor",
    "check_process",
    "check_decomposer",
    "check_memory",
    "available_memory",
    "MAX_MAGNITUDE",
]

#: inputs and outputs larger than this in magnitude are refused by :func:`check_xy`: their
#: squares summed over the data would overflow float64 in the moment passes
MAX_MAGNITUDE = 1e100


class SpectralRNNError(ValueError):
    """Base class of the library's errors (a ``ValueError``)."""


class InputError(SpectralRNNError):
    """Bad user input: wrong shape, dtype, non-finite values, too few samples..."""


class DivergenceError(SpectralRNNError):
    """A polynomial recursion blew up during simulation or prediction."""


class IllConditionedError(SpectralRNNError):
    """The moment problem is (near) singular: the data do not identify the model."""


class SpectralRNNWarning(RuntimeWarning):
    """A result the library returns but doubts: a decomposition stopped by its sweep cap, a law
    chosen by the user whose scores miss Stein's identity on the data, a refinement that diverged
    before improving. The command line prints these as one ``warning:`` line each."""


class NotFittedError(SpectralRNNError, AttributeError):
    """An estimator was used before ``fit`` (an ``AttributeError`` too, as scikit-learn's is)."""


def _short(value: object, limit: int = 60) -> str:
    """``repr(value)``, cut to about ``limit`` characters (messages stay one short line)."""
    text = " ".join(repr(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _target_dtype(dtype: np.dtype) -> np.dtype:
    """The native float dtype an array of ``dtype`` is computed in: float32 stays float32,
    float64 stays float64, float16 and small integers become float32 (exact), long doubles
    and wide integers float64."""
    if dtype.kind == "f":
        return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)
    return np.dtype(np.float32) if dtype.itemsize <= 2 else np.dtype(np.float64)


class DeviceSequences:
    """Sequences held in a torch tensor on an accelerator, ``(n_sequences, T, d)``, read where
    they lie: the fit's passes take device slices (:meth:`device_slice`, :func:`read_slice`)
    and never copy the whole tensor to the host; any other reader gets a host copy of the
    slice it asks for (``A[key]``: a numpy array), so small subsamples work as for any array
    read by slices. ``dtype``: the numpy dtype of the tensor (float32 or float64; float16
    and bfloat16 tensors are converted to float32 on their device, once)."""

    def __init__(self, tensor: torch.Tensor) -> None:
        t = tensor.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.to(torch.float32)
        self.tensor = t
        self.shape = tuple(t.shape)
        self.dtype = np.dtype(str(t.dtype).removeprefix("torch."))
        self.ndim = t.ndim

    def __len__(self) -> int:
        return self.shape[0]

    def device_slice(self, key) -> torch.Tensor:
        """``tensor[key]`` on the tensor's device (numpy index arrays moved there first)."""
        if not isinstance(key, tuple):
            key = (key,)
        key = tuple(torch.as_tensor(k, device=self.tensor.device) if isinstance(k, np.ndarray) else k for k in key)
        return self.tensor[key]

    def __getitem__(self, key) -> np.ndarray:
        return self.device_slice(key).cpu().numpy()

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """A host copy of everything (the fit itself never asks for one)."""
        a = self.tensor.cpu().numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self) -> str:
        return f"DeviceSequences(shape={self.shape}, dtype={self.dtype}, device={self.tensor.device})"


def read_slice(A: object, key) -> object:
    """``A[key]``, as a tensor on its own device when ``A`` is :class:`DeviceSequences` (no host copy)."""
    return A.device_slice(key) if isinstance(A, DeviceSequences) else A[key]


def _is_lazy_array(X: object) -> bool:
    """An array-like that is read by slices (a Zarr array, an HDF5 data set, a tensor on an
    accelerator as :class:`DeviceSequences`), not a numpy array, a tensor or a nesting of lists."""
    return isinstance(X, DeviceSequences) or (
        not isinstance(X, (np.ndarray, torch.Tensor, list, tuple)) and hasattr(X, "shape")
        and hasattr(X, "dtype") and hasattr(X, "__getitem__")
        and (type(X).__module__.split(".")[0] in ("zarr", "h5py", "dask") or type(X).__name__ == "ChunkedSequences"))


def as_sequences(X: object, name: str = "X", dim: int | None = None, keep_device: bool = False) -> np.ndarray:
    """Return ``X`` as a float array of shape ``(n_sequences, T, d)`` that torch can read.

    Any real dtype numpy holds is accepted: float32 and float64 arrays are returned as
    they are (no copy) when in native byte order with non-negative strides; otherwise
    the array is copied once, to float32 (float16, 8- and 16-bit integers, a
    byte-swapped float32) or float64 (long double, wider integers, a byte-swapped
    float64), or in its own dtype (a negative-stride view, e.g. a time-reversed one).

    With ``keep_device`` (the estimators' ``fit``), a floating-point 3-D tensor on an
    accelerator is returned as :class:`DeviceSequences`, read where it lies; otherwise a
    tensor is copied to the host. Raises :class:`InputError` for a wrong rank, a non-numeric dtype, an empty
    array, a ragged nesting or a last dimension different from ``dim``. Finite values
    are checked by :func:`check_finite` on the valid steps only (padding is never read).
    """
    if _is_lazy_array(X):  # a Zarr array or another array read by slices: never read whole here
        if np.dtype(X.dtype).kind != "f":
            raise InputError(f"{name} must hold floating-point numbers when stored out of memory, got dtype {X.dtype}")
        if len(X.shape) != 3 or 0 in X.shape:
            raise InputError(f"{name} must have shape (n_sequences, T, d), got shape {tuple(X.shape)}")
        if dim is not None and X.shape[2] != dim:
            raise InputError(f"{name} has last dimension {X.shape[2]}, expected {dim}")
        return X
    if keep_device and isinstance(X, torch.Tensor) and X.device.type != "cpu" and X.dtype.is_floating_point \
            and X.ndim == 3:
        return as_sequences(DeviceSequences(X), name, dim)  # read where it lies, slice by slice
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu()
        if X.dtype in (torch.float16, torch.bfloat16):
            X = X.to(torch.float32)
        if X.dtype.is_complex or X.dtype == torch.bool:
            raise InputError(f"{name} must hold real numbers, got a tensor of dtype {X.dtype}")
        X = X.numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged nestings, exotic objects
        raise InputError(f"{name} could not be read as an array of shape (n_sequences, T, d): "
                         f"{' '.join(str(exc).split())[:120]}") from None
    if arr.dtype.kind not in "fiu":
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise InputError(f"{name} must have shape (n_sequences, T, d), got shape {arr.shape}")
    if 0 in arr.shape:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if dim is not None and arr.shape[2] != dim:
        raise InputError(f"{name} has last dimension {arr.shape[2]}, expected {dim}")
    target = _target_dtype(arr.dtype)
    if arr.dtype != target:  # another dtype, or the same one in the other byte order
        arr = arr.astype(target)  # the copy has native order and non-negative strides
    elif any(st < 0 for st in arr.strides):
        arr = np.ascontiguousarray(arr)
    return arr


def _fmt_number(v) -> str:
    return str(int(v)) if isinstance(v, (int, np.integer)) else f"{float(v):.6g}"


def check_lengths(lengths: object, n_sequences: int, T: int) -> np.ndarray | None:
    """Validate ``lengths`` (shape ``(n_sequences,)``, integers in ``[1, T]``).

    Returns an int64 array, or ``None`` when every sequence is full (no padding).
    """
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    try:
        arr = np.asarray(lengths)
    except Exception:  # a ragged nesting
        raise InputError(f"lengths must be one integer per sequence, shape ({n_sequences},)") from None
    if arr.ndim != 1 or arr.shape[0] != n_sequences:
        raise InputError(f"lengths must have shape ({n_sequences},), got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError("lengths must be whole numbers")
    elif arr.dtype.kind not in "iu":
        raise InputError(f"lengths must be integers, got dtype {arr.dtype}")
    lo, hi = arr.min(), arr.max()  # compared before any cast: 1e20 must not wrap around
    if lo < 1 or hi > T:
        raise InputError(f"lengths must lie in [1, {T}], got range [{_fmt_number(lo)}, {_fmt_number(hi)}]")
    arr = arr.astype(np.int64)
    if np.all(arr == T):
        return None
    return arr


def valid_mask(lengths: np.ndarray | None, n_sequences: int, T: int) -> np.ndarray:
    """Boolean ``(n_sequences, T)`` mask of the steps that are not padding."""
    if lengths is None:
        return np.ones((n_sequences, T), dtype=bool)
    return np.arange(T)[None, :] < lengths[:, None]


#: inside :func:`inputs_checked_once`: the arrays (with their lengths and limit) found finite so far
_CHECKED: contextvars.ContextVar[dict | None] = contextvars.ContextVar("spectral_rnn_checked", default=None)


@contextlib.contextmanager
def inputs_checked_once():
    """Within this block, :func:`check_finite` checks each array once: a fit validates its
    inputs up front, and the input law and the stability check then need not read the data
    again for the same check (one more read of the file for a memory map). Arrays are known by
    their memory (data pointer, shape, strides, dtype), a Dask array by its name (a token of
    its contents), anything else by identity (the record holds a reference, so an identity is
    not reused by another object while it lasts); the record ends with the block."""
    token = _CHECKED.set({})
    try:
        yield
    finally:
        _CHECKED.reset(token)


def _finite_key(arr: object, lengths: np.ndarray | None) -> tuple:
    if isinstance(arr, np.ndarray):
        ai = arr.__array_interface__
        what: tuple = ("memory", ai["data"][0], arr.shape, ai["strides"], arr.dtype.str)
    elif type(arr).__module__.split(".")[0] == "dask":
        what = ("dask", arr.name)
    else:
        what = ("object", id(arr), getattr(arr, "shape", None))
    return what + (None if lengths is None else hash(np.asarray(lengths).tobytes()),)


def check_finite(
    arr: np.ndarray, lengths: np.ndarray | None, name: str, block_steps: int = 1 << 16, limit: float | None = None
) -> None:
    """Raise :class:`InputError` if a valid (non-padding) step holds NaN or inf, or (with
    ``limit``) a value larger than ``limit`` in magnitude.

    Works through blocks of sequences, so the check needs no copy of the data. Within
    :func:`inputs_checked_once`, an array already found finite is not read again.
    """
    if limit is not None and arr.dtype.kind == "f" and float(np.finfo(arr.dtype).max) <= limit:
        limit = None  # no finite value of this dtype exceeds it
    checked = _CHECKED.get()
    key = None if checked is None else _finite_key(arr, lengths)
    if key is not None and (key + (limit,) in checked or (limit is None and any(k[:-1] == key for k in checked))):
        return  # found finite (under this limit, or a stricter one) earlier in the same fit
    _check_finite(arr, lengths, name, block_steps, limit)
    if key is not None:
        checked[key + (limit,)] = arr


def _check_finite(arr, lengths, name: str, block_steps: int, limit: float | None) -> None:
    n, T = arr.shape[:2]
    per = max(1, block_steps // T)
    axes = tuple(range(2, arr.ndim))
    if isinstance(arr, DeviceSequences):  # two reductions where the data lie; blocks only if they find something
        hi, lo = float(arr.tensor.amax()), float(arr.tensor.amin())
        if np.isfinite(hi) and np.isfinite(lo) and (limit is None or max(hi, -lo) <= limit):
            return
    if type(arr).__module__.split(".")[0] == "dask":  # one Dask reduction; blocks only if it finds something
        import dask

        hi, lo = (float(v) for v in dask.compute(arr.max(), arr.min()))
        if np.isfinite(hi) and np.isfinite(lo) and (limit is None or max(hi, -lo) <= limit):
            return
    for i in range(0, n, per):
        block = arr[i : i + per]
        if not isinstance(block, np.ndarray):
            block = np.asarray(block)
        if block.dtype.kind == "f" and block.size:
            # fast path: no temporary; NaN propagates through min and max. float32/64 on several threads:
            # torch's aminmax, one read on torch's threads (half numpy's max and min on two threads at
            # d_x = 300: 0.17 s per 2.4 GB; on one thread numpy's two reductions are the faster, by 20%)
            if (block.dtype in (np.float32, np.float64) and torch.get_num_threads() > 1
                    and min(block.strides) >= 0):  # torch takes no negative strides (a reversed view)
                with warnings.catch_warnings():  # a read-only memory map: only read
                    warnings.simplefilter("ignore", UserWarning)
                    lo_t, hi_t = torch.aminmax(torch.as_tensor(block))
                hi, lo = float(hi_t), float(lo_t)
            else:
                hi, lo = float(block.max()), float(block.min())
            if np.isfinite(hi) and np.isfinite(lo) and (limit is None or max(hi, -lo) <= limit):
                continue
        valid = None if lengths is None else valid_mask(lengths[i : i + per], block.shape[0], T)
        bad = ~np.isfinite(block).all(axis=axes)
        if valid is not None:
            bad &= valid
        if bad.any():
            raise InputError(f"{name} contains NaN or infinite values")
        if limit is not None:
            big = (np.abs(block) > limit).any(axis=axes)
            if valid is not None:
                big &= valid
            if big.any():
                peak = float(np.max(np.abs(block[big])))
                raise InputError(
                    f"{name} hold values up to {peak:.3g} in magnitude; values above {limit:.0e} are refused "
                    "(their squares would overflow the moment sums): rescale the data"
                )


def check_xy(
    X: object, Y: object, lengths: object, d_x: int | None = None, d_y: int | None = None, keep_device: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate inputs ``X`` (n, T, d_x), outputs ``Y`` (n, T, d_y) and ``lengths`` together
    (``keep_device``: see :func:`as_sequences`)."""
    X = as_sequences(X, "inputs", dim=d_x, keep_device=keep_device)
    Y = as_sequences(Y, "outputs", dim=d_y, keep_device=keep_device)
    if Y.shape[:2] != X.shape[:2]:
        raise InputError(
            f"inputs and outputs disagree: inputs have {X.shape[0]} sequences of {X.shape[1]} steps, "
            f"outputs {Y.shape[0]} of {Y.shape[1]}"
        )
    lengths = check_lengths(lengths, X.shape[0], X.shape[1])
    check_finite(X, lengths, "inputs", limit=MAX_MAGNITUDE)
    check_finite(Y, lengths, "outputs", limit=MAX_MAGNITUDE)
    return X, Y, lengths


def check_random_state(
    random_state: int | np.random.Generator | np.random.RandomState | None,
) -> np.random.Generator:
    """Turn ``None``, a non-negative int seed, a Generator or a legacy RandomState into a
    :class:`numpy.random.Generator` (a RandomState seeds a new Generator from its stream)."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if isinstance(random_state, np.random.RandomState):
        return np.random.default_rng(int(random_state.randint(0, 2**62, dtype=np.int64)))
    if random_state is None:
        return np.random.default_rng()
    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, (bool, np.bool_)):
        if random_state < 0:
            raise InputError(f"random_state must be a non-negative integer seed, got {random_state}")
        return np.random.default_rng(int(random_state))
    raise InputError(
        "random_state must be None, a non-negative int, a numpy Generator or RandomState, "
        f"got {type(random_state).__name__} {_short(random_state, 40)}"
    )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"cpu" -> CPU; "cuda" (or "cuda:N") only when that GPU exists.

    Anything else ("tpu", "meta", an int, ...) raises :class:`InputError`.
    """
    if device is None:
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise InputError(f"device must be 'cpu' or 'cuda' (a string or torch.device), got {type(device).__name__} "
                         f"{_short(device, 40)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise InputError(f"device must be 'cpu' or 'cuda', got {_short(device, 40)}") from None
    if dev.type == "cpu":
        return dev
    if dev.type != "cuda":
        raise InputError(f"device must be 'cpu' or 'cuda', got {str(dev)!r}")
    if not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA GPU is available")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise InputError(f"device {str(dev)!r} was asked for but only {torch.cuda.device_count()} CUDA GPU(s) exist")
    return dev


#: ``check_device`` is :func:`resolve_device` under the name of the other checks
check_device = resolve_device

_DTYPE_NAMES = {
    "float32": torch.float32, "float": torch.float32, "single": torch.float32,
    "float64": torch.float64, "double": torch.float64,
    "float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16,
}


def check_dtype(dtype: object, allowed: tuple[torch.dtype, ...] = (torch.float32, torch.float64)) -> torch.dtype:
    """A torch dtype from ``torch.float32``/``torch.float64``, ``"float32"``/``"float64"``
    (also ``"torch.float32"``, ``"double"``...) or ``numpy.float32``/``numpy.float64``;
    anything not in ``allowed`` raises :class:`InputError`."""
    dt = None
    if isinstance(dtype, torch.dtype):
        dt = dtype
    elif isinstance(dtype, str):
        dt = _DTYPE_NAMES.get(dtype.strip().lower().removeprefix("torch."))
    else:
        try:
            npd = np.dtype(dtype) if dtype is not None else None
        except TypeError:
            npd = None
        if npd is not None and npd.kind == "f":
            dt = _DTYPE_NAMES.get(npd.name)
    if dt is None or dt not in allowed:
        names = " or ".join(str(a).removeprefix("torch.") for a in allowed)
        raise InputError(f"dtype must be {names} (a torch dtype or its name), got {_short(dtype, 40)}")
    return dt


def check_positive_int(value: object, name: str) -> int:
    """``value`` as an int >= 1; bools, floats and strings raise :class:`InputError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {_short(value, 40)}")
    return int(value)


def check_nonnegative_int(value: object, name: str) -> int:
    """``value`` as an int >= 0; bools, floats and strings raise :class:`InputError`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(f"{name} must be a non-negative integer, got {_short(value, 40)}")
    return int(value)


def check_real(
    value: object,
    name: str,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    finite: bool = True,
) -> float:
    """``value`` as a float within ``[low, high]`` (``low_open``/``high_open``: the bound is
    excluded), finite unless ``finite=False``; bools and strings raise :class:`InputError`."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    v = float(value) if ok else math.nan
    ok = ok and not math.isnan(v) and (math.isfinite(v) or not finite)
    if ok and low is not None:
        ok = v > low if low_open else v >= low
    if ok and high is not None:
        ok = v < high if high_open else v <= high
    if not ok:
        lo = "" if low is None else (f"above {low:g}" if low_open else f"at least {low:g}")
        hi = "" if high is None else (f"below {high:g}" if high_open else f"at most {high:g}")
        want = " and ".join(p for p in (lo, hi) if p)
        raise InputError(f"{name} must be a {'finite ' if finite else ''}number{' ' + want if want else ''}, "
                         f"got {_short(value, 40)}")
    return v


def check_outlier_factor(value: object) -> float | None:
    """``None`` (keep every sequence) or a finite number above 1."""
    if value is None:
        return None
    return check_real(value, "outlier_factor", low=1.0, low_open=True)


def check_process(process: object):
    """``None`` or an input process (a :class:`~spectral_rnn.processes.MarkovProcess`, e.g.
    :class:`~spectral_rnn.processes.GaussianAR1`); anything else raises :class:`InputError`."""
    if process is None:
        return None
    if isinstance(process, type):
        raise InputError(f"process must be an instance such as {process.__name__}(), not the class itself")
    # the members of the MarkovProcess protocol (processes.py), checked here without importing it
    ok = all(callable(getattr(process, m, None)) for m in ("fit", "sample", "score_terms"))
    if not ok or not all(hasattr(process, a) for a in ("is_fitted", "dim")):
        raise InputError(f"process must be None or an input process such as GaussianAR1(), got "
                         f"{type(process).__name__} {_short(process, 40)}")
    return process


def check_decomposer(decomposer: object):
    """``None`` or a tensor decomposer: an object with ``decompose_projected`` (callable)
    and ``oversample`` (a non-negative int), like :class:`~spectral_rnn.decomposition.CPDecomposer`."""
    if decomposer is None:
        return None
    if isinstance(decomposer, type):
        raise InputError(f"decomposer must be an instance such as {decomposer.__name__}(), not the class itself")
    over = getattr(decomposer, "oversample", None)
    if (not callable(getattr(decomposer, "decompose_projected", None)) or isinstance(over, bool)
            or not isinstance(over, (int, np.integer)) or over < 0):
        raise InputError(f"decomposer must be None or a CPDecomposer-like object (decompose_projected, "
                         f"oversample), got {type(decomposer).__name__}")
    return decomposer


def available_memory() -> int | None:
    """Bytes of memory this process may use: the machine's physical memory, or the
    control group's limit when lower (containers); ``None`` when unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as fh:
                text = fh.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:
            sizes.append(int(text))
    sizes = [s for s in sizes if s > 0]
    return min(sizes) if sizes else None


def check_memory(n_bytes: float, what: str) -> None:
    """Raise :class:`InputError` (with the figures in GB) if ``what`` would need more than
    the memory this machine has (:func:`available_memory`). Call it before allocating."""
    have = available_memory()
    if have is not None and n_bytes > have:
        raise InputError(f"{what} would need about {n_bytes / 1e9:.3g} GB of memory, more than the "
                         f"{have / 1e9:.3g} GB this machine has")


def iter_windows(
    n_sequences: int, T: int, chunk_steps: int, before: int = 0, after: int = 0
):
    """Split a ``(n_sequences, T)`` batch into blocks of about ``chunk_steps`` steps.

    Yields ``(rows, w0, w1, o0, o1)``: the sequences ``rows`` (a slice), the time
    window ``[w0, w1)`` to read, and the owned steps ``[o0, o1)`` *inside that window*
    whose contributions count. The window adds up to ``before`` steps of history and
    ``after`` steps of future around the owned ones, so that quantities needing
    ``x_{t-1}``, ``x_{t-2}`` or ``x_{t+1}`` are right at block edges. Long sequences
    are cut in time, so memory stays bounded whatever ``T`` is.
    """
    chunk_steps = max(1, int(chunk_steps))
    if T <= chunk_steps:
        per = max(1, chunk_steps // T)
        for i in range(0, n_sequences, per):
            yield slice(i, min(n_sequences, i + per)), 0, T, 0, T
        return
    for i in range(n_sequences):
        for t0 in range(0, T, chunk_steps):
            t1 = min(T, t0 + chunk_steps)
            w0, w1 = max(0, t0 - before), min(T, t1 + after)
            yield slice(i, i + 1), w0, w1, t0 - w0, t1 - w0
