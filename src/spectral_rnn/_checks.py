"""Errors and input validation shared by every module.

All errors the library raises on bad input derive from :class:`SpectralRNNError`,
itself a :class:`ValueError`, and carry a one-line message naming the problem.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "SpectralRNNError",
    "InputError",
    "DivergenceError",
    "IllConditionedError",
    "as_sequences",
    "check_lengths",
    "check_xy",
    "valid_mask",
    "check_random_state",
    "resolve_device",
]


class SpectralRNNError(ValueError):
    """Base class of the library's errors (a ``ValueError``)."""


class InputError(SpectralRNNError):
    """Bad user input: wrong shape, dtype, non-finite values, too few samples..."""


class DivergenceError(SpectralRNNError):
    """A polynomial recursion blew up during simulation or prediction."""


class IllConditionedError(SpectralRNNError):
    """The moment problem is (near) singular: the data do not identify the model."""


def as_sequences(X: object, name: str = "X", dim: int | None = None) -> np.ndarray:
    """Return ``X`` as a float array of shape ``(n_sequences, T, d)``.

    Raises :class:`InputError` for a wrong rank, a non-numeric dtype, an empty
    array or a last dimension different from ``dim``. Finite values are checked by
    :func:`check_finite` on the valid steps only (padding is never read).
    """
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    try:
        arr = np.asarray(X)
    except Exception as exc:  # pragma: no cover - exotic objects
        raise InputError(f"{name} could not be read as an array: {exc}") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 3:
        raise InputError(f"{name} must have shape (n_sequences, T, d), got shape {arr.shape}")
    if 0 in arr.shape:
        raise InputError(f"{name} is empty (shape {arr.shape})")
    if dim is not None and arr.shape[2] != dim:
        raise InputError(f"{name} has last dimension {arr.shape[2]}, expected {dim}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def check_lengths(lengths: object, n_sequences: int, T: int) -> np.ndarray | None:
    """Validate ``lengths`` (shape ``(n_sequences,)``, integers in ``[1, T]``)."""
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.shape[0] != n_sequences:
        raise InputError(f"lengths must have shape ({n_sequences},), got {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError("lengths must be whole numbers")
    elif arr.dtype.kind not in "iu":
        raise InputError(f"lengths must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.min() < 1 or arr.max() > T:
        raise InputError(f"lengths must lie in [1, {T}], got range [{arr.min()}, {arr.max()}]")
    if np.all(arr == T):
        return None
    return arr


def valid_mask(lengths: np.ndarray | None, n_sequences: int, T: int) -> np.ndarray:
    """Boolean ``(n_sequences, T)`` mask of the steps that are not padding."""
    if lengths is None:
        return np.ones((n_sequences, T), dtype=bool)
    return np.arange(T)[None, :] < lengths[:, None]


def check_finite(arr: np.ndarray, lengths: np.ndarray | None, name: str, block_steps: int = 1 << 16) -> None:
    """Raise :class:`InputError` if a valid (non-padding) step holds NaN or inf.

    Works through blocks of sequences, so the check needs no copy of the data.
    """
    n, T = arr.shape[:2]
    per = max(1, block_steps // T)
    for i in range(0, n, per):
        block = arr[i : i + per]
        if lengths is not None:
            bad = ~np.isfinite(block).all(axis=tuple(range(2, block.ndim)))
            bad &= valid_mask(lengths[i : i + per], block.shape[0], T)
            ok = not bad.any()
        else:
            ok = bool(np.isfinite(block).all())
        if not ok:
            raise InputError(f"{name} contains NaN or infinite values")


def check_xy(
    X: object, Y: object, lengths: object, d_x: int | None = None, d_y: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate inputs ``X`` (n, T, d_x), outputs ``Y`` (n, T, d_y) and ``lengths`` together."""
    X = as_sequences(X, "inputs", dim=d_x)
    Y = as_sequences(Y, "outputs", dim=d_y)
    if Y.shape[:2] != X.shape[:2]:
        raise InputError(
            f"inputs and outputs disagree: inputs have {X.shape[0]} sequences of {X.shape[1]} steps, "
            f"outputs {Y.shape[0]} of {Y.shape[1]}"
        )
    lengths = check_lengths(lengths, X.shape[0], X.shape[1])
    check_finite(X, lengths, "inputs")
    check_finite(Y, lengths, "outputs")
    return X, Y, lengths


def check_random_state(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """Turn ``None``, an int seed or a Generator into a :class:`numpy.random.Generator`."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    raise InputError(f"random_state must be None, an int or a numpy Generator, got {type(random_state).__name__}")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/"cpu" -> CPU; "cuda" only when CUDA is available (clear error otherwise)."""
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA GPU is available")
    return dev


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
