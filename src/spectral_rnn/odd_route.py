"""The third-order route: IO-RNNs with an odd activation (tanh, or an odd polynomial).

For an odd ``f``, ``E[f''(z)] ~ 0``: the second-order moment tensor of the main route carries
no signal. Stein's identity one order up still holds for any smooth ``f``::

    M1 = E[y_t (x) S_1(x_t | x_{t-1})] = sum_j E[f'(z_j)]   a2_j (x) a1_j
    T3 = E[y_t (x) S_3(x_t | x_{t-1})] = sum_j E[f'''(z_j)] a2_j (x) a1_j (x) a1_j (x) a1_j

The route (:func:`fit_iornn_odd`), four streamed passes:

1. ``M1`` (:meth:`StepStream.first_order`, one pass, low noise): its top ``d_h`` left and
   right singular vectors ``P`` (d_y, d_h), ``Q`` (d_x, d_h) span the output and input
   directions of the units (a rank-``d_h`` matrix does not say *which* directions: any
   rotation fits it).
2. The projected core ``T3(P, Q, Q, Q)`` (:meth:`StepStream.project3`, one pass, a
   ``d_h^4`` tensor, never ``d_y d_x^3``): projecting onto the subspaces of step 1 keeps
   ``d_h^4`` of the ``d_y d_x^3`` noisy entries. Its three input modes are symmetric; the
   output mode and the first input mode are merged into one mode of size ``d_h^2``, and
   simultaneous diagonalisation (:func:`~spectral_rnn.decomposition.jennrich`) of the
   ``(d_h^2, d_h, d_h)`` tensor ``sum_j (w_j (x) g_j) (x) g_j (x) g_j`` gives the ``g_j``
   (random contractions of the merged mode use all of the core, not one slice), polished by
   symmetric deflated power sweeps run until the directions stop moving. Unit directions ``a_j = Q g_j``.
3. Scales, ``U`` and ``A2``: the scale ``s_j`` of each row of A1 is identifiable for tanh (not
   homogeneous) but enters nonlinearly. With the directions fixed, ``(s, U)`` (``d_h + d_h^2``
   numbers) are fitted by L-BFGS on the squared prediction error with ``A2`` eliminated in
   closed form (variable projection: for given ``(s, U)`` the outputs are linear in ``A2``), over
   (a subsample of) the data, with PyTorch's ``nn.RNN`` as the recurrence (the module of
   :func:`~spectral_rnn.torch_export.to_torch`) for tanh. Start: ``s_j`` from the ratio of the
   unit's third- to first-order weights, ``-s_j^2 E[f'''(z_j)] / E[f'(z_j)]``, matched under a
   Gaussian approximation of ``z_j`` (or the best of a few common scales), ``U = 0``. Why
   L-BFGS with variable projection: the problem is tiny (20 numbers for ``d_h = 4``), smooth,
   and well started, so a quasi-Newton method converges in tens of iterations; eliminating
   ``A2`` removes the worst-conditioned direction (the trade-off between a unit's scale and
   its read-out weight) from the search.
   A unit whose state stays in ``f``'s linear range identifies only the product of its scale and
   read-out; it is rescaled to :data:`SCALE_FLOOR` (:func:`floor_scales`), see ``linear_units_``.
4. ``A2`` by least squares on all the data with the final ``(s, U)``.

Sign convention: ``f`` odd makes ``(a1_j, a2_j, U[j, :], U[:, j]) -> -(...)`` an exact symmetry;
fitted models have positive scales along unit directions whose largest-magnitude entry is
positive (compare with :func:`~spectral_rnn.metrics.parameter_errors` ``odd=True``).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ._checks import (
    DivergenceError,
    IllConditionedError,
    InputError,
    check_random_state,
    check_real,
    check_xy,
    resolve_device,
    valid_mask,
)
from .activations import Activation, Polynomial, Tanh, as_activation
from .decomposition import ALS_TOL, MAX_ALS, jennrich, warn_unconverged
from ._fitting import _score_hint, check_peak_share, drop_extreme_sequences, output_pinv
from .chain import run_chain, step_mask
from .control import control_for
from .models import BRNN, IORNN
from .torch_export import TorchRNN
from .moments import StepStream
from .processes import MarkovProcess
from .stability import stabilize

__all__ = ["uses_odd_route", "fit_iornn_odd", "fit_brnn_odd", "decompose_symmetric4", "NLS_STEPS"]

#: time steps the L-BFGS stage of the scales and U sees: a tenth of the data, at least ``NLS_STEPS[0]``
#: (all of it below that) and at most ``NLS_STEPS[1]``; the rest enters A2 only. Set ``est.nls_steps``
#: (an int) on an estimator to override.
NLS_STEPS = (100_000, 300_000)

#: the least standard deviation of its hidden state a fitted unit keeps (on the data the scales are
#: fitted on). Below it ``f`` is linear to within about ``SCALE_FLOOR^2 / 3`` (0.1% for tanh), so
#: only the product of the unit's input and output weights is identified, and the L-BFGS stage
#: may drive ``s_j`` towards 0 and the read-out towards infinity (seen on a real series:
#: ``A1 = 3e-8``, ``A2 = 8e6``, a start that backpropagation could not move); such a unit is
#: rescaled to this level and its read-out refitted.
SCALE_FLOOR = 0.05


def uses_odd_route(activation: object) -> bool:
    """True for the activations fitted by the third-order route: tanh and odd polynomials of degree >= 3."""
    try:
        f = as_activation(activation)
    except InputError:
        return False
    if isinstance(f, Tanh):
        return True
    return isinstance(f, Polynomial) and f.degree >= 3 and f.is_odd


def _check_odd(f: Activation) -> None:
    if isinstance(f, Polynomial):
        if f.coef(1) == 0.0:
            raise InputError(f"activation {f.to_string()!r}: an odd polynomial needs c1 != 0 (the first-order "
                             "moment finds the units' subspaces)")
        if f.coef(3) == 0.0:
            raise InputError(f"activation {f.to_string()!r}: the third-order route needs c3 != 0")


def _fit_process(est, X: np.ndarray, lengths: np.ndarray | None) -> MarkovProcess:
    """The input process, with third-order scores: ``scores="auto"`` on non-Gaussian inputs uses a
    density (the best of :data:`~spectral_rnn.processes.DENSITY_CANDIDATES` by held-out score
    matching, its scores Stein-corrected up to degree 3) instead of the density-free score, which
    has no S_3."""
    if est.process is None and est.scores == "moment":
        raise InputError("scores='moment' (the density-free score) has no third-order score S_3, which the "
                         "route for odd activations (tanh) needs: use 'auto', 'gaussian', 'score-matching', 'mixture' "
                         "or 'student-t'")
    return est._fit_process(X, lengths, degree=3, third_order=True)


# --------------------------------------------------------------------------- decomposition
def _kr3(G: np.ndarray) -> np.ndarray:
    """Columns ``g_j (x) g_j (x) g_j`` (k^3, r)."""
    k, r = G.shape
    return (G[:, None, None, :] * G[None, :, None, :] * G[None, None, :, :]).reshape(k**3, r)


def decompose_symmetric4(T4: np.ndarray, random_state=None, n_sweeps: int = MAX_ALS,
                         tol: float = ALS_TOL, return_info: bool = False):
    """``T4`` (p, k, k, k) ``~ sum_j w_j (x) g_j (x) g_j (x) g_j``, symmetric in its last three modes,
    with ``k`` components: returns ``G`` (k, k) unit columns and ``W`` (p, k); with ``return_info``
    also ``(sweeps, change)``: the power sweeps done and the last sweep's largest change of ``G``.

    Jennrich on the ``(p k, k, k)`` reshape (output and first input mode merged), then sweeps of
    deflated symmetric power updates ``g_j <- R_j(w_j, ., g_j, g_j)`` and least-squares ``W``, until
    no entry of ``G`` moves by more than ``tol`` in a sweep, at most ``n_sweeps`` (as the ALS of
    :mod:`~spectral_rnn.decomposition`: a fixed 20 sweeps left a planted tanh IO-RNN at 1e6 steps
    with A1 error 0.044 where the converged sweeps give 0.008)."""
    p, k = T4.shape[0], T4.shape[1]
    T4 = sum(T4.transpose(0, *perm) for perm in
             ((1, 2, 3), (1, 3, 2), (2, 1, 3), (2, 3, 1), (3, 1, 2), (3, 2, 1))) / 6.0
    G = jennrich(T4.reshape(p * k, k, k), random_state)
    unf = T4.reshape(p, -1)

    def weights(G):
        return np.linalg.lstsq(_kr3(G), unf.T, rcond=None)[0].T  # (p, k)

    W = weights(G)
    change, sweeps = float("inf"), 0
    for sweeps in range(1, n_sweeps + 1):
        G_prev = G.copy()
        for j in range(k):
            others = [i for i in range(k) if i != j]
            R = T4 - np.einsum("pi,ai,bi,ci->pabc", W[:, others], G[:, others], G[:, others], G[:, others])
            g = np.einsum("pabc,p,b,c->a", R, W[:, j], G[:, j], G[:, j])
            nrm = np.linalg.norm(g)
            if nrm > 0:
                G[:, j] = g / nrm * np.sign(g @ G[:, j] or 1.0)
        W = weights(G)
        change = float(np.max(np.abs(G - G_prev)))
        if change <= tol:
            break
    warn_unconverged("the third-order decomposition's power sweeps", n_sweeps, change, tol,
                     "more data or a smaller hidden_size")
    return (G, W, (sweeps, change)) if return_info else (G, W)


# --------------------------------------------------------------------------- scales and U
def _gauss_expect(fun, sigma: np.ndarray, n: int = 40) -> np.ndarray:
    """``E[fun(sigma xi)]``, ``xi ~ N(0, 1)``, per entry of ``sigma`` (Gauss-Hermite)."""
    x, w = np.polynomial.hermite_e.hermegauss(n)
    w = w / w.sum()
    return (np.asarray(fun(sigma[..., None] * x)) * w).sum(-1)


def _scale_start(f: Activation, ratio: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Scales ``s_j`` with ``-s^2 E[f'''(z)] / E[f'(z)] = ratio_j``, ``z ~ N(0, s^2 var_j)`` (grid search);
    1 where the ratio has the wrong sign."""
    grid = np.exp(np.linspace(np.log(0.05), np.log(20.0), 400))
    out = np.ones_like(ratio)
    for j, (r, v) in enumerate(zip(ratio, var)):
        if not (np.isfinite(r) and r > 0):
            continue
        sig = grid * np.sqrt(v)
        e1 = _gauss_expect(lambda u: f.deriv(u, 1), sig)
        e3 = _gauss_expect(lambda u: f.deriv(u, 3), sig)
        model = -grid**2 * e3 / np.where(np.abs(e1) > 1e-12, e1, np.nan)
        ok = np.isfinite(model) & (model > 0)
        if ok.any():
            err = np.where(ok, np.abs(np.log(np.where(ok, model, 1.0)) - np.log(r)), np.inf)
            out[j] = grid[int(np.argmin(err))]
    return out


class _Recurrence:
    """Hidden states of ``h_t = f(diag(s) A_hat x_t + U h_{t-1})`` as a differentiable function of ``(s, U)``
    (and, for a BRNN, of the backward chain ``z_t = f(diag(s) B_hat x_t + V z_{t+1})``: the last
    ``n_bwd`` rows of ``A_hat``): PyTorch's ``nn.RNN`` (the export module) for tanh,
    :func:`~spectral_rnn.chain.run_chain` otherwise. States are (n, T, n_fwd + n_bwd), forward units first."""

    def __init__(self, f: Activation, A_hat: np.ndarray, X: np.ndarray, lengths: np.ndarray | None, d_y: int,
                 n_bwd: int = 0) -> None:
        self.f = f
        self.A = torch.as_tensor(A_hat, dtype=torch.float64)
        self.nf = A_hat.shape[0] - n_bwd
        self.nb = n_bwd
        self.X = torch.as_tensor(X, dtype=torch.float64)
        self.lengths = None if lengths is None else torch.as_tensor(lengths)
        if isinstance(f, Tanh):
            if n_bwd and n_bwd != self.nf:
                raise InputError("nn.RNN needs as many backward as forward units")
            self.module = TorchRNN(A_hat.shape[1], self.nf, d_y, bidirectional=bool(n_bwd), dtype=torch.float64)

    def states(self, s: torch.Tensor, U: torch.Tensor, V: torch.Tensor | None = None, X: torch.Tensor | None = None,
               lengths=None) -> torch.Tensor:
        X = self.X if X is None else X
        lengths = self.lengths if X is self.X else lengths
        A1 = s[:, None] * self.A
        Af, Ab = A1[: self.nf], A1[self.nf:]
        if isinstance(self.f, Tanh):
            from torch.func import functional_call

            params = {"weight_ih_l0": Af, "weight_hh_l0": U}
            if self.nb:
                params.update(weight_ih_l0_reverse=Ab, weight_hh_l0_reverse=V)
            if lengths is None:
                return functional_call(self.module.rnn, params, (X,))[0]
            T = X.shape[1]
            packed = torch.nn.utils.rnn.pack_padded_sequence(X, lengths.cpu().to(torch.int64), batch_first=True,
                                                             enforce_sorted=False)
            out = functional_call(self.module.rnn, params, (packed,))[0]
            return torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)[0]
        valid = step_mask(lengths, X.shape[1], X.device)
        H = run_chain(X @ Af.T, U, self.f, valid)
        if not self.nb:
            return H
        return torch.cat([H, run_chain(X @ Ab.T, V, self.f, valid, reverse=True)], dim=-1)


def _varpro_loss(rec: _Recurrence, s, U, V, Y: torch.Tensor, mask: torch.Tensor | None, ridge: float = 1e-10):
    H = rec.states(s, U, V)
    if mask is not None:
        H = H * mask
    Hf, Yf = H.reshape(-1, H.shape[-1]), Y.reshape(-1, Y.shape[-1])
    n = Hf.shape[0] if mask is None else mask.sum()
    Gm = Hf.T @ Hf / n
    Gm = Gm + ridge * torch.trace(Gm) * torch.eye(Gm.shape[0], dtype=Gm.dtype)
    B = Hf.T @ Yf / n
    A2 = torch.linalg.solve(Gm, B)
    resid = (Yf * Yf).sum() / n - (B * A2).sum()  # min over A2 of the mean squared error
    return resid, A2


def _zero_padding(A: np.ndarray, lengths: np.ndarray | None) -> np.ndarray:
    """``A`` (n, T, d) with steps past each length set to zero (padding may hold anything, NaN included)."""
    if lengths is None:
        return A
    return np.where(valid_mask(np.asarray(lengths), *A.shape[:2])[..., None], A, 0.0)


def fit_scales_and_recurrence(f: Activation, A_hat: np.ndarray, X: np.ndarray, Y: np.ndarray,
                              lengths: np.ndarray | None, s0_candidates: list[np.ndarray], max_iter: int = 200,
                              n_bwd: int = 0):
    """L-BFGS on ``(s, U)`` (and ``V`` for the last ``n_bwd`` units, a backward chain) with the read-out
    eliminated (variable projection). Returns ``(s, U, V, A2, loss, n_iter, recurrence)``."""
    X, Y = _zero_padding(X, lengths), _zero_padding(Y, lengths)
    rec = _Recurrence(f, A_hat, X, lengths, Y.shape[2], n_bwd)
    Yt = torch.as_tensor(Y, dtype=torch.float64)
    mask = None
    if lengths is not None:
        mask = torch.as_tensor(valid_mask(np.asarray(lengths), *X.shape[:2]))[..., None].to(torch.float64)
        Yt = Yt * mask
    nf, nb = rec.nf, rec.nb
    zf = torch.zeros((nf, nf), dtype=torch.float64)
    zb = torch.zeros((nb, nb), dtype=torch.float64) if nb else None
    best = None
    with torch.no_grad():
        for s0 in s0_candidates:
            st = torch.as_tensor(s0, dtype=torch.float64)
            try:
                val = float(_varpro_loss(rec, st, zf, zb, Yt, mask)[0])
            except DivergenceError:
                continue
            if np.isfinite(val) and (best is None or val < best[0]):
                best = (val, st)
    if best is None:
        raise IllConditionedError("no starting scale gave a finite prediction error")
    s = best[1].clone().requires_grad_(True)
    U = zf.clone().requires_grad_(True)
    V = zb.clone().requires_grad_(True) if nb else None
    params = [s, U] + ([V] if nb else [])
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        try:
            loss = _varpro_loss(rec, s, U, V, Yt, mask)[0]
        except DivergenceError:  # a polynomial recursion blown up by a long trial step: reject the step
            return torch.tensor(1e30, dtype=torch.float64)
        loss.backward()
        return loss

    opt.step(closure)
    n_iter = int(opt.state[opt._params[0]].get("n_iter", 0))
    with torch.no_grad():
        loss, A2 = _varpro_loss(rec, s, U, V, Yt, mask)
    out = [p.detach().numpy().copy() for p in params]
    Vn = out[2] if nb else None
    return out[0], out[1], Vn, A2.numpy().copy(), float(loss), n_iter, rec


def floor_scales(s: np.ndarray, U: np.ndarray, V: np.ndarray | None, level: np.ndarray,
                 floor: float = SCALE_FLOOR) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Rescale each unit whose hidden state's standard deviation ``level_j`` (k,) is below ``floor``
    (a unit in ``f``'s linear range, where the state is the pre-activation) by ``c_j = floor /
    level_j``: ``s_j c_j``, and the recurrence ``U' = diag(c) U diag(1/c)`` within its chain (``U``
    the forward units (nf, nf), first; ``V`` the backward ones), so its state becomes ``c_j`` times
    as large; its read-out must then be divided by ``c_j`` (refit it). Returns ``(s, U, V, floored)``
    with ``floored`` (k,) bool. Exact for a linear unit, within about ``floor^2 / 3`` for tanh."""
    s = np.asarray(s, dtype=np.float64)
    level = np.asarray(level, dtype=np.float64)
    floored = level < floor
    c = np.where(floored, floor / np.maximum(level, 1e-300), 1.0)
    nf = U.shape[0]
    cf, cb = c[:nf], c[nf:]
    U = cf[:, None] * U / cf[None, :]
    if V is not None:
        V = cb[:, None] * V / cb[None, :]
    return s * c, U, V, floored


def _state_std(rec: _Recurrence, s: np.ndarray, U: np.ndarray, V: np.ndarray | None) -> np.ndarray:
    """Standard deviation (k,) of each unit's hidden state over the valid steps of ``rec``'s data."""
    with torch.no_grad():
        H = rec.states(torch.as_tensor(s), torch.as_tensor(U), None if V is None else torch.as_tensor(V))
        if rec.lengths is not None:
            H = H[torch.as_tensor(valid_mask(rec.lengths.numpy(), *H.shape[:2]))]
        H = H.reshape(-1, H.shape[-1])
        return H.std(dim=0).numpy() if H.shape[0] > 1 else H.abs().max(dim=0).values.numpy()


def _output_weights(rec: _Recurrence, s: np.ndarray, U: np.ndarray, V: np.ndarray | None, X: np.ndarray,
                    Y: np.ndarray, lengths: np.ndarray | None, chunk: int = 1 << 15) -> np.ndarray:
    """The read-out (units, d_y) by least squares over all sequences, in chunks."""
    st, Ut = torch.as_tensor(s), torch.as_tensor(U)
    Vt = None if V is None else torch.as_tensor(V)
    k = len(s)
    G = np.zeros((k, k))
    B = np.zeros((k, Y.shape[2]))
    with torch.no_grad():
        for i in range(0, X.shape[0], chunk):
            Lc = None if lengths is None else lengths[i:i + chunk]
            Xc = torch.as_tensor(_zero_padding(np.asarray(X[i:i + chunk]), Lc), dtype=torch.float64)
            Yc = torch.as_tensor(_zero_padding(np.asarray(Y[i:i + chunk]), Lc), dtype=torch.float64)
            Lc = None if Lc is None else torch.as_tensor(Lc)
            H = rec.states(st, Ut, Vt, Xc, Lc)
            if Lc is not None:
                m = torch.as_tensor(valid_mask(Lc.numpy(), *Xc.shape[:2]))[..., None].to(torch.float64)
                H = H * m
            Hf = H.reshape(-1, k)
            G += (Hf.T @ Hf).numpy()
            B += (Hf.T @ Yc.reshape(-1, Yc.shape[-1])).numpy()
    return np.linalg.solve(G + 1e-12 * np.trace(G) * np.eye(k), B)


def _canonical_signs(A_hat: np.ndarray) -> np.ndarray:
    idx = np.argmax(np.abs(A_hat), axis=1)
    sg = np.sign(A_hat[np.arange(len(idx)), idx])
    return A_hat * np.where(sg == 0, 1.0, sg)[:, None]


def flip_units(A1, U, A2, signs):
    """Apply the odd-activation symmetry: unit j multiplied by ``signs[j]`` (+-1) in A1, A2 and U."""
    sg = np.asarray(signs, float)
    return A1 * sg[:, None], U * sg[:, None] * sg[None, :], A2 * sg[:, None]


# --------------------------------------------------------------------------- the route
def fit_iornn_odd(est, X: object, Y: object, lengths: object = None):
    """:meth:`SpectralIORNN.fit` for an odd activation (module docstring). Sets the fitted attributes on ``est``."""
    return _fit_odd(est, X, Y, lengths, bidirectional=False)


def fit_brnn_odd(est, X: object, Y: object, lengths: object = None):
    """:meth:`SpectralBRNN.fit` for an odd activation: the same route with the two-sided score (``2 d_h``
    components), forward and backward units told apart by the lag derivatives of their outputs
    (:meth:`StepStream.lag_score_moments`, as in the polynomial route), then ``(s, U, V)`` and the
    read-out fitted together by L-BFGS through a bidirectional ``nn.RNN``."""
    return _fit_odd(est, X, Y, lengths, bidirectional=True)


def _fit_odd(est, X, Y, lengths, bidirectional: bool):
    t_start = time.perf_counter()
    f = as_activation(est.activation)
    _check_odd(f)
    d_h, chunk_steps, dtype, outlier_factor, min_gap = est._common_params()
    X, Y, lengths = check_xy(X, Y, lengths, keep_device=True)  # a GPU tensor is read where it lies
    X_all, lengths_all = X, lengths
    X, Y, lengths, n_dropped = drop_extreme_sequences(X, Y, lengths, outlier_factor)
    n_steps = int(X.shape[0] * X.shape[1] if lengths is None else lengths.sum())
    chains = 2 if bidirectional else 1
    est._check_sizes(X.shape[2], Y.shape[2], n_steps, chains * d_h)
    k = chains * d_h  # components of the moment tensors
    device = resolve_device(est.device)
    rng = check_random_state(est.random_state)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    proc = _fit_process(est, X, lengths)
    timings["process"] = time.perf_counter() - t0

    stream = StepStream(X, Y, lengths, proc, two_sided=bidirectional, device=device, dtype=dtype,
                        chunk_steps=chunk_steps)
    # the third-order tensor's control variate (the first-order moment keeps y)
    stream.control = control_for(est.control_variate, proc, X, Y, lengths, dtype, device, timings)
    t0 = time.perf_counter()
    M1 = stream.first_order()
    Pl, sv, Qr = np.linalg.svd(M1, full_matrices=False)
    gap = float(sv[k - 1] / max(sv[k], 1e-300)) if k < len(sv) else float("inf")
    if sv[k - 1] <= 1e-10 * sv[0] or gap < min_gap:
        raise IllConditionedError(
            f"the first-order moment E[y S_1] does not show {k} well-separated components (singular-value gap "
            f"{gap:.3g}): the hidden size is too large for these data, or there are too few samples" + _score_hint(proc))
    P, Q = Pl[:, :k], Qr[:k].T
    try:
        T4 = stream.project3(P, Q, lags=(1, -1) if bidirectional else ())  # the BRNN's lag moments too
    except InputError as exc:
        raise InputError(f"{exc}: the route for odd activations (tanh) needs it; use scores='auto', 'gaussian', "
                         "'score-matching', 'mixture' or 'student-t'") from None
    # the route uses plain means: a tensor that a few steps dominate is refused, not robustified
    check_peak_share(stream, check_real(est.max_peak_share, "max_peak_share", low=0.0, high=1.0, low_open=True),
                     median_of_means=False)
    G, W3, (sweeps, change) = decompose_symmetric4(T4, rng, return_info=True)
    timings["decomposition"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    A_hat = (Q @ G).T
    A_hat = A_hat / np.linalg.norm(A_hat, axis=1, keepdims=True)
    A_hat = _canonical_signs(A_hat)
    sg = np.sign(np.sum(A_hat * (Q @ G).T, axis=1))  # g_j's orientation relative to the canonical one
    # per-unit first- and third-order weights in P's coordinates, oriented along A_hat
    W1 = np.linalg.lstsq(G, (P.T @ M1 @ Q).T, rcond=None)[0].T * sg[None, :]  # (k, k): E f'_j s_j P^T a2_j
    W3 = W3 * sg[None, :] ** 3
    order = np.arange(k)
    fitted: dict = {}
    if bidirectional:  # forward units first, then backward ones
        Wpinv = output_pinv((P @ W1).T)
        lag = stream.lag_score_moments(Wpinv, lags=(1, -1))
        past, future = np.sum(lag[1] ** 2, axis=1), np.sum(lag[-1] ** 2, axis=1)
        share = past / (past + future + 1e-300)
        order = np.argsort(-share)
        fwd, bwd = np.sort(order[:d_h]), np.sort(order[d_h:])
        fitted["separation_"] = share
        if share[fwd].min() <= 0.5 or share[bwd].max() >= 0.5:
            raise IllConditionedError(
                f"could not split the {k} components into {d_h} forward and {d_h} backward units "
                f"(past shares {np.array2string(np.sort(share)[::-1], precision=2)}): the data may come from a "
                "unidirectional RNN, or the recurrences are too weak to tell the directions apart")
        order = np.concatenate([fwd, bwd])
    A_hat, W1, W3 = A_hat[order], W1[:, order], W3[:, order]
    ratio = -np.sum(W3 * W1, axis=0) / np.maximum(np.sum(W1 * W1, axis=0), 1e-300)
    # variance of A_hat x from a subsample
    n_s = max(1, min(X.shape[0], 100_000 // X.shape[1]))
    Xs = np.asarray(X[:n_s])  # a Dask or chunked source is read here, by this slice only
    keep = valid_mask(None if lengths is None else lengths[:n_s], *Xs.shape[:2])
    Z = Xs[keep] @ A_hat.T
    var = np.mean(Z * Z, axis=0)
    s_ratio = _scale_start(f, ratio, var)
    candidates = [s_ratio] + [np.full(k, c) for c in (0.5, 1.0, 2.0)]

    # L-BFGS on a subsample of whole sequences
    n_seq = X.shape[0]
    n_fit = n_seq
    max_steps = getattr(est, "nls_steps", None) or min(NLS_STEPS[1], max(NLS_STEPS[0], n_steps // 10))
    if n_steps > max_steps:
        n_fit = max(1, int(n_seq * max_steps / n_steps))
    idx = np.sort(rng.choice(n_seq, n_fit, replace=False)) if n_fit < n_seq else slice(None)
    n_bwd = d_h if bidirectional else 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny per-step products: one thread is several times faster (measured: 10x on a busy 2-core host)
    try:
        s, U, V, A2, loss, n_iter, rec = fit_scales_and_recurrence(
            f, A_hat, np.asarray(X[idx]), np.asarray(Y[idx]), None if lengths is None else lengths[idx], candidates,
            n_bwd=n_bwd)
        s, U, V, floored = floor_scales(s, U, V, _state_std(rec, s, U, V))
        if n_fit < n_seq or floored.any():
            A2 = _output_weights(rec, s, U, V, X, Y, lengths).copy()
    finally:
        torch.set_num_threads(threads)
    neg = np.where(s < 0, -1.0, 1.0)  # keep positive scales along the canonical directions
    A1 = (s * neg)[:, None] * A_hat
    A2 = A2 * neg[:, None]
    nf = k - n_bwd
    U = U * neg[:nf, None] * neg[None, :nf]
    if bidirectional:
        V = V * neg[nf:, None] * neg[None, nf:]
        model = BRNN(A1[:nf], U, A2[:nf], A1[nf:], V, A2[nf:], f)
    else:
        model = IORNN(A1, U, A2, f)
    timings["recurrence"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    # an odd polynomial recursion may diverge: the fitted model must not, on its own inputs (tanh: a no-op)
    model, stability = stabilize(model, X_all, lengths_all, device=device)
    timings["stability"] = time.perf_counter() - t0

    Pa2 = P.T @ A2.T  # (k, k) columns P^T a2_j
    sa = np.abs(s)
    mu = np.sum(W3 * Pa2 * neg[None, :], axis=0) / np.maximum(sa**3 * np.sum(Pa2 * Pa2, axis=0), 1e-300)
    est._set_fitted(model, stability, proc, X.shape[2], n_steps, n_dropped,
                    {**fitted, "mu_": mu, "scale_start_": s_ratio, "nls_iterations_": n_iter, "nls_loss_": loss,
                     "linear_units_": floored,
                     "gap_": gap, "als_sweeps_": sweeps, "als_change_": change,
                     "robust_": False})  # the third-order route uses plain means
    timings["total"] = time.perf_counter() - t_start
    est.timings_ = timings
    return est
