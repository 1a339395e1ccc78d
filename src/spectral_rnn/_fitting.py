"""Helpers both fitting routes share (:mod:`spectral_rnn.estimators` and :mod:`spectral_rnn.odd_route`):
leaving out extreme sequences, the hint added to a refusal, the output pseudo-inverse."""

from __future__ import annotations

import mmap

import numpy as np

from ._checks import IllConditionedError, InputError, valid_mask
from .processes import MarkovProcess

__all__ = ["MAX_COND", "drop_extreme_sequences", "output_pinv", "read_by_slices"]

#: condition number above which a linear system of the estimator is declared singular
MAX_COND = 1e8


def read_by_slices(X: object) -> bool:
    """Whether ``X`` is data read by slices (a memory map, a Zarr or Dask array, chunks), not an array in memory."""
    if not isinstance(X, np.ndarray):
        return True
    base = X
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return True
        base = getattr(base, "base", None)
    return False


def drop_extreme_sequences(
    X: np.ndarray, Y: np.ndarray, lengths: np.ndarray | None, factor: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, int]:
    """Leave out the sequences whose largest |output| exceeds ``factor`` times the median
    over sequences of that quantity (``factor=None``: keep all). Returns ``(X, Y, lengths, n_dropped)``.

    Quadratic recursions now and then come close to diverging on a sequence; its outputs,
    orders of magnitude above the rest, then decide the moment tensor alone. Leaving out a
    handful of such sequences in 1e5 biases the moments far less than keeping them.
    """
    if factor is None:
        return X, Y, lengths, 0
    if read_by_slices(X):
        raise InputError("outlier_factor copies the sequences it keeps into memory: it is not available for data "
                         "read by slices (a memory map, a Zarr array or chunks); leave such sequences out upstream")
    if not factor > 1:
        raise InputError(f"outlier_factor must be a number above 1, got {factor!r}")
    per = np.empty(X.shape[0])
    for i in range(0, X.shape[0], 4096):  # blocks of sequences: no full-size temporary
        block = np.abs(Y[i : i + 4096])
        if lengths is not None:
            block = np.where(valid_mask(lengths[i : i + 4096], block.shape[0], Y.shape[1])[..., None], block, 0.0)
        per[i : i + 4096] = block.max(axis=(1, 2))
    keep = per <= factor * np.median(per)
    if keep.all():
        return X, Y, lengths, 0
    return X[keep], Y[keep], None if lengths is None else lengths[keep], int((~keep).sum())


def _score_hint(proc: MarkovProcess) -> str:
    """A clause for a refusal: the Gaussian score forced on non-Gaussian innovations biases the tensor."""
    stats = getattr(proc, "stats_", None)
    if stats is None or getattr(proc, "law_name_", "") != "gaussian":
        return ""
    ku, sk = np.abs(stats.excess_kurtosis), np.abs(stats.skewness)
    if max(ku.max(), sk.max()) < 0.1:
        return ""
    return (f"; note: the input innovations are not Gaussian (max |excess kurtosis| {ku.max():.2f}, max |skewness| "
            f"{sk.max():.2f}) but the Gaussian score was used, which biases the moment tensor by up to about "
            f"{ku.max() / 2:.0%} of its size whatever the sample size: use scores='auto' (--scores auto)")


def output_pinv(W: np.ndarray) -> np.ndarray:
    """``pinv(W)`` (d_y, d_h), so that ``ytil_t = y_t @ pinv(W)``; raises if W is rank-deficient."""
    sv = np.linalg.svd(W, compute_uv=False)
    if sv[-1] <= sv[0] / MAX_COND:
        raise IllConditionedError(
            "the output directions of the hidden units are (near) collinear: A2 is not of full row rank"
        )
    return np.linalg.pinv(W)


class HeavyTailError(IllConditionedError):
    """A few extreme time steps dominate the moment tensor (``robust="auto"`` then uses median of means)."""


def check_peak_share(stream, max_peak_share: float | None, median_of_means: bool = True) -> None:
    """Refuse a moment tensor that a few extreme time steps dominate: :class:`HeavyTailError` when
    the heaviest step's share (``stream.peak_share``, set by the pass that built the tensor) exceeds
    ``max_peak_share`` (and ``200 / N``); ``None`` skips the check. ``median_of_means``: whether the
    route offers ``robust='on'`` as a remedy."""
    if max_peak_share is None or stream.peak_share <= max(max_peak_share, 200.0 / stream.n_steps):
        return
    share = f"one step carries {stream.peak_share:.1%} of it"
    robust = ", robust='on' (median of means)," if median_of_means else ""
    if stream.peak_cause == "outputs":
        raise HeavyTailError(
            f"the moment tensor is dominated by a few extreme time steps ({share}; its output is "
            f"{stream.peak_ratios[0]:.3g}x the average size): heavy-tailed outputs, for example a sequence "
            f"close to diverging; inspect or remove such sequences (outlier_factor=100, or --outlier-factor "
            f"100, leaves them out){robust} or raise max_peak_share"
        )
    raise HeavyTailError(
        f"the moment tensor is dominated by a few extreme time steps ({share}; its input score is "
        f"{stream.peak_ratios[1]:.3g}x the average size): heavy-tailed or outlying inputs (outlier_factor, "
        f"which looks at outputs, does not help here); clip or rank-transform the inputs{robust} or raise "
        "max_peak_share"
    )
