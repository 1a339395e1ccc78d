"""Decomposition of partially symmetric tensors ``T = sum_j w_j (x) a_j (x) a_j``.

The moment tensor of an RNN has this form (output mode first, two input modes);
the weights hidden in ``w_j`` may have any sign, so the route is the one of
docs/method.md, section 'Decomposition', which needs no positivity:

1. subspaces of the input modes (``Q``) and of the output mode (``P``);
2. the small core ``C = T(P, Q, Q)``;
3. simultaneous diagonalisation (Jennrich) of two random contractions of the core,
   several draws, keeping the best-conditioned one;
4. output factors by least squares;
5. alternating least-squares sweeps, until the factors stop moving.

:func:`decompose` takes a dense tensor; :func:`decompose_projected` takes the
projection ``T(I, Q, Q)`` that the estimators stream from the data, so the dense
tensor is never needed. :class:`CPDecomposer` is the thin class around them that
estimators plug in.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ._checks import IllConditionedError, InputError, SpectralRNNWarning, check_random_state, check_real
from ._params import Params

__all__ = ["decompose", "decompose_projected", "jennrich", "als_refine", "CPDecomposer", "Decomposition"]

#: smallest ratio sigma_r / sigma_{r+1} of an unfolding accepted as a real rank-r signal
MIN_GAP = 1.5


@dataclass
class Decomposition:
    """``T ~= sum_j W[j] (x) A[j] (x) A[j]``.

    ``A``: (r, d_in) unit-norm rows; ``W``: (r, d_out); ``gap``: the ratio
    sigma_r / sigma_{r+1} of the input unfolding (inf when not measurable), a
    measure of how clearly the data show r components; ``als_sweeps``, ``als_change``:
    how the alternating least squares ended (a change above the tolerance: stopped by
    the cap, not converged).
    """

    A: np.ndarray
    W: np.ndarray
    gap: float
    #: alternating least-squares sweeps done, and the last sweep's largest factor change
    als_sweeps: int = 0
    als_change: float = float("nan")


def _khatri_rao(B: np.ndarray, C: np.ndarray) -> np.ndarray:
    """Column-wise Kronecker: (I, r), (J, r) -> (I*J, r), row index i*J + j."""
    return (B[:, None, :] * C[None, :, :]).reshape(-1, B.shape[1])


def jennrich(core: np.ndarray, random_state: int | np.random.Generator | None = None, n_draws: int = 8) -> np.ndarray:
    """Factors ``G`` (r, r) of a core ``C = sum_j beta_j (x) g_j (x) g_j`` of shape (r, r, r).

    For random ``theta``, ``C(theta, I, I) = G diag(theta . beta) G^T``; the
    eigenvectors of ``C(theta_1) C(theta_2)^{-1}`` are the columns of ``G``. Several
    draws are tried and the one whose eigenvalues are real and best separated is
    kept, so one unlucky draw (complex or clustered eigenvalues) does no harm.
    Returns ``G`` with unit-norm columns.
    """
    rng = check_random_state(random_state)
    r = core.shape[0]
    best, best_score = None, -np.inf
    for _ in range(n_draws):
        t1, t2 = rng.standard_normal(r), rng.standard_normal(r)
        M1 = np.tensordot(t1, core, axes=(0, 0))
        M2 = np.tensordot(t2, core, axes=(0, 0))
        sv = np.linalg.svd(M2, compute_uv=False)
        if sv[-1] <= 1e-12 * sv[0]:
            continue
        vals, vecs = np.linalg.eig(np.linalg.solve(M2.T, M1.T).T)  # M1 M2^{-1}
        scale = np.max(np.abs(vals)) + 1e-300
        imag = np.max(np.abs(vals.imag)) / scale
        re = np.sort(vals.real)
        gap = np.min(np.diff(re)) / scale if r > 1 else 1.0
        score = gap - 10 * imag
        if score > best_score:
            best_score, best = score, vecs.real
    if best is None:
        raise IllConditionedError("the core tensor is singular: the moment tensor does not have the requested rank")
    return best / np.linalg.norm(best, axis=0, keepdims=True)


def _lstsq_rows(M: np.ndarray, gram: np.ndarray) -> np.ndarray:
    """Solve ``X gram = M`` for X (robust to a near-singular Gram matrix). Non-finite operands raise
    ``LinAlgError`` here, before LAPACK sees them (it prints its own complaint to the terminal)."""
    if not (np.all(np.isfinite(M)) and np.all(np.isfinite(gram))):
        raise np.linalg.LinAlgError("non-finite operands")
    return np.linalg.lstsq(gram.T, M.T, rcond=None)[0].T


def output_factors(T: np.ndarray, A: np.ndarray) -> np.ndarray:
    """Least-squares ``W`` (r, d_out) for fixed input factors ``A`` (r, d_in):
    minimises ``||T - sum_j W[j] (x) A[j] (x) A[j]||``."""
    KR = _khatri_rao(A.T, A.T)  # (d_in^2, r)
    T1 = T.reshape(T.shape[0], -1)
    try:
        return _lstsq_rows(T1 @ KR, (A @ A.T) ** 2).T
    except np.linalg.LinAlgError:
        raise IllConditionedError("the tensor decomposition broke down (non-finite factors): the moment tensor "
                                  "does not show components it can separate") from None


#: default cap on the alternating least-squares sweeps, and their stopping tolerance (largest
#: change of a unit-normalised input factor in one sweep); a fixed 10 sweeps left an optimisation
#: error that did not shrink with the data (docs/method.md, section 7, step 6)
MAX_ALS = 1000
ALS_TOL = 1e-8
#: a sweep that stops at the cap warns when its last change exceeds this: with a slow linear rate
#: (0.999 per sweep) what is left is then about 1e3 times it, near the statistical error of 1e6 steps
ALS_WARN = 1e-6


def warn_unconverged(what: str, cap: int, change: float, tol: float, remedy: str) -> None:
    """A :class:`SpectralRNNWarning` when sweeps stopped by their ``cap`` still moved by more than
    ``max(tol, ALS_WARN)`` in their last sweep (nothing when ``tol`` or ``cap`` is 0: a fixed
    number of sweeps was asked for). Shared by the ALS here and the odd route's power sweeps."""
    if tol > 0 and cap > 0 and change > max(tol, ALS_WARN):
        warnings.warn(
            f"{what} did not converge in {cap} sweeps (last change {change:.2g} > {tol:g}): the factors may carry "
            f"optimisation error; {remedy}", SpectralRNNWarning, stacklevel=3)


def _unit_columns(M: np.ndarray) -> np.ndarray:
    """Columns of ``M`` scaled to unit norm, each signed so its largest entry is positive."""
    M = M / np.maximum(np.linalg.norm(M, axis=0, keepdims=True), 1e-300)
    return M * np.where(M[np.argmax(np.abs(M), axis=0), np.arange(M.shape[1])] < 0, -1.0, 1.0)


def _als(T: np.ndarray, A: np.ndarray, W: np.ndarray, max_sweeps: int, tol: float
         ) -> tuple[np.ndarray, np.ndarray, int, float]:
    """:func:`als_refine`'s iteration: ``(A, W, sweeps done, last change)``; stops once no
    unit-normalised input factor moved by more than ``tol`` in a sweep, or after ``max_sweeps``."""
    d_out, d_in, _ = T.shape
    Wc, B, C = W.T.copy(), A.T.copy(), A.T.copy()
    T1 = T.reshape(d_out, -1)
    T2 = T.transpose(1, 0, 2).reshape(d_in, -1)
    T3 = T.transpose(2, 0, 1).reshape(d_in, -1)
    prev = np.concatenate([_unit_columns(B), _unit_columns(C)])
    sweeps, change = 0, float("inf")
    broke = IllConditionedError(
        f"the tensor decomposition broke down (its alternating least squares produced non-finite factors): the "
        f"moment tensor does not show {A.shape[0]} components it can separate; fewer hidden units, more data, "
        "or another score law")
    try:
        with np.errstate(all="ignore"):
            while sweeps < max_sweeps and change > tol:
                B = _lstsq_rows(T2 @ _khatri_rao(Wc, C), (Wc.T @ Wc) * (C.T @ C))
                C = _lstsq_rows(T3 @ _khatri_rao(Wc, B), (Wc.T @ Wc) * (B.T @ B))
                Wc = _lstsq_rows(T1 @ _khatri_rao(B, C), (B.T @ B) * (C.T @ C))
                cur = np.concatenate([_unit_columns(B), _unit_columns(C)])
                if not (np.all(np.isfinite(cur)) and np.all(np.isfinite(Wc))):
                    raise broke
                change = float(np.max(np.abs(cur - prev)))
                prev = cur
                sweeps += 1
            B = B / np.linalg.norm(B, axis=0, keepdims=True)
            C = C / np.linalg.norm(C, axis=0, keepdims=True)
            C = C * np.sign(np.sum(B * C, axis=0))
            A_new = B + C
            A_new = (A_new / np.linalg.norm(A_new, axis=0, keepdims=True)).T
            if not np.all(np.isfinite(A_new)):
                raise broke
            W_new = output_factors(T, A_new)
    except np.linalg.LinAlgError:  # a least-squares solve met non-finite numbers
        raise broke from None
    if not np.all(np.isfinite(W_new)):
        raise broke
    return A_new, W_new, sweeps, change


def als_refine(T: np.ndarray, A: np.ndarray, W: np.ndarray, n_iter: int = MAX_ALS,
               tol: float = ALS_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Alternating least squares on ``T`` (d_out, d_in, d_in) from ``A`` (r, d_in), ``W`` (r, d_out).

    The two input modes are updated as separate factors ``B``, ``C`` and merged
    (signs aligned, averaged) at the end; ``W`` is then re-solved. Sweeps run until no
    unit-normalised column of ``B`` or ``C`` moves by more than ``tol`` (entry-wise) in
    one sweep, at most ``n_iter`` of them (``tol=0``: exactly ``n_iter``). Returns
    ``(A, W)`` with unit-norm rows of ``A``.
    """
    A_new, W_new, _, _ = _als(T, A, W, n_iter, tol)
    return A_new, W_new


def _top_left(M: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    U, s, _ = np.linalg.svd(M, full_matrices=False)
    return U[:, :r], s


def _gap(s: np.ndarray, r: int) -> float:
    if len(s) <= r:
        return float("inf")
    return float(s[r - 1] / max(s[r], 1e-300))


def decompose_projected(
    Tp: np.ndarray,
    Q: np.ndarray,
    rank: int,
    random_state: int | np.random.Generator | None = None,
    n_als: int = MAX_ALS,
    min_gap: float = MIN_GAP,
    als_tol: float = ALS_TOL,
) -> Decomposition:
    """Decompose from the projection ``Tp = T(I, Q, Q)`` (d_out, k, k), ``Q`` (d_in, k)
    orthonormal with ``k >= rank`` columns spanning the input factors.

    Returns the factors in the original space: ``A = (Q b_j)`` normalised, ``W``.
    Raises :class:`IllConditionedError` when the tensor does not show ``rank``
    well-separated components (singular-value gap ``sigma_r / sigma_{r+1}`` of the
    unfoldings below ``min_gap``).
    """
    d_out, k, _ = Tp.shape
    if isinstance(n_als, (bool, np.bool_)) or not isinstance(n_als, (int, np.integer)) or n_als < 0:
        raise InputError(f"n_als must be a non-negative int (the most ALS sweeps), got {n_als!r}")
    als_tol = check_real(als_tol, "als_tol", low=0.0)
    if rank > k or rank > d_out:
        raise InputError(f"rank {rank} exceeds the tensor's dimensions ({d_out}, {k}, {k})")
    Tp = 0.5 * (Tp + Tp.transpose(0, 2, 1))
    R, s_in = _top_left(Tp.transpose(1, 0, 2).reshape(k, -1), rank)  # input subspace inside Q
    P, s_out = _top_left(Tp.reshape(d_out, -1), rank)  # output subspace
    gap = min(_gap(s_in, rank), _gap(s_out, rank))
    if gap < min_gap or s_in[rank - 1] <= 1e-10 * s_in[0] or s_out[rank - 1] <= 1e-10 * s_out[0]:
        raise IllConditionedError(
            f"the moment tensor does not show {rank} well-separated components "
            f"(singular-value gap {gap:.3g}): the hidden size is too large for these data, or there are too few samples"
        )
    core = np.einsum("iab,ip,aq,br->pqr", Tp, P, R, R)
    G = jennrich(core, random_state)  # (rank, rank), columns g_j
    Bk = R @ G  # (k, rank): factors inside Q's coordinates
    Bk = Bk / np.linalg.norm(Bk, axis=0, keepdims=True)
    W = output_factors(Tp, Bk.T)
    Bk_rows, W, sweeps, change = _als(Tp, Bk.T, W, n_als, als_tol)
    warn_unconverged("the tensor decomposition's alternating least squares", n_als, change, als_tol,
                     "more data, a smaller hidden_size, or CPDecomposer(n_als=...) with more sweeps")
    A = Bk_rows @ Q.T
    norms = np.linalg.norm(A, axis=1, keepdims=True)
    return Decomposition(A=A / norms, W=W * norms**2, gap=gap, als_sweeps=sweeps, als_change=change)


def decompose(
    T: np.ndarray, rank: int, random_state: int | np.random.Generator | None = None, n_als: int = MAX_ALS,
    min_gap: float = MIN_GAP, als_tol: float = ALS_TOL,
) -> Decomposition:
    """Decompose a dense ``T`` (d_out, d_in, d_in) ``= sum_j w_j (x) a_j (x) a_j`` (a_j unit).

    The same route as :func:`decompose_projected` with ``Q = I``. Factors come back
    in arbitrary order; ``a_j`` up to sign.
    """
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 3 or T.shape[1] != T.shape[2]:
        raise InputError(f"expected a (d_out, d_in, d_in) tensor, got shape {T.shape}")
    return decompose_projected(T, np.eye(T.shape[1]), rank, random_state, n_als, min_gap, als_tol)


class CPDecomposer(Params):
    """Pluggable decomposer: Jennrich on the projected core plus ALS sweeps.

    Parameters
    ----------
    n_als: the most alternating least-squares sweeps after the simultaneous
        diagonalisation (they stop earlier once converged, see ``als_tol``).
    oversample: extra sketch columns beyond the rank when the input subspace is
        found from random contractions of the moment tensor.
    als_tol: the sweeps stop once no unit-normalised input factor moves by more than
        this (entry-wise) in one sweep; 0 runs exactly ``n_als`` sweeps. Sweeps stopped by
        the cap with a last change above ``max(als_tol, ALS_WARN)`` (1e-6) raise a
        :class:`~spectral_rnn.SpectralRNNWarning` (a ``RuntimeWarning``).
    """

    def __init__(self, n_als: int = MAX_ALS, oversample: int = 6, als_tol: float = ALS_TOL) -> None:
        self.n_als = n_als
        self.oversample = oversample
        self.als_tol = als_tol

    def __repr__(self) -> str:
        return f"CPDecomposer(n_als={self.n_als}, oversample={self.oversample}, als_tol={self.als_tol:g})"

    def decompose_projected(self, Tp: np.ndarray, Q: np.ndarray, rank: int, random_state=None,
                            min_gap: float = MIN_GAP) -> Decomposition:
        return decompose_projected(Tp, Q, rank, random_state, self.n_als, min_gap, self.als_tol)

    def decompose(self, T: np.ndarray, rank: int, random_state=None, min_gap: float = MIN_GAP) -> Decomposition:
        return decompose(T, rank, random_state, self.n_als, min_gap, self.als_tol)
