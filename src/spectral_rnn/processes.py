"""Markov input processes and the score functions of their transitions.

A process plugs into the estimators through three methods:

* ``fit(X, lengths=None)``: estimate its parameters from the inputs alone;
* ``sample(n_sequences, length, random_state=None)``: draw inputs ``(n, T, d)``;
* ``score_terms(X, lengths, t0, two_sided)``: the pieces of the conditional scores.

Score terms. For a Gaussian transition density the scores of ``x_t`` given its
neighbours are polynomials in one vector ``s_t = -grad log p`` and one constant
precision matrix ``Lambda`` (DESIGN.md section 2)::

    S_1 = s
    S_2 = s s^T - Lambda
    S_3[i,j,k] = s_i s_j s_k - s_i Lambda[j,k] - s_j Lambda[i,k] - s_k Lambda[i,j]

``Lambda`` takes a few values (first step, later steps, last step...), so
``score_terms`` returns ``s`` of shape ``(n, T, d)``, an integer ``group`` of shape
``(n, T)`` and the stack ``lambdas`` of shape ``(K, d, d)`` with
``Lambda_t = lambdas[group_t]``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ._checks import (
    IllConditionedError,
    InputError,
    as_sequences,
    check_finite,
    check_lengths,
    check_random_state,
    iter_windows,
)

__all__ = ["MarkovProcess", "GaussianAR1", "ScoreTerms"]

ScoreTerms = tuple[torch.Tensor, torch.Tensor, torch.Tensor]

# groups of the one-sided score
FIRST, LATER = 0, 1
# groups of the two-sided score
ONLY, START, MIDDLE, END = 0, 1, 2, 3


@runtime_checkable
class MarkovProcess(Protocol):
    """What an input process offers the estimators."""

    dim: int | None

    def fit(self, X: np.ndarray, lengths: np.ndarray | None = None) -> "MarkovProcess": ...

    def sample(self, n_sequences: int, length: int, random_state: int | np.random.Generator | None = None) -> np.ndarray: ...

    def score_terms(
        self, X: torch.Tensor, lengths: torch.Tensor | None, t0: int = 0, two_sided: bool = False
    ) -> ScoreTerms: ...

    @property
    def is_fitted(self) -> bool: ...


class GaussianAR1:
    """Gaussian first-order autoregression ``x_t = F x_{t-1} + b + e_t``, ``e_t ~ N(0, Sigma)``.

    The first input is drawn from ``N(m0, Sigma0)``. Leave every parameter at
    ``None`` and call :meth:`fit` to estimate them from inputs by least squares
    (no labels needed), or give them all to use a known law.

    Parameters
    ----------
    F: (d, d) transition matrix.
    noise_cov: (d, d) innovation covariance ``Sigma`` (positive definite).
    intercept: (d,) ``b``; zero when omitted.
    initial_mean, initial_cov: (d,), (d, d) law of ``x_1``; the stationary law of
        the autoregression when omitted (it must then be stable).
    """

    def __init__(
        self,
        F: np.ndarray | None = None,
        noise_cov: np.ndarray | None = None,
        intercept: np.ndarray | None = None,
        initial_mean: np.ndarray | None = None,
        initial_cov: np.ndarray | None = None,
    ) -> None:
        self.F = None if F is None else np.array(F, dtype=np.float64)
        self.noise_cov = None if noise_cov is None else np.array(noise_cov, dtype=np.float64)
        self.intercept = None if intercept is None else np.array(intercept, dtype=np.float64)
        self.initial_mean = None if initial_mean is None else np.array(initial_mean, dtype=np.float64)
        self.initial_cov = None if initial_cov is None else np.array(initial_cov, dtype=np.float64)
        self._cache: dict = {}
        if self.F is not None:
            self._complete()

    # --------------------------------------------------------------- properties
    @property
    def is_fitted(self) -> bool:
        return self.F is not None

    @property
    def dim(self) -> int | None:
        return None if self.F is None else self.F.shape[0]

    def __repr__(self) -> str:
        return f"GaussianAR1(dim={self.dim}, fitted={self.is_fitted})"

    @classmethod
    def random(cls, dim: int, rho: float = 0.5, random_state: int | np.random.Generator | None = None) -> "GaussianAR1":
        """A stable process with unit stationary covariance: ``F = rho Q`` (Q orthogonal),
        ``Sigma = (1 - rho^2) I``, ``x_1 ~ N(0, I)``."""
        if not 0 <= rho < 1:
            raise InputError(f"rho must lie in [0, 1), got {rho}")
        rng = check_random_state(random_state)
        q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
        q = q * np.sign(np.diag(r))
        return cls(F=rho * q, noise_cov=(1 - rho**2) * np.eye(dim), intercept=np.zeros(dim),
                   initial_mean=np.zeros(dim), initial_cov=np.eye(dim))

    # -------------------------------------------------------------- completion
    def _complete(self) -> None:
        d = self.F.shape[0]
        if self.F.shape != (d, d):
            raise InputError(f"F must be square, got shape {self.F.shape}")
        if self.noise_cov is None or self.noise_cov.shape != (d, d):
            raise InputError(f"noise_cov must have shape ({d}, {d})")
        if self.intercept is None:
            self.intercept = np.zeros(d)
        if self.initial_mean is None or self.initial_cov is None:
            m0, S0 = self._stationary()
            self.initial_mean = m0 if self.initial_mean is None else self.initial_mean
            self.initial_cov = S0 if self.initial_cov is None else self.initial_cov
        for name in ("noise_cov", "initial_cov"):
            M = getattr(self, name)
            M = 0.5 * (M + M.T)
            setattr(self, name, M)
            ev = np.linalg.eigvalsh(M)
            if ev[0] <= 1e-10 * max(ev[-1], 1e-300):
                raise IllConditionedError(
                    f"{name} of the input process is singular (eigenvalues {ev[0]:.3g}..{ev[-1]:.3g}): "
                    "the inputs are (near) deterministic in some direction and do not excite the model"
                )
        self._cache = {}

    def _stationary(self) -> tuple[np.ndarray, np.ndarray]:
        F, S, b = self.F, self.noise_cov, self.intercept
        d = F.shape[0]
        rad = np.max(np.abs(np.linalg.eigvals(F)))
        if rad >= 1:
            raise InputError(f"the autoregression is not stable (spectral radius {rad:.3g}); give initial_mean and initial_cov")
        m0 = np.linalg.solve(np.eye(d) - F, b)
        # discrete Lyapunov: S0 = F S0 F^T + S  <=>  (I - F (x) F) vec S0 = vec S
        S0 = np.linalg.solve(np.eye(d * d) - np.kron(F, F), S.reshape(-1)).reshape(d, d)
        return m0, 0.5 * (S0 + S0.T)

    # --------------------------------------------------------------------- fit
    def fit(self, X: np.ndarray, lengths: np.ndarray | None = None, chunk_steps: int = 1 << 17) -> "GaussianAR1":
        """Estimate ``F, b, Sigma`` by least squares on all transitions, and the law of
        ``x_1`` from the first steps (the stationary law when there are too few
        sequences for that). ``X``: (n_sequences, T, d). Returns ``self``."""
        X = as_sequences(X, "inputs")
        n, T, d = X.shape
        lengths = check_lengths(lengths, n, T)
        check_finite(X, lengths, "inputs")
        Z = np.zeros((d + 1, d + 1))  # sum of [x_{t-1}; 1][x_{t-1}; 1]^T
        C = np.zeros((d + 1, d))  # sum of [x_{t-1}; 1] x_t^T
        Sxx = np.zeros((d, d))  # sum of x_t x_t^T
        n_pairs = 0
        for rows, w0, w1, o0, o1 in iter_windows(n, T, chunk_steps, before=1):
            xw = X[rows, w0:w1].astype(np.float64, copy=False)
            t_abs = np.arange(w0, w1)
            own = np.zeros(w1 - w0, dtype=bool)
            own[o0:o1] = True
            pair = own & (t_abs >= 1)  # steps t with a predecessor
            mask = np.broadcast_to(pair[None, :], xw.shape[:2]).copy()
            if lengths is not None:
                mask &= t_abs[None, :] < lengths[rows, None]
            cur = xw[mask]
            prev = xw[np.roll(mask, -1, axis=1)]
            if cur.shape[0] == 0:
                continue
            Zp = np.hstack([prev, np.ones((prev.shape[0], 1))])
            Z += Zp.T @ Zp
            C += Zp.T @ cur
            Sxx += cur.T @ cur
            n_pairs += cur.shape[0]
        if n_pairs < 2 * (d + 1):
            raise InputError(
                f"too few transitions to fit the input process: {n_pairs} pairs (x_{{t-1}}, x_t) for input dimension {d}; "
                f"need at least {2 * (d + 1)}"
            )
        ev = np.linalg.eigvalsh(Z)
        if ev[0] <= 1e-12 * ev[-1]:
            raise IllConditionedError(
                "the inputs are (near) collinear: their second-moment matrix is singular, so the input process "
                "and the model are not identified"
            )
        B = np.linalg.solve(Z, C)  # (d+1, d): [F^T; b^T]
        Sigma = (Sxx - C.T @ B) / (n_pairs - (d + 1))
        self.F = B[:d].T.copy()
        self.intercept = B[d].copy()
        self.noise_cov = 0.5 * (Sigma + Sigma.T)
        x1 = X[:, 0].astype(np.float64)
        if n >= 4 * (d + 1):
            self.initial_mean = x1.mean(axis=0)
            self.initial_cov = np.cov(x1, rowvar=False).reshape(d, d)
        else:  # too few sequences: the stationary law of the fitted chain
            self.initial_mean, self.initial_cov = None, None
        self._complete()
        return self

    # ------------------------------------------------------------------ sample
    def sample(self, n_sequences: int, length: int, random_state: int | np.random.Generator | None = None) -> np.ndarray:
        """Draw ``(n_sequences, length, d)`` inputs."""
        if not self.is_fitted:
            raise InputError("the input process has no parameters: fit it or give F and noise_cov")
        if n_sequences < 1 or length < 1:
            raise InputError(f"need at least one sequence of at least one step, got {n_sequences} x {length}")
        rng = check_random_state(random_state)
        d = self.dim
        L = np.linalg.cholesky(self.noise_cov)
        L0 = np.linalg.cholesky(self.initial_cov)
        X = np.empty((n_sequences, length, d))
        X[:, 0] = self.initial_mean + rng.standard_normal((n_sequences, d)) @ L0.T
        for t in range(1, length):
            X[:, t] = X[:, t - 1] @ self.F.T + self.intercept + rng.standard_normal((n_sequences, d)) @ L.T
        return X

    # ------------------------------------------------------------------ scores
    def _params(self, device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        key = (str(device), dtype)
        if key not in self._cache:
            P = np.linalg.inv(self.noise_cov)
            P0 = np.linalg.inv(self.initial_cov)
            FtPF = self.F.T @ P @ self.F
            one = np.stack([P0, P])
            two = np.stack([P0, P0 + FtPF, P + FtPF, P])  # ONLY, START, MIDDLE, END
            to = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
            self._cache[key] = {
                "F": to(self.F), "b": to(self.intercept), "P": to(P), "P0": to(P0), "m0": to(self.initial_mean),
                "PF": to(P @ self.F),
                "one": to(0.5 * (one + one.transpose(0, 2, 1))), "two": to(0.5 * (two + two.transpose(0, 2, 1))),
            }
        return self._cache[key]

    def score_terms(
        self, X: torch.Tensor, lengths: torch.Tensor | None = None, t0: int = 0, two_sided: bool = False
    ) -> ScoreTerms:
        """Score pieces ``(s, group, lambdas)`` for a window of inputs.

        ``X``: (n, W, d) tensor holding steps ``t0 .. t0+W-1`` of each sequence;
        ``lengths``: (n,) tensor of whole-sequence lengths, or ``None`` when the
        window ends every sequence. One-sided (``two_sided=False``): the score
        of ``x_t`` given ``x_{t-1}`` (the initial law at t = 0). Two-sided: the score
        of ``x_t`` given all other inputs, density proportional to
        ``p(x_t | x_{t-1}) p(x_{t+1} | x_t)``, with the missing factor dropped at the
        ends of each sequence. The first column of a window with ``t0 > 0`` (and, two-
        sided, its last column unless it ends the sequence) lacks its neighbour and must
        not be used. Returns ``s`` (n, W, d), ``group`` (n, W) long, ``lambdas`` (K, d, d).
        """
        if not self.is_fitted:
            raise InputError("the input process has no parameters: fit it or give F and noise_cov")
        p = self._params(X.device, X.dtype)
        n, W, d = X.shape
        if d != self.dim:
            raise InputError(f"inputs have dimension {d}, the input process {self.dim}")
        X = X.contiguous()
        flat = lambda A: A.reshape(n * W, d)  # noqa: E731  2-D products are much faster than batched ones
        pred = (flat(X) @ p["F"].T).view(n, W, d)  # F x_t
        resid = X - p["b"]  # becomes x_t - F x_{t-1} - b  (x_t - m0 at t = 0)
        resid[:, 1:] -= pred[:, :-1]
        if t0 == 0:
            resid[:, 0] = X[:, 0] - p["m0"]
        # (a column t0 > 0 has no predecessor in the window: unusable, never owned)
        s = (flat(resid) @ p["P"]).view(n, W, d)  # P symmetric: row-vector form of P r
        if t0 == 0:
            s[:, 0] = resid[:, 0] @ p["P0"]
        t_abs = torch.arange(t0, t0 + W, device=X.device)
        if not two_sided:
            group = (t_abs > 0).long().expand(n, W)
            return s, group, p["one"]
        # two-sided: subtract F^T P (x_{t+1} - F x_t - b) where x_{t+1} exists
        nxt = (flat(resid) @ p["PF"]).view(n, W, d)[:, 1:]  # row form of F^T P r_{t+1}
        if lengths is None:  # the window ends every sequence
            last = torch.full((n, 1), t0 + W - 1, device=X.device)
        else:
            last = lengths[:, None].to(X.device) - 1
        has_next = (t_abs[None, :-1] < last)  # (n, W-1)
        s[:, :-1] -= torch.where(has_next.unsqueeze(-1), nxt, torch.zeros((), dtype=X.dtype, device=X.device))
        is_first = (t_abs == 0).expand(n, W)
        is_last = t_abs[None, :] == last
        group = torch.full((n, W), MIDDLE, dtype=torch.long, device=X.device)
        group[is_last.expand(n, W)] = END
        group[is_first & ~is_last] = START
        group[is_first & is_last] = ONLY
        return s, group, p["two"]
