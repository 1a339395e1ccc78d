"""Polynomial activations: evaluation, derivatives, parsing."""

import math

import numpy as np
import pytest
import torch

from spectral_rnn import InputError, Polynomial
from spectral_rnn.activations import as_polynomial


def np_poly(c, u):
    return sum(ck * u**k for k, ck in enumerate(c))


@pytest.mark.parametrize("coefs", [(0.0, 1.0, 0.5), (0.3, -1.0, 0.2, 0.1), (2.0,), (0.0, 0.0, 0.0, 1.5)])
def test_evaluation_on_tensor_array_scalar(coefs):
    f = Polynomial(coefs)
    u = np.linspace(-2, 2, 17).reshape(17, 1) * np.ones((1, 3))
    want = np_poly(coefs, u)
    out_np = f(u)
    assert isinstance(out_np, np.ndarray) and out_np.shape == u.shape
    np.testing.assert_allclose(out_np, want, rtol=1e-12, atol=1e-12)
    ut = torch.tensor(u)
    out_t = f(ut)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == ut.shape and out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), want, rtol=1e-12, atol=1e-12)
    assert math.isclose(float(f(0.7)), np_poly(coefs, 0.7), rel_tol=1e-12, abs_tol=1e-12)


def test_constant_polynomial_keeps_shape():
    f = Polynomial([2.5])
    assert f(torch.zeros(3, 2)).shape == (3, 2)
    assert np.all(f(np.zeros((4,))) == 2.5)
    assert f.degree == 0


def test_trailing_zeros_dropped_and_coef():
    f = Polynomial([0.0, 1.0, 0.5, 0.0, 0.0])
    assert f.coefficients == (0.0, 1.0, 0.5)
    assert f.degree == 2
    assert f.coef(2) == 0.5 and f.coef(3) == 0.0 and f.coef(-1) == 0.0


@pytest.mark.parametrize("order", [0, 1, 2, 3, 4, 5])
def test_derivatives_any_order(order):
    c = np.array([0.3, -1.0, 0.2, 0.1, 0.05])
    f = Polynomial(c)
    want = np.polynomial.polynomial.polyder(c, order) if order <= 4 else np.array([0.0])
    got = f.derivative(order)
    want = np.trim_zeros(want, "b") if np.any(want) else np.array([0.0])
    np.testing.assert_allclose(np.array(got.coefficients), want, rtol=1e-14)
    u = np.linspace(-1, 1, 5)
    np.testing.assert_allclose(got(u), np.polynomial.polynomial.polyval(u, np.polynomial.polynomial.polyder(c, order)), atol=1e-12)


def test_derivative_against_finite_difference():
    f = Polynomial([0.0, 1.0, 0.5, -0.3])
    u, h = 0.37, 1e-5
    assert math.isclose(float(f.derivative()(u)), (f(u + h) - f(u - h)) / (2 * h), rel_tol=1e-8)
    assert f.derivative(2) == f.derivative().derivative()
    with pytest.raises(ValueError):
        f.derivative(-1)


@pytest.mark.parametrize("coefs", [(0.0, 1.0, 0.5), (0.1, -1e-17, 1 / 3, 2.0e10), (-0.0, 7.0)])
def test_parse_to_string_round_trip(coefs):
    f = Polynomial(coefs)
    g = Polynomial.parse(f.to_string())
    assert g == f and g.coefficients == f.coefficients
    assert hash(g) == hash(f)
    assert as_polynomial(f.to_string()) == f
    assert as_polynomial(list(coefs)) == f
    assert as_polynomial(f) is f


def test_parse_accepts_spaces():
    assert Polynomial.parse(" 0, 1 ,0.5 ") == Polynomial([0, 1, 0.5])


@pytest.mark.parametrize("text", ["", "0,,1", "a,b", "1;2", "0,1,", "nan,1", "0,inf", "1 2", ","])
def test_malformed_strings_raise_input_error(text):
    with pytest.raises(InputError):
        Polynomial.parse(text)


def test_bad_coefficients():
    with pytest.raises(InputError):
        Polynomial([])
    with pytest.raises(InputError):
        Polynomial([0.0, float("nan")])
