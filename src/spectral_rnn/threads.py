"""Thread pools of a fit: torch's intra-op pool and the BLAS pool (numpy, scipy), set together.

On a machine whose cores are busy with other jobs, two pools each sized to every core stall
each other and the other jobs (issue 10 measured a 5.8x slowdown of the IO-RNN fit when another
process held the second of two cores). :func:`limit_threads` bounds both pools for the length of
a fit and restores them afterwards; :func:`resolve_threads` turns the estimators' ``n_threads``
into a number.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator

import torch

from ._checks import InputError

__all__ = ["resolve_threads", "limit_threads"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def resolve_threads(n_threads: object) -> int:
    """``n_threads`` of an estimator as a number of threads.

    ``None`` (the default): the CPUs available to this process less the ones other jobs keep
    busy (the 1-minute load average, rounded up), at least 1 and at most torch's current
    setting, so that a fit on a shared machine does not queue its threads behind other jobs;
    a positive int: that many threads. Raises :class:`InputError` otherwise."""
    if n_threads is None:
        busy = math.ceil(os.getloadavg()[0] - 0.5) if hasattr(os, "getloadavg") else 0
        return max(1, min(torch.get_num_threads(), available_cpus() - max(0, busy)))
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise InputError(f"n_threads must be None or a positive integer, got {n_threads!r}")
    return int(n_threads)


@contextlib.contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and at most ``n`` BLAS threads; restore both after."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # without threadpoolctl only torch's pool is bounded
            yield
        else:
            with threadpool_limits(limits=n, user_api="blas"):
                yield
    finally:
        torch.set_num_threads(before)
