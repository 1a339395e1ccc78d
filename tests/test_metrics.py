"""Metrics invariant to the order of hidden units."""

import numpy as np
import pytest

from spectral_rnn import BRNN, IORNN, InputError, match_units, parameter_errors, prediction_error
from spectral_rnn.metrics import relative_error


def test_match_units_recovers_permutation_with_signs_and_scales():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((6, 10))
    perm = rng.permutation(6)
    signs = rng.choice([-1.0, 1.0], 6)
    scales = rng.uniform(0.2, 5, 6)
    B = (A * (signs * scales)[:, None])[perm]
    p = match_units(A, B)
    # B[p[j]] matches A[j]
    np.testing.assert_array_equal(perm[p], np.arange(6))


def test_match_units_invariant_to_permutation_of_estimate():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((5, 8))
    E = A + 0.05 * rng.standard_normal(A.shape)
    p0 = match_units(A, E)
    for _ in range(5):
        q = rng.permutation(5)
        p = match_units(A, E[q])
        np.testing.assert_array_equal(E[q][p], E[p0])


def test_match_units_shape_mismatch():
    with pytest.raises(InputError):
        match_units(np.ones((3, 4)), np.ones((4, 4)))


def _permuted(model, perm):
    return IORNN(model.A1[perm], model.U[np.ix_(perm, perm)], model.A2[perm], model.activation)


def test_parameter_errors_zero_for_permuted_copy():
    m = IORNN.random(10, 4, 8, random_state=3)
    for seed in range(3):
        perm = np.random.default_rng(seed).permutation(4)
        e = parameter_errors(m, _permuted(m, perm))
        assert set(e) == {"A1", "U", "A2"}
        assert all(v < 1e-14 for v in e.values()), e


def test_parameter_errors_sign_flip_counts():
    m = IORNN.random(6, 3, 5, random_state=4)
    flipped = IORNN(-m.A1, m.U, m.A2, m.activation)  # not an equivalent model (c1 != 0)
    e = parameter_errors(m, flipped)
    assert e["A1"] == pytest.approx(2.0)
    assert e["U"] == 0.0 and e["A2"] == 0.0


def test_parameter_errors_known_value():
    m = IORNN.random(6, 3, 5, random_state=5)
    est = IORNN(1.1 * m.A1, m.U, m.A2, m.activation)
    assert parameter_errors(m, est)["A1"] == pytest.approx(0.1)


def test_parameter_errors_brnn_each_chain_matched():
    m = BRNN.random(8, 3, 7, random_state=6)
    p, q = np.array([2, 0, 1]), np.array([1, 2, 0])
    est = BRNN(m.A1[p], m.U[np.ix_(p, p)], m.A2[p], m.B1[q], m.V[np.ix_(q, q)], m.B2[q], m.activation)
    e = parameter_errors(m, est)
    assert set(e) == {"A1", "U", "A2", "B1", "V", "B2"}
    assert max(e.values()) < 1e-14


def test_parameter_errors_type_mismatch():
    with pytest.raises(InputError):
        parameter_errors(IORNN.random(6, 3, 5, random_state=0), BRNN.random(6, 3, 5, random_state=0))


def test_relative_error():
    assert relative_error(np.array([3.0, 4.0]) * 1.5, np.array([3.0, 4.0])) == pytest.approx(0.5)


def test_prediction_error_values_and_padding():
    rng = np.random.default_rng(7)
    Y = rng.standard_normal((20, 6, 3))
    assert prediction_error(Y, Y) == 0.0
    assert prediction_error(Y, np.zeros_like(Y) + Y.reshape(-1, 3).mean(0)) == pytest.approx(1.0)
    lengths = rng.integers(1, 7, 20)
    lengths[0] = 6
    Yp = Y.copy()
    pad = np.arange(6)[None, :] >= lengths[:, None]
    Yp[pad] = np.nan
    assert prediction_error(Y, Yp, lengths) == 0.0
    with pytest.raises(InputError):
        prediction_error(Y, Y[:, :5])
    with pytest.raises(InputError):
        prediction_error(np.ones((2, 3, 1)), np.ones((2, 3, 1)))
