"""Planted-truth tests of the bidirectional spectral estimator (issue 3)."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_rnn import (
    BRNN,
    IORNN,
    GaussianAR1,
    IllConditionedError,
    InputError,
    SpectralBRNN,
    make_planted,
    parameter_errors,
    prediction_error,
)

D_X, D_H, D_Y, T = 12, 3, 8, 10


def planted(n_steps: int, seed: int, length: int = T):
    """The issue-3 planted BRNN: f = g = u + 0.5 u^2, input std 0.4, ||U|| = ||V|| = 0.3, noise 0.1."""
    p = make_planted("brnn", D_X, D_H, D_Y, n_steps=n_steps, length=length, input_std=0.4,
                     recurrent_norm=0.3, noise_std=0.1, random_state=seed)
    return p.process, p.model, p.X, p.Y


def held_out_error(proc, model, est, seed: int) -> float:
    Xt = proc.sample(2000, T, random_state=seed + 99)
    return prediction_error(model.predict(Xt), est.predict(Xt))


def chains_right(model: BRNN, est: SpectralBRNN) -> bool:
    """Every estimated forward unit matches a true forward unit better than any backward one, and vice versa."""
    def cos(A, B):
        A = A / np.linalg.norm(A, axis=1, keepdims=True)
        B = B / np.linalg.norm(B, axis=1, keepdims=True)
        return np.abs(A @ B.T)

    fwd_ok = cos(est.A1_, model.A1).max(1) > cos(est.A1_, model.B1).max(1)
    bwd_ok = cos(est.B1_, model.B1).max(1) > cos(est.B1_, model.A1).max(1)
    return bool(fwd_ok.all() and bwd_ok.all())


def test_recovers_planted_brnn_small():
    proc, model, X, Y = planted(200_000, seed=0)
    est = SpectralBRNN(D_H, random_state=0).fit(X, Y)
    err = parameter_errors(model, est.model_)
    assert chains_right(model, est)
    for name in ("A1", "A2", "B1", "B2"):
        assert err[name] < 0.1, (name, err)
    for name in ("U", "V"):
        assert err[name] < 0.25, (name, err)
    assert held_out_error(proc, model, est, 0) < 1e-2
    assert est.fit(X, Y) is est
    assert set(est.timings_) >= {"process", "decomposition", "recurrence", "total"}
    # forward units look to the past, backward ones to the future
    assert np.sort(est.separation_)[D_H:].min() > 0.9 and np.sort(est.separation_)[:D_H].max() < 0.1


def test_error_shrinks_with_data():
    errs = []
    for n in (50_000, 400_000):
        proc, model, X, Y = planted(n, seed=4)
        est = SpectralBRNN(D_H, random_state=4).fit(X, Y)
        e = parameter_errors(model, est.model_)
        errs.append(np.mean([e[k] for k in ("A1", "A2", "B1", "B2")]))
    assert errs[1] < 0.6 * errs[0], errs


def test_ragged_batch_equals_unpadded():
    proc, model, X, Y = planted(40_000, seed=1, length=8)
    # the same sequences, padded to 12 steps with NaN that must never be read
    Xp = np.full((X.shape[0], 12, D_X), np.nan)
    Yp = np.full((X.shape[0], 12, D_Y), np.nan)
    Xp[:, :8], Yp[:, :8] = X, Y
    lengths = np.full(X.shape[0], 8)
    a = SpectralBRNN(D_H, random_state=3).fit(X, Y)
    b = SpectralBRNN(D_H, random_state=3).fit(Xp, Yp, lengths=lengths)
    for name in ("A1", "U", "A2", "B1", "V", "B2"):
        np.testing.assert_allclose(getattr(b, name + "_"), getattr(a, name + "_"), rtol=1e-7, atol=1e-9)


def test_windows_cut_in_time_give_the_same_estimate():
    proc = GaussianAR1.random(D_X, random_state=5)
    X = proc.sample(20, 2000, random_state=6)
    model = BRNN.random(D_X, D_H, D_Y, random_state=7)
    Y = model.simulate(X, noise_std=0.1, random_state=8)
    a = SpectralBRNN(D_H, random_state=0).fit(X, Y)
    b = SpectralBRNN(D_H, random_state=0, chunk_steps=333).fit(X, Y)
    for name in ("A1", "U", "A2", "B1", "V", "B2"):
        np.testing.assert_allclose(getattr(b, name + "_"), getattr(a, name + "_"), rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("true_hidden", [3, 6])
def test_unidirectional_data_is_refused(true_hidden):
    proc = GaussianAR1.random(D_X, random_state=0)
    X = proc.sample(30_000, T, random_state=0)
    Y = IORNN.random(D_X, true_hidden, D_Y, random_state=0).simulate(X, noise_std=0.1, random_state=1)
    with pytest.raises(IllConditionedError):
        SpectralBRNN(D_H, random_state=0).fit(X, Y)


def test_hidden_size_beyond_data_is_refused():
    proc, model, X, Y = planted(20_000, seed=2)
    with pytest.raises(InputError, match="too large"):
        SpectralBRNN(5, random_state=0).fit(X, Y)  # 2 * 5 > d_y = 8


@pytest.mark.slow
def test_acceptance_issue_3():
    """Issue 3 acceptance: 1e6 steps, median over 5 seeds."""
    rows = []
    for seed in range(5):
        proc, model, X, Y = planted(1_000_000, seed=10 * seed)
        est = SpectralBRNN(D_H, random_state=seed).fit(X, Y)
        assert chains_right(model, est)
        e = parameter_errors(model, est.model_)
        e["pred"] = held_out_error(proc, model, est, seed)
        rows.append(e)
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    print("BRNN 1e6 medians:", med)
    for name in ("A1", "A2", "B1", "B2"):
        assert med[name] <= 0.05, med
    for name in ("U", "V"):
        assert med[name] <= 0.10, med
    assert med["pred"] <= 2e-3, med

