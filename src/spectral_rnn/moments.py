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
* :meth:`StepStream.instrument_moments` -- the moments of the instrument equations
  that give the scales and U (docs/method.md, "Scales and U").
* :meth:`StepStream.first_order` and :meth:`StepStream.project3` -- the first-order moment
  and the projected third-order tensor of the route for odd activations (tanh).
* :func:`cross_moment` -- the dense tensor, for small problems and tests only.

The per-step second-order terms enter every pass only through ``sum_t y_t kappa_t^T``
(a ``d_y x K`` matrix), combined with the constant basis at the end of the pass.
Every pass sees the valid steps of one chunk at a time through a :class:`Window`.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
import torch

from ._checks import iter_windows
from .processes import MarkovProcess
from .scores import StepScores

__all__ = ["StepStream", "Window", "cross_moment"]

#: default number of time steps held in memory at once
CHUNK_STEPS = 1 << 16


class _Sums(dict):
    """Running sums of per-chunk tensors, kept in float64 whatever the compute dtype.

    With ``blocks=True`` every chunk is a block: :meth:`end_block` turns the chunk's sums
    into its means, and :meth:`means` returns the elementwise median of the block means
    (median of means) instead of the overall mean."""

    def __init__(self, blocks: bool = False) -> None:
        super().__init__()
        self.blocks = blocks
        self.parts: list[dict] = []

    def add(self, name: object, val: torch.Tensor) -> None:
        val = val.to(torch.float64)
        self[name] = val if name not in self else self[name] + val

    def end_block(self, n: int) -> None:
        if self.blocks and n > 0:
            self.parts.append({k: v / n for k, v in self.items()})
            self.clear()

    def means(self, n: int) -> dict:
        if not self.blocks:
            return {k: (v / n).cpu().numpy() for k, v in self.items()}
        keys = {k for part in self.parts for k in part}
        out = {}
        for k in keys:
            vals = [part[k] for part in self.parts if k in part]
            out[k] = torch.stack(vals).median(dim=0).values.cpu().numpy() if len(vals) > 2 else \
                torch.stack(vals).mean(dim=0).cpu().numpy()
        return out


class Window:
    """The valid steps of one chunk, flattened to ``m`` rows.

    ``mask`` (n, W) marks the valid steps the chunk owns (``None``: all of them).

    Attributes are computed on first use: ``x``, ``x_prev``, ``x_prev2`` (m, d_x);
    ``x_next``, ``x_next2``; ``y``, ``y_prev``, ``y_next`` (m, d_y); ``scores``, the
    process's :class:`~spectral_rnn.scores.StepScores` of the valid steps (rows ``m``),
    and ``s`` = ``scores.s`` (m, d_x). Quantities before the first step are zero
    (``h_0 = 0``, and a constant is a valid instrument).
    """

    def __init__(self, stream: "StepStream", X: torch.Tensor, Y: torch.Tensor | None, mask: torch.Tensor,
                 lengths: torch.Tensor | None, t0: int) -> None:
        self._stream, self._X, self._Y, self._mask, self._lengths, self._t0 = stream, X, Y, mask, lengths, t0

    def _shift(self, A: torch.Tensor, k: int) -> torch.Tensor:
        """``A`` at step ``t - k`` for every valid step ``t`` (zero outside the sequence:
        padding is zeroed before a window is made)."""
        out = torch.zeros_like(A)
        if k > 0:
            out[:, k:] = A[:, :-k]
        else:
            out[:, :k] = A[:, -k:]
        return self._take(out)

    def _take(self, A: torch.Tensor) -> torch.Tensor:
        """Rows of the valid, owned steps of a per-step window array (n, W, ...) -> (m, ...)."""
        if self._mask is None:  # every step of the window counts: a view, no copy
            return A.reshape((-1,) + A.shape[2:])
        return A[self._mask]

    @cached_property
    def x(self) -> torch.Tensor:
        return self._take(self._X)

    @cached_property
    def x_prev(self) -> torch.Tensor:
        return self._shift(self._X, 1)

    @cached_property
    def x_prev2(self) -> torch.Tensor:
        return self._shift(self._X, 2)

    @cached_property
    def y(self) -> torch.Tensor:
        return self._take(self._Y)

    @cached_property
    def y_prev(self) -> torch.Tensor:
        return self._shift(self._Y, 1)

    @cached_property
    def x_next(self) -> torch.Tensor:
        return self._shift(self._X, -1)

    @cached_property
    def x_next2(self) -> torch.Tensor:
        return self._shift(self._X, -2)

    @cached_property
    def y_next(self) -> torch.Tensor:
        return self._shift(self._Y, -1)

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

    def s_lag(self, k: int) -> torch.Tensor:
        """The score of ``x_{t-k}`` at every valid step ``t`` (zero where that step does not exist)."""
        s = self._score_window.s
        if self._lengths is not None:  # the score is meaningless on padding
            t = torch.arange(self._t0, self._t0 + s.shape[1], device=s.device)
            s = s * (t[None, :] < self._lengths[:, None]).unsqueeze(-1)
        return self._shift(s, k)

    @property
    def s(self) -> torch.Tensor:
        return self.scores.s

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
    ) -> None:
        self.X, self.Y, self.lengths, self.process = X, Y, lengths, process
        self.two_sided = two_sided
        self.device, self.dtype = torch.device(device), dtype
        self.progress = progress
        n, T, _ = X.shape
        self.n_steps = int(n * T if lengths is None else np.sum(lengths))
        self.blocks = blocks
        if blocks:  # median of means: each chunk a block of about N / blocks steps
            chunk_steps = min(chunk_steps, max(1, -(-self.n_steps // blocks)))
        self.chunk_steps = chunk_steps

    def _to(self, A: np.ndarray) -> torch.Tensor:
        if isinstance(A, torch.Tensor):
            return A.to(self.device, self.dtype)
        return torch.as_tensor(A).to(self.device, self.dtype, non_blocking=True)

    def _sums(self) -> _Sums:
        return _Sums(blocks=bool(self.blocks))

    def windows(self, sums: _Sums | None = None):
        """Yield a :class:`Window` per chunk (valid, owned steps only); after each chunk,
        ``sums.end_block`` closes the chunk's block (median of means)."""
        n, T, _ = self.X.shape
        for rows, w0, w1, o0, o1 in iter_windows(n, T, self.chunk_steps, before=2, after=2):
            Xw = self._to(self.X[rows, w0:w1])
            Yw = None if self.Y is None else self._to(self.Y[rows, w0:w1])
            W = w1 - w0
            mask = None  # None: every step of the window counts
            if (o0, o1) != (0, W):
                mask = torch.zeros(W, dtype=torch.bool, device=self.device)
                mask[o0:o1] = True
                mask = mask.expand(Xw.shape[0], W)
            Lw = None
            if self.lengths is not None:
                Lw = torch.as_tensor(self.lengths[rows], device=self.device)
                valid = torch.arange(w0, w1, device=self.device)[None, :] < Lw[:, None]
                mask = valid if mask is None else mask & valid
                Xw = Xw.masked_fill(~valid.unsqueeze(-1), 0.0)  # padding is never read
                if Yw is not None:
                    Yw = Yw.masked_fill(~valid.unsqueeze(-1), 0.0)
            elif w1 < T:  # a window cut in time: mark its real end for the two-sided score
                Lw = torch.full((Xw.shape[0],), T, device=self.device)
            win = Window(self, Xw, Yw, mask, Lw, w0)
            yield win
            if sums is not None:
                sums.end_block(win.n)
            if self.progress is not None:
                self.progress(win.n)

    # ------------------------------------------------------------------ passes
    def sketch(self, Theta: np.ndarray, Omega: np.ndarray) -> np.ndarray:
        """``T(theta_a, I, omega_b)`` for every column pair of ``Theta`` (d_y, p) and ``Omega`` (d_x, k).

        Returns ``(d_x, p * k)``: column ``a * k + b`` is
        ``E[(theta_a . y) S_2 omega_b]`` with ``S_2 omega = (omega . s) s - sum_k kappa_k (b_k . omega) b_k``,
        a random vector in the span of the A1 rows. All pairs (not ``k`` of them) mix the
        components well enough that the top singular vectors find weak units too; cost ``O(N d_x p k)``.
        """
        Th, Om = self._to(Theta), self._to(Omega)
        sums = self._sums()
        basis = None
        for w in self.windows(sums):
            sc = w.scores
            yt = w.y @ Th  # (m, p)
            sums.add("acc", torch.einsum("ta,tb,ti->iab", yt, sc.s @ Om, sc.s))
            sums.add("yk", yt.T @ sc.kappa)  # (p, K)
            basis = sc.basis
        m = sums.means(self.n_steps)
        B = basis.cpu().to(torch.float64).numpy()
        corr = np.einsum("ak,ki,kb->iab", m["yk"], B, B @ Omega)
        return (m["acc"] - corr).reshape(Om.shape[0], -1)

    def project(self, Q: np.ndarray) -> np.ndarray:
        """``T(I, Q, Q)`` for ``Q`` (d_x, k): returns (d_y, k, k).

        Also sets ``peak_share``: the largest share of ``sum_t ||y_t|| ||Q^T S_2 Q||_t`` (a bound
        on each step's weight in the tensor) that a single time step carries, a measure of how
        much a few extreme steps dominate the estimate (about ``1/N`` for light tails), and
        ``peak_cause``: ``"outputs"`` or ``"inputs"``, whichever factor of that step is further
        above its average."""
        Qt = self._to(Q)
        sums = self._sums()
        peak, peak_y, peak_s = 0.0, 0.0, 0.0
        basis = None
        for w in self.windows(sums):
            sc = w.scores
            BQ2 = ((sc.basis @ Qt) ** 2).sum(1)  # (K,) ||Q^T b_k||^2
            sq = sc.s @ Qt  # (m, k)
            sums.add("acc", torch.einsum("ti,ta,tb->iab", w.y, sq, sq))  # no (m, k, k) temporary
            sums.add("yk", w.y.T @ sc.kappa)  # (d_y, K)
            ynorm = w.y.norm(dim=1)
            spart = (sq * sq).sum(1) + sc.kappa.abs() @ BQ2  # bounds ||Q^T S_2 Q||
            mass = ynorm * spart  # each step's weight in the tensor
            sums.add("mass", mass.sum())
            sums.add("ynorm", ynorm.sum())
            sums.add("spart", spart.sum())
            if mass.numel():  # a chunk may hold only padding
                i = int(mass.argmax())
                if float(mass[i]) > peak:
                    peak, peak_y, peak_s = float(mass[i]), float(ynorm[i]), float(spart[i])
            basis = sc.basis
        m = sums.means(self.n_steps)
        self.peak_share = peak / max(float(m["mass"]) * self.n_steps, 1e-300)
        y_ratio = peak_y / max(float(m["ynorm"]), 1e-300)
        s_ratio = peak_s / max(float(m["spart"]), 1e-300)
        self.peak_cause = "outputs" if y_ratio >= s_ratio else "inputs"
        self.peak_ratios = (y_ratio, s_ratio)
        BQ = basis.cpu().to(torch.float64).numpy() @ Q
        return m["acc"] - np.einsum("ik,ka,kb->iab", m["yk"], BQ, BQ)

    def instrument_moments(
        self, A_hat: np.ndarray, Wpinv: np.ndarray, score_order: int, direction: str = "past"
    ) -> dict[str, np.ndarray]:
        """Moments of the instrument equations for the scales and the recurrent matrix.

        ``A_hat`` (d_h, d_x): unit input directions; ``Wpinv`` (d_y, d_h): so that
        ``ytil_t = y_t @ Wpinv``; ``score_order``: 1 (quadratic activation) or 2 (cubic).
        ``direction="past"``: instruments ``phi_t = [1, x_{t-1}, x_{t-2}, (A_hat x_{t-1})^2]``
        and lagged outputs ``ytil_{t-1}``; ``"future"`` mirrors them in time (BRNN
        backward chain). Returns ``phi`` = E[phi] (m,), ``phi_x`` = E[phi x_t^T] (m, d_x),
        ``phi_lag`` = E[phi ytil_lag^T] (m, d_h), ``r`` (m, d_h) with column j
        ``E[phi ytil_{t,j} S(a_j, ..., a_j)]`` for the score of that order.
        """
        Ah, Wp = self._to(A_hat), self._to(Wpinv)
        sums = self._sums()
        for w in self.windows(sums):
            if direction == "past":
                x1, x2, ylag = w.x_prev, w.x_prev2, w.y_prev
            elif direction == "future":
                x1, x2, ylag = w.x_next, w.x_next2, w.y_next
            else:
                raise ValueError("direction must be 'past' or 'future'")
            phi = torch.cat([torch.ones_like(x1[:, :1]), x1, x2, (x1 @ Ah.T) ** 2], dim=1)
            yt = w.y @ Wp  # (m, d_h)
            if score_order == 1:
                sc = w.s @ Ah.T  # (m, d_h): S_1(a_j) = s . a_j
            elif score_order == 2:
                sc = w.scores.s2_quad(Ah)  # S_2(a_j, a_j)
            else:
                raise ValueError("score_order must be 1 or 2")
            sums.add("phi", phi.sum(0))
            sums.add("phi_x", phi.T @ w.x)
            sums.add("phi_lag", phi.T @ (ylag @ Wp))
            sums.add("r", phi.T @ (yt * sc))
        return sums.means(self.n_steps)

    def lag_score_moments(self, Wpinv: np.ndarray, lags: tuple[int, ...] = (1, -1)) -> dict[int, np.ndarray]:
        """``E[ytil_t (x) S_1(x_{t-k})]`` for each lag ``k`` in ``lags``: (d_h, d_x) each,
        with ``ytil_t = y_t @ Wpinv``. With the two-sided score this is the mean
        derivative of ``ytil_t`` in ``x_{t-k}`` (Stein): zero for units that do not
        see that input, which tells forward from backward units."""
        Wp = self._to(Wpinv)
        sums = self._sums()
        for w in self.windows(sums):
            yt = w.y @ Wp
            for k in lags:
                sums.add(k, yt.T @ w.s_lag(k))
        return sums.means(self.n_steps)

    # ------------------------------------------------------------------ third-order route (odd activations)
    def first_order(self) -> np.ndarray:
        """``E[y_t (x) S_1(x_t | ...)]`` (d_y, d_x) ``= sum_j E[f'(z_j)] a2_j (x) a1_j`` (Stein, first order):
        its row and column spaces are the output and input spans of the hidden units. Cost ``O(N d_y d_x)``."""
        sums = _Sums()
        for w in self.windows():
            sums.add("M", w.y.T @ w.s)
        return sums.means(self.n_steps)["M"]

    def project3(self, P: np.ndarray, Q: np.ndarray) -> np.ndarray:
        """``T3(P, Q, Q, Q)`` (p, k, k, k) of the third-order tensor
        ``T3 = E[y_t (x) S_3(x_t | ...)] = sum_j E[f^(3)(z_j)] a2_j (x) a1_j (x) a1_j (x) a1_j``,
        for ``P`` (d_y, p) and ``Q`` (d_x, k), never forming ``T3``.

        With ``u = Q^T s``, ``c_K = Q^T b_K``: ``S_3(Q, Q, Q) = u^(x)3 - sum_K kappa_K sym3(u (x) c_K (x) c_K)
        + sum_K tau_K c_K^(x)3``; the pass accumulates ``sum_t (P^T y_t) (x) u_t^(x)3``,
        ``sum_t (P^T y_t) (x) u_t (x) kappa_t`` and ``sum_t (P^T y_t) (x) tau_t``, combined with the
        constant basis at the end. Cost ``O(N (d_y p + d_x k + p k^3 + p k K))``. Raises
        :class:`~spectral_rnn.InputError` if the scores have no third order.
        """
        Pt, Qt = self._to(P), self._to(Q)
        sums = _Sums()
        basis = None
        for w in self.windows():
            sc = w.scores
            sc.require_third()
            yp = w.y @ Pt  # (m, p)
            u = sc.s @ Qt  # (m, k)
            k = u.shape[1]
            uu = (u[:, :, None] * u[:, None, :]).reshape(-1, k * k)
            sums.add("uuu", (yp.T @ (uu[:, :, None] * u[:, None, :]).reshape(-1, k**3)).reshape(-1, k, k, k))
            sums.add("uk", (yp.T @ (u[:, :, None] * sc.kappa[:, None, :]).reshape(u.shape[0], -1)).reshape(
                yp.shape[1], k, -1))
            if sc.tau is not None:
                sums.add("tau", yp.T @ sc.tau)
            basis = sc.basis
        if basis is None:
            raise ValueError("no valid steps")
        m = sums.means(self.n_steps)
        C = basis.cpu().to(torch.float64).numpy() @ Q  # (K, k)
        uk = m["uk"]
        corr = (np.einsum("paK,Kb,Kc->pabc", uk, C, C) + np.einsum("pbK,Ka,Kc->pabc", uk, C, C)
                + np.einsum("pcK,Ka,Kb->pabc", uk, C, C))
        out = m["uuu"] - corr
        if "tau" in m:
            out = out + np.einsum("pK,Ka,Kb,Kc->pabc", m["tau"], C, C, C)
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
