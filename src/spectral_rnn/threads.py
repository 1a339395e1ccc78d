"""Thread pools of a fit: torch's intra-op pool and the BLAS pool (numpy, scipy), set together.

On a machine whose cores are busy with other jobs, two pools each sized to every core stall
each other and the other jobs (issue 10 measured a 5.8x slowdown of the IO-RNN fit when another
process held the second of two cores). :func:`limit_threads` bounds both pools for the length of
a fit (torch's to the fit's threads, the BLAS pool to one: the two called in turn stall each
other) and restores them afterwards; :func:`resolve_threads` turns the estimators' ``n_threads``
into a number, counting as busy only the cores other jobs use: the system's load average less
this process's own share of it (:func:`own_load`), so that a second fit, or a fit after the
user's own computation, is not confined to fewer threads by the work of its own process.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Iterator

import torch

from ._checks import InputError

__all__ = ["resolve_threads", "limit_threads", "own_load"]


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


#: time constant of the kernel's 1-minute load average (seconds)
LOAD_TAU = 60.0
#: samples closer than this (seconds) are merged, so many quick fits keep few samples
SAMPLE_GAP = 5.0


def _cpu_seconds() -> float:
    """CPU time of this process so far (user + system, all its threads)."""
    t = os.times()
    return t[0] + t[1]


def _process_age() -> float | None:
    """Seconds since this process started (``/proc``), or None where that cannot be read."""
    try:
        with open("/proc/self/stat", "rb") as fh:
            start_ticks = int(fh.read().rsplit(b")", 1)[1].split()[19])  # field 22: start time, in clock ticks
        with open("/proc/uptime", "rb") as fh:
            uptime = float(fh.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


# (monotonic time, this process's CPU seconds) samples. The first two stand for the work done
# before this module was imported (Python's start, imports, the user's own work): spread evenly
# over the process's life (where /proc tells its age), else taken as one busy core just before.
_t0, _c0 = time.monotonic(), _cpu_seconds()
_age = _process_age()
_SAMPLES: list[tuple[float, float]] = [(_t0 - max(_c0, _age if _age is not None else 0.0, 1e-3), 0.0), (_t0, _c0)]


def own_load(now: float | None = None, cpu: float | None = None) -> float:
    """This process's share of the 1-minute load average: its CPU use between the recorded
    samples (one per call, and two at import), each interval's rate weighted as the kernel
    weighs it, ``exp(-(now - end) / 60) - exp(-(now - start) / 60)``. Within an interval the
    rate is taken as uniform, so recent work after a long idle time is under-counted and the
    estimate errs towards fewer threads (only where the process's age cannot be read is the
    work before the import taken as recent). Records a sample (``now``, ``cpu``: the
    monotonic clock and :func:`_cpu_seconds`, read when not given)."""
    now = time.monotonic() if now is None else now
    cpu = _cpu_seconds() if cpu is None else cpu
    share, end_t, end_c = 0.0, now, cpu
    for t, c in reversed(_SAMPLES):
        if end_t > t:
            rate = max(0.0, end_c - c) / (end_t - t)
            share += rate * (math.exp(-(now - end_t) / LOAD_TAU) - math.exp(-(now - t) / LOAD_TAU))
        end_t, end_c = t, c
        if now - t > 10 * LOAD_TAU:  # older work weighs less than e^-10
            break
    if len(_SAMPLES) >= 2 and now - _SAMPLES[-2][0] < SAMPLE_GAP:  # merge: at most one sample per SAMPLE_GAP
        _SAMPLES[-1] = (now, cpu)
    else:
        _SAMPLES.append((now, cpu))
    cut = next((i for i, (t, _) in enumerate(_SAMPLES) if now - t <= 10 * LOAD_TAU), len(_SAMPLES))
    del _SAMPLES[:max(0, min(cut - 1, len(_SAMPLES) - 2))]  # keep one sample older than the horizon
    return share


def resolve_threads(n_threads: object) -> int:
    """``n_threads`` of an estimator as a number of threads.

    ``None`` (the default): the CPUs available to this process less the ones other jobs keep
    busy (the 1-minute load average less this process's own share of it, :func:`own_load`,
    rounded up), at least 1 and at most torch's current setting, so that a fit on a shared
    machine does not queue its threads behind other jobs; a positive int: that many threads.
    Raises :class:`InputError` otherwise."""
    if n_threads is None:
        mine = own_load()
        busy = math.ceil(os.getloadavg()[0] - mine - 0.5) if hasattr(os, "getloadavg") else 0
        return max(1, min(torch.get_num_threads(), available_cpus() - max(0, busy)))
    if isinstance(n_threads, bool) or not isinstance(n_threads, int) or n_threads < 1:
        raise InputError(f"n_threads must be None or a positive integer, got {n_threads!r}")
    return int(n_threads)


@contextlib.contextmanager
def limit_threads(n: int, blas: int | None = 1) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads and at most ``blas`` BLAS threads (numpy,
    scipy; ``None``: ``n``); restore both after.

    One BLAS thread by default: a fit's large products run in torch, numpy's are small (``d x d``
    solves, the decomposition), and the two pools called in turn stall each other, their idle
    threads spinning on the cores the other needs. With two torch threads and two BLAS threads a
    fit took 5-20% longer than with one BLAS thread (IO-RNN, 1e6 steps, d_x = 10 to 300), and
    alternating a numpy and a torch product of a d_x = 300 chunk cost 38.5 ms against 25.5 ms
    for the two in torch."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # without threadpoolctl only torch's pool is bounded
            yield
        else:
            with threadpool_limits(limits=n if blas is None else min(n, blas), user_api="blas"):
                yield
    finally:
        torch.set_num_threads(before)
