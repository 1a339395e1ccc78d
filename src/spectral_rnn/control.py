"""A control variate for the higher-order moment tensors.

The tensor passes estimate ``T = E[y_t (x) S_m(x_t)]`` (m = 2; m = 3 on the route for odd
activations). For any function ``g`` of the other inputs and any linear function of ``x_t``,
``E[g (x) S_m] = 0``: conditionally on the other inputs (one-sided: the past; two-sided: both
neighbours) ``S_m`` has mean zero, and ``E[S_m x_t] = E[grad^m x_t] = 0`` (Stein's identity,
exact for the density-free and the Stein-corrected scores by construction). One-sided, ``x_{t+1} = F x_t + b + e_{t+1}`` with ``e_{t+1}`` independent of
the past and of ``x_t``, so it is allowed too. Hence

    T = E[(y_t - c(x)) (x) S_m(x_t)],   c(x) = B^T [1, x_{t-1}, x_t, x_{t+1}]

for every ``B``, and the least-squares ``B`` removes the large linear part of the outputs
(about half their variance on the planted models), whose product with ``S_m`` is pure noise.
On bimodal-mixture innovations, where the two-sided score is large (Fisher information about
5 per coordinate), this halves the BRNN's errors (README, "Your inputs are not Gaussian").
Only the tensor passes (``project``, ``sketch``, ``project3``) use it: first-order and lag
moments, where the linear part is the signal, read ``y_t`` itself. On the tanh route with
Laplace inputs it cuts the errors at 1e6 steps about threefold (README).
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from ._checks import InputError
from .scores import GaussianLaw

__all__ = ["fit_control", "control_for", "CONTROL_STEPS"]

#: about this many steps (every k-th sequence, at most this many steps of each) fit the control variate
CONTROL_STEPS = 200_000


def fit_control(X, Y, lengths: np.ndarray | None, max_steps: int = CONTROL_STEPS) -> np.ndarray:
    """Least-squares coefficients ``B`` (1 + 3 d_x, d_y) of ``y_t`` on ``[1, x_{t-1}, x_t, x_{t+1}]``
    (neighbours outside the sequence are zero, as in the passes), from every k-th sequence of
    ``X`` (n, T, d_x), ``Y`` (n, T, d_y) so that about ``max_steps`` steps are read; ``lengths``
    (n,) or ``None``."""
    n, T, d = X.shape
    k = max(1, math.ceil(n * T / max_steps))
    k = min(k, n)
    n_sub = -(-n // k)
    T_sub = min(T, max(2, math.ceil(max_steps / n_sub)))
    Xs = np.asarray(X[::k, :T_sub], dtype=np.float64)
    Ys = np.asarray(Y[::k, :T_sub], dtype=np.float64)
    valid = np.ones(Xs.shape[:2], dtype=bool)
    if lengths is not None:
        valid = np.arange(T_sub)[None, :] < np.asarray(lengths)[::k, None]
        Xs = np.where(valid[..., None], Xs, 0.0)
    zero = np.zeros_like(Xs[:, :1])
    prev = np.concatenate([zero, Xs[:, :-1]], axis=1)
    nxt = np.concatenate([Xs[:, 1:], zero], axis=1)
    if T_sub < T:  # the cut is not the sequences' end: their x_{t+1} there is unknown
        valid[:, -1] = False
    Fm = np.concatenate([np.ones(Xs.shape[:2] + (1,)), prev, Xs, nxt], axis=2)[valid]
    Ym = Ys[valid]
    G = Fm.T @ Fm
    G += 1e-10 * np.trace(G) / G.shape[0] * np.eye(G.shape[0])
    return np.linalg.solve(G, Fm.T @ Ym)


def control_for(option: object, process: object, X, Y, lengths: np.ndarray | None, dtype: torch.dtype,
                device: torch.device, timings: dict | None = None) -> torch.Tensor | None:
    """The control variate an estimator's passes use: ``fit_control`` as a tensor, or ``None``.
    ``option`` is the estimator's ``control_variate``: ``True``, ``False`` or ``"auto"`` (on unless
    the fitted input law is the Gaussian closed form). ``timings``: the fit's stage timings, where
    the seconds of the fit are recorded as ``"control"`` when there is one."""
    if option not in ("auto", True, False):
        raise InputError(f"control_variate must be 'auto', True or False, got {option!r}")
    on = option is True or (option == "auto" and not isinstance(getattr(process, "law_", None), GaussianLaw))
    if not on:
        return None
    t0 = time.perf_counter()
    B = torch.as_tensor(fit_control(X, Y, lengths), dtype=dtype, device=device)
    if timings is not None:
        timings["control"] = time.perf_counter() - t0
    return B
