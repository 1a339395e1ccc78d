"""Dask inputs: each pass runs its per-chunk function on every Dask block of sequences as a Dask
task (on the active scheduler: threads, processes or a ``distributed`` cluster) and sums the
small partial results on the client. The arrays must be chunked along sequences only (whole
sequences per block); they are rechunked so otherwise."""

from __future__ import annotations

import numpy as np

from ._heap import task_heap

__all__ = ["is_dask", "row_blocks", "compute_blocks"]


def is_dask(X: object) -> bool:
    """Whether ``X`` is a ``dask.array.Array`` (without importing dask when it is not)."""
    return type(X).__module__.split(".")[0] == "dask" and hasattr(X, "blocks") and hasattr(X, "chunks")


def row_blocks(*arrays):
    """The arrays rechunked to whole sequences per block, aligned on the first one's row blocks;
    returns ``(arrays, bounds)`` with ``bounds`` the ``(r0, r1)`` rows of each block."""
    first = arrays[0]
    if len(first.chunks[1]) > 1 or len(first.chunks[2]) > 1:
        first = first.rechunk({1: -1, 2: -1})
    rows = first.chunks[0]
    out = [first]
    for A in arrays[1:]:
        out.append(None if A is None else A.rechunk({0: rows, 1: -1, 2: -1}))
    starts = np.concatenate([[0], np.cumsum(rows)])
    return out, [(int(starts[i]), int(starts[i + 1])) for i in range(len(rows))]


def compute_blocks(func, X, Y, lengths: np.ndarray | None, *args) -> list:
    """``func(X_block, Y_block, lengths_block, *args)`` for every row block, computed by Dask;
    returns the list of results (in block order)."""
    import dask

    (Xd, Yd), bounds = row_blocks(X, Y)
    tasks = []
    for b, (r0, r1) in enumerate(bounds):
        Lb = None if lengths is None else lengths[r0:r1]
        tasks.append(dask.delayed(_task)(func, Xd.blocks[b], None if Yd is None else Yd.blocks[b], Lb, *args))
    return list(dask.compute(*tasks))


def _task(func, *args):
    """One block's task, run with the worker's heap set for chunk-sized temporaries (:func:`task_heap`)."""
    with task_heap():
        return func(*args)
