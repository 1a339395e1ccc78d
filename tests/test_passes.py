"""The pass seam: per-chunk functions with declared reductions, fused passes equal to separate
ones and to dense numpy sums, blocks (median of means) independent of the memory cap on chunks,
and the thread setting."""

import numpy as np
import pytest
import torch

import spectral_rnn.moments as moments
from spectral_rnn import GaussianAR1, InputError, IORNN, SpectralBRNN, SpectralIORNN, StepStream, make_planted
from spectral_rnn.recurrence import InstrumentMoments, instrument_moments
from spectral_rnn.threads import limit_threads, resolve_threads


def small(seed=0, n=40, T=9, d_x=6, d_h=3, d_y=5):
    proc = GaussianAR1.random(d_x, random_state=seed)
    X = proc.sample(n, T, random_state=seed + 1)
    m = IORNN.random(d_x, d_h, d_y, random_state=seed + 2, input_norm=1.0 if d_x > 10 else None)  # wide: bounded drive
    return proc, X, m.simulate(X, noise_std=0.1, random_state=seed + 3)


@pytest.mark.parametrize("d_x", [6, 24])  # 24 > 2 (r + 1): the two lags' sums as one product of shifted copies
def test_instrument_moments_equal_dense_numpy_sums(d_x):
    """phi_ax, phi_lag and r against sums written out in numpy, step by step (past instruments)."""
    proc, X, Y = small(d_x=d_x)
    rng = np.random.default_rng(0)
    A = rng.standard_normal((3, d_x))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    Wp = rng.standard_normal((5, 3))
    (got,) = instrument_moments(StepStream(X, Y, None, proc, chunk_steps=7), [(A, Wp, 2, "past")])
    assert isinstance(got, InstrumentMoments)
    P, P0 = np.linalg.inv(proc.noise_cov), np.linalg.inv(proc.initial_cov)
    n, T, d = X.shape
    phi_ax = phi_lag = r = phi = 0.0
    for i in range(n):
        for t in range(T):
            x1 = X[i, t - 1] if t >= 1 else np.zeros(d)
            x2 = X[i, t - 2] if t >= 2 else np.zeros(d)
            ylag = Y[i, t - 1] if t >= 1 else np.zeros(5)
            f = np.concatenate([[1.0], x1, x2, (A @ x1) ** 2])
            if t == 0:
                s, L = P0 @ (X[i, 0] - proc.initial_mean), P0
            else:
                s, L = P @ (X[i, t] - proc.F @ X[i, t - 1] - proc.intercept), P
            S2 = np.outer(s, s) - L
            s2 = np.einsum("ji,ik,jk->j", A, S2, A)
            phi = phi + f
            phi_ax = phi_ax + np.outer(f, A @ X[i, t])
            phi_lag = phi_lag + np.outer(f, ylag @ Wp)
            r = r + np.outer(f, (Y[i, t] @ Wp) * s2)
    N = n * T
    for key, want in (("phi", phi), ("phi_ax", phi_ax), ("phi_lag", phi_lag), ("r", r)):
        np.testing.assert_allclose(getattr(got, key), want / N, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("two_sided", [False, True])
def test_fused_passes_equal_separate_ones(two_sided):
    proc, X, Y = small(n=30, T=12)
    rng = np.random.default_rng(1)
    A = rng.standard_normal((4, 6))
    Wp = rng.standard_normal((5, 4))
    Q = np.linalg.qr(rng.standard_normal((6, 4)))[0]
    st = StepStream(X, Y, None, proc, two_sided=two_sided, chunk_steps=25)
    both = instrument_moments(st, [(A[:2], Wp[:, :2], 1, "past"), (A[2:], Wp[:, 2:], 2, "future")])
    one = instrument_moments(st, [(A[:2], Wp[:, :2], 1, "past")]) + instrument_moments(st, [(A[2:], Wp[:, 2:], 2, "future")])
    for b, o in zip(both, one):
        for key in ("phi", "phi_ax", "phi_lag", "r"):
            np.testing.assert_allclose(getattr(b, key), getattr(o, key), rtol=1e-13, atol=1e-15)
    # the lag moments computed inside the project pass equal a pass of their own
    fused = StepStream(X, Y, None, proc, two_sided=two_sided, chunk_steps=25)
    fused.project(Q, lags=(1, -1))
    alone = StepStream(X, Y, None, proc, two_sided=two_sided, chunk_steps=25).lag_score_moments(Wp, (1, -1))
    for k in (1, -1):
        np.testing.assert_allclose(fused.lag_score_moments(Wp, (1, -1))[k], alone[k], rtol=1e-12, atol=1e-14)
    # and the lag moment is E[ytil_t s_{t-k}^T] written out: y_t against the score of x_{t-k}
    sc = proc.score_terms(torch.as_tensor(X), None, two_sided=two_sided).s.numpy()
    want = np.einsum("ntd,nte->de", Y[:, 1:] @ Wp, sc[:, :-1]) / (30 * 12)
    np.testing.assert_allclose(alone[1], want, rtol=1e-10, atol=1e-13)


def test_blocks_do_not_depend_on_the_memory_cap(monkeypatch):
    """With median of means, chunks capped for memory are grouped into the same blocks."""
    proc, X, Y = small(n=200, T=10)
    Q = np.linalg.qr(np.random.default_rng(2).standard_normal((6, 3)))[0]
    ref = StepStream(X, Y, None, proc, blocks=4)
    want, n_blocks = ref.project(Q), None
    sums = ref._sums()
    list(ref.windows(sums))
    n_blocks = len(sums.parts)
    assert n_blocks == 4
    monkeypatch.setattr(moments, "CHUNK_ENTRIES", 11 * 256)  # windows of 250 steps, blocks of 500
    capped = StepStream(X, Y, None, proc, blocks=4)
    assert capped.window_steps < capped.block_steps
    sums = capped._sums()
    assert len(list(capped.windows(sums))) > 4 and len(sums.parts) == 4
    np.testing.assert_allclose(capped.project(Q), want, rtol=1e-12, atol=1e-14)


def test_reduce_declares_sum_and_max():
    proc, X, Y = small(n=20, T=5)
    st = StepStream(X, Y, None, proc, chunk_steps=10)

    def fn(w):
        y = w.y
        return {"s": y.sum(0), "max:big": torch.stack([y.abs().max(), y.sum()])}

    m = st.reduce(fn)
    np.testing.assert_allclose(m["s"], Y.reshape(-1, 5).mean(0), rtol=1e-13)
    assert m["max:big"][0] == pytest.approx(np.abs(Y).max())


def test_threads_setting():
    assert 1 <= resolve_threads(None) <= max(1, torch.get_num_threads())
    assert resolve_threads(3) == 3
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(InputError):
            resolve_threads(bad)
    before = torch.get_num_threads()
    with limit_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    # torch gets the fit's threads, the BLAS pool one (the two pools called in turn stall each other)
    threadpoolctl = pytest.importorskip("threadpoolctl")
    blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
    if blas:
        with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
            with limit_threads(2):
                assert torch.get_num_threads() == 2
                assert all(p["num_threads"] == 1 for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
            with limit_threads(2, blas=None):
                assert all(p["num_threads"] == 2 for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
            assert all(p["num_threads"] == 2 for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas")
        assert torch.get_num_threads() == before
    p = make_planted("iornn", 6, 2, 5, n_steps=20_000, random_state=0)
    a = SpectralIORNN(2, random_state=0, n_threads=1).fit(p.X, p.Y)
    assert torch.get_num_threads() == before
    b = SpectralIORNN(2, random_state=0, n_threads=2).fit(p.X, p.Y)
    np.testing.assert_allclose(a.A1_, b.A1_, rtol=1e-10)
    with pytest.raises(InputError, match="n_threads"):
        SpectralBRNN(2, n_threads=0).fit(p.X, p.Y)


@pytest.mark.parametrize("cls", [SpectralIORNN, SpectralBRNN])
def test_auto_fallback_reuses_the_pass(cls, monkeypatch):
    """robust='auto' falling back to median of means (one extreme sequence) gives robust='on''s estimate,
    and without a second project pass (the pass keeps both averages)."""
    p = make_planted("brnn" if cls is SpectralBRNN else "iornn", 6, 1, 5, n_steps=40_000, random_state=0)
    Y = p.Y.copy()
    Y[7] *= 300.0  # one sequence dominates the plain means
    calls = []
    real = StepStream.project

    def counting(self, *a, **k):
        calls.append(1)
        return real(self, *a, **k)

    monkeypatch.setattr(StepStream, "project", counting)
    auto = cls(1, random_state=0, robust="auto").fit(p.X, Y)
    assert auto.robust_ and len(calls) == 1
    on = cls(1, random_state=0, robust="on").fit(p.X, Y)
    np.testing.assert_allclose(auto.A1_, on.A1_, rtol=1e-12)
    np.testing.assert_allclose(auto.U_, on.U_, rtol=1e-12)
