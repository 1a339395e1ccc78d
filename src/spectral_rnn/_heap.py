"""Hand the memory of a finished chunk back to the system (glibc), so a pass's resident memory stays flat.

glibc serves chunk-sized arrays (a few MB) from its heap once its dynamic mmap threshold has
grown (it does after the first large block is freed), and the heap then fragments: the free
pages stay resident. Without trims the resident memory of a 1e7-step fit from a float32
memory map grew by about 800 MB (measured: 885 MB peak beyond the data, 150 MB with the
trim), and that of a 1e7-step fit from arrays in memory by 250-590 MB (its working set is
about 100 MB; after the fit and one trim, 15 MB remain: fragmentation, not a leak).

:func:`trim_heap` runs after every chunk of a pass, inside :func:`trimming` (the estimators'
``fit``):

* data read by slices (memory maps, Zarr, chunks): ``malloc_trim(0)`` after every
  :data:`EVERY`-th chunk (a trim at every chunk costs 1.6-1.8x in speed);
* arrays in memory, where a trim's page faults cost more than memory: a trim only when the
  anonymous resident memory has grown more than :data:`HEAP_BUDGET_MB` beyond its level when
  the fit began, a cheap read of ``/proc/self/statm`` otherwise. When a trim leaves more than
  half the budget in use (a working set that large is the fit's own), the budget doubles
  for the rest of the fit, so trims stay rare.

``SPECTRAL_RNN_NO_TRIM=1`` turns trims off (for measurements).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["trim_heap", "trimming", "task_heap", "anon_rss_mb"]


def _load(name: str):
    try:
        import ctypes

        return getattr(ctypes.CDLL("libc.so.6"), name)
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _load("malloc_trim")
_MALLOPT = _load("mallopt")
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
_GLIBC_MMAP_THRESHOLD = 128 * 1024  # glibc's default, fixed once a threshold is set by hand
_ENABLED = not os.environ.get("SPECTRAL_RNN_NO_TRIM")

#: data read by slices: trim at every EVERY-th call (a trim at every chunk made the 1e6-step fit 1.6-1.8x slower)
EVERY = 16
#: arrays in memory: trim when the anonymous resident memory exceeds its level at the start of the fit by this
HEAP_BUDGET_MB = 128
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20 if hasattr(os, "sysconf") else 4096 / 2**20


class _State:
    """What :func:`trim_heap` needs inside one :func:`trimming` block."""

    def __init__(self, sliced: bool | None) -> None:
        self.sliced = sliced  # None: outside any fit (no trims)
        self.calls = 0
        self.base = anon_rss_mb() if sliced is False else None
        self.budget = float(HEAP_BUDGET_MB)


_STATE = [_State(None)]


def anon_rss_mb() -> float | None:
    """This process's resident memory not backed by files (heap, anonymous maps), in MB: resident
    minus shared pages of ``/proc/self/statm``; ``None`` where that file does not exist."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            fields = fh.read().split()
        return (int(fields[1]) - int(fields[2])) * _PAGE_MB
    except (OSError, ValueError, IndexError):
        return None


@contextlib.contextmanager
def trimming(sliced: bool) -> Iterator[None]:
    """Trim the heap during the block: every :data:`EVERY` chunks for data read by slices
    (``sliced``: memory maps, Zarr, chunks), where memory is the constraint; for arrays in
    memory only when the heap has grown :data:`HEAP_BUDGET_MB` beyond its level at the start of
    the block (a trim's page faults cost speed: about 1.2-1.4x for a 1e6-step fit trimmed every
    16 chunks)."""
    before = _STATE[0]
    _STATE[0] = _State(bool(sliced))
    try:
        yield
    finally:
        _STATE[0] = before


def trim_heap() -> None:
    """Called after each chunk: ``malloc_trim(0)`` when the rule of the current :func:`trimming`
    block says so (module docs), where glibc has it."""
    st = _STATE[0]
    if _MALLOC_TRIM is None or not _ENABLED or st.sliced is None:
        return
    st.calls += 1
    if st.sliced:
        if st.calls % EVERY == 0:
            _MALLOC_TRIM(0)
        return
    if st.base is None:
        return
    now = anon_rss_mb()
    if now is None or now - st.base <= st.budget:
        return
    _MALLOC_TRIM(0)
    after = anon_rss_mb()
    if after is not None and after - st.base > st.budget / 2:  # the working set itself is that large
        st.budget = 2 * (after - st.base)


@contextlib.contextmanager
def task_heap() -> Iterator[None]:
    """A Dask task's heap: chunk-sized temporaries come from the heap during the task, and the
    free memory goes back to the system at its end.

    ``distributed`` starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting a
    threshold by hand turns glibc's dynamic mmap threshold off, so every temporary above
    128 KB is a fresh ``mmap`` whose pages fault in on first touch: the moment passes ran 2-3x
    slower in a worker than in the client (measured: one 1e6-step projection pass 0.5-0.7 s
    under that setting, 0.24 s without). Inside this block the mmap and trim thresholds are
    raised to 64 MB; at its end they are put back (the mmap threshold to glibc's 128 KB, the
    trim threshold to the environment's value) and ``malloc_trim(0)`` returns the free pages,
    so a worker holds no more memory between tasks than before. A no-op where the
    environment sets no threshold (glibc's dynamic threshold is then in charge) or without glibc.
    """
    env = os.environ.get("MALLOC_TRIM_THRESHOLD_")
    if _MALLOPT is None or env is None:
        yield
        return
    big = 64 << 20
    _MALLOPT(_M_MMAP_THRESHOLD, big)
    _MALLOPT(_M_TRIM_THRESHOLD, big)
    try:
        yield
    finally:
        _MALLOPT(_M_MMAP_THRESHOLD, _GLIBC_MMAP_THRESHOLD)
        try:
            _MALLOPT(_M_TRIM_THRESHOLD, int(env))
        except ValueError:
            pass
        if _MALLOC_TRIM is not None:
            _MALLOC_TRIM(0)
