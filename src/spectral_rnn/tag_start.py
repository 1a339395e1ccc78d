"""The spectral start of a BiRNN(tanh) tagger: input directions from Stein moments, a delay line, a convex read-out.

:func:`fit_spectral_start` builds a bidirectional ``nn.RNN(tanh)`` + ``Linear``
(:class:`~spectral_rnn.tagger.SequenceClassifier`, the same module as the random-start
BiRNN, biases included) from per-step features ``x_t`` (d_x) and tags ``y_t`` (K classes),
without gradient descent on the recurrent weights. The method (docs/tagging.md, "The
spectral start", gives the measured reasons):

1. **Whitening.** ``x~ = W (x - mu)`` with ``W = Sigma^{-1/2}`` from the training steps
   (directions of variance below ``1e-6`` of the largest, or ``1e-12``, get weight 0). Under a Gaussian law for ``x~`` the
   first- and second-order Stein scores are ``S_1 = x~`` and ``S_2 = x~ x~^T - I``.
2. **Moments** (one pass over the steps, all in closed form):

   * first order, per lag ``k``: ``M1[k] = E[(e_{y_{t+k}} - p) x~_t^T]`` (K, d_x), ``p`` the tag
     frequencies. By Stein's identity ``M1[0] = E[grad_x P(y_t = c | x_t)]``: the input
     directions along which the tag probabilities move (on average). ``k = +1`` (the next
     tag) matters for the forward chain, whose state at ``t`` is read at ``t + 1`` through
     the delay units below; ``k = -1`` for the backward chain.
   * second order, per class: ``M2[c] = E[1{y_t = c} (x~ x~^T - I)]`` (d_x, d_x), the
     average Hessian of ``P(y_t = c | x_t)``: the directions along which a tag's
     probability curves (its class variance differs from the rest).

3. **Directions.** For the forward chain, an orthonormal basis of the row space of
   ``[M1[0]; M1[+1]]`` ordered by singular value (at most ``2 (K - 1)`` directions), then,
   in its orthogonal complement, the leading eigenvectors of ``sum_c M2[c]^2`` (projected
   onto the complement); the backward chain the same with ``M1[-1]``. Each direction ``a``
   (unit length in whitened coordinates) gives a *spectral unit* ``tanh(a^T x~_t)``: input
   weights ``a^T W``, bias ``-a^T W mu``, pre-activation variance 1 on the training steps.
   A second-order direction gets two units ``tanh(a^T x~ +/- b)`` (``b`` = ``pair_bias``)
   whose sum is even in ``a^T x~``: what a curvature, not a slope, needs.
4. **Delay units (the recurrence).** A share of the units of each direction (``delay_share``,
   0.25) copy a spectral unit one step late: ``h^d_t = tanh(c_j h^s_{t-1, j})`` (``U[d, j] = c_j``,
   no input weight), with ``c_j = 1 / std(h^s_j)`` so the delayed copy also has
   pre-activation variance about 1. The forward chain delays the units that matter most
   for the next tag (largest ``||M1[+1] a_j||``), the backward chain those for the previous
   tag (``M1[-1]``). This ``U`` is nilpotent (spectral radius 0), and the read-out at ``t``
   sees features of ``x_{t-1}, x_t, x_{t+1}``.
5. **Other units.** Any unit left (``hidden_size`` beyond what steps 3-4 fill) starts small:
   input weights ``N(0, rest_scale^2 / d_x)`` in whitened coordinates, recurrent row and
   column ``N(0, rest_scale^2 / H)``, zero bias.
6. **Noise.** ``noise`` (0.5) times the module's seeded PyTorch default initialisation
   (``U(-1/sqrt(H), 1/sqrt(H))`` on every weight and bias) is added to all weights: without
   it the start trains to a lower plateau (docs/tagging.md). ``U`` is then scaled if its
   spectral radius exceeds ``max_radius``.
7. **Read-out** by :func:`~spectral_rnn.tagger.fit_readout` (multinomial logistic
   regression with biases on the fixed hidden states: convex), on a seeded sample of whole
   sentences holding about ``readout_steps`` steps.

**LSTM** (``kind="lstm"``): the same weights (steps 3-6) go to the cell-candidate (g) gate of a
bidirectional ``nn.LSTM``; the input and output gates get bias ``gate_bias`` (2: open,
``sigmoid(2) = 0.88``), the forget gate ``forget_bias`` (-2: shut, 0.12), their weights the
``noise`` share of PyTorch's initialisation. Then ``c_t ~ s_i g_t`` and
``h_t ~ s_o tanh(s_i g_t)``: the tanh units of the BiRNN start, squashed once more, and the
delay units' ``c_j`` are computed for that output. Training then opens or closes the gates.

``shrinkage`` > 0 whitens by ``(Sigma + shrinkage * mean(eig) I)^{-1/2}`` instead (ridge
whitening: smaller weights along low-variance directions; off by default, it did not help).
The "units from the spectral fit" are those of step 3; step 4 is a fixed rule built on
them (no parameter fitted), steps 5-6 seeded random rules. Everything is seeded
(``random_state``) and deterministic given it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from ._checks import InputError, check_positive_int
from .tagger import IGNORE_INDEX, SequenceClassifier, _as_batch, _as_labels, fit_readout, make_classifier

__all__ = ["SpectralStart", "fit_spectral_start", "spectral_start", "tag_moments"]


@dataclass
class SpectralStart:
    """What :func:`fit_spectral_start` built.

    ``module``: the initialised :class:`SequenceClassifier` (bidirectional ``nn.RNN(tanh)``
    or, with ``kind="lstm"``, ``nn.LSTM``;
    ``hidden_size`` units per direction, read-out fitted). ``units``: per direction
    (``"forward"``, ``"backward"``), counts of ``"first_order"``, ``"second_order"``
    (spectral units), ``"delay"`` and ``"other"`` units, in that order of unit index.
    ``singular_values``: per direction, those of the stacked first-order moment;
    ``start_train_loss``: the read-out's training cross-entropy; ``timings``: seconds per
    stage; ``spectral_radius``: of ``U`` per direction (0 for the delay line alone, 0.54-0.62
    with the default noise at 64 units on porttinari and the Turkish treebank; at most ``max_radius``;
    for an LSTM, of the cell-candidate gate's recurrent block); ``kind``: ``"rnn"`` or ``"lstm"``.
    """

    module: SequenceClassifier
    units: dict = field(default_factory=dict)
    singular_values: dict = field(default_factory=dict)
    spectral_radius: dict = field(default_factory=dict)
    start_train_loss: float = float("nan")
    timings: dict = field(default_factory=dict)
    kind: str = "rnn"

    def describe(self) -> str:
        """One line per direction: where each unit came from."""
        out = []
        for d in ("forward", "backward"):
            u = self.units[d]
            out.append(f"{d}{' (LSTM, in the cell-candidate gate)' if self.kind == 'lstm' else ''}: "
                       f"{u['first_order'] + u['second_order']} spectral units ({u['first_order']} first-order, "
                       f"{u['second_order']} second-order), {u['delay']} delay units, {u['other']} small random units; "
                       f"spectral radius of U {self.spectral_radius[d]:.3f}")
        return "\n".join(out)


def _flat(X: np.ndarray, Y: np.ndarray, L: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The steps of a padded batch flattened: ``x`` (N, d_x) float64, ``y`` (N,) int, and
    ``pos`` (N,) the position of each step in its sentence, sentences one after the other."""
    mask = np.arange(X.shape[1])[None, :] < L[:, None]
    pos = np.broadcast_to(np.arange(X.shape[1])[None, :], mask.shape)[mask]
    return X[mask].astype(np.float64), Y[mask], pos


def _lagged(y: np.ndarray, pos: np.ndarray, L: np.ndarray, lag: int) -> np.ndarray:
    """``y_{t+lag}`` for every flattened step (IGNORE_INDEX where ``t+lag`` leaves the sentence)."""
    length = np.repeat(L, L)
    out = np.full_like(y, IGNORE_INDEX)
    inside = (pos + lag >= 0) & (pos + lag < length)
    idx = np.nonzero(inside)[0]
    out[idx] = y[idx + lag]
    return out


def tag_moments(X: np.ndarray, Y: np.ndarray, L: np.ndarray, n_classes: int, lags=(-1, 0, 1),
                shrinkage: float = 0.0) -> dict:
    """Whitening and the Stein moments of steps 1-2 (see the module docstring).

    ``X`` padded ``(n, T, d_x)``, ``Y`` padded ``(n, T)`` int (IGNORE_INDEX past the ends),
    ``L`` ``(n,)``. Returns ``mu`` (d_x,), ``W`` (d_x, d_x) whitening (``x~ = W (x - mu)``),
    ``M1`` {lag: (K, d_x)}, ``M2`` (K, d_x, d_x), ``p`` (K,) tag frequencies and ``Z`` (N, d_x)
    the whitened steps.
    """
    x, y, pos = _flat(X, Y, L)
    ok = y != IGNORE_INDEX
    n_ok = int(ok.sum())
    if n_ok < 2:
        raise InputError("the spectral start needs at least 2 tagged steps")
    # matrix products in torch (its thread setting holds; numpy's BLAS would take every core)
    xt = torch.from_numpy(x)
    mu_t = xt.mean(0)
    xc = xt - mu_t
    C = (xc.T @ xc / len(xc)).numpy()
    ev, E = np.linalg.eigh(C)
    keep = ev > max(1e-6 * float(ev.max()), 1e-12)  # constant directions get no weight
    ev_s = ev + shrinkage * float(ev[keep].mean() if keep.any() else 0.0)  # (Sigma + s mean(eig) I)^{-1/2}
    W = (E * np.where(keep, 1.0 / np.sqrt(np.where(keep, ev_s, 1.0)), 0.0)).T  # rows: whitening directions
    Zt = xc @ torch.from_numpy(W).T
    d = Zt.shape[1]
    M1 = {}
    for k in lags:
        yk = _lagged(y, pos, L, k) if k else y
        okk = torch.from_numpy(yk != IGNORE_INDEX)
        onehot = torch.nn.functional.one_hot(torch.from_numpy(yk[yk != IGNORE_INDEX]), n_classes).double()
        M1[k] = ((onehot - onehot.mean(0)).T @ Zt[okk] / max(len(onehot), 1)).numpy()
    p = np.bincount(y[ok], minlength=n_classes).astype(np.float64) / n_ok
    M2 = np.zeros((n_classes, d, d))
    for c in range(n_classes):
        Zc = Zt[torch.from_numpy(y == c)]
        if len(Zc):
            M2[c] = (Zc.T @ Zc).numpy() / n_ok - p[c] * np.eye(d)
    mu, Z = mu_t.numpy(), Zt.numpy()
    return {"mu": mu, "W": W, "M1": M1, "M2": M2, "p": p, "Z": Z}


def _directions(M1s: list[np.ndarray], M2: np.ndarray, n_first_max: int, n_total: int, tol: float = 1e-3):
    """Orthonormal whitened directions (rows): first-order ones from the stacked M1s, then
    second-order ones in their complement. Returns (A_first, A_second, singular values)."""
    S = np.vstack(M1s)
    _, sv, Vt = np.linalg.svd(S, full_matrices=True)
    rank = int(np.sum(sv > tol * sv[0])) if sv.size and sv[0] > 0 else 0
    n1 = min(rank, n_first_max, n_total)
    A1 = Vt[:n1]
    n2 = n_total - n1
    if n2 <= 0:
        return A1, np.zeros((0, S.shape[1])), sv
    P = np.eye(S.shape[1]) - A1.T @ A1
    G = np.einsum("cij,cjk->ik", M2, M2)
    G = P @ G @ P
    ev, E = np.linalg.eigh((G + G.T) / 2)
    order = np.argsort(-ev)
    A2 = E[:, order[:n2]].T
    return A1, A2, sv


def fit_spectral_start(
    X,
    y,
    n_classes: int,
    hidden_size: int = 64,
    lengths=None,
    *,
    delay_share: float = 0.25,
    second_order: bool = True,
    pair_bias: float = 1.0,
    input_scale: float = 1.0,
    shrinkage: float = 0.0,
    noise: float = 0.5,
    rest_scale: float = 0.1,
    max_radius: float = 0.9,
    readout_steps: int = 40_000,
    readout_l2: float = 1e-4,
    readout_iter: int = 50,
    kind: str = "rnn",
    gate_bias: float = 2.0,
    forget_bias: float = -2.0,
    random_state: int = 0,
) -> SpectralStart:
    """Build the spectral start (module docstring); returns a :class:`SpectralStart`.

    ``X``: a list of ``(T_i, d_x)`` feature arrays (or padded ``(n, T, d_x)`` with
    ``lengths``); ``y``: a list of int tag arrays (``(T_i,)``) in ``[0, n_classes)``
    (IGNORE_INDEX steps are left out of the moments). ``hidden_size`` units per direction.
    ``delay_share``: share of each direction's units that delay a spectral unit (0: no
    context before refinement). ``second_order``: add second-order directions after the
    first-order ones (else only first-order ones, the rest "other"). ``input_scale``:
    pre-activation standard deviation of the spectral units; ``pair_bias``: the ``+/- b`` of
    the second-order pairs; ``noise``, ``shrinkage``, ``rest_scale``, ``max_radius``: steps
    5-6 and the whitening of the module docstring; ``readout_*``: the read-out fit.
    ``kind``: ``"rnn"`` (``nn.RNN(tanh)``) or ``"lstm"`` (the weights in the cell-candidate
    gate; ``gate_bias`` for the input and output gates, ``forget_bias`` for the forget gate).
    """
    H = check_positive_int(hidden_size, "hidden_size")
    K = check_positive_int(n_classes, "n_classes")
    if not 0.0 <= float(delay_share) < 1.0:
        raise InputError(f"delay_share must be in [0, 1), got {delay_share!r}")
    for name, v in (("pair_bias", pair_bias), ("input_scale", input_scale), ("shrinkage", shrinkage), ("noise", noise),
                    ("rest_scale", rest_scale),
                    ("max_radius", max_radius)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise InputError(f"{name} must be a finite non-negative number, got {v!r}")
    if kind not in ("rnn", "lstm"):
        raise InputError(f"kind must be 'rnn' or 'lstm', got {kind!r}")
    for name, v in (("gate_bias", gate_bias), ("forget_bias", forget_bias)):
        if not (isinstance(v, (int, float)) and math.isfinite(v)):
            raise InputError(f"{name} must be a finite number, got {v!r}")
    if not 0 < max_radius < 1:
        raise InputError(f"max_radius must be in (0, 1), got {max_radius!r}")
    t0 = time.perf_counter()
    Xp, L = _as_batch(X, lengths)
    Y = _as_labels(y, Xp.shape[0], Xp.shape[1], L)
    if (Y[Y != IGNORE_INDEX] >= K).any() or (Y[Y != IGNORE_INDEX] < 0).any():
        raise InputError(f"tags must be integers in [0, {K})")
    d = Xp.shape[2]
    mom = tag_moments(Xp, Y, L, K, shrinkage=shrinkage)
    timings = {"moments": time.perf_counter() - t0}
    rng = np.random.default_rng(random_state)

    n_delay = min(int(math.floor(delay_share * H)), H)
    n_spec_units = H - n_delay
    module = make_classifier(kind, d, H, K, bidirectional=True, nonlinearity="tanh", seed=random_state, bias=True)
    lstm = kind == "lstm"
    # LSTM: the spectral weights go to the cell-candidate (g) gate; input and output gates biased open
    # (sigmoid(gate_bias)), forget gate biased shut (sigmoid(forget_bias)), so h_t ~ s_o tanh(s_i g_t)
    s_i = s_o = 1.0 / (1.0 + math.exp(-gate_bias)) if lstm else 1.0
    g_rows = slice(2 * H, 3 * H) if lstm else slice(0, H)
    units, svs, radii = {}, {}, {}
    Wh, mu = mom["W"], mom["mu"]
    Z = mom["Z"]
    for direction, lag, suffix in (("forward", 1, ""), ("backward", -1, "_reverse")):
        # spectral units: first-order directions take one unit each, second-order ones two
        A1, _, sv = _directions([mom["M1"][0], mom["M1"][lag]], mom["M2"], n_spec_units, n_spec_units)
        n1 = A1.shape[0]
        n2 = 0
        if second_order:
            n2 = min((n_spec_units - n1) // 2, d - n1)
        _, A2, _ = _directions([mom["M1"][0], mom["M1"][lag]], mom["M2"], n1, n1 + n2)
        n_spec = n1 + 2 * n2
        # delay units: copy the spectral units that matter most for the neighbouring tag
        n_del = min(n_delay, n_spec)
        relevance = np.concatenate([np.linalg.norm(mom["M1"][lag] @ A1.T, axis=0),
                                    np.repeat(np.linalg.norm(mom["M1"][lag] @ A2.T, axis=0), 2)])
        src = np.argsort(-relevance, kind="stable")[:n_del]
        n_rest = H - n_spec - n_del
        Wi = np.zeros((H, d))
        b = np.zeros(H)
        Wx = input_scale * (np.vstack([A1, np.repeat(A2, 2, axis=0)]) if n_spec else np.zeros((0, d)))  # whitened
        b_spec = np.concatenate([np.zeros(n1), np.tile([pair_bias, -pair_bias], n2)])
        Wi[:n_spec] = Wx @ Wh
        b[:n_spec] = b_spec - Wi[:n_spec] @ mu
        U = np.zeros((H, H))
        if n_del:
            hs = torch.tanh(torch.from_numpy(Z) @ torch.from_numpy(Wx[src]).T + torch.from_numpy(b_spec[src]))
            if lstm:
                hs = s_o * torch.tanh(s_i * hs)
            c = 1.0 / np.maximum(hs.std(0).numpy(), 1e-3)
            U[n_spec + np.arange(n_del), src] = c
        if n_rest:
            r = slice(n_spec + n_del, H)
            Wi[r] = rng.normal(0.0, rest_scale / math.sqrt(d), (n_rest, d)) @ Wh
            b[r] = -Wi[r] @ mu
            U[r, :] = rng.normal(0.0, rest_scale / math.sqrt(H), (n_rest, H))
            U[:, r] = rng.normal(0.0, rest_scale / math.sqrt(H), (H, n_rest))
        rnn = module.rnn
        # the full (gates x H) weights: PyTorch's seeded default times ``noise``, the spectral part in the g rows
        Wi_all = noise * getattr(rnn, "weight_ih_l0" + suffix).detach().double().numpy()
        U_all = noise * getattr(rnn, "weight_hh_l0" + suffix).detach().double().numpy()
        b_all = noise * (getattr(rnn, "bias_ih_l0" + suffix).detach().double().numpy()
                         + getattr(rnn, "bias_hh_l0" + suffix).detach().double().numpy())
        Wi_all[g_rows] += Wi
        U_all[g_rows] += U
        b_all[g_rows] += b
        if lstm:
            b_all[0:H] += gate_bias  # input gate
            b_all[H : 2 * H] += forget_bias  # forget gate
            b_all[3 * H : 4 * H] += gate_bias  # output gate
        U = U_all[g_rows]
        rad = float(np.max(np.abs(np.linalg.eigvals(U)))) if H else 0.0
        if rad > max_radius:
            U_all[g_rows] *= max_radius / rad
            rad = max_radius
        if not (np.isfinite(Wi_all).all() and np.isfinite(U_all).all() and np.isfinite(b_all).all()):
            raise InputError("the spectral start produced non-finite weights (degenerate features?)")
        with torch.no_grad():
            getattr(rnn, "weight_ih_l0" + suffix).copy_(torch.from_numpy(Wi_all))
            getattr(rnn, "weight_hh_l0" + suffix).copy_(torch.from_numpy(U_all))
            getattr(rnn, "bias_ih_l0" + suffix).copy_(torch.from_numpy(b_all))
            getattr(rnn, "bias_hh_l0" + suffix).zero_()
        units[direction] = {"first_order": n1, "second_order": 2 * n2, "delay": n_del, "other": n_rest}
        svs[direction] = sv.tolist()
        radii[direction] = rad
    timings["weights"] = time.perf_counter() - t0 - timings["moments"]
    t1 = time.perf_counter()
    # the read-out sees a seeded sample of whole sentences holding about readout_steps steps
    order = rng.permutation(len(L))
    keep = np.sort(order[: max(1, int(np.searchsorted(np.cumsum(L[order]), readout_steps)) + 1)])
    loss = fit_readout(module, Xp[keep], Y[keep], L[keep], l2=readout_l2, max_iter=readout_iter,
                       max_steps=readout_steps, seed=random_state)
    timings["readout"] = time.perf_counter() - t1
    timings["total"] = time.perf_counter() - t0
    return SpectralStart(module, units, svs, radii, loss, timings, kind)


def spectral_start(X, y, n_classes: int, hidden_size: int = 64, lengths=None, *, random_state: int = 0,
                   **kw) -> SequenceClassifier:
    """The initialised BiRNN(tanh) :class:`SequenceClassifier` of :func:`fit_spectral_start`."""
    return fit_spectral_start(X, y, n_classes, hidden_size, lengths, random_state=random_state, **kw).module
