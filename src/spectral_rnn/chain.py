"""The recurrence kernel: ``h_t = f(drive_t + W h_prev)`` over masked, batch-first sequences.

Written once and used by the models (:meth:`IORNN.predict`, with the divergence check), by
the exported modules (:class:`~spectral_rnn.torch_export.PolynomialRNN`, trained by
:mod:`spectral_rnn.refine`) and by the odd route. Shapes::

    drive: (n, T, d_h)   already A1 x_t         W: (d_h, d_h)
    valid: (n, T) bool   False on padding       returns the states (n, T, d_h)

``reverse=True`` runs from each sequence's own last step backwards (the backward chain
of a BRNN). States are zero on padding steps, so a reverse chain starts at zero at each
sequence's last valid step (padding is always at the end of a sequence).

With gradients, a polynomial chain runs inside a custom autograd function whose forward
records no graph and whose backward is a hand-written loop of two tensor operations
per step (the activation's derivative evaluated for all steps at once); on two CPU cores
this is about 2x faster per training step than letting autograd record the loop
(``benchmarks/bench_vs_backprop.py --profile``). ``custom_backward=False`` and
non-polynomial activations record the loop with autograd (higher derivatives work).
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import DivergenceError
from .activations import Activation, Polynomial

__all__ = ["run_chain", "step_mask", "check_divergence", "DIVERGENCE_LIMIT"]

#: |hidden state| above which a recursion is declared divergent.
DIVERGENCE_LIMIT = 1e6


def step_mask(lengths: torch.Tensor | np.ndarray | None, T: int, device: torch.device | str | None = None
              ) -> torch.Tensor | None:
    """Boolean ``(n, T)`` tensor of the valid steps, or ``None`` when ``lengths`` is ``None``
    or every sequence is full (no padding)."""
    if lengths is None:
        return None
    L = torch.as_tensor(lengths, device=device)
    if bool((L >= T).all()):
        return None
    return torch.arange(T, device=L.device)[None, :] < L[:, None]


def _zero(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=x.dtype, device=x.device)


def _loop(drive: torch.Tensor, W: torch.Tensor, f, valid: torch.Tensor | None, reverse: bool,
          pre: list | None = None) -> torch.Tensor:
    """The plain loop (recorded by autograd when gradients are on). ``pre``: collects ``u_t``."""
    n, T, dh = drive.shape
    h = drive.new_zeros((n, dh))
    Wt = W.t()
    states: list = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        u = torch.addmm(drive[:, t], h, Wt)
        h = f(u)
        if valid is not None:
            h = torch.where(valid[:, t, None], h, _zero(h))
        if pre is not None:
            pre[t] = u
        states[t] = h
    return torch.stack(states, dim=1)


class _PolynomialChain(torch.autograd.Function):
    """The polynomial chain with a hand-written backward (first derivatives only)."""

    @staticmethod
    def forward(ctx, drive, W, valid, coefs, reverse):  # type: ignore[override]
        pre: list = [None] * drive.shape[1]
        H = _loop(drive, W, Polynomial(coefs), valid, reverse, pre)
        ctx.save_for_backward(torch.stack(pre, dim=1), H, W, valid)
        ctx.coefs, ctx.reverse = coefs, reverse
        return H

    @staticmethod
    def backward(ctx, grad_H):  # type: ignore[override]
        Upre, H, W, valid = ctx.saved_tensors
        n, T, dh = H.shape
        fp = Polynomial(ctx.coefs).derivative()(Upre)  # f'(u_t) for every step at once
        if valid is not None:
            fp = torch.where(valid[..., None], fp, _zero(fp))
        grad_H = grad_H.contiguous()
        G: list = [None] * T
        g = None
        # the chain runs forward (reverse=False) or backward in time; its gradient the other way
        for t in (range(T) if ctx.reverse else range(T - 1, -1, -1)):
            gh = grad_H[:, t] if g is None else torch.addmm(grad_H[:, t], g, W)
            g = gh * fp[:, t]
            G[t] = g
        Gd = torch.stack(G, dim=1)
        grad_W = None
        if ctx.needs_input_grad[1]:
            if T > 1:  # u_t = drive_t + W h_prev: h_prev is h_{t-1} (forward) or h_{t+1} (reverse)
                gu, hp = (Gd[:, :-1], H[:, 1:]) if ctx.reverse else (Gd[:, 1:], H[:, :-1])
                grad_W = gu.reshape(-1, dh).t() @ hp.reshape(-1, dh)
            else:
                grad_W = torch.zeros_like(W)
        return Gd, grad_W, None, None, None


def check_divergence(H: torch.Tensor, limit: float = DIVERGENCE_LIMIT) -> None:
    """Raise :class:`DivergenceError` if a state in ``H`` (n, T, d) is non-finite or above ``limit``."""
    peak = H.abs().amax() if H.numel() else H.new_zeros(())
    if torch.isfinite(peak) and peak <= limit:
        return
    bad = (~torch.isfinite(H)) | (H.abs() > limit)
    idx = torch.nonzero(bad.any(-1))
    i, t = (int(idx[0, 0]), int(idx[0, 1])) if len(idx) else (0, 0)
    raise DivergenceError(
        f"the recursion diverged (|hidden state| > {limit:.0e} at sequence {i}, step {t}): "
        "polynomial RNNs are not globally stable; use smaller weights or inputs "
        "(spectral_rnn.stability.stabilize shrinks U to a stable one)"
    )


def run_chain(
    drive: torch.Tensor,
    W: torch.Tensor,
    f: Activation,
    valid: torch.Tensor | None = None,
    reverse: bool = False,
    limit: float | None = DIVERGENCE_LIMIT,
    custom_backward: bool = True,
) -> torch.Tensor:
    """States ``(n, T, d_h)`` of ``h_t = f(drive_t + W h_prev)``; zero on padding.

    ``valid``: ``(n, T)`` bool (see :func:`step_mask`) or ``None``. ``limit``: raise
    :class:`DivergenceError` when a state is non-finite or exceeds it in magnitude
    (``None``: no check, as in training, where a non-finite loss is handled by the loop).
    ``custom_backward``: with gradients, run a polynomial chain through the hand-written
    backward (module docstring).
    """
    if drive.shape[1] == 0:
        return drive.new_zeros(drive.shape)
    needs_grad = torch.is_grad_enabled() and (drive.requires_grad or W.requires_grad)
    if needs_grad and custom_backward and isinstance(f, Polynomial):
        H = _PolynomialChain.apply(drive, W, valid, [float(c) for c in f.coefficients], reverse)
    elif needs_grad:
        H = _loop(drive, W, f, valid, reverse)
    else:
        with torch.no_grad():
            H = _loop(drive, W, f, valid, reverse)
    if limit is not None:
        check_divergence(H.detach(), limit)
    return H
