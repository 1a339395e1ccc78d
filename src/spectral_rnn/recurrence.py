"""Stage 4 of the pipeline: the scales, signs and recurrent matrix of each hidden unit.

Mathematics: docs/method.md, section 8 "Scales and U" (and section 9 "The BRNN split" for the
backward chain). Once the decomposition has given the unit input directions ``a_j`` (rows of
``A_hat``) and the output weights ``w_j = mu_j s_j^2 a2_j``, the outputs projected on the units,
``ytil_t = y_t @ pinv(W)``, obey per unit ``j`` a moment equation that is linear in the unknown
scale ``s_j`` (and ``mu_j`` for a cubic) and in the row ``j`` of ``U``. Instruments
``phi_t = [1, x_{t-1}, x_{t-2}, (A_hat x_{t-1})^2]`` (past-only quantities) turn it into an
over-determined linear system:

* :func:`instrument_moments` -- one streamed pass over the data (:class:`~spectral_rnn.moments.StepStream`)
  for one or several chains at once, per chunk :func:`instrument_chunk`; the result is an
  :class:`InstrumentMoments` per chain;
* :func:`solve_scales_and_recurrence` -- the least-squares solve per unit, giving a
  :class:`ChainEstimate` ``(A1, U, A2, mu)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ._checks import IllConditionedError
from ._fitting import MAX_COND
from .activations import Polynomial
from .moments import StepStream, Window
from .scores import colsum

__all__ = ["InstrumentMoments", "ChainEstimate", "instrument_moments", "instrument_chunk",
           "solve_scales_and_recurrence", "MAX_COND"]

@dataclass
class InstrumentMoments:
    """Moments of the instrument equations of one chain (``n_phi = 1 + 2 d_x + d_h`` instruments).

    ``phi`` (n_phi,): ``E[phi_t]``; ``phi_ax`` (n_phi, d_h): ``E[phi_t (A_hat x_t)^T]``;
    ``phi_lag`` (n_phi, d_h): ``E[phi_t ytil_lag^T]`` (``ytil_{t-1}``, or ``ytil_{t+1}`` for the
    backward chain); ``r`` (n_phi, d_h): column j ``E[phi_t ytil_{t,j} S(a_j, .., a_j)]`` with the score
    of order 1 (quadratic activation) or 2 (cubic). ``ax_max`` (d_h,): the largest ``|A_hat x_t|`` of
    each unit over the steps (the stability check's drive bound, without another read of x)."""

    phi: np.ndarray
    phi_ax: np.ndarray
    phi_lag: np.ndarray
    r: np.ndarray
    ax_max: np.ndarray | None = None


@dataclass
class ChainEstimate:
    """The parameters of one chain: ``A1`` (d_h, d_x), ``U`` (d_h, d_h), ``A2`` (d_h, d_y) and
    ``mu`` (d_h,), the estimate of ``E[f''(z_j)]`` (cubic) or ``2 c2`` (quadratic); ``drive_max``: the
    largest ``|(A1 x_t)_j|`` over the steps of the pass, when the moments carried it."""

    A1: np.ndarray
    U: np.ndarray
    A2: np.ndarray
    mu: np.ndarray
    drive_max: float | None = None


def instrument_chunk(w: Window, specs: tuple) -> dict:
    """Partial sums of :func:`instrument_moments` over one chunk. For each spec ``i``
    (``A_hat`` (d_h, d_x), ``Wpinv`` (d_y, d_h), order, direction) and
    ``R_t = [A_hat x_t, Wpinv^T y_lag, (Wpinv^T y_t) * S(a_j, ..)]`` (3 d_h,): the products of
    ``R`` with each block of ``phi_t = [1, x_1, x_2, (A_hat x_1)^2]`` (``(i, "one")``, ``(i, "x1")``,
    ``(i, "x2")``, ``(i, "q")``) and ``(i, "phi")`` = ``sum_t phi_t``, reduced by a sum; and
    ``"max:ax{i}.{j}"`` (1,), the largest ``|a_j . x_t|`` of the window, reduced by a maximum. Cost
    ``O(m d_x d_h)``: ``phi`` is never multiplied by ``x_t`` itself, and the second-order score enters
    as ``S_2(a_j, a_j) = (s . a_j)^2 - sum_k kappa_k (b_k . a_j)^2``."""
    out = {}
    X = w._X
    n, W, d = X.shape
    Xf = X.reshape(-1, d)
    # the chains' products with x, their scores and their outputs: one request each for all chains
    A_all = torch.cat([Ah for Ah, _, _, _ in specs])  # (sum d_h, d_x)
    XA_all = (Xf @ A_all.T).view(n, W, -1)  # A_hat x at every step of the window: shifted, not x itself
    orders = sorted({order for _, _, order, _ in specs})
    sc_all = {o: w.s_proj(A_all.T) if o == 1 else w.s2_quad(A_all) for o in orders}  # S_1(a_j) or S_2(a_j, a_j)
    PY = w._Y @ torch.cat([Wp for _, Wp, _, _ in specs], dim=1)  # ytil at every step of the window
    owned = w._mask
    # every step of the window is a valid step of some chunk, or zero padding: its maximum is safe
    ax_max = XA_all.abs().amax(dim=(0, 1)) if XA_all.numel() else None
    a0 = 0
    for i, (Ah, Wp, order, direction) in enumerate(specs):
        lag = 1 if direction == "past" else -1
        h = Ah.shape[0]
        cols = slice(a0, a0 + h)
        r = 3 * h
        # [R_t, 1] at every step of the window, zero off the owned steps:
        # R_t = [A_hat x_t, ytil_{t-lag}, ytil_t * S(a_j, ..)]
        R1 = X.new_empty((n, W, r + 1))
        R1[..., :h] = XA_all[..., cols]
        w._shift_window(PY[..., cols], lag, out=R1[..., h:2 * h])
        torch.mul(PY[..., cols], w._untake(sc_all[order][:, cols]), out=R1[..., 2 * h:r])
        R1[..., r] = 1.0
        if owned is not None:
            R1.masked_fill_(~owned.unsqueeze(-1), 0.0)
        # sum_t z_{t-k} [R_t, 1]^T = sum_u z_u [R, 1]_{u+k}^T, for z = x and q = (A_hat x)^2
        if 2 * (r + 1) < d:  # wide inputs: [R, 1] shifted by lag and 2 lag side by side, x read once
            Rs = X.new_empty((n, W, 2 * (r + 1)))
            w._shift_window(R1, -lag, out=Rs[..., :r + 1])
            w._shift_window(R1, -2 * lag, out=Rs[..., r + 1:])
            XR = (Rs.view(-1, 2 * (r + 1)).T @ Xf).T  # (d, 2 (r + 1))
            X1, X2 = XR[:, :r + 1], XR[:, r + 1:]
        else:  # narrow: products of the flattened arrays offset by rows, nothing shifted or copied
            X1, X2 = w._shifted_gram(X, R1, lag), w._shifted_gram(X, R1, 2 * lag)  # (d, r + 1)
        XA = XA_all[..., cols]
        Q1 = w._shifted_gram(XA * XA, R1, lag)  # (d_h, r + 1): q_t = (A_hat x_{t-lag})^2
        tot = colsum(R1.view(-1, r + 1))
        out[(i, "one")] = tot[:r]
        out[(i, "x1")] = X1[:, :r]
        out[(i, "x2")] = X2[:, :r]
        out[(i, "q")] = Q1[:, :r]
        out[(i, "phi")] = torch.cat([tot[r:], X1[:, r], X2[:, r], Q1[:, r]])
        if ax_max is not None:
            for j in range(h):
                out[f"max:ax{i}.{j}"] = ax_max[a0 + j:a0 + j + 1]
        a0 += h
    return out


def instrument_moments(
    stream: StepStream, specs: Sequence[tuple[np.ndarray, np.ndarray, int, str]]
) -> list[InstrumentMoments]:
    """The instrument moments of every chain in ``specs``, in one pass over ``stream``.

    Each spec is ``(A_hat, Wpinv, score_order, direction)``: ``A_hat`` (d_h, d_x) unit input
    directions; ``Wpinv`` (d_y, d_h) so that ``ytil_t = y_t @ Wpinv``; ``score_order`` 1 (quadratic
    activation) or 2 (cubic); ``direction`` ``"past"`` (instruments ``[1, x_{t-1}, x_{t-2},
    (A_hat x_{t-1})^2]``, lagged outputs ``ytil_{t-1}``) or ``"future"`` (mirrored in time: the
    BRNN's backward chain). With median of means (``stream.blocks``) the medians are taken of
    these projected moments."""
    tspecs = []
    for A_hat, Wpinv, order, direction in specs:
        if direction not in ("past", "future"):
            raise ValueError("direction must be 'past' or 'future'")
        if order not in (1, 2):
            raise ValueError("score_order must be 1 or 2")
        tspecs.append((stream._to(A_hat), stream._to(Wpinv), int(order), direction))
    m = stream.reduce(instrument_chunk, tuple(tspecs))
    out = []
    for i, (A_hat, _, _, _) in enumerate(specs):
        d_h = A_hat.shape[0]
        G = np.concatenate([m[(i, "one")][None], m[(i, "x1")], m[(i, "x2")], m[(i, "q")]])  # (n_phi, 3 d_h)
        ax_max = np.array([m[f"max:ax{i}.{j}"][0] for j in range(d_h)]) if f"max:ax{i}.0" in m else None
        out.append(InstrumentMoments(phi=m[(i, "phi")], phi_ax=G[:, :d_h], phi_lag=G[:, d_h:2 * d_h],
                                     r=G[:, 2 * d_h:], ax_max=ax_max))
    return out


def solve_scales_and_recurrence(mom: InstrumentMoments, A_hat: np.ndarray, W: np.ndarray, f: Polynomial
                                ) -> ChainEstimate:
    """Scales, signs and recurrent matrix from the instrument moments (docs/method.md, section 8 'Scales and U').

    ``mom``: an :class:`InstrumentMoments`; ``A_hat`` (d_h, d_x) unit directions; ``W`` (d_h, d_y)
    with ``w_j = mu_j s_j^2 a2_j``.
    Quadratic ``f``: per unit j, ``2 c2 s_j (r_j - E[phi x^T] a_j) - 2 c2 E[phi ytil_{t-1}^T] ut_j = c1 E[phi]``,
    linear in ``(s_j, ut_j)`` with ``ut_jk = mu_k s_k^2 U_jk`` and ``mu_j = 2 c2``.
    Cubic ``f`` (second-order score): ``mu_j r_j - 6 c3 s_j E[phi x^T] a_j - 6 c3 E[phi ytil_{t-1}^T] ut_j = 2 c2 E[phi]``,
    linear in ``(mu_j, s_j, ut_j)``. Raises :class:`~spectral_rnn.IllConditionedError` when a unit's
    system is singular or a scale comes out (near) zero.
    """
    d_h = A_hat.shape[0]
    c1, c2, c3 = f.coef(1), f.coef(2), f.coef(3)
    phi, phi_ax, phi_lag, r = mom.phi, mom.phi_ax, mom.phi_lag, mom.r
    scale = np.empty(d_h)
    mu = np.empty(d_h)
    Ut = np.empty((d_h, d_h))
    for j in range(d_h):
        px = phi_ax[:, j]  # E[phi (a_j . x_t)]
        if f.degree == 2:
            D = np.column_stack([2 * c2 * (r[:, j] - px), -2 * c2 * phi_lag])
            rhs = c1 * phi
        else:
            D = np.column_stack([r[:, j], -6 * c3 * px, -6 * c3 * phi_lag])
            rhs = 2 * c2 * phi
        # equilibrate the columns (unknowns) to unit norm, so the units of the inputs and outputs
        # do not decide whether the system counts as singular (the least-squares solution is unchanged)
        cs = np.linalg.norm(D, axis=0)
        cs = np.where(cs > 0, cs, 1.0)
        De = D / cs
        sv = np.linalg.svd(De, compute_uv=False)
        if sv[-1] <= sv[0] / MAX_COND:
            raise IllConditionedError(
                f"the instrument equations of hidden unit {j} are singular (condition {sv[0] / max(sv[-1], 1e-300):.3g}): "
                "the inputs do not excite the recurrence enough to identify U"
            )
        sol = np.linalg.lstsq(De, rhs, rcond=None)[0] / cs
        if f.degree == 2:
            mu[j], scale[j], Ut[j] = 2 * c2, sol[0], sol[1:]
        else:
            mu[j], scale[j], Ut[j] = sol[0], sol[1], sol[2:]
    gain = mu * scale**2  # mu_j s_j^2
    if np.any(np.abs(gain) <= 1e-12 * np.max(np.abs(gain))) or not np.all(np.isfinite(gain)):
        raise IllConditionedError("a hidden unit's scale came out (near) zero: the model is not identified from these data")
    drive = None if mom.ax_max is None else float(np.max(np.abs(scale) * mom.ax_max))
    return ChainEstimate(A1=scale[:, None] * A_hat, U=Ut / gain[None, :], A2=W / gain[:, None], mu=mu, drive_max=drive)
