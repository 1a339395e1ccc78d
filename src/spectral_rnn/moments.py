"""Moment passes: cross-moments between outputs and input scores, streamed over the data.

The moment tensor (docs/method.md, "The moment identity") is::

    T = E[y_t (x) S_2(x_t | x_{t-1})] = sum_j mu_j a2_j (x) a1_j (x) a1_j      (d_y, d_x, d_x)

with ``S_2 = s s^T - sum_k kappa_k b_k b_k^T`` as a score function provides it
(:class:`~spectral_rnn.scores.StepScores`). It is never formed at full size by the
estimators. What they need comes from single passes over the data, each a sum over
time steps accumulated in chunks (so memory does not grow with the number of steps),
on CPU or GPU:

* :meth:`StepStream.sketch` -- ``T(theta_a, I, omega_b)`` for random pairs:
  a matrix whose range is the span of the A1 rows; cost ``O(N d_x p k)``.
* :meth:`StepStream.project` -- ``T(I, Q, Q)`` for an orthonormal ``Q (d_x, k)``:
  a ``(d_y, k, k)`` tensor; cost ``O(N k^2 d_y)``.
* the moments of the instrument equations that give the scales and U (docs/method.md,
  "Scales and U") are a pass of :mod:`spectral_rnn.recurrence` over the same windows.
* :meth:`StepStream.first_order` and :meth:`StepStream.project3` -- the first-order moment
  and the projected third-order tensor of the route for odd activations (tanh).
* :func:`cross_moment` -- the dense tensor, for small problems and tests only.

The per-step second-order terms enter every pass only through ``sum_t y_t kappa_t^T``
(a ``d_y x K`` matrix), combined with the constant basis at the end of the pass.
Every pass sees the valid steps of one chunk at a time through a :class:`Window`, and asks it
for what it needs of the scores (:meth:`Window.s_proj`, :meth:`Window.s_gram`,
:meth:`Window.kappa_sum`, ...): from the full scores, or, where the process's score is linear
in the inputs (Gaussian AR(1)), from products of the inputs with ``d_x x c`` matrices and lagged
sums, never forming the score (docs/method.md, section 6, "The linear score").
"""

from __future__ import annotations

import warnings
from functools import cached_property

import numpy as np
import torch

from ._checks import InputError, iter_windows, read_slice
from ._dask import compute_blocks, is_dask
from ._heap import trim_heap as _trim_heap
from .processes import MarkovProcess
from .scores import StepScores, colsum

__all__ = ["StepStream", "Window", "cross_moment"]

#: default number of time steps held in memory at once
CHUNK_STEPS = 1 << 16
#: at most this many numbers (steps x (d_x + d_y)) in one chunk's window of inputs and outputs
CHUNK_ENTRIES = 1 << 21
#: default route of the passes where the process has a linear score (Gaussian AR(1)): ``None``: per
#: request, whichever costs fewer products (:meth:`Window.prefers_linear`); ``True``: always; ``False``: never
LINEAR_ROUTE: bool | None = None


class _Sums(dict):
    """Running sums of per-chunk tensors, kept in float64 whatever the compute dtype.

    With ``blocks=True`` the sums of each block (one or more consecutive chunks) are kept
    apart: :meth:`end_block` turns the block's sums into its means, and :meth:`means`
    returns the elementwise median of the block means (median of means) instead of the
    overall mean. Entries added by :meth:`keep_max` are reduced by a maximum over all
    chunks instead (never by block)."""

    def __init__(self, blocks: bool = False) -> None:
        super().__init__()
        self.blocks = blocks
        self.parts: list[dict] = []
        self.maxima: dict = {}

    def add(self, name: object, val: torch.Tensor) -> None:
        val = val.to(torch.float64)
        self[name] = val if name not in self else self[name] + val

    def keep_max(self, name: object, val: torch.Tensor) -> None:
        """Keep the vector ``val`` if its first entry is the largest seen under ``name``."""
        val = val.to(torch.float64)
        if name not in self.maxima or float(val[0]) > float(self.maxima[name][0]):
            self.maxima[name] = val

    def end_block(self, n: int) -> None:
        if self.blocks and n > 0:
            self.parts.append({k: v / n for k, v in self.items()})
            if self.total is not None:  # both: the plain sums go on
                for k, v in self.items():
                    self.total[k] = v if k not in self.total else self.total[k] + v
            self.clear()

    #: with ``total`` a dict, the block sums are also added up: :meth:`means` then gives both
    total: dict | None = None

    def plain_means(self, n: int) -> dict:
        """The plain means of sums kept both ways (``total``)."""
        out = {k: v.cpu().numpy() for k, v in self.maxima.items()}
        out.update({k: (v / n).cpu().numpy() for k, v in self.total.items()})
        return out

    def means(self, n: int) -> dict:
        out = {k: v.cpu().numpy() for k, v in self.maxima.items()}
        if not self.blocks:
            out.update({k: (v / n).cpu().numpy() for k, v in self.items()})
            return out
        keys = {k for part in self.parts for k in part}
        for k in keys:
            vals = [part[k] for part in self.parts if k in part]
            out[k] = torch.stack(vals).median(dim=0).values.cpu().numpy() if len(vals) > 2 else \
                torch.stack(vals).mean(dim=0).cpu().numpy()
        return out


def _lagged(source: str, k: int) -> cached_property:
    """A cached :class:`Window` attribute: the window array ``source`` (``"_X"`` or ``"_Y"``)
    at step ``t - k`` for every valid, owned step ``t``, shape (m, d)."""

    def get(self: "Window") -> torch.Tensor:
        A = getattr(self, source)
        return self._take(A) if k == 0 else self._shift(A, k)

    return cached_property(get)


class Window:
    """The valid steps of one chunk, flattened to ``m`` rows.

    ``mask`` (n, W) marks the valid steps the chunk owns (``None``: all of them).

    Attributes are computed on first use: ``x``, ``x_prev``, ``x_prev2`` (m, d_x);
    ``x_next``, ``x_next2``; ``y``, ``y_prev``, ``y_next`` (m, d_y); ``scores``, the
    process's :class:`~spectral_rnn.scores.StepScores` of the valid steps (rows ``m``),
    and ``s`` (m, d_x), their first-order part (taken from the linear score where the stream
    may use it, without building the full scores). Quantities before the first step are zero
    (``h_0 = 0``, and a constant is a valid instrument).
    """

    def __init__(self, stream: "StepStream", X: torch.Tensor, Y: torch.Tensor | None, mask: torch.Tensor,
                 lengths: torch.Tensor | None, t0: int, valid: torch.Tensor | None = None) -> None:
        self._stream, self._X, self._Y, self._mask, self._lengths, self._t0 = stream, X, Y, mask, lengths, t0
        self._valid = valid  # (n, W): steps inside their sequence (None: all)
        #: the process's linear score (:meth:`~spectral_rnn.processes.AR1Process.linear_score`) when the
        #: stream may use it, else None (the scores are then computed in full, :attr:`scores`)
        self.linear = stream._linear_terms()
        self._route = stream.linear if stream.linear is not None else LINEAR_ROUTE

    def _shift(self, A: torch.Tensor, k: int) -> torch.Tensor:
        """``A`` at step ``t - k`` for every valid step ``t`` (zero outside the sequence:
        padding is zeroed before a window is made)."""
        return self._take(self._shift_window(A, k))

    def _take(self, A: torch.Tensor) -> torch.Tensor:
        """Rows of the valid, owned steps of a per-step window array (n, W, ...) -> (m, ...)."""
        if self._mask is None:  # every step of the window counts: a view, no copy
            return A.reshape((-1,) + A.shape[2:])
        return A[self._mask]

    x = _lagged("_X", 0)
    x_prev = _lagged("_X", 1)
    x_prev2 = _lagged("_X", 2)
    x_next = _lagged("_X", -1)
    x_next2 = _lagged("_X", -2)
    y = _lagged("_Y", 0)
    y_prev = _lagged("_Y", 1)
    y_next = _lagged("_Y", -1)

    @cached_property
    def _score_window(self) -> StepScores:
        return self._stream.process.score_terms(self._X, self._lengths, t0=self._t0, two_sided=self._stream.two_sided)

    @cached_property
    def scores(self) -> StepScores:
        """Scores of the valid, owned steps (rows ``m``)."""
        sw = self._score_window
        if self._mask is None:
            return sw.reshape_rows()
        return sw.take(self._mask)

    @cached_property
    def y_tensor(self) -> torch.Tensor:
        """The outputs the second-order tensor passes contract (m, d_y): ``y_t`` minus the stream's
        control variate ``[1, x_{t-1}, x_t, x_{t+1}] @ control`` where it has one
        (:mod:`spectral_rnn.control`: the subtracted part has zero moment against ``S_2``), else ``y_t``."""
        B = getattr(self._stream, "control", None)
        if B is None:
            return self.y
        d = self._X.shape[2]
        return self.y - (B[0] + self.x_prev @ B[1:d + 1] + self.x @ B[d + 1:2 * d + 1] + self.x_next @ B[2 * d + 1:])

    @cached_property
    def _s_padded(self) -> torch.Tensor:
        """The score at every step of the window (n, W, d_x), zero on padding (where it means nothing)."""
        s = self._s_window
        if self._lengths is not None and bool((self._lengths < self._t0 + s.shape[1]).any()):
            t = torch.arange(self._t0, self._t0 + s.shape[1], device=s.device)
            s = s * (t[None, :] < self._lengths[:, None]).unsqueeze(-1)
        return s

    # ------------------------------------------------------------- what the passes ask of the scores
    # Each has two routes: from the full scores (:attr:`scores`), or, when the stream uses the
    # process's linear score (Gaussian AR(1), :attr:`linear`), from products of the inputs with
    # d x c matrices, so no d x d product is computed per step.

    def _untake(self, g: torch.Tensor) -> torch.Tensor:
        """Rows (m, c) of the valid, owned steps back to window shape (n, W, c), zero elsewhere."""
        n, W = self._X.shape[:2]
        if self._mask is None:
            return g.reshape(n, W, g.shape[1])
        H = g.new_zeros((n, W, g.shape[1]))
        H[self._mask] = g
        return H

    def _has_next(self) -> torch.Tensor:
        """(n, W - 1) bool: step ``t`` of the window has a successor in its sequence (as in
        :meth:`~spectral_rnn.processes.AR1Process.score_terms`)."""
        n, W = self._X.shape[:2]
        t_abs = torch.arange(self._t0, self._t0 + W, device=self._X.device)
        last = (torch.full((n, 1), self._t0 + W - 1, device=self._X.device) if self._lengths is None
                else self._lengths[:, None].to(self._X.device) - 1)
        return t_abs[None, :-1] < last

    def prefers_linear(self, c: int) -> bool:
        """Whether a request of width ``c`` (a projection on ``c`` columns, or a sum against ``c`` per-step
        columns) goes by the linear score: where there is one, the route allows it, and the full scores
        are not computed yet and cost more: two (two-sided: three) ``d_x x d_x`` products per step against
        one (three) more ``d_x x c`` products."""
        if self.linear is None or self._route is False:
            return False
        if self._route is True:
            return True
        if "_score_window" in self.__dict__ or "_s_window" in self.__dict__:  # already paid for
            return False
        two = self._stream.two_sided
        return (3 if two else 1) * c < (3 if two else 2) * self._X.shape[2]

    def s_proj(self, M: torch.Tensor) -> torch.Tensor:
        """``s_t M`` (m, c) for ``M`` (d_x, c): the scores projected on the columns of ``M``."""
        if M.shape[0] == M.shape[1] and torch.equal(M, torch.eye(M.shape[0], dtype=M.dtype, device=M.device)):
            return self.s  # the input span is not sketched: the scores themselves
        if not self.prefers_linear(M.shape[1]):
            return self.s @ M
        return self._take(self._linear_window(M))

    def _linear_window(self, M: torch.Tensor) -> torch.Tensor:
        """``s_t M`` (n, W, c) at every step of the window, from the linear score: one product of the
        window's x with ``d_x x c`` matrices side by side (two; two-sided three), and shifts in
        time. With ``r_t = x_t - F x_{t-1} - b`` (row form)::

            s_t M = x_t P M - x_{t-1} F^T P M - b P M                  (t >= 1; the first step: its own law)
                    - (x_{t+1} P F M - x_t F^T P F M - b P F M)        (two-sided, where x_{t+1} exists)

        the two-sided terms in ``x_t`` and the constants join the first product, and the steps
        without a successor (the window's last column, a sequence's last step) take theirs back."""
        L = self.linear
        X = self._X
        n, W, d = X.shape
        c = M.shape[1]
        Xf = X.reshape(-1, d)
        PM, bPM = L["P"] @ M, L["bP"] @ M
        # one product of the window's x with all the d_x x c operands side by side: the inputs are
        # read once (the separate skinny products each read them, at several times the flop cost)
        if self._stream.two_sided:
            FtPFM, bPFM = L["FtPF"] @ M, L["bPF"] @ M
            R = (Xf @ torch.cat([PM + FtPFM, L["PF"] @ M, L["FtP"] @ M], dim=1)).view(n, W, 3 * c)
            S = R[..., :c] + (bPFM - bPM)
            if W > 1:
                S[:, :-1] -= R[:, 1:, c:2 * c]  # - x_{t+1} P F M
            S[:, -1] -= X[:, -1] @ FtPFM + bPFM  # no successor in the window
            if W > 1:
                ends = ~self._has_next()  # a sequence's last step (x_{t+1} is zero padding there)
                if bool(ends.any()):
                    at = ends.nonzero(as_tuple=True)
                    S[at] -= X[at] @ FtPFM + bPFM
        else:
            R = (Xf @ torch.cat([PM, L["FtP"] @ M], dim=1)).view(n, W, 2 * c)
            S = R[..., :c] - bPM
        if W > 1:
            S[:, 1:] -= R[:, :-1, -c:]  # - x_{t-1} F^T P M
        if self._t0 == 0:  # the first step: its own law, x_1 P0 M - m0 P0 M, instead of x_1 P M - b P M
            S[:, 0] += X[:, 0] @ (L["P0"] @ M - PM) - L["m0P0"] @ M + bPM
        return S

    @cached_property
    def _s_window(self) -> torch.Tensor:
        """The score at every step of the window (n, W, d_x): from the linear score where the stream
        may use it (no second-order weights are built), else from the process's full scores."""
        if self.linear is None or self._route is False or "_score_window" in self.__dict__:
            return self._score_window.s
        return self._linear_window(torch.eye(self._X.shape[2], dtype=self._X.dtype, device=self._X.device))

    def s_gram(self, g: torch.Tensor, lag: int = 0) -> torch.Tensor:
        """``sum_t g_t^T s_{t-lag}`` (c, d_x) for ``g`` (m, c) rows of the valid, owned steps (the
        score of a step outside its sequence counts as zero)."""
        L = self.linear
        if not self.prefers_linear(g.shape[1]):
            if lag == 0:
                return g.T @ self.s
            # sum_t g_t^T s_{t-lag} = sum_u G_{u+lag}^T s_u: the window's scores against the rows offset by lag
            return self._shifted_gram(self._s_padded, self._untake(g), lag).T
        X = self._X
        n, W, d = X.shape
        c = g.shape[1]
        H = self._untake(g)
        if lag:  # H_u = g_{u + lag}: the step whose score enters, zero outside the window
            H = self._shift_window(H, -lag)
            if self._valid is not None:
                H = H * self._valid.unsqueeze(-1)
        two = self._stream.two_sided
        # products with the window's x: H_u with x_u, H_{u+1} with x_u (the score of x_{u+1} holds -F^T P x_u);
        # two-sided also Hc_u (H_u where x_{u+1} exists) with x_u, and Hc_{u-1} with x_u (for x_{u+1})
        blocks = 4 if two else 2
        if blocks * c < d:
            # wide inputs: the shifted copies of H (c columns each, zero where the partner step lies
            # outside the window) side by side, against the inputs read once (d = 300: each skinny
            # product was a read of the chunk, 1.5-2.5x the cost of the fused one)
            Hs = H.new_empty((n, W, blocks * c))
            Hs[..., :c] = H
            self._shift_window(H, -1, out=Hs[..., c:2 * c])
            if two:
                Hc = Hs[..., 2 * c:3 * c]
                Hc[:, :-1] = H[:, :-1] * self._has_next().unsqueeze(-1)
                Hc[:, -1] = 0
                self._shift_window(Hc, 1, out=Hs[..., 3 * c:])
            R = Hs.reshape(-1, blocks * c).T @ X.reshape(-1, d)
            RH, R_next = R[:c], R[c:2 * c]
            if two:
                Rc, Rc_prev = R[2 * c:3 * c], R[3 * c:]
        else:
            # narrow inputs: copies of H would cost more than reading x again; sums offset in time are
            # products of the flattened arrays offset by rows (_shifted_gram), nothing copied
            RH = H.reshape(-1, c).T @ X.reshape(-1, d)
            R_next = self._shifted_gram(X, H, 1).T
            if two:
                Hc = torch.zeros_like(H)
                Hc[:, :-1] = H[:, :-1] * self._has_next().unsqueeze(-1)
                Rc, Rc_prev = Hc.reshape(-1, c).T @ X.reshape(-1, d), self._shifted_gram(X, Hc, -1).T
        h = colsum(H.reshape(-1, c))
        out = -(R_next @ L["FtP"])
        if self._t0 == 0:  # the first step: P0 (x_1 - m0) instead of the transition's score
            H0 = H[:, 0]
            R0, h0 = H0.T @ X[:, 0], H0.sum(0)
            out += R0 @ L["P0"] - torch.outer(h0, L["m0P0"])
            RH, h = RH - R0, h - h0
        out += RH @ L["P"] - torch.outer(h, L["bP"])
        if two:
            hc = colsum(Hc.reshape(-1, c))
            out += Rc @ L["FtPF"] - Rc_prev @ L["PF"] + torch.outer(hc, L["bPF"])
        return out

    @staticmethod
    def _shift_window(A: torch.Tensor, k: int, out: torch.Tensor | None = None) -> torch.Tensor:
        """``A`` (n, W, ...) at step ``t - k`` for every step of the window (zero outside it),
        written into ``out`` (same shape; e.g. a slice of a wider operand) when given."""
        W = A.shape[1]
        if out is None:
            if k == 0:
                return A
            out = torch.empty_like(A)  # every entry is written below: no zero fill of the whole window
        if k == 0:
            out.copy_(A)
        elif abs(k) >= W:
            out.zero_()
        elif k > 0:
            out[:, k:] = A[:, :-k]
            out[:, :k] = 0
        else:
            out[:, :k] = A[:, -k:]
            out[:, k:] = 0
        return out

    @staticmethod
    def _shifted_gram(A: torch.Tensor, B: torch.Tensor, k: int) -> torch.Tensor:
        """``sum_u A_u^T B_{u+k}`` (a, b) over the steps ``u`` of the window with ``u + k`` inside
        it, for window arrays ``A`` (n, W, a) and ``B`` (n, W, b): the sum ``A^T shift(B, -k)``
        without the shifted copy. One product of the flattened arrays offset by ``k`` rows, less
        the ``|k|`` products of the pairs it wrongly takes across two sequences (rows ``n - 1``)."""
        n, W, a = A.shape
        b = B.shape[2]
        if abs(k) >= W or n == 0:
            return A.new_zeros((a, b))
        Af, Bf = A.reshape(-1, a), B.reshape(-1, b)
        if k == 0:
            return Af.T @ Bf
        if k > 0:  # flat rows i and i + k; wrong where u + k passes the end: (seq, u) with (seq + 1, u + k - W)
            out = Af[:-k].T @ Bf[k:]
            for u in range(W - k, W):
                out -= A[:-1, u].T @ B[1:, u + k - W]
        else:  # flat rows i and i - |k|; wrong where u + k < 0: (seq, u) with (seq - 1, u + k + W)
            out = Af[-k:].T @ Bf[:k]
            for u in range(-k):
                out -= A[1:, u].T @ B[:-1, u + k + W]
        return out

    @cached_property
    def _kappa_window(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(kc, groups, basis)``: the second-order weights in compact form, ``kappa = kc[..., groups]``,
        with ``kc`` (n, W, G) and ``groups`` (K,). The full scores: ``G = K``; the linear score: one
        column per block of the basis (the transition, the first step, the next step's factor)."""
        L = self.linear
        if L is None:
            sw = self._score_window
            return sw.kappa, torch.arange(sw.kappa.shape[-1], device=sw.kappa.device), sw.basis
        X = self._X
        n, W, d = X.shape
        two = self._stream.two_sided
        kc = X.new_zeros((n, W, 3 if two else 2))
        kc[..., 0] = 1.0
        if self._t0 == 0:
            kc[:, 0, 0] = 0.0
            kc[:, 0, 1] = 1.0
        if two and W > 1:
            kc[:, :-1, 2] = self._has_next().to(X.dtype)
        groups = torch.arange(kc.shape[-1], device=X.device).repeat_interleave(d)
        return kc, groups, L["two"] if two else L["one"]

    @cached_property
    def kappa_c(self) -> torch.Tensor:
        """The compact second-order weights of the valid, owned steps (m, G); ``kappa = kappa_c[:, groups]``."""
        return self._take(self._kappa_window[0])

    @property
    def groups(self) -> torch.Tensor:
        return self._kappa_window[1]

    @property
    def basis(self) -> torch.Tensor:
        """The constant basis (K, d_x) of the scores."""
        return self._kappa_window[2]

    @property
    def tau(self) -> torch.Tensor | None:
        """Third-order weights (m, K) or None (zero)."""
        return None if self.linear is not None else self.scores.tau

    def require_third(self) -> None:
        if self.linear is None:
            self.scores.require_third()

    def kappa_proj(self, V: torch.Tensor, absolute: bool = False) -> torch.Tensor:
        """``kappa_t V`` (m, r) for ``V`` (K, r) (``|kappa_t| V`` with ``absolute``)."""
        kc = self.kappa_c.abs() if absolute else self.kappa_c
        G = kc.shape[1]
        if G == V.shape[0]:  # one weight per basis row
            return kc @ V
        return kc @ V.new_zeros((G, V.shape[1])).index_add_(0, self.groups, V)

    def kappa_sum(self, g: torch.Tensor) -> torch.Tensor:
        """``sum_t g_t^T kappa_t`` (c, K) for ``g`` (m, c)."""
        out = g.T @ self.kappa_c
        return out if out.shape[1] == self.groups.shape[0] else out[:, self.groups]

    def s2_quad(self, A: torch.Tensor) -> torch.Tensor:
        """``S_2(a_j, a_j) = (s . a_j)^2 - sum_k kappa_k (b_k . a_j)^2`` for rows ``a_j`` of ``A`` (r, d): (m, r)."""
        sa = self.s_proj(A.T)
        return sa * sa - self.kappa_proj((self.basis @ A.T) ** 2)

    @cached_property
    def s(self) -> torch.Tensor:
        """The scores of the valid, owned steps (m, d_x)."""
        return self._take(self._s_window)

    @property
    def n(self) -> int:
        return self._X.shape[0] * self._X.shape[1] if self._mask is None else int(self._mask.sum())


class StepStream:
    """Streams ``(X, Y)`` in chunks of valid time steps, on ``device``.

    Parameters
    ----------
    X: (n_sequences, T, d_x) inputs; Y: (n_sequences, T, d_y) outputs or ``None``.
    lengths: (n_sequences,) or ``None``; process: a fitted input process.
    two_sided: use the score of ``x_t`` given all other inputs (BRNN) instead of
        given ``x_{t-1}``.
    chunk_steps: time steps per chunk; bounds the memory of a pass.
    progress: a callable ``progress(n_steps_done)`` called after every chunk, or None.
    blocks: ``None`` (default): every pass returns means over all valid steps; a number B:
        median of means, the elementwise median of the means over B blocks of consecutive
        steps (robust to a few extreme steps, such as a sequence close to diverging).
    dual: with ``blocks``, passes return plain means but keep the median of means of the
        last pass too, so that :meth:`use_blocks` can switch to it without a second pass.
    linear: whether the passes use the process's linear score where it has one (Gaussian
        innovations: :meth:`~spectral_rnn.processes.AR1Process.linear_score`), asking for the
        projections and lagged sums they need in ``O(d_x c)`` per step instead of computing the
        full score (two ``d_x x d_x`` products per step); ``None`` (default): :data:`LINEAR_ROUTE`
        (by default per request, whichever is cheaper). Both routes give the same sums (to rounding).
    """

    def __init__(
        self,
        X: np.ndarray,
        Y: np.ndarray | None,
        lengths: np.ndarray | None,
        process: MarkovProcess,
        two_sided: bool = False,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float64,
        chunk_steps: int = CHUNK_STEPS,
        progress=None,
        blocks: int | None = None,
        dual: bool = False,
        linear: bool | None = None,
    ) -> None:
        self.X, self.Y, self.lengths, self.process = X, Y, lengths, process
        self.linear = linear
        self.two_sided = two_sided
        self.device, self.dtype = torch.device(device), dtype
        self.progress = progress
        n, T, _ = X.shape
        self.n_steps = int(n * T if lengths is None else np.sum(lengths))
        self.blocks = blocks
        self.dual = bool(dual and blocks)
        self._block_means: dict = {}
        if blocks:  # median of means: each chunk a block of about N / blocks steps
            chunk_steps = min(chunk_steps, max(1, -(-self.n_steps // blocks)))
        self.chunk_steps = chunk_steps
        self.block_steps = chunk_steps
        # chunks are capped so one window of inputs and outputs holds at most CHUNK_ENTRIES numbers
        width = X.shape[2] + (0 if Y is None else Y.shape[2])
        self.window_steps = min(chunk_steps, max(256, CHUNK_ENTRIES // max(1, width)))
        self._basis: np.ndarray | None = None
        self.lag_cross: dict = {}

    def _linear_terms(self) -> dict | None:
        """The process's linear score when the passes use it (see ``linear``), else None."""
        if self.linear is False:
            return None
        get = getattr(self.process, "linear_score", None)
        if get is None or (self.linear is None and LINEAR_ROUTE is False):
            return None
        return get(self.device, self.dtype)

    def _to(self, A: np.ndarray) -> torch.Tensor:
        """A chunk as a tensor of the compute dtype on the device (a float32 source is converted
        here, one chunk at a time; a read-only memory map is only read)."""
        if isinstance(A, torch.Tensor):
            return A.to(self.device, self.dtype)
        A = np.asarray(A)
        if not A.flags.writeable:  # torch warns on read-only arrays; the passes never write into a chunk
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                return torch.as_tensor(A).to(self.device, self.dtype, non_blocking=True)
        return torch.as_tensor(A).to(self.device, self.dtype, non_blocking=True)

    def _sums(self) -> _Sums:
        return _Sums(blocks=bool(self.blocks))

    def windows(self, sums: _Sums | None = None):
        """Yield a :class:`Window` per chunk (valid, owned steps only). With blocks (median of
        means), ``sums.end_block`` closes each block: the longest run of consecutive chunks
        of at most ``block_steps`` steps (one chunk when chunks are not capped for memory)."""
        n, T, _ = self.X.shape
        block_n, block_nominal = 0, 0
        for rows, w0, w1, o0, o1 in iter_windows(n, T, self.window_steps, before=2, after=2):
            nominal = (rows.stop - rows.start) * (o1 - o0)
            if sums is not None and block_nominal and block_nominal + nominal > self.block_steps:
                sums.end_block(block_n)
                block_n, block_nominal = 0, 0
            # a device source stays on its device; contiguous, so the passes flatten it without a copy
            Xw = self._to(read_slice(self.X, (rows, slice(w0, w1)))).contiguous()
            Yw = None if self.Y is None else self._to(read_slice(self.Y, (rows, slice(w0, w1)))).contiguous()
            W = w1 - w0
            mask = None  # None: every step of the window counts
            if (o0, o1) != (0, W):
                mask = torch.zeros(W, dtype=torch.bool, device=self.device)
                mask[o0:o1] = True
                mask = mask.expand(Xw.shape[0], W)
            Lw, valid = None, None
            if self.lengths is not None:
                Lw = torch.as_tensor(self.lengths[rows], device=self.device)
                valid = torch.arange(w0, w1, device=self.device)[None, :] < Lw[:, None]
                mask = valid if mask is None else mask & valid
                Xw = Xw.masked_fill(~valid.unsqueeze(-1), 0.0)  # padding is never read
                if Yw is not None:
                    Yw = Yw.masked_fill(~valid.unsqueeze(-1), 0.0)
            elif w1 < T:  # a window cut in time: mark its real end for the two-sided score
                Lw = torch.full((Xw.shape[0],), T, device=self.device)
            win = Window(self, Xw, Yw, mask, Lw, w0, valid)
            yield win
            del Xw, Yw, mask, Lw
            _trim_heap()
            block_n += win.n
            block_nominal += nominal
            if self.progress is not None:
                self.progress(win.n)
        if sums is not None:
            sums.end_block(block_n)

    # ------------------------------------------------------------------ passes
    def reduce(self, fn, *args, blocks: bool = True) -> dict:
        """One pass: ``fn(window, *args)`` maps each chunk to partial sums (a dict of tensors);
        they are summed (keys starting ``"max:"``: the vector with the largest first entry is
        kept) and the means over all valid steps returned as numpy arrays (median of means over
        blocks when the stream has ``blocks`` and ``blocks=True``)."""
        if is_dask(self.X):
            return self._reduce_dask(fn, args, blocks)
        sums = self._sums() if blocks else _Sums()
        if blocks and self.dual:  # plain means returned, median of means kept for use_blocks
            sums = _Sums(blocks=True)
            sums.total = {}
        for w in self.windows(sums):
            _accumulate(sums, fn(w, *args))
        if blocks and self.dual:
            self._block_means = sums.means(self.n_steps)
            return sums.plain_means(self.n_steps)
        return sums.means(self.n_steps)

    def use_blocks(self) -> None:
        """Switch a ``dual`` stream to median of means: the last pass's results (:meth:`project`'s
        tensor, peak and lag moments) are replaced by their median-of-means versions, computed in
        the same pass, and later passes return medians of means."""
        self.dual = False
        m = self._block_means
        self.projected_ = self._project_result(m, self._last_Q, self._last_lags)

    def _reduce_dask(self, fn, args: tuple, blocks: bool) -> dict:
        """:meth:`reduce` over Dask arrays: one task per block of sequences (:func:`_dask_block_sums`), the
        partial sums added here. Median-of-means blocks do not span Dask blocks."""
        if self.device.type != "cpu":
            raise InputError("Dask inputs are fitted on the CPU (device='cpu'); each worker holds its blocks")
        cfg = {"process": self.process, "two_sided": self.two_sided, "dtype": self.dtype,
               "chunk_steps": self.chunk_steps, "block_steps": self.block_steps, "linear": self.linear,
               "blocks": self.blocks if blocks else None, "control": getattr(self, "control", None)}
        parts = compute_blocks(_dask_block_sums, self.X, self.Y, self.lengths, fn, args, cfg)
        sums = _Sums(blocks=bool(cfg["blocks"]))
        for part in parts:
            for k, v in part["sums"].items():
                sums.add(k, v)
            sums.parts.extend(part["parts"])
            for k, v in part["maxima"].items():
                sums.keep_max(k, v)
        return sums.means(self.n_steps)

    def sketch(self, Theta: np.ndarray, Omega: np.ndarray) -> np.ndarray:
        """``T(theta_a, I, omega_b)`` for every column pair of ``Theta`` (d_y, p) and ``Omega`` (d_x, k).

        Returns ``(d_x, p * k)``: column ``a * k + b`` is
        ``E[(theta_a . y) S_2 omega_b]`` with ``S_2 omega = (omega . s) s - sum_k kappa_k (b_k . omega) b_k``,
        a random vector in the span of the A1 rows. All pairs (not ``k`` of them) mix the
        components well enough that the top singular vectors find weak units too; cost ``O(N d_x p k)``.
        Per chunk: :func:`sketch_chunk`.
        """
        m = self.reduce(sketch_chunk, self._to(Theta), self._to(Omega))
        B = self._basis_np()
        corr = np.einsum("ak,ki,kb->iab", m["yk"], B, B @ Omega)
        return m["acc"] - corr.reshape(Omega.shape[0], -1)

    def contract_pairs(self, Theta: np.ndarray, Omega: np.ndarray) -> np.ndarray:
        """``T(theta_j, I, omega_j)`` for each column pair ``j`` of ``Theta`` (d_y, r) and ``Omega`` (d_x, r):
        returns (d_x, r). With ``theta_j`` the dual of the output weight of unit ``j`` and ``omega_j`` its
        input direction, column ``j`` is a multiple of ``a1_j`` plus noise of order ``sqrt(d_x / N)``: one
        step of the tensor power method in the full input space. Per chunk: :func:`pairs_chunk`."""
        m = self.reduce(pairs_chunk, self._to(Theta), self._to(Omega))
        B = self._basis_np()
        return m["acc"] - B.T @ (m["yk"].T * (B @ Omega))

    def project(self, Q: np.ndarray, lags: tuple[int, ...] = ()) -> np.ndarray:
        """``T(I, Q, Q)`` for ``Q`` (d_x, k): returns (d_y, k, k). Per chunk: :func:`project_chunk`.

        Also sets ``peak_share``: the largest share of ``sum_t ||y_t|| ||Q^T S_2 Q||_t`` (a bound
        on each step's weight in the tensor) that a single time step carries, a measure of how
        much a few extreme steps dominate the estimate (about ``1/N`` for light tails), and
        ``peak_cause``: ``"outputs"`` or ``"inputs"``, whichever factor of that step is further
        above its average. With ``lags``, the same pass also sets ``lag_cross``: for each lag
        ``k``, ``E[y_t (x) S_1(x_{t-k})]`` (d_y, d_x), from which :meth:`lag_score_moments`
        follows by a product with ``Wpinv`` (no further pass)."""
        m = self.reduce(project_chunk, self._to(Q), tuple(lags))
        self._last_Q, self._last_lags = Q, tuple(lags)
        return self._project_result(m, Q, tuple(lags))

    def _set_peak(self, m: dict) -> None:
        """``peak_share``, ``peak_cause`` and ``peak_ratios`` from a pass's mass sums and heaviest step."""
        peak = m.get("max:peak", np.zeros(3))
        self.peak_share = float(peak[0]) / max(float(m["mass"]) * self.n_steps, 1e-300)
        y_ratio = float(peak[1]) / max(float(m["ynorm"]), 1e-300)
        s_ratio = float(peak[2]) / max(float(m["spart"]), 1e-300)
        self.peak_cause = "outputs" if y_ratio >= s_ratio else "inputs"
        self.peak_ratios = (y_ratio, s_ratio)

    def _project_result(self, m: dict, Q: np.ndarray, lags: tuple[int, ...]) -> np.ndarray:
        """:meth:`project`'s tensor from the means of its pass (and its peak and lag attributes)."""
        k = Q.shape[1]
        iu, ju = np.triu_indices(k)
        acc = np.empty((m["acc"].shape[0], k, k))
        acc[:, iu, ju] = m["acc"]
        acc[:, ju, iu] = m["acc"]
        self._set_peak(m)
        self.lag_cross = {lag: m[("lag", lag)] for lag in lags}
        BQ = self._basis_np() @ Q
        return acc - np.einsum("ik,ka,kb->iab", m["yk"], BQ, BQ)

    def lag_score_moments(self, Wpinv: np.ndarray, lags: tuple[int, ...] = (1, -1)) -> dict[int, np.ndarray]:
        """``E[ytil_t (x) S_1(x_{t-k})]`` for each lag ``k`` in ``lags``: (d_h, d_x) each,
        with ``ytil_t = y_t @ Wpinv``. With the two-sided score this is the mean
        derivative of ``ytil_t`` in ``x_{t-k}`` (Stein): zero for units that do not
        see that input, which tells forward from backward units. Uses ``lag_cross`` when a
        :meth:`project` (or :meth:`project3`) pass already computed these lags; otherwise one pass."""
        cached = getattr(self, "lag_cross", {})
        if all(k in cached for k in lags):
            return {k: Wpinv.T @ cached[k] for k in lags}
        m = self.reduce(lag_chunk, tuple(lags))
        self.lag_cross = {k: m[("lag", k)] for k in lags}
        return {k: Wpinv.T @ self.lag_cross[k] for k in lags}

    # ------------------------------------------------------------------ third-order route (odd activations)
    def first_order(self) -> np.ndarray:
        """``E[y_t (x) S_1(x_t | ...)]`` (d_y, d_x) ``= sum_j E[f'(z_j)] a2_j (x) a1_j`` (Stein, first order):
        its row and column spaces are the output and input spans of the hidden units. Cost ``O(N d_y d_x)``."""
        return self.reduce(first_order_chunk, blocks=False)["M"]

    def project3(self, P: np.ndarray, Q: np.ndarray, lags: tuple[int, ...] = ()) -> np.ndarray:
        """``T3(P, Q, Q, Q)`` (p, k, k, k) of the third-order tensor
        ``T3 = E[y_t (x) S_3(x_t | ...)] = sum_j E[f^(3)(z_j)] a2_j (x) a1_j (x) a1_j (x) a1_j``,
        for ``P`` (d_y, p) and ``Q`` (d_x, k), never forming ``T3``.

        With ``u = Q^T s``, ``c_K = Q^T b_K``: ``S_3(Q, Q, Q) = u^(x)3 - sum_K kappa_K sym3(u (x) c_K (x) c_K)
        + sum_K tau_K c_K^(x)3``; the pass accumulates ``sum_t (P^T y_t) (x) u_t^(x)3``,
        ``sum_t (P^T y_t) (x) u_t (x) kappa_t`` and ``sum_t (P^T y_t) (x) tau_t``, combined with the
        constant basis at the end. Cost ``O(N (d_y p + d_x k + p k^3 + p k K))``. With ``lags``, the same
        pass sets ``lag_cross`` (see :meth:`project`), and it sets ``peak_share``, ``peak_cause`` and
        ``peak_ratios`` as :meth:`project` does, with each step's weight bounded by
        ``||y_t|| ||S_3(Q, Q, Q)_t||``. Raises :class:`~spectral_rnn.InputError` if the scores have no
        third order.
        """
        m = self.reduce(project3_chunk, self._to(P), self._to(Q), tuple(lags), blocks=False)
        if not m:
            raise ValueError("no valid steps")
        self._set_peak(m)
        self.lag_cross = {lag: m[("lag", lag)] for lag in lags}
        C = self._basis_np() @ Q  # (K, k)
        k = Q.shape[1]
        uuu = m["uuu"].reshape(-1, k, k, k)
        uk = m["uk"].reshape(uuu.shape[0], k, -1)
        corr = (np.einsum("paK,Kb,Kc->pabc", uk, C, C) + np.einsum("pbK,Ka,Kc->pabc", uk, C, C)
                + np.einsum("pcK,Ka,Kb->pabc", uk, C, C))
        out = uuu - corr
        if "tau" in m:
            out = out + np.einsum("pK,Ka,Kb,Kc->pabc", m["tau"], C, C, C)
        return out

    def _basis_np(self) -> np.ndarray:
        """The constant basis ``B`` (K, d_x) of the process's scores, float64 numpy (from the
        scores of the first few steps of the first sequence)."""
        if self._basis is None:
            T = self.X.shape[1]
            t = min(T, 3) if self.lengths is None else int(min(T, 3, max(1, self.lengths[0])))
            probe = self._to(self.X[0:1, :t])
            L = torch.full((1,), t, device=self.device)
            self._basis = self.process.score_terms(probe, L, t0=0, two_sided=self.two_sided).basis.cpu().to(
                torch.float64).numpy()
        return self._basis


def _dask_block_sums(X: np.ndarray, Y: np.ndarray | None, lengths: np.ndarray | None, fn, args: tuple,
                     cfg: dict) -> dict:
    """One Dask task: the pass ``fn`` over one block of whole sequences, returned as raw sums
    (not means), closed median-of-means blocks and maxima, to be added on the client."""
    st = StepStream(X, Y, lengths, cfg["process"], two_sided=cfg["two_sided"], dtype=cfg["dtype"],
                    chunk_steps=cfg["chunk_steps"], linear=cfg.get("linear"))
    st.control = cfg.get("control")
    if cfg["blocks"]:
        st.blocks, st.block_steps = cfg["blocks"], cfg["block_steps"]
        st.window_steps = min(st.window_steps, cfg["block_steps"])
    sums = st._sums() if cfg["blocks"] else _Sums()
    for w in st.windows(sums):
        _accumulate(sums, fn(w, *args))
    return {"sums": dict(sums), "parts": sums.parts, "maxima": sums.maxima}


# ---------------------------------------------------------------------- per-chunk functions
# Each maps one chunk (a Window of valid steps) to partial sums, a dict of tensors on the
# chunk's device; the reduction is a sum over chunks (keys "max:...": the vector with the
# largest first entry). They read each quantity of a chunk once (scores included: the
# Window caches them) and form no (m, d, d) array: second-order scores enter only through
# ``S_2(v, w) = (s.v)(s.w) - sum_k kappa_k (b_k.v)(b_k.w)``.

#: largest number of entries of a per-chunk temporary (rows x columns); larger ones are
#: built and contracted in blocks of rows
TEMP_ENTRIES = 1 << 21


def _row_blocks(m: int, width: int):
    step = max(1, TEMP_ENTRIES // max(1, width))
    for i in range(0, m, step):
        yield slice(i, min(m, i + step))


def _accumulate(sums: "_Sums", part: dict) -> None:
    for name, val in part.items():
        if isinstance(name, str) and name.startswith("max:"):
            sums.keep_max(name, val)
        else:
            sums.add(name, val)


def sketch_chunk(w: Window, Th: torch.Tensor, Om: torch.Tensor) -> dict:
    """Partial sums of :meth:`StepStream.sketch`: ``acc`` (d_x, p k) = ``sum_t s_t ((Th^T y_t) (x) (Om^T s_t))``,
    ``yk`` (p, K) = ``sum_t (Th^T y_t) kappa_t^T``."""
    yt = w.y_tensor @ Th  # (m, p); a control variate subtracted where the stream has one
    so = w.s_proj(Om)  # (m, k)
    p, k = yt.shape[1], so.shape[1]
    if w.prefers_linear(p * k):  # one lagged-sum product: s_t is never formed
        acc = w.s_gram((yt[:, :, None] * so[:, None, :]).reshape(-1, p * k)).T
    else:
        s = w.s
        acc = s.new_zeros((s.shape[1], p * k))
        for b in _row_blocks(yt.shape[0], p * k):
            acc += s[b].T @ (yt[b, :, None] * so[b, None, :]).reshape(-1, p * k)
    return {"acc": acc, "yk": w.kappa_sum(yt)}


def pairs_chunk(w: Window, Th: torch.Tensor, Om: torch.Tensor) -> dict:
    """Partial sums of :meth:`StepStream.contract_pairs`: ``acc`` (d_x, r) = ``sum_t s_t (Th^T y_t) * (Om^T s_t)``,
    ``yk`` (r, K) = ``sum_t (Th^T y_t) kappa_t^T``."""
    yt = w.y_tensor @ Th  # (m, r); a control variate subtracted where the stream has one
    return {"acc": w.s_gram(yt * w.s_proj(Om)).T, "yk": w.kappa_sum(yt)}


#: entries of one block of the projection's operand (pairs x rows), sized to stay in a core's cache
PAIR_BLOCK_ENTRIES = 1 << 19


def _contract_pairs(y: torch.Tensor, sq: torch.Tensor, part: torch.Tensor, norm_of: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(y^T [u_a u_b for a <= b (row-major upper triangle)], y^T part, ||u_t||^2, ||z_t||)``: (d_y,
    k(k+1)/2), (d_y, c), (m,) and (m,) for ``y`` (m, d_y), ``sq = u`` (m, k), ``part`` (m, c) and
    ``z = norm_of`` (m, d_z; default ``y``), in one product per block of rows. The operand is built
    transposed, one contiguous row per pair ``u_a * u_b`` (products of contiguous rows of ``u^T``;
    the row-major layout made each product a strided one), in blocks of rows that keep it within
    :data:`PAIR_BLOCK_ENTRIES` numbers (and :data:`TEMP_ENTRIES`), so it is written and read in
    cache; the row norms (the projection's weight of each step) are taken from the same blocks."""
    m, k = sq.shape
    z = y if norm_of is None else norm_of
    nt = k * (k + 1) // 2
    width = nt + part.shape[1]
    step = max(64, min(PAIR_BLOCK_ENTRIES, TEMP_ENTRIES) // width)
    diag = torch.as_tensor([a * k - a * (a - 1) // 2 for a in range(k)], device=y.device)  # rows u_a u_a
    G = y.new_zeros((y.shape[1], width))
    usq, znorm = y.new_empty(m), y.new_empty(m)
    F = y.new_empty((width, min(step, m)))
    for i in range(0, m, step):
        u = sq[i:i + step].T.contiguous()  # (k, rows): transposed block by block, in cache
        Fb = F[:, :u.shape[1]]
        c = 0
        for a in range(k):
            torch.mul(u[a:], u[a], out=Fb[c:c + k - a])
            c += k - a
        Fb[nt:] = part[i:i + step].T
        G.addmm_(y[i:i + step].T, Fb.T)
        torch.sum(Fb.index_select(0, diag), 0, out=usq[i:i + step])
        torch.linalg.vector_norm(z[i:i + step], dim=1, out=znorm[i:i + step])
    return G[:, :nt], G[:, nt:], usq, znorm


def project_chunk(w: Window, Qt: torch.Tensor, lags: tuple[int, ...] = ()) -> dict:
    """Partial sums of :meth:`StepStream.project`: ``acc`` (d_y, k(k+1)/2) = ``sum_t y_t (u_a u_b)_{a<=b}``
    with ``u = Q^T s_t``; ``yk`` (d_y, K); the mass sums and the heaviest step (``max:peak``:
    its mass, ``||y_t||`` and ``||Q^T S_2 Q||`` bound); ``("lag", k)`` (d_y, d_x) = ``sum_t y_t s_{t-k}^T``."""
    y = w.y
    yt = w.y_tensor  # the tensor's outputs (a control variate subtracted); the lag moments keep y
    sq = w.s_proj(Qt)  # (m, k)
    acc, yk, usq, ynorm = _contract_pairs(yt, sq, w.kappa_c, norm_of=y)
    if yk.shape[1] != w.groups.shape[0]:
        yk = yk[:, w.groups]
    lag_moments = [w.s_gram(y, lag) for lag in lags]  # sums offset in time: nothing shifted
    BQ2 = ((w.basis @ Qt) ** 2).sum(1)  # (K,) ||Q^T b_k||^2
    spart = usq + w.kappa_proj(BQ2[:, None], absolute=True)[:, 0]  # bounds ||Q^T S_2 Q||
    mass = ynorm * spart  # each step's weight in the tensor
    out = {"acc": acc, "yk": yk, "mass": mass.sum(), "ynorm": ynorm.sum(), "spart": spart.sum()}
    if mass.numel():  # a chunk may hold only padding
        i = int(mass.argmax())
        out["max:peak"] = torch.stack([mass[i], ynorm[i], spart[i]])
    for lag, moment in zip(lags, lag_moments):
        out[("lag", lag)] = moment
    return out


def lag_chunk(w: Window, lags: tuple[int, ...]) -> dict:
    """``("lag", k)`` (d_y, d_x) = ``sum_t y_t s_{t-k}^T`` for each lag ``k``."""
    return {("lag", lag): w.s_gram(w.y, lag) for lag in lags}


def first_order_chunk(w: Window) -> dict:
    """``M`` (d_y, d_x) = ``sum_t y_t s_t^T``."""
    return {"M": w.s_gram(w.y)}


def project3_chunk(w: Window, Pt: torch.Tensor, Qt: torch.Tensor, lags: tuple[int, ...] = ()) -> dict:
    """Partial sums of :meth:`StepStream.project3` (``uuu`` (p, k^3), ``uk`` (p, k K), ``tau`` (p, K)),
    the mass sums and heaviest step of :func:`project_chunk`, and the lag cross-moments of :func:`lag_chunk`."""
    w.require_third()
    yp = w.y_tensor @ Pt  # (m, p); a control variate subtracted where the stream has one
    u = w.s_proj(Qt)  # (m, k)
    kc = w.kappa_c  # (m, G): kappa = kc[:, groups]
    k, G = u.shape[1], kc.shape[1]
    uuu = yp.new_zeros((yp.shape[1], k**3))
    uk = yp.new_zeros((yp.shape[1], k * G))
    for b in _row_blocks(u.shape[0], k**3 + k * G):
        ub = u[b]
        uu = (ub[:, :, None] * ub[:, None, :]).reshape(-1, k * k)
        uuu += yp[b].T @ (uu[:, :, None] * ub[:, None, :]).reshape(-1, k**3)
        uk += yp[b].T @ (ub[:, :, None] * kc[b][:, None, :]).reshape(-1, k * G)
    if G != w.groups.shape[0]:
        uk = uk.reshape(-1, k, G)[:, :, w.groups].reshape(uk.shape[0], -1)
    out = {"uuu": uuu, "uk": uk}
    tau = w.tau
    if tau is not None:
        out["tau"] = yp.T @ tau
    # each step's weight in the tensor, as in project_chunk: ||y_t|| times a bound on ||S_3(Q, Q, Q)_t||,
    # ||u||^3 + 3 ||u|| sum_K |kappa_K| ||c_K||^2 + sum_K |tau_K| ||c_K||^3
    cn = torch.linalg.vector_norm(w.basis @ Qt, dim=1)  # (K,) ||Q^T b_K||
    un = torch.linalg.vector_norm(u, dim=1)
    spart = un**3 + 3 * un * w.kappa_proj((cn * cn)[:, None], absolute=True)[:, 0]
    if tau is not None:
        spart = spart + tau.abs() @ cn**3
    ynorm = torch.linalg.vector_norm(w.y, dim=1)
    mass = ynorm * spart
    out.update(mass=mass.sum(), ynorm=ynorm.sum(), spart=spart.sum())
    if mass.numel():  # a chunk may hold only padding
        i = int(mass.argmax())
        out["max:peak"] = torch.stack([mass[i], ynorm[i], spart[i]])
    for lag in lags:
        out[("lag", lag)] = w.s_gram(w.y, lag)
    return out


def cross_moment(
    X: np.ndarray,
    Y: np.ndarray,
    process: MarkovProcess,
    lengths: np.ndarray | None = None,
    order: int = 2,
    two_sided: bool = False,
    device: str = "cpu",
) -> np.ndarray:
    """The dense tensor ``E[y_t (x) S_order(x_t | ...)]``: (d_y, d_x) for order 1, (d_y, d_x, d_x) for
    order 2, (d_y, d_x, d_x, d_x) for order 3. Cost ``O(N d_y d_x^order)``: small problems and tests."""
    if order not in (1, 2, 3):
        raise ValueError("order must be 1, 2 or 3")
    stream = StepStream(X, Y, lengths, process, two_sided=two_sided, device=device)
    d = X.shape[2]
    sums = _Sums()
    for w in stream.windows():
        S = w.scores.dense(order)
        sums.add("T", w.y.T @ S.reshape(S.shape[0], -1))
    return sums.means(stream.n_steps)["T"].reshape((Y.shape[2],) + (d,) * order)
