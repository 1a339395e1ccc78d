"""Activations (polynomials and tanh): evaluation, derivatives, parsing, equality."""

import math

import numpy as np
import pytest
import torch

from spectral_rnn import Activation, InputError, Polynomial, Tanh, as_activation
from spectral_rnn.activations import as_polynomial, parse_activation


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


# ---------------------------------------------------------------- tanh and the abstraction
def test_tanh_evaluation_on_tensor_array_scalar():
    f = Tanh()
    u = np.linspace(-3, 3, 13).reshape(13, 1) * np.ones((1, 2))
    out_np = f(u)
    assert isinstance(out_np, np.ndarray) and out_np.shape == u.shape
    np.testing.assert_allclose(out_np, np.tanh(u), rtol=1e-15)
    ut = torch.tensor(u, dtype=torch.float32)
    out_t = f(ut)
    assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
    np.testing.assert_allclose(out_t.numpy(), np.tanh(u), rtol=1e-6)
    assert isinstance(f(0.7), float) and f(0.7) == math.tanh(0.7)
    assert f(1) == math.tanh(1)


def test_tanh_derivatives_closed_forms_and_finite_differences():
    f = Tanh()
    u = np.linspace(-2.5, 2.5, 41)
    t = np.tanh(u)
    np.testing.assert_allclose(f.deriv(u, 0), t, rtol=1e-15)
    np.testing.assert_allclose(f.deriv(u, 1), 1 - t**2, atol=1e-15)
    np.testing.assert_allclose(f.deriv(u, 2), -2 * t * (1 - t**2), atol=1e-15)
    np.testing.assert_allclose(f.deriv(u, 3), -2 + 8 * t**2 - 6 * t**4, atol=1e-14)
    h = 1e-5
    for k in range(6):
        fd = (f.deriv(u + h, k) - f.deriv(u - h, k)) / (2 * h)
        np.testing.assert_allclose(fd, f.deriv(u, k + 1), atol=1e-6 * 10**k)
    # the derivative as a callable, on tensors too
    ut = torch.tensor(u)
    np.testing.assert_allclose(f.derivative(3)(ut).numpy(), f.deriv(u, 3), rtol=1e-12, atol=1e-14)
    # the Stein moment E[tanh^(3)(z)] of z ~ N(0, 1) (Gauss-Hermite): clearly negative
    x, w = np.polynomial.hermite_e.hermegauss(80)
    e3 = float(np.sum(w * f.deriv(x, 3)) / np.sqrt(2 * np.pi))
    assert -0.9 < e3 < -0.3
    with pytest.raises(ValueError):
        f.deriv(u, -1)
    with pytest.raises(ValueError):
        f.derivative(1.5)


def test_polynomial_deriv_matches_derivative():
    f = Polynomial([0.3, -1.0, 0.2, 0.1])
    u = np.linspace(-1, 1, 7)
    for k in range(5):
        np.testing.assert_allclose(f.deriv(u, k), f.derivative(k)(u), rtol=1e-15)
    assert f.deriv(2.0, 0) == f(2.0)
    assert isinstance(f.derivative(1), Polynomial)  # unchanged API


def test_is_odd():
    assert Tanh().is_odd
    assert Polynomial([0, 1, 0, -1 / 3]).is_odd
    assert Polynomial([0.0, 1.0]).is_odd
    assert not Polynomial([0, 1, 0.5]).is_odd
    assert not Polynomial([0.1, 1.0]).is_odd


@pytest.mark.parametrize("f", [Tanh(), Polynomial([0, 1, 0.5]), Polynomial([0, 1, 0, -0.3333]),
                               Polynomial([0.1, -1e-17, 1 / 3, 2.0e10])])
def test_string_round_trip_every_activation(f):
    s = f.to_string()
    g = parse_activation(s)
    assert g == f and hash(g) == hash(f) and type(g) is type(f)
    assert Activation.parse(s) == f and as_activation(s) == f
    assert as_activation(f) is f
    assert str(f) == s


def test_odd_polynomial_string_is_a_polynomial():
    f = as_activation("0,1,0,-0.3333")
    assert isinstance(f, Polynomial) and f.coefficients == (0.0, 1.0, 0.0, -0.3333) and f.degree == 3
    assert f.coef(3) == -0.3333 and f.is_odd


def test_tanh_parsing_equality_and_refusals():
    assert parse_activation("tanh") == Tanh() == as_activation(" TANH ")
    assert Tanh() != Polynomial([0, 1]) and Polynomial([0, 1]) != Tanh()
    assert len({Tanh(), Tanh(), Polynomial([0, 1])}) == 2
    assert Tanh().torch_nonlinearity == "tanh" and Polynomial([0, 1, 0.5]).torch_nonlinearity is None
    assert Tanh().bounded and not Polynomial([0, 1, 0.5]).bounded
    assert repr(Tanh()) == "Tanh()"
    assert as_activation((0.0, 1.0, 0.5)) == Polynomial([0, 1, 0.5])
    with pytest.raises(InputError, match="not a polynomial"):
        as_polynomial("tanh")
    with pytest.raises(InputError, match="export needs"):
        as_polynomial(Tanh(), what="export")
    with pytest.raises(InputError):
        Tanh.parse("0,1")
    with pytest.raises(InputError):
        Polynomial.parse("tanh")
    for bad in ("tanhh", "relu", "sigmoid", "", "tanh,1"):
        with pytest.raises(InputError, match="malformed activation"):
            parse_activation(bad)
    for bad in (3, object(), ["a"]):
        with pytest.raises(InputError):
            as_activation(bad)
