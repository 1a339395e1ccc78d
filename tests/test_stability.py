"""stabilize: a polynomial model that diverges on its inputs gets U (V) shrunk by bisection."""

import math

import numpy as np
import pytest

from spectral_rnn import BRNN, IORNN, DivergenceError, InputError, make_planted, stabilize
from spectral_rnn.stability import StabilityReport, bound_certifies

from _helpers import ragged


@pytest.fixture(scope="module")
def planted(planted_readme):
    # the planted model of the README (f = u + 0.5 u^2, ||U|| = 0.3), 2e4 steps
    return planted_readme


def diverges(model, X, lengths=None):
    try:
        model.predict(X, lengths)
    except DivergenceError:
        return True
    return False


def scaled(model, k, k_back=None):
    p = model.parameters()
    p["U"] = p["U"] * k
    if isinstance(model, BRNN):
        p["V"] = p["V"] * (k if k_back is None else k_back)
        return BRNN(**p, activation=model.activation, backward_activation=model.backward_activation)
    return IORNN(**p, activation=model.activation)


def test_stable_model_is_returned_unchanged(planted):
    m, rep = stabilize(planted.model, planted.X, Y=planted.Y)
    assert m is planted.model
    assert isinstance(rep, StabilityReport) and not rep.changed
    assert rep.factor == 1.0 and rep.factor_backward is None and rep.diverged_sequences == 0
    assert rep.method in ("simulation", "bound") and math.isfinite(rep.peak_after)
    assert rep.train_error_before == rep.train_error_after < 0.05
    assert "unchanged" in str(rep)


def test_planted_model_with_u_scaled_until_it_diverges(planted):
    X, Y, truth = planted.X, planted.Y, planted.model
    k = next(k for k in (2, 3, 4, 6, 8, 12) if diverges(scaled(truth, k), X))
    big = scaled(truth, k)
    m, rep = stabilize(big, X, Y=Y)
    assert rep.changed and rep.method == "shrunk" and 0 < rep.factor < 1
    assert rep.diverged_sequences > 0 and rep.n_sequences == X.shape[0]
    assert rep.peak_before == math.inf and rep.peak_after < 1e6
    np.testing.assert_allclose(m.U, big.U * rep.factor)
    np.testing.assert_array_equal(m.A1, big.A1)
    np.testing.assert_array_equal(m.A2, big.A2)
    assert not diverges(m, X)  # predict works on the inputs it was stabilised on
    # largest factor up to the margin and the bisection precision: a bit more diverges again
    assert diverges(scaled(big, rep.factor / 0.9 / (1 - 0.01) * 1.001), X)
    # the cost in training error is reported: finite, far below the mean predictor's 1
    # (here k = 2 and the factor about 0.66, so U is 1.3x the truth's: about 0.1 against the
    # truth's 0.003; refinement takes it from there)
    assert rep.train_error_before == math.inf
    _, rep_truth = stabilize(truth, X, Y=Y)
    assert rep_truth.train_error_after < rep.train_error_after < 0.5
    assert "U scaled by" in str(rep) and "training relative MSE" in str(rep)


def test_margin_and_rtol(planted):
    big = scaled(planted.model, 8)
    _, r1 = stabilize(big, planted.X, margin=1.0, rtol=1e-3)
    _, r2 = stabilize(big, planted.X, margin=0.5)
    assert r2.factor < 0.6 * r1.factor
    assert not diverges(scaled(big, r1.factor), planted.X)


def test_brnn_chains_get_their_own_factors():
    p = make_planted("brnn", d_x=12, d_h=3, n_steps=20_000, random_state=1)
    X = p.X
    k = next(k for k in (2, 3, 4, 6, 8, 12, 16) if diverges(scaled(p.model, 1.0, k), X))
    big = scaled(p.model, 1.0, k)  # only the backward chain diverges
    m, rep = stabilize(big, X)
    assert rep.changed and rep.factor == 1.0 and 0 < rep.factor_backward < 1
    np.testing.assert_array_equal(m.U, big.U)
    np.testing.assert_allclose(m.V, big.V * rep.factor_backward)
    assert m.backward_activation == big.backward_activation
    assert not diverges(m, X)
    assert "V by" in str(rep)


def test_ragged_inputs_padding_never_read(planted):
    X, Y, L = ragged(planted.X, planted.Y, seed=0, min_length=5)
    big = scaled(planted.model, 8)
    m, rep = stabilize(big, X, L, Y=Y)
    assert rep.changed and not diverges(m, X, L)
    assert math.isfinite(rep.train_error_after)


def test_bounded_activation_passes_at_once(planted):
    m = IORNN.random(10, 4, 8, activation="tanh", recurrent_norm=5.0, input_std=3.0, random_state=0)
    out, rep = stabilize(m, planted.X)
    assert out is m and not rep.changed and rep.method == "bounded activation"


def test_cheap_bound_certifies_small_inputs(planted):
    X = 0.05 * planted.X
    m, rep = stabilize(planted.model, X)
    assert m is planted.model and rep.method == "bound"
    assert np.abs(planted.model.hidden_states(X)).max() <= rep.peak_after


def test_bound_is_sound_on_random_chains():
    rng = np.random.default_rng(0)
    from spectral_rnn import Polynomial

    for _ in range(30):
        f = Polynomial(rng.uniform(-1, 1, 3) * [0.2, 1.0, 1.0])
        m = IORNN(rng.standard_normal((3, 4)) * 0.2, rng.standard_normal((3, 3)) * 0.2, np.eye(3), f)
        X = rng.standard_normal((20, 15, 4))
        drive_max = float(np.abs(X @ m.A1.T).max())
        r = bound_certifies(f, drive_max, m.U, 1e6)
        if math.isfinite(r):
            assert np.abs(m.hidden_states(X)).max() <= r


def test_refused_when_even_u_zero_diverges(planted):
    m = planted.model
    huge = IORNN(m.A1 * 5000, m.U, m.A2, m.activation)
    with pytest.raises(DivergenceError, match="too large"):
        stabilize(huge, planted.X)


def test_bad_arguments(planted):
    with pytest.raises(InputError):
        stabilize("model", planted.X)
    with pytest.raises(InputError):
        stabilize(planted.model, planted.X, margin=0.0)
    with pytest.raises(InputError):
        stabilize(planted.model, planted.X, rtol=1.0)
    with pytest.raises(InputError):
        stabilize(planted.model, planted.X[..., :3])
    with pytest.raises(InputError):
        stabilize(planted.model, planted.X, Y=planted.Y[:, :4])


def test_diverged_sequences_counts_each_sequence_once(planted):
    """The count in the report is the number of distinct sequences whose recursion diverges at
    the original scale (checked one by one with predict), whatever the chunking of the check."""
    X, truth = planted.X, planted.model
    k = next(k for k in (2, 3, 4, 6, 8, 12) if diverges(scaled(truth, k), X))
    big = scaled(truth, k)
    expected = sum(diverges(big, X[i : i + 1]) for i in range(X.shape[0]))
    assert expected > 0
    for chunk_steps in (1 << 18, 70):  # one chunk, and chunks of 7 sequences
        _, rep = stabilize(big, X, chunk_steps=chunk_steps)
        assert rep.diverged_sequences == expected


def test_dask_inputs_are_checked_where_they_lie(planted):
    """With a Dask array the full passes of the check run as one task per block (nothing is read
    back to the client) and give the in-memory result: the same factor, peak and count."""
    da = pytest.importorskip("dask.array")
    X, truth = planted.X, planted.model
    L = np.random.default_rng(3).integers(2, X.shape[1] + 1, X.shape[0])
    k = next(k for k in (2, 3, 4, 6, 8, 12) if diverges(scaled(truth, k), X, L))
    big = scaled(truth, k)
    ref, rep_ref = stabilize(big, X, L)
    got, rep = stabilize(big, da.from_array(X, chunks=(333, 4, X.shape[2])), L)
    assert rep_ref.changed and rep.diverged_sequences == rep_ref.diverged_sequences > 0
    assert rep.factor == rep_ref.factor and rep.peak_after == pytest.approx(rep_ref.peak_after, rel=1e-12)
    np.testing.assert_allclose(got.U, ref.U, rtol=1e-12)
    from unittest import mock

    from spectral_rnn import stability

    client_reads = []
    real_drive = stability._Chain.drive

    def drive(self, rows):
        client_reads.append(not isinstance(self.X, np.ndarray))
        return real_drive(self, rows)

    with mock.patch.object(stability._Chain, "drive", drive):
        _, rep_stable = stabilize(truth, da.from_array(X, chunks=(333, 4, X.shape[2])), L)
    assert client_reads and not any(client_reads)  # every read was of a block, inside a task
    _, rep_stable_ref = stabilize(truth, X, L)
    assert rep_stable.method == rep_stable_ref.method and rep_stable.peak_after == pytest.approx(
        rep_stable_ref.peak_after, rel=1e-12)


@pytest.mark.parametrize("kind", ["iornn", "brnn"])
def test_fit_passes_its_drive_bound_to_the_check(kind, monkeypatch):
    """The spectral fit's instrument pass carries each chain's largest |(A1 x_t)_j|, so the check reads
    X only to simulate: the value it is given equals the one read from X (ragged inputs, padding NaN)."""
    from spectral_rnn import SpectralBRNN, SpectralIORNN, stability

    p = make_planted(kind, 8, 2, 6, n_steps=60_000, random_state=1, n_test=10)
    Xp, Yp, lengths = ragged(p.X, p.Y, seed=3, min_length=3)
    given = []
    real = stability._stabilize_chain

    def spy(ch, *args):
        given.append((args[-1], ch.drive_max()))
        return real(ch, *args)

    monkeypatch.setattr(stability, "_stabilize_chain", spy)
    est = (SpectralIORNN if kind == "iornn" else SpectralBRNN)(2, random_state=0).fit(Xp, Yp, lengths)
    assert len(given) == len(est.model_.chains)
    for passed, read in given:
        assert passed is not None and passed == pytest.approx(read, rel=1e-12)
    with pytest.raises(InputError, match="one value per chain"):
        stabilize(est.model_, Xp, lengths, drive_max=[1.0] * 3)
