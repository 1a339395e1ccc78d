"""Data sources of a fit besides in-memory arrays: files read by slices, and chunks of sequences.

The estimators read their data only by slices of whole sequences (``X[rows, t0:t1]``, in
chunks of about ``chunk_steps`` steps; a few passes each), converting each slice to the
compute dtype on its own. So these work as ``fit(X, Y, lengths)`` arguments without a whole
copy being made:

* numpy arrays, float32 or float64, including memory maps (``np.load(path, mmap_mode="r")``):
  a float32 source is converted one chunk at a time;
* Zarr arrays (``zarr.open_group(path)["inputs"]``, the ``zarr`` package; install the
  ``[scale]`` extra), read chunk by chunk;
* an iterable of chunks ``(X_c, Y_c, lengths_c)``: :func:`open_chunks` presents them to the
  estimators as arrays (:class:`ChunkedSequences`), and ``fit(chunks)`` calls it.

**The chunk contract.** ``chunks`` is re-iterable: a callable returning a fresh iterator of
chunks (for example a generator function reading files), or a sequence such as a list. The fit
iterates it several times (a scan of the shapes, then each pass: finiteness, the input
process, the moment passes, the stability check), always in the same order, and must get the
same chunks each time. Each chunk holds whole sequences: ``X_c`` (n_c, T_c, d_x), ``Y_c``
(n_c, T_c, d_y) and ``lengths_c`` (n_c,) or ``None`` (every sequence has ``T_c`` steps);
``T_c`` may differ between chunks (shorter chunks are padded, the padding is never read). Only
the chunk being read (and the sums) is held in memory. A single long sequence is best given as
an array (a memory map or a Zarr array): the passes cut it in time and carry its lags over.

:func:`open_data_dir` opens a directory of ``.npy`` files (``X.npy``, ``Y.npy``, optional
``lengths.npy``, memory-mapped) or a Zarr store (arrays ``inputs``, ``outputs``, optional
``lengths``): the command line's ``DATA`` argument.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator

import numpy as np

from ._checks import InputError

__all__ = ["ChunkedSequences", "open_chunks", "open_data_dir", "is_chunk_source"]


def is_chunk_source(obj: object) -> bool:
    """Whether ``obj`` looks like an iterable of ``(X, Y, lengths)`` chunks (a callable returning
    an iterator, or a list or tuple of 3-tuples) rather than an array."""
    if (callable(obj) and not hasattr(obj, "shape")) or isinstance(obj, Iterator):
        return True  # an iterator is refused later, with the reason (it can be read only once)
    return (isinstance(obj, (list, tuple)) and len(obj) > 0 and isinstance(obj[0], tuple) and len(obj[0]) == 3
            and hasattr(obj[0][0], "shape"))


class _Reader:
    """Scans the chunks once (shapes, lengths), then serves rows of the concatenated, padded
    sequences, holding one chunk at a time."""

    def __init__(self, chunks: Callable[[], Iterable] | Iterable) -> None:
        self._chunks = chunks
        starts, lengths, T, d_x, d_y, dtype = [0], [], 0, None, None, None
        for i, chunk in enumerate(self._iter()):
            Xc, Yc, Lc = self._check(chunk, i, d_x, d_y)
            d_x, d_y = Xc.shape[2], Yc.shape[2]
            dtype = np.result_type(Xc.dtype, Yc.dtype) if dtype is None else np.result_type(dtype, Xc.dtype, Yc.dtype)
            n_c, T_c = Xc.shape[:2]
            lengths.append(np.full(n_c, T_c, dtype=np.int64) if Lc is None else np.asarray(Lc, dtype=np.int64))
            starts.append(starts[-1] + n_c)
            T = max(T, T_c)
        if d_x is None:
            raise InputError("the chunk source yielded no chunks")
        self.starts = np.asarray(starts)
        self.lengths = np.concatenate(lengths)
        self.T, self.d_x, self.d_y = T, d_x, d_y
        self.dtype = np.dtype(np.float32) if dtype == np.float32 else np.dtype(np.float64)
        self._it: Iterator | None = None
        self._pos = -1  # index of the chunk held
        self._held: tuple[np.ndarray, np.ndarray] | None = None

    def _iter(self) -> Iterator:
        it = self._chunks() if callable(self._chunks) else iter(self._chunks)
        if it is self._chunks:
            raise InputError("the chunk source is a one-shot iterator: the fit reads the data several times; pass "
                             "a callable returning a fresh iterator (e.g. a generator function) or a list")
        return iter(it)

    @staticmethod
    def _check(chunk, i: int, d_x, d_y):
        if not (isinstance(chunk, (tuple, list)) and len(chunk) == 3):
            raise InputError(f"chunk {i} is not an (X, Y, lengths) triple")
        Xc, Yc, Lc = (np.asarray(chunk[0]), np.asarray(chunk[1]), chunk[2])
        if Xc.ndim != 3 or Yc.ndim != 3 or Xc.shape[:2] != Yc.shape[:2]:
            raise InputError(f"chunk {i}: X and Y must have shapes (n, T, d_x) and (n, T, d_y), got {Xc.shape} "
                             f"and {Yc.shape}")
        if (d_x is not None and Xc.shape[2] != d_x) or (d_y is not None and Yc.shape[2] != d_y):
            raise InputError(f"chunk {i}: dimensions ({Xc.shape[2]}, {Yc.shape[2]}) differ from the first chunk's "
                             f"({d_x}, {d_y})")
        if Xc.dtype.kind != "f" or Yc.dtype.kind != "f":
            raise InputError(f"chunk {i}: X and Y must hold floating-point numbers")
        if Lc is not None:
            Lc = np.asarray(Lc)
            if Lc.shape != (Xc.shape[0],) or np.any(Lc < 1) or np.any(Lc > Xc.shape[1]):
                raise InputError(f"chunk {i}: lengths must be {Xc.shape[0]} integers in [1, {Xc.shape[1]}]")
        return Xc, Yc, Lc

    def _load(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``k``, padded to ``T`` steps (re-iterating from the start if it was passed)."""
        if k == self._pos:
            return self._held
        if self._it is None or k < self._pos:
            self._it, self._pos = self._iter(), -1
        while self._pos < k:
            try:
                chunk = next(self._it)
            except StopIteration:
                raise InputError("the chunk source yielded fewer chunks than on its first iteration") from None
            self._pos += 1
        Xc, Yc, _ = self._check(chunk, k, self.d_x, self.d_y)
        if Xc.shape[0] != self.starts[k + 1] - self.starts[k]:
            raise InputError(f"chunk {k} changed between iterations of the chunk source")
        if Xc.shape[1] < self.T:  # pad to the common length; lengths mark the padding
            pad = ((0, 0), (0, self.T - Xc.shape[1]), (0, 0))
            Xc, Yc = np.pad(Xc, pad), np.pad(Yc, pad)
        self._held = (Xc, Yc)
        return self._held

    def rows(self, which: int, sel, rest: tuple = ()) -> np.ndarray:
        """Rows ``sel`` (a slice, integer indices or a boolean mask) of array ``which`` (0: X, 1: Y),
        each indexed further by ``rest`` (e.g. ``(slice(t0, t1),)`` or ``(0,)``) chunk by chunk."""
        n = int(self.starts[-1])
        idx = np.arange(n)[sel] if isinstance(sel, slice) else np.asarray(sel)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = np.asarray(idx, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.max() >= n or idx.min() < -n):
            raise IndexError(f"sequence index out of range for {n} sequences")
        idx = np.where(idx < 0, idx + n, idx)
        d = self.d_x if which == 0 else self.d_y
        if len(idx) == 0:
            return np.empty((0, self.T, d), dtype=self.dtype)[(slice(None),) + rest]
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        owner = np.searchsorted(self.starts, sorted_idx, side="right") - 1
        out = None
        for k in np.unique(owner):
            pick = owner == k
            part = self._load(int(k))[which][sorted_idx[pick] - self.starts[k]][(slice(None),) + rest]
            if out is None:
                out = np.empty((len(idx),) + part.shape[1:], dtype=part.dtype)
            out[order[pick]] = part
        return out


class ChunkedSequences:
    """The inputs (``which=0``) or outputs (``which=1``) of a chunk source as a read-only array of
    shape ``(n_sequences, T, d)`` read by slices of sequences (``A[rows]``, ``A[rows, t0:t1]``,
    ``A[:, 0]``, ``A[::k]``, ``A[index_array]``): one chunk in memory at a time."""

    def __init__(self, reader: _Reader, which: int) -> None:
        self._reader, self._which = reader, which
        self.shape = (int(reader.starts[-1]), reader.T, reader.d_x if which == 0 else reader.d_y)
        self.dtype = reader.dtype
        self.ndim = 3

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        rows, rest = key[0], key[1:]
        if isinstance(rows, (int, np.integer)):
            return self._reader.rows(self._which, [int(rows) % self.shape[0]], rest)[0]
        return self._reader.rows(self._which, rows, rest)

    def __array__(self, dtype=None, copy=None):
        raise InputError("a chunked data source is never read whole: it is read by slices of sequences")

    def __repr__(self) -> str:
        return f"ChunkedSequences(shape={self.shape}, dtype={self.dtype})"


def open_chunks(chunks: Callable[[], Iterable] | Iterable) -> tuple[ChunkedSequences, ChunkedSequences, np.ndarray | None]:
    """``(X, Y, lengths)`` for a re-iterable source of ``(X_c, Y_c, lengths_c)`` chunks (see the module
    docstring for the contract): ``X``, ``Y`` are :class:`ChunkedSequences`, ``lengths`` a numpy array
    (``None`` when every sequence has the longest chunk's length). Scans the chunks once."""
    reader = _Reader(chunks)
    lengths = None if np.all(reader.lengths == reader.T) else reader.lengths
    return ChunkedSequences(reader, 0), ChunkedSequences(reader, 1), lengths


def open_data_dir(path: str | os.PathLike):
    """``(X, Y, lengths)`` from a directory of ``.npy`` files (``X.npy``, ``Y.npy``, optional
    ``lengths.npy``; memory-mapped, so nothing is read whole) or a Zarr store (arrays ``inputs``,
    ``outputs``, optional ``lengths``). ``Y`` is ``None`` when absent. Raises :class:`InputError`."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise InputError(f"data directory {path} does not exist" if not os.path.exists(path) else
                         f"{path} is not a directory")
    if os.path.exists(os.path.join(path, "zarr.json")) or os.path.exists(os.path.join(path, ".zgroup")):
        try:
            import zarr
        except ImportError:
            raise InputError(f"{path} is a Zarr store: install the zarr package (pip install 'spectral-rnn[scale]')") \
                from None
        try:
            g = zarr.open_group(path, mode="r")
            names = set(g.array_keys())
        except Exception as exc:
            raise InputError(f"cannot open the Zarr store {path}: {' '.join(str(exc).split())[:160]}") from None
        if "inputs" not in names:
            raise InputError(f"the Zarr store {path} has no array 'inputs' (shape (n_sequences, T, d_x))")
        lengths = np.asarray(g["lengths"][:]) if "lengths" in names else None
        return g["inputs"], (g["outputs"] if "outputs" in names else None), lengths

    def load(name: str):
        f = os.path.join(path, name)
        if not os.path.exists(f):
            return None
        try:
            return np.load(f, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise InputError(f"cannot read {f} as a .npy array: {' '.join(str(exc).split())[:160]}") from None

    X = load("X.npy")
    if X is None:
        raise InputError(f"{path} holds neither X.npy (with Y.npy and optional lengths.npy) nor a Zarr store")
    L = load("lengths.npy")
    return X, load("Y.npy"), None if L is None else np.asarray(L)
