"""Helpers shared by several test modules (pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import signal

import numpy as np


class CaseTimeout(BaseException):
    """Raised by :func:`time_limit` (a BaseException, so no ``except Exception`` swallows it)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    """Fail (instead of hanging) when the body runs longer than ``seconds`` (SIGALRM, main thread)."""

    def on_alarm(signum, frame):
        raise CaseTimeout(f"timed out after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def ragged(X: np.ndarray, Y: np.ndarray, seed: int = 0, min_length: int = 1):
    """The same sequences as a ragged batch: random lengths in [min_length, T] (the first
    sequence full), padding filled with NaN, which must never be read."""
    n, T, _ = X.shape
    lengths = np.random.default_rng(seed).integers(min_length, T + 1, n)
    lengths[0] = T
    pad = np.arange(T)[None, :] >= lengths[:, None]
    Xp, Yp = X.copy(), Y.copy()
    Xp[pad], Yp[pad] = np.nan, np.nan
    return Xp, Yp, lengths
