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


def seeded_problem(d_x: int, d_h: int, d_y: int, n_sequences: int, length: int, seed: int = 0,
                   kind: str = "iornn", noise_std: float = 0.1):
    """The small planted problem several modules train on: a random model (seed ``seed``),
    Gaussian AR(1) inputs (process seed + 1, draw seed + 2) and noisy outputs (seed + 3).
    Returns ``(truth, process, X, Y)``."""
    from spectral_rnn import GaussianAR1, get_kind

    truth = get_kind(kind).planted(d_x, d_h, d_y, random_state=seed)
    proc = GaussianAR1.random(d_x, random_state=seed + 1)
    X = proc.sample(n_sequences, length, random_state=seed + 2)
    return truth, proc, X, truth.simulate(X, noise_std=noise_std, random_state=seed + 3)


_PLANTED_CACHE: dict = {}


def planted_problem(kind: str = "iornn", **kwargs):
    """``make_planted(kind, **kwargs)``, drawn once per argument set for the whole session
    (callers must not modify the arrays). Every draw's redraw count is kept in
    :data:`REDRAWS` so that a test can check how often planted models were rejected."""
    from spectral_rnn import make_planted

    key = (kind, tuple(sorted(kwargs.items())))
    if key not in _PLANTED_CACHE:
        p = make_planted(kind, **kwargs)
        REDRAWS.append(p.redraws)
        _PLANTED_CACHE[key] = p
    return _PLANTED_CACHE[key]


#: redraw counts of the planted problems drawn through :func:`planted_problem`
REDRAWS: list[int] = []
