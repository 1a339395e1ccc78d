"""Streamed moments: contractions equal the dense tensor, chunking and padding change nothing,
and the moment tensor of a planted IO-RNN has the CP form of docs/method.md, section 'The moment identity'."""

import itertools

import numpy as np
import pytest

from _helpers import ragged
from spectral_rnn import IORNN, GaussianAR1, StepStream, cross_moment
from spectral_rnn.recurrence import instrument_moments

FIELDS = ("phi", "phi_ax", "phi_lag", "r")


def planted_tensor(m):
    """sum_j 2 c2 a2_j (x) a1_j (x) a1_j (quadratic activation: mu_j = 2 c2)."""
    return np.einsum("jy,ja,jb->yab", 2 * m.activation.coef(2) * m.A2, m.A1, m.A1)


def small_data(seed=0, n=60, T=12, d_x=6, d_h=3, d_y=5):
    proc = GaussianAR1.random(d_x, random_state=seed)
    X = proc.sample(n, T, random_state=seed + 1)
    m = IORNN.random(d_x, d_h, d_y, random_state=seed + 2)
    Y = m.simulate(X, noise_std=0.1, random_state=seed + 3)
    return proc, X, Y, m


@pytest.mark.parametrize("two_sided", [False, True])
def test_sketch_and_project_are_contractions_of_dense(two_sided):
    proc, X, Y, _ = small_data()
    T = cross_moment(X, Y, proc, two_sided=two_sided)
    assert T.shape == (5, 6, 6)
    np.testing.assert_allclose(T, T.transpose(0, 2, 1), atol=1e-13)
    rng = np.random.default_rng(0)
    Theta, Omega = rng.standard_normal((5, 4)), rng.standard_normal((6, 4))
    stream = StepStream(X, Y, None, proc, two_sided=two_sided)
    sk = stream.sketch(Theta, Omega)
    # every pair (theta_a, omega_b): column a * k + b
    want = np.einsum("yib,ya,bk->iak", T, Theta, Omega).reshape(6, -1)
    np.testing.assert_allclose(sk, want, rtol=1e-11, atol=1e-13)
    Q = np.linalg.qr(rng.standard_normal((6, 3)))[0]
    pr = stream.project(Q)
    np.testing.assert_allclose(pr, np.einsum("yab,ap,bq->ypq", T, Q, Q), rtol=1e-11, atol=1e-13)


def test_dense_moment_matches_hand_computation():
    proc, X, Y, _ = small_data(n=8, T=5)
    P, P0 = np.linalg.inv(proc.noise_cov_), np.linalg.inv(proc.initial_cov_)
    acc = np.zeros((5, 6, 6))
    for i in range(8):
        for t in range(5):
            if t == 0:
                s, L = P0 @ (X[i, 0] - proc.initial_mean_), P0
            else:
                s, L = P @ (X[i, t] - proc.F_ @ X[i, t - 1] - proc.intercept_), P
            acc += np.einsum("y,ab->yab", Y[i, t], np.outer(s, s) - L)
    np.testing.assert_allclose(cross_moment(X, Y, proc), acc / 40, rtol=1e-11, atol=1e-13)
    # order 3 is symmetric in its three input modes; order 1 is E[y s^T]
    T3 = cross_moment(X, Y, proc, order=3)
    assert T3.shape == (5, 6, 6, 6)
    for perm in [(0, 2, 1, 3), (0, 3, 2, 1), (0, 1, 3, 2)]:
        np.testing.assert_allclose(T3, T3.transpose(perm), atol=1e-12)
    with pytest.raises(ValueError):
        cross_moment(X, Y, proc, order=4)


@pytest.mark.parametrize("two_sided", [False, True])
def test_independent_of_chunk_steps(two_sided):
    proc, X, Y, _ = small_data()
    rng = np.random.default_rng(1)
    Theta, Omega = rng.standard_normal((5, 4)), rng.standard_normal((6, 4))
    Q = np.linalg.qr(rng.standard_normal((6, 3)))[0]
    ref = StepStream(X, Y, None, proc, two_sided=two_sided)
    ref_sk, ref_pr = ref.sketch(Theta, Omega), ref.project(Q)
    # 7 and 5 cut each sequence of 12 steps in time; 1 is one step per chunk; 36 groups whole sequences
    for chunk in (36, 13, 12, 7, 5, 1):
        st = StepStream(X, Y, None, proc, two_sided=two_sided, chunk_steps=chunk)
        np.testing.assert_allclose(st.sketch(Theta, Omega), ref_sk, rtol=1e-11, atol=1e-13)
        np.testing.assert_allclose(st.project(Q), ref_pr, rtol=1e-11, atol=1e-13)


def test_one_long_sequence_cut_in_time():
    proc, X, Y, _ = small_data(n=1, T=3000)
    rng = np.random.default_rng(2)
    Theta, Omega = rng.standard_normal((5, 4)), rng.standard_normal((6, 4))
    Q = np.linalg.qr(rng.standard_normal((6, 3)))[0]
    A_hat = rng.standard_normal((3, 6))
    A_hat /= np.linalg.norm(A_hat, axis=1, keepdims=True)
    Wp = rng.standard_normal((5, 3))
    outs = []
    for chunk in (1 << 16, 1000, 257, 2):
        st = StepStream(X, Y, None, proc, chunk_steps=chunk)
        (im,) = instrument_moments(st, [(A_hat, Wp, 1, "past")])
        outs.append((st.sketch(Theta, Omega), st.project(Q), im))
    for sk, pr, im in outs[1:]:
        np.testing.assert_allclose(sk, outs[0][0], rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(pr, outs[0][1], rtol=1e-10, atol=1e-13)
        for k in FIELDS:
            np.testing.assert_allclose(getattr(im, k), getattr(outs[0][2], k), rtol=1e-10, atol=1e-13)


def _per_sequence_mean(fn, X, Y, lengths):
    """Step-weighted mean of fn(stream of one unpadded sequence)."""
    tot = 0.0
    for i, L in enumerate(lengths):
        tot = tot + L * fn(X[i : i + 1, :L], Y[i : i + 1, :L])
    return tot / lengths.sum()


@pytest.mark.parametrize("two_sided", [False, True])
def test_ragged_nan_padding_equals_unpadded(two_sided):
    proc, X, Y, _ = small_data(n=25)
    Xp, Yp, lengths = ragged(X, Y)
    rng = np.random.default_rng(3)
    Theta, Omega = rng.standard_normal((5, 4)), rng.standard_normal((6, 4))
    Q = np.linalg.qr(rng.standard_normal((6, 3)))[0]

    def stream(Xs, Ys, L=None, chunk=1 << 16):
        return StepStream(Xs, Ys, L, proc, two_sided=two_sided, chunk_steps=chunk)

    want_T = _per_sequence_mean(lambda a, b: cross_moment(a, b, proc, two_sided=two_sided), X, Y, lengths)
    want_sk = _per_sequence_mean(lambda a, b: stream(a, b).sketch(Theta, Omega), X, Y, lengths)
    want_pr = _per_sequence_mean(lambda a, b: stream(a, b).project(Q), X, Y, lengths)
    np.testing.assert_allclose(cross_moment(Xp, Yp, proc, lengths=lengths, two_sided=two_sided), want_T,
                               rtol=1e-10, atol=1e-13)
    for chunk in (1 << 16, 5):
        st = stream(Xp, Yp, lengths, chunk)
        assert st.n_steps == lengths.sum()
        sk, pr = st.sketch(Theta, Omega), st.project(Q)
        assert np.all(np.isfinite(sk)) and np.all(np.isfinite(pr))
        np.testing.assert_allclose(sk, want_sk, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(pr, want_pr, rtol=1e-10, atol=1e-13)


def test_instrument_moments_ragged_and_chunks():
    proc, X, Y, _ = small_data(n=25)
    Xp, Yp, lengths = ragged(X, Y, seed=1)
    rng = np.random.default_rng(4)
    A_hat = rng.standard_normal((3, 6))
    A_hat /= np.linalg.norm(A_hat, axis=1, keepdims=True)
    Wp = rng.standard_normal((5, 3))
    for order in (1, 2):
        want = {}
        for i, L in enumerate(lengths):
            (im,) = instrument_moments(StepStream(X[i : i + 1, :L], Y[i : i + 1, :L], None, proc),
                                       [(A_hat, Wp, order, "past")])
            for k in FIELDS:
                want[k] = want.get(k, 0.0) + L * getattr(im, k)
        for chunk in (1 << 16, 5, 1):
            (got,) = instrument_moments(StepStream(Xp, Yp, lengths, proc, chunk_steps=chunk),
                                        [(A_hat, Wp, order, "past")])
            for k in want:
                np.testing.assert_allclose(getattr(got, k), want[k] / lengths.sum(), rtol=1e-10, atol=1e-13)
            # the largest |a_j . x_t| over the valid steps (padding never counts), for the stability check
            top = np.max([np.abs(X[i, :L] @ A_hat.T).max(axis=0) for i, L in enumerate(lengths)], axis=0)
            np.testing.assert_allclose(got.ax_max, top, rtol=1e-13)
    # E[phi] starts with the constant instrument 1
    assert got.phi[0] == pytest.approx(1.0)


def _rel_err_planted(N, seed):
    d_x, d_h, d_y, T = 10, 4, 8, 10
    proc = GaussianAR1.random(d_x, random_state=seed)
    X = proc.sample(N // T, T, random_state=seed)
    m = IORNN.random(d_x, d_h, d_y, random_state=seed)
    Y = m.simulate(X, noise_std=0.1, random_state=seed + 100)
    Tp = planted_tensor(m)
    T_true = cross_moment(X, Y, proc)  # known input law
    T_fit = cross_moment(X, Y, GaussianAR1().fit(X))  # input law fitted from X
    return (np.linalg.norm(T_true - Tp) / np.linalg.norm(Tp), np.linalg.norm(T_fit - Tp) / np.linalg.norm(Tp))


def test_planted_iornn_moment_tensor_converges():
    """T = E[y_t (x) S_2] -> sum_j 2 c2 a2_j (x) a1_j (x) a1_j, error falling like 1/sqrt(N)."""
    small = np.mean([_rel_err_planted(10_000, s) for s in (0, 1)], axis=0)
    big = np.mean([_rel_err_planted(160_000, s) for s in (0, 1)], axis=0)
    # measured ~0.17 -> ~0.045 (16x data, 1/sqrt(N) predicts 4x)
    assert np.all(big < 0.08), big
    assert np.all(big < small / 2.5), (small, big)


@pytest.mark.slow
def test_planted_iornn_moment_tensor_converges_large():
    errs = {N: np.mean([_rel_err_planted(N, s) for s in range(3)], axis=0) for N in (20_000, 320_000)}
    assert np.all(errs[320_000] < 0.05), errs
    assert np.all(errs[320_000] < errs[20_000] / 2.5), errs


@pytest.mark.parametrize("order", [1, 2, 3])
def test_stein_cross_moment_orders(order):
    """Outputs that are known functions of x_t: E[y (x) S_m] = E[grad^m y] for m = 1, 2, 3.
    y = (x_0, x_0 x_1, x_0 x_1 x_2): the m-th derivative of output m is the symmetrised unit tensor."""
    proc = GaussianAR1.random(3, random_state=0)
    X = proc.sample(40_000, 5, random_state=1)
    Y = np.stack([X[..., 0], X[..., 0] * X[..., 1], X[..., 0] * X[..., 1] * X[..., 2]], axis=-1)
    T = cross_moment(X, Y, proc, order=order)
    want = np.zeros((3,) * order)
    for idx in itertools.permutations(range(order)):
        want[idx] = 1.0
    np.testing.assert_allclose(T[order - 1], want, atol=0.1)
    # lower-degree outputs have zero m-th derivative
    for j in range(order - 1):
        np.testing.assert_allclose(T[j], 0.0, atol=0.1)


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("d_y", [3, 30])
def test_projection_reads_wide_outputs_once(two_sided, d_y, monkeypatch):
    """The projection contracts y with the triangle of u u^T and kappa through one operand built in
    blocks of rows (several per chunk here), for narrow and wide outputs (d_y = 30 above every
    part's width), and sums the lagged scores offset in time: the dense tensor and the lag moments."""
    import torch

    from spectral_rnn import moments

    monkeypatch.setattr(moments, "TEMP_ENTRIES", 400)  # several blocks of rows per chunk
    proc, X, Y, _ = small_data(d_x=4, d_h=2, d_y=d_y)
    T = cross_moment(X, Y, proc, two_sided=two_sided)
    Q = np.linalg.qr(np.random.default_rng(5).standard_normal((4, 2)))[0]
    stream = StepStream(X, Y, None, proc, two_sided=two_sided, chunk_steps=100)
    np.testing.assert_allclose(stream.project(Q, lags=(1, -1)), np.einsum("yab,ap,bq->ypq", T, Q, Q),
                               rtol=1e-11, atol=1e-13)
    sc = proc.score_terms(torch.as_tensor(X), None, two_sided=two_sided).s.numpy()
    Wp = np.eye(d_y)[:, :2]
    lag = stream.lag_score_moments(Wp, (1, -1))
    n = X.shape[0] * X.shape[1]
    np.testing.assert_allclose(lag[1], np.einsum("ntd,nte->de", Y[:, 1:] @ Wp, sc[:, :-1]) / n, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(lag[-1], np.einsum("ntd,nte->de", Y[:, :-1] @ Wp, sc[:, 1:]) / n, rtol=1e-10,
                               atol=1e-13)


@pytest.mark.parametrize("n, W", [(1, 1), (1, 5), (4, 1), (4, 2), (3, 7)])
def test_shifted_gram_equals_the_shifted_copy(n, W):
    """``Window._shifted_gram(A, B, k)`` (one product of the flat arrays offset by k rows, less the
    pairs across two sequences) equals ``A^T`` times ``B`` shifted in time with zero fill, for every
    offset, including offsets past the window."""
    import torch

    from spectral_rnn.moments import Window

    rng = np.random.default_rng(n * 10 + W)
    A = torch.as_tensor(rng.standard_normal((n, W, 3)))
    B = torch.as_tensor(rng.standard_normal((n, W, 4)))
    for k in range(-W - 1, W + 2):
        Bk = torch.zeros_like(B)  # Bk[:, u] = B[:, u + k] where that step is in the window
        for u in range(W):
            if 0 <= u + k < W:
                Bk[:, u] = B[:, u + k]
        want = A.reshape(-1, 3).T @ Bk.reshape(-1, 4)
        np.testing.assert_allclose(Window._shifted_gram(A, B, k).numpy(), want.numpy(), atol=1e-12, err_msg=f"k={k}")
