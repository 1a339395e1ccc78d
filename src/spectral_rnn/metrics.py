"""Metrics invariant to the order of hidden units."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._checks import InputError, as_sequences, check_lengths, valid_mask

__all__ = ["match_units", "parameter_errors", "prediction_error", "relative_error"]


def match_units(A_true: np.ndarray, A_est: np.ndarray) -> np.ndarray:
    """Permutation ``perm`` with ``A_est[perm[j]]`` matched to ``A_true[j]``.

    Hungarian matching on the absolute cosine between rows (hidden units) of the
    two ``(d_h, d_x)`` input-weight matrices.
    """
    A_true, A_est = np.asarray(A_true, float), np.asarray(A_est, float)
    if A_true.shape != A_est.shape:
        raise InputError(f"cannot match units: shapes {A_true.shape} and {A_est.shape} differ")
    nt = A_true / np.linalg.norm(A_true, axis=1, keepdims=True)
    ne = A_est / np.linalg.norm(A_est, axis=1, keepdims=True)
    rows, cols = linear_sum_assignment(-np.abs(nt @ ne.T))
    perm = np.empty(len(rows), dtype=int)
    perm[rows] = cols
    return perm


def relative_error(est: np.ndarray, true: np.ndarray) -> float:
    """``||est - true||_F / ||true||_F``."""
    return float(np.linalg.norm(np.asarray(est) - np.asarray(true)) / np.linalg.norm(true))


def parameter_errors(true_model, est_model, odd: bool = False) -> dict[str, float]:
    """Relative Frobenius errors of every weight matrix after matching hidden units.

    Works for every model kind: :class:`~spectral_rnn.IORNN` (``A1, U, A2``),
    :class:`~spectral_rnn.BRNN` (also ``B1, V, B2``), ...; each chain matched on its own.
    Signs and scales are compared as they are: with ``c1 != 0`` the model is
    identified exactly. ``odd=True`` (odd activations such as tanh, for which flipping the
    sign of unit j in ``A1[j]``, ``A2[j]``, ``U[j, :]`` and ``U[:, j]`` leaves the model
    unchanged): each estimated unit is first flipped to the sign of its matched true
    ``A1`` row.
    """
    if type(true_model) is not type(est_model):
        raise InputError(f"cannot compare a {type(true_model).__name__} with a {type(est_model).__name__}")
    out: dict[str, float] = {}
    for c in getattr(true_model, "chains", ()):
        inp, rec, outp = c.input, c.recurrent, c.output
        Ti, Ei = getattr(true_model, inp), getattr(est_model, inp)
        p = match_units(Ti, Ei)
        sg = np.ones(len(p))
        if odd:
            sg = np.sign(np.sum(Ei[p] * Ti, axis=1))
            sg[sg == 0] = 1.0
        out[inp] = relative_error(Ei[p] * sg[:, None], Ti)
        Er = getattr(est_model, rec)[np.ix_(p, p)] * sg[:, None] * sg[None, :]
        out[rec] = relative_error(Er, getattr(true_model, rec))
        out[outp] = relative_error(getattr(est_model, outp)[p] * sg[:, None], getattr(true_model, outp))
    return out


def prediction_error(Y_ref: object, Y_pred: object, lengths: object = None) -> float:
    """Mean squared error of ``Y_pred`` against ``Y_ref``, relative to the variance of
    ``Y_ref`` (both (n_sequences, T, d_y)), over valid steps only."""
    Y_ref = as_sequences(Y_ref, "reference outputs")
    Y_pred = as_sequences(Y_pred, "predicted outputs", dim=Y_ref.shape[2])
    if Y_pred.shape != Y_ref.shape:
        raise InputError(f"predictions have shape {Y_pred.shape}, reference {Y_ref.shape}")
    lengths = check_lengths(lengths, Y_ref.shape[0], Y_ref.shape[1])
    m = valid_mask(lengths, Y_ref.shape[0], Y_ref.shape[1])
    r, p = Y_ref[m], Y_pred[m]
    var = np.sum(np.var(r, axis=0))
    if var <= 0:
        raise InputError("the reference outputs have zero variance")
    return float(np.mean(np.sum((p - r) ** 2, axis=1)) / var)
