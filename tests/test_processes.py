"""Gaussian AR(1) input process: sampling, least-squares fit, conditional scores."""

import numpy as np
import pytest
import torch

from spectral_rnn import GaussianAR1, IllConditionedError, InputError, MarkovProcess


def planted(d=4, seed=0):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    F = 0.6 * q @ np.diag(rng.uniform(0.3, 1.0, d))
    L = rng.standard_normal((d, d)) * 0.3 + np.eye(d)
    Sigma = L @ L.T
    b = rng.standard_normal(d) * 0.5
    return GaussianAR1(F=F, noise_cov=Sigma, intercept=b)


def test_protocol_and_random():
    p = GaussianAR1.random(6, rho=0.5, random_state=1)
    assert isinstance(p, MarkovProcess) and p.is_fitted and p.dim == 6
    assert np.allclose(p.F_ @ p.F_.T, 0.25 * np.eye(6))
    assert np.allclose(p.noise_cov_, 0.75 * np.eye(6))
    assert not GaussianAR1().is_fitted and GaussianAR1().dim is None
    with pytest.raises(InputError):
        GaussianAR1.random(3, rho=1.0)


def test_gaussian_fixes_its_innovations():
    """GaussianAR1 is AR1Process with the innovations' law fixed: not one of its parameters, and
    any other law refused (its other parameters are AR1Process's, so clone keeps them)."""
    from sklearn.base import clone

    g = GaussianAR1(first_step="stationary", tail_check=False)
    assert "innovations" not in g.get_params() and g.innovations == "gaussian"
    c = clone(g)
    assert type(c) is GaussianAR1 and c.first_step == "stationary" and c.tail_check is False
    assert GaussianAR1(innovations="gaussian").innovations == "gaussian"
    with pytest.raises(InputError, match="fixes innovations='gaussian'"):
        GaussianAR1(innovations="moment")
    with pytest.raises(InputError, match="no parameter 'innovations'"):
        g.set_params(innovations="moment")
    X = planted(3).sample(200, 10, random_state=0)
    laplace = X + np.random.default_rng(0).laplace(size=X.shape)  # non-Gaussian: auto would not pick gaussian
    assert GaussianAR1().fit(laplace).law_name_ == "gaussian"


def test_stationary_initial_law():
    p = planted()
    S0 = p.initial_cov_
    np.testing.assert_allclose(p.F_ @ S0 @ p.F_.T + p.noise_cov_, S0, atol=1e-12)
    np.testing.assert_allclose(p.F_ @ p.initial_mean_ + p.intercept_, p.initial_mean_, atol=1e-12)


def test_sample_moments():
    p = planted()
    X = p.sample(20000, 3, random_state=0)
    assert X.shape == (20000, 3, 4)
    np.testing.assert_allclose(X[:, 0].mean(0), p.initial_mean_, atol=0.05)
    resid = X[:, 1:] - X[:, :-1] @ p.F_.T - p.intercept_
    np.testing.assert_allclose(np.cov(resid.reshape(-1, 4), rowvar=False), p.noise_cov_, rtol=0.05, atol=0.03)
    np.testing.assert_array_equal(X, p.sample(20000, 3, random_state=0))
    with pytest.raises(InputError):
        GaussianAR1().sample(3, 3)
    with pytest.raises(InputError):
        p.sample(0, 3)


def fit_errors(p, n, T, seed):
    X = p.sample(n, T, random_state=seed)
    q = GaussianAR1().fit(X)
    return (np.linalg.norm(q.F_ - p.F_) / np.linalg.norm(p.F_),
            np.linalg.norm(q.noise_cov_ - p.noise_cov_) / np.linalg.norm(p.noise_cov_),
            np.linalg.norm(q.intercept_ - p.intercept_) / np.linalg.norm(p.intercept_))


def test_fit_recovers_and_error_shrinks():
    p = planted()
    small = np.array([fit_errors(p, 200, 20, s) for s in range(3)]).mean(0)
    big = np.array([fit_errors(p, 3200, 20, s) for s in range(3)]).mean(0)
    assert np.all(big < 0.03), big
    # 16x the data: error should fall ~4x; demand at least 2x
    assert np.all(big < small / 2), (small, big)


def test_fit_initial_law_from_first_steps():
    p = planted()
    X = p.sample(4000, 2, random_state=3)
    q = GaussianAR1().fit(X)
    np.testing.assert_allclose(q.initial_mean_, X[:, 0].mean(0), atol=1e-12)
    np.testing.assert_allclose(q.initial_cov_, np.cov(X[:, 0], rowvar=False), atol=1e-12)
    # too few sequences: stationary law of the fitted chain
    q1 = GaussianAR1().fit(p.sample(3, 400, random_state=4))
    np.testing.assert_allclose(q1.F_ @ q1.initial_cov_ @ q1.F_.T + q1.noise_cov_, q1.initial_cov_, atol=1e-10)


def _ls_reference(seqs):
    prev = np.concatenate([s[:-1] for s in seqs])
    cur = np.concatenate([s[1:] for s in seqs])
    Z = np.hstack([prev, np.ones((len(prev), 1))])
    B = np.linalg.lstsq(Z, cur, rcond=None)[0]
    R = cur - Z @ B
    d = cur.shape[1]
    return B[:d].T, B[d], R.T @ R / (len(cur) - d - 1)


def test_fit_matches_hand_least_squares_and_ragged():
    p = planted()
    rng = np.random.default_rng(5)
    n, T = 40, 15
    X = p.sample(n, T, random_state=6)
    lengths = rng.integers(1, T + 1, n)
    lengths[0] = T
    seqs = [X[i, : lengths[i]] for i in range(n)]
    F, b, S = _ls_reference(seqs)
    Xp = X.copy()
    Xp[np.arange(T)[None, :] >= lengths[:, None]] = np.nan
    q = GaussianAR1().fit(Xp, lengths)
    np.testing.assert_allclose(q.F_, F, atol=1e-10)
    np.testing.assert_allclose(q.intercept_, b, atol=1e-10)
    np.testing.assert_allclose(q.noise_cov_, S, atol=1e-10)
    # same sequences stored with more padding, in another order, cut in time: same fit
    perm = rng.permutation(n)
    X2 = np.full((n, T + 6, 4), np.nan)
    for k, i in enumerate(perm):
        X2[k, : lengths[i]] = seqs[i]
    for chunk in (1 << 17, 7, 1):
        q2 = GaussianAR1().fit(X2, lengths[perm], chunk_steps=chunk)
        np.testing.assert_allclose(q2.F_, q.F_, atol=1e-12)
        np.testing.assert_allclose(q2.intercept_, q.intercept_, atol=1e-12)
        np.testing.assert_allclose(q2.noise_cov_, q.noise_cov_, atol=1e-12)
        np.testing.assert_allclose(q2.initial_mean_, q.initial_mean_, atol=1e-12)
        np.testing.assert_allclose(q2.initial_cov_, q.initial_cov_, atol=1e-12)


@pytest.mark.parametrize("threads", [1, 2])
def test_wide_inputs_sums_match_hand_least_squares(threads):
    """d >= 64 on the route of whole sequences: numpy's symmetric product on one thread, torch's
    on more (the two pools called in turn stall each other); both are the hand least squares."""
    d = 70
    p = GaussianAR1.random(d, rho=0.5, random_state=3)
    X = p.sample(60, 12, random_state=4)
    F, b, S = _ls_reference(list(X))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        q = GaussianAR1().fit(X)
    finally:
        torch.set_num_threads(before)
    np.testing.assert_allclose(q.F_, F, atol=1e-10)
    np.testing.assert_allclose(q.intercept_, b, atol=1e-10)
    np.testing.assert_allclose(q.noise_cov_, S, atol=1e-10)


def test_fit_independent_of_chunks_for_one_long_sequence():
    p = planted()
    X = p.sample(1, 500, random_state=7)
    ref = GaussianAR1().fit(X)
    for chunk in (64, 99, 1000):
        q = GaussianAR1().fit(X, chunk_steps=chunk)
        np.testing.assert_allclose(q.F_, ref.F_, atol=1e-12)
        np.testing.assert_allclose(q.noise_cov_, ref.noise_cov_, atol=1e-12)
    F, b, S = _ls_reference([X[0]])
    np.testing.assert_allclose(ref.F_, F, atol=1e-10)


def test_fit_errors():
    p = planted()
    with pytest.raises(InputError, match="too few transitions"):
        GaussianAR1().fit(p.sample(1, 5, random_state=0))
    X = p.sample(50, 10, random_state=0)
    with pytest.raises(InputError, match="too few transitions"):
        GaussianAR1().fit(X, lengths=np.ones(50, dtype=int))
    Xc = X.copy()
    Xc[..., 3] = 2.0 * Xc[..., 0] - Xc[..., 1]
    with pytest.raises(IllConditionedError):
        GaussianAR1().fit(Xc)
    Xk = X.copy()
    Xk[..., 2] = 1.5  # a constant input: collinear with the intercept
    with pytest.raises(IllConditionedError):
        GaussianAR1().fit(Xk)
    Xn = X.copy()
    Xn[3, 4, 1] = np.nan
    with pytest.raises(InputError):
        GaussianAR1().fit(Xn)
    with pytest.raises(InputError):
        GaussianAR1().fit(X[0])


def test_constructor_errors():
    with pytest.raises(IllConditionedError):
        GaussianAR1(F=0.5 * np.eye(3), noise_cov=np.diag([1.0, 1.0, 0.0]))
    with pytest.raises(InputError):
        GaussianAR1(F=1.1 * np.eye(3), noise_cov=np.eye(3))
    with pytest.raises(InputError):
        GaussianAR1(F=np.ones((3, 2)), noise_cov=np.eye(3))
    with pytest.raises(InputError):
        GaussianAR1(F=np.eye(3) * 0.5, noise_cov=np.eye(2))
    # an unstable chain is fine with an explicit initial law
    GaussianAR1(F=1.1 * np.eye(3), noise_cov=np.eye(3), initial_mean=np.zeros(3), initial_cov=np.eye(3))


# ------------------------------------------------------------------ scores


def one_sided_reference(X, p):
    """Hand computation of docs/method.md, 'Scores as sums of one-dimensional terms' (Gaussian), with t = 0."""
    P, P0 = np.linalg.inv(p.noise_cov_), np.linalg.inv(p.initial_cov_)
    s = np.empty_like(X)
    s[:, 0] = (X[:, 0] - p.initial_mean_) @ P0
    s[:, 1:] = (X[:, 1:] - X[:, :-1] @ p.F_.T - p.intercept_) @ P
    lam = np.empty(X.shape[:2] + (X.shape[2],) * 2)
    lam[:, 0], lam[:, 1:] = P0, P
    return s, lam


def two_sided_reference(X, p, lengths):
    """Score of x_t given all others: density prop. to p(x_t|x_{t-1}) p(x_{t+1}|x_t), ends dropped.
    Written in the form of docs/method.md, 'Scores': Lambda x_t - P F x_{t-1} - F^T P x_{t+1} (zero intercept)."""
    assert np.allclose(p.intercept_, 0)
    F, P, P0, m0 = p.F_, np.linalg.inv(p.noise_cov_), np.linalg.inv(p.initial_cov_), p.initial_mean_
    n, T, d = X.shape
    s = np.zeros_like(X)
    lam = np.zeros((n, T, d, d))
    for i in range(n):
        L = T if lengths is None else lengths[i]
        for t in range(L):
            first_P = P0 if t == 0 else P
            Lam = first_P + (F.T @ P @ F if t < L - 1 else 0)
            v = Lam @ X[i, t]
            v -= P0 @ m0 if t == 0 else P @ F @ X[i, t - 1]
            if t < L - 1:
                v -= F.T @ P @ X[i, t + 1]
            s[i, t], lam[i, t] = v, Lam
    return s, lam


def _terms(p, X, lengths=None, t0=0, two_sided=False):
    """``(s, Lambda_t)`` per step, with ``S_2 = s s^T - Lambda_t``."""
    sc = p.score_terms(torch.as_tensor(X), None if lengths is None else torch.as_tensor(lengths),
                       t0=t0, two_sided=two_sided)
    return sc.s.numpy(), sc.second_order_matrix().numpy()


def test_one_sided_closed_form_including_first_step():
    p = planted()
    X = p.sample(6, 8, random_state=1)
    s_ref, lam_ref = one_sided_reference(X, p)
    s, lam = _terms(p, X)
    np.testing.assert_allclose(s, s_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lam, lam_ref, rtol=1e-12, atol=1e-12)
    # a window with t0 > 0: its first column has no predecessor and is unusable, the rest agree
    t0 = 3
    sw, lw = _terms(p, X[:, t0:], t0=t0)
    np.testing.assert_allclose(sw[:, 1:], s_ref[:, t0 + 1:], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lw, lam_ref[:, t0:], rtol=1e-12, atol=1e-12)


def test_s2_closed_form_is_hessian_over_density():
    """S_1 = s and S_2 = s s^T - Lambda equal (-1)^m grad^m p / p of the Gaussian transition density."""
    p = planted(d=3)
    P = np.linalg.inv(p.noise_cov_)
    rng = np.random.default_rng(0)
    xprev, x = rng.standard_normal(3), rng.standard_normal(3)
    mean = p.F_ @ xprev + p.intercept_
    logp = lambda z: -0.5 * (z - mean) @ P @ (z - mean)  # noqa: E731
    s = P @ (x - mean)
    # finite-difference check of S_1 = -grad log p and S_2 = grad^2 p / p
    h = 1e-5
    e = np.eye(3)
    grad = np.array([(logp(x + h * e[i]) - logp(x - h * e[i])) / (2 * h) for i in range(3)])
    np.testing.assert_allclose(s, -grad, rtol=1e-6)
    pdf = lambda z: np.exp(logp(z))  # noqa: E731
    hess = np.array([[(pdf(x + h * e[i] + h * e[j]) - pdf(x + h * e[i] - h * e[j]) - pdf(x - h * e[i] + h * e[j])
                       + pdf(x - h * e[i] - h * e[j])) / (4 * h * h) for j in range(3)] for i in range(3)]) / pdf(x)
    Xw = np.stack([xprev, x])[None]
    sw, lam = _terms(p, Xw, t0=1)
    np.testing.assert_allclose(sw[0, 1], s, rtol=1e-12)
    np.testing.assert_allclose(np.outer(sw[0, 1], sw[0, 1]) - lam[0, 1], hess, rtol=1e-4, atol=1e-6)


def test_two_sided_closed_form_with_ends_and_ragged():
    F = 0.5 * np.linalg.qr(np.random.default_rng(2).standard_normal((4, 4)))[0]
    L = np.random.default_rng(3).standard_normal((4, 4)) * 0.3 + np.eye(4)
    p = GaussianAR1(F=F, noise_cov=L @ L.T)  # zero intercept, stationary initial law
    X = p.sample(5, 7, random_state=4)
    s_ref, lam_ref = two_sided_reference(X, p, None)
    s, lam = _terms(p, X, two_sided=True)
    np.testing.assert_allclose(s, s_ref, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(lam, lam_ref, rtol=1e-11, atol=1e-11)
    # middle steps: Lambda = P + F^T P F
    P = np.linalg.inv(p.noise_cov_)
    np.testing.assert_allclose(lam[0, 3], P + F.T @ P @ F, rtol=1e-12)
    np.testing.assert_allclose(lam[0, -1], P, rtol=1e-12)
    # ragged: zero padding, each sequence ends at its own length (length 1: initial law only)
    lengths = np.array([7, 1, 3, 2, 6])
    Xz = X.copy()
    Xz[np.arange(7)[None, :] >= lengths[:, None]] = 0.0
    s_ref, lam_ref = two_sided_reference(Xz, p, lengths)
    s, lam = _terms(p, Xz, lengths, two_sided=True)
    valid = np.arange(7)[None, :] < lengths[:, None]
    np.testing.assert_allclose(s[valid], s_ref[valid], rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(lam[valid], lam_ref[valid], rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(lam[1, 0], np.linalg.inv(p.initial_cov_), rtol=1e-12)
    # NaN padding is never read: the same scores on every valid step
    Xn = X.copy()
    Xn[~valid] = np.nan
    s_nan, _ = _terms(p, Xn, lengths, two_sided=True)
    np.testing.assert_allclose(s_nan[valid], s_ref[valid], rtol=1e-11, atol=1e-11)
    # a window cut in time (t0 > 0, does not reach the end): inner columns agree
    t0, W = 2, 3
    sw, lw = _terms(p, X[:, t0:t0 + W], torch.full((5,), 7), t0=t0, two_sided=True)
    s_full, lam_full = two_sided_reference(X, p, None)
    np.testing.assert_allclose(sw[:, 1:-1], s_full[:, t0 + 1:t0 + W - 1], rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(lw[:, 1:-1], lam_full[:, t0 + 1:t0 + W - 1], rtol=1e-11, atol=1e-11)
    # a window that ends the sequences: its last column is the true end
    sw, lw = _terms(p, X[:, 4:], None, t0=4, two_sided=True)
    np.testing.assert_allclose(sw[:, 1:], s_full[:, 5:], rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(lw[:, 1:], lam_full[:, 5:], rtol=1e-11, atol=1e-11)


def test_score_terms_errors():
    p = planted()
    with pytest.raises(InputError):
        GaussianAR1().score_terms(torch.zeros(1, 3, 4))
    with pytest.raises(InputError):
        p.score_terms(torch.zeros(1, 3, 5))


@pytest.mark.parametrize("two_sided", [False, True])
def test_stein_identity_empirical(two_sided):
    """E[g(x_t) S_1] = E[grad g(x_t)] and E[g(x_t) S_2] = E[hess g(x_t)] with g(x) = x_0^2 + x_1 + x_1 x_2."""
    p = GaussianAR1.random(3, rho=0.5, random_state=0)
    X = p.sample(100000, 4, random_state=1)
    s, lam = _terms(p, X, two_sided=two_sided)
    x, s, lam = X.reshape(-1, 3), s.reshape(-1, 3), lam.reshape(-1, 3, 3)
    g = x[:, 0] ** 2 + x[:, 1] + x[:, 1] * x[:, 2]
    lhs1 = (g[:, None] * s).mean(0)
    rhs1 = np.stack([2 * x[:, 0], 1 + x[:, 2], x[:, 1]], 1).mean(0)
    np.testing.assert_allclose(lhs1, rhs1, atol=0.03)
    S2 = s[:, :, None] * s[:, None, :] - lam
    lhs2 = (g[:, None, None] * S2).mean(0)
    rhs2 = np.array([[2.0, 0, 0], [0, 0, 1], [0, 1, 0]])
    np.testing.assert_allclose(lhs2, rhs2, atol=0.08)
    # a function of the next input: E[x_{t+1} S_1(x_t | x_{t-1})] = F E[x_t s_t^T] = F (one-sided score,
    # x_{t+1} not conditioned on), but 0 for the two-sided score (x_{t+1} is conditioned on)
    s_all = _terms(p, X, two_sided=two_sided)[0][:, 1:-1].reshape(-1, 3)
    x_next = X[:, 2:].reshape(-1, 3)
    want = np.zeros((3, 3)) if two_sided else p.F_
    np.testing.assert_allclose(x_next.T @ s_all / len(s_all), want, atol=0.03)
