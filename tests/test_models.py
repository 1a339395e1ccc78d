"""IO-RNN and BRNN models: recursion, ragged batches, divergence, shapes."""

import numpy as np
import pytest
import torch

from spectral_rnn import BRNN, IORNN, DivergenceError, GaussianAR1, InputError, Polynomial, Tanh


def np_forward(X, A1, U, f, reverse=False):
    n, T, _ = X.shape
    H = np.zeros((n, T, A1.shape[0]))
    for i in range(n):
        h = np.zeros(A1.shape[0])
        ts = range(T - 1, -1, -1) if reverse else range(T)
        for t in ts:
            h = f(A1 @ X[i, t] + U @ h)
            H[i, t] = h
    return H


@pytest.fixture
def data():
    proc = GaussianAR1.random(5, random_state=0)
    return proc.sample(7, 9, random_state=1)


def test_iornn_shapes_and_recursion(data):
    f = Polynomial([0.1, 1.0, 0.5, -0.2])
    m = IORNN.random(5, 3, 4, activation=f, random_state=2)
    assert (m.d_x, m.d_h, m.d_y) == (5, 3, 4)
    assert m.A1.shape == (3, 5) and m.U.shape == (3, 3) and m.A2.shape == (3, 4)
    H = m.hidden_states(data)
    assert H.shape == (7, 9, 3)
    Hn = np_forward(data, m.A1, m.U, lambda u: np.polyval(f.coefficients[::-1], u))
    np.testing.assert_allclose(H, Hn, rtol=1e-12, atol=1e-12)
    P = m.predict(data)
    assert P.shape == (7, 9, 4) and P.dtype == np.float64
    np.testing.assert_allclose(P, Hn @ m.A2, rtol=1e-12, atol=1e-12)


def test_predict_float32_close(data):
    m = IORNN.random(5, 3, 4, random_state=2)
    P32 = m.predict(data, dtype=torch.float32)
    assert P32.dtype == np.float32
    np.testing.assert_allclose(P32, m.predict(data), rtol=1e-4, atol=1e-5)


def test_simulate_noise(data):
    m = IORNN.random(5, 3, 4, random_state=3)
    np.testing.assert_array_equal(m.simulate(data), m.predict(data))
    Y1 = m.simulate(data, noise_std=0.1, random_state=5)
    Y2 = m.simulate(data, noise_std=0.1, random_state=5)
    np.testing.assert_array_equal(Y1, Y2)
    resid = Y1 - m.predict(data)
    assert 0.07 < resid.std() < 0.13
    with pytest.raises(InputError):
        m.simulate(data, noise_std=-1.0)
    with pytest.raises(InputError):
        m.simulate(data, noise_std=float("nan"))


def test_ragged_padding_never_read_and_zero(data):
    m = IORNN.random(5, 3, 4, random_state=4)
    lengths = np.array([9, 1, 4, 7, 2, 9, 5])
    Xp = data.copy()
    pad = np.arange(9)[None, :] >= lengths[:, None]
    Xp[pad] = np.nan
    P = m.predict(Xp, lengths)
    assert np.all(np.isfinite(P))
    assert np.all(P[pad] == 0.0)
    Y = m.simulate(Xp, lengths, noise_std=0.1, random_state=0)
    assert np.all(Y[pad] == 0.0)
    for i, L in enumerate(lengths):
        np.testing.assert_allclose(P[i, :L], m.predict(data[i : i + 1, :L])[0], rtol=1e-13, atol=1e-13)
    # garbage of another kind in the padding changes nothing
    Xg = data.copy()
    Xg[pad] = 1e6
    np.testing.assert_array_equal(m.predict(Xg, lengths), P)


def test_brnn_recursion_and_ragged_backward_start(data):
    m = BRNN.random(5, 3, 4, activation=(0.0, 1.0, 0.5), random_state=5)
    f = lambda u: u + 0.5 * u**2  # noqa: E731
    H, Z = m.hidden_states(data)
    np.testing.assert_allclose(H, np_forward(data, m.A1, m.U, f), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Z, np_forward(data, m.B1, m.V, f, reverse=True), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(m.predict(data), H @ m.A2 + Z @ m.B2, rtol=1e-12, atol=1e-12)
    lengths = np.array([9, 1, 4, 7, 2, 9, 5])
    Xp = data.copy()
    pad = np.arange(9)[None, :] >= lengths[:, None]
    Xp[pad] = np.nan
    P = m.predict(Xp, lengths)
    assert np.all(P[pad] == 0.0)
    Hr, Zr = m.hidden_states(Xp, lengths)
    for i, L in enumerate(lengths):
        # the backward chain starts at each sequence's own last step
        np.testing.assert_allclose(Zr[i, :L], np_forward(data[i : i + 1, :L], m.B1, m.V, f, reverse=True)[0],
                                   rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(P[i, :L], m.predict(data[i : i + 1, :L])[0], rtol=1e-12, atol=1e-12)
        assert np.all(Zr[i, L:] == 0.0) and np.all(Hr[i, L:] == 0.0)


def test_divergence_raises():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 50, 3))
    m = IORNN(2.0 * np.ones((2, 3)), 1.5 * np.eye(2), np.ones((2, 2)), (0.0, 1.0, 1.0))
    with pytest.raises(DivergenceError, match="diverged"):
        m.predict(X)
    with pytest.raises(DivergenceError):
        m.simulate(X, noise_std=0.1)
    b = BRNN(0.1 * np.ones((2, 3)), 0.1 * np.eye(2), np.ones((2, 2)),
             2.0 * np.ones((2, 3)), 1.5 * np.eye(2), np.ones((2, 2)), (0.0, 1.0, 1.0))
    with pytest.raises(DivergenceError):
        b.predict(X)


def test_bad_shapes_raise():
    m = IORNN.random(5, 3, 4, random_state=0)
    X = np.zeros((2, 6, 5))
    for bad in (np.zeros((6, 5)), np.zeros((2, 6, 4)), np.zeros((0, 6, 5)), np.array([["a"]]), np.zeros((2, 6, 5), dtype=complex)):
        with pytest.raises(InputError):
            m.predict(bad)
    with pytest.raises(InputError):
        m.predict(X, lengths=np.array([3, 7]))
    with pytest.raises(InputError):
        m.predict(X, lengths=np.array([3]))
    with pytest.raises(InputError):
        m.predict(X, lengths=np.array([0, 2]))
    with pytest.raises(InputError):
        m.predict(X, lengths=np.array([1.5, 2]))
    Xn = X.copy()
    Xn[1, 5, 0] = np.nan
    with pytest.raises(InputError):
        m.predict(Xn)
    m.predict(Xn, lengths=np.array([6, 5]))  # NaN only in padding: fine
    with pytest.raises(InputError):
        IORNN(np.ones((3, 5)), np.ones((2, 2)), np.ones((3, 4)), "0,1,0.5")
    with pytest.raises(InputError):
        IORNN(np.ones((3, 5)), np.ones((3, 3)), np.ones((2, 4)), "0,1,0.5")
    with pytest.raises(InputError):
        IORNN(np.ones(5), np.ones((1, 1)), np.ones((1, 4)), "0,1,0.5")
    with pytest.raises(InputError):
        IORNN(np.full((3, 5), np.nan), np.ones((3, 3)), np.ones((3, 4)), "0,1,0.5")
    with pytest.raises(InputError):
        IORNN(np.ones((3, 5)), np.ones((3, 3)), np.ones((3, 4)), "0,x")
    with pytest.raises(InputError):
        BRNN(np.ones((3, 5)), np.eye(3), np.ones((3, 4)), np.ones((3, 6)), np.eye(3), np.ones((3, 4)), "0,1,0.5")


def test_model_copies_weights_and_equality():
    A1 = np.asfortranarray(np.random.default_rng(0).standard_normal((3, 5)))
    m = IORNN(A1.T.T, np.eye(3) * 0.1, np.ones((3, 2)), "0,1,0.5")
    A1[0, 0] = 99.0
    assert m.A1[0, 0] != 99.0
    assert m == IORNN(m.A1, m.U, m.A2, (0.0, 1.0, 0.5))
    assert m != IORNN(m.A1, m.U, m.A2, (0.0, 1.0, 0.6))
    params = m.parameters()
    params["A1"][:] = 0
    assert np.any(m.A1 != 0)


def test_random_model_properties():
    m = IORNN.random(10, 4, 8, recurrent_norm=0.3, random_state=1)
    assert np.linalg.norm(m.U, 2) == pytest.approx(0.3)
    assert m == IORNN.random(10, 4, 8, recurrent_norm=0.3, random_state=1)
    assert m.activation == Polynomial([0, 1, 0.5])


# ---------------------------------------------------------------- tanh models
def test_tanh_iornn_and_brnn_recursions(data):
    m = IORNN.random(5, 3, 4, activation="tanh", input_std=1.0, recurrent_norm=0.9, random_state=2)
    assert m.activation == Tanh() and "tanh" in repr(m)
    Hn = np_forward(data, m.A1, m.U, np.tanh)
    np.testing.assert_allclose(m.hidden_states(data), Hn, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.predict(data), Hn @ m.A2, rtol=1e-12, atol=1e-14)
    b = BRNN.random(5, 3, 4, activation=Tanh(), input_std=1.0, random_state=3)
    H, Z = b.hidden_states(data)
    np.testing.assert_allclose(H, np_forward(data, b.A1, b.U, np.tanh), atol=1e-14)
    np.testing.assert_allclose(Z, np_forward(data, b.B1, b.V, np.tanh, reverse=True), atol=1e-14)
    assert b.backward_activation == Tanh()
    # tanh never diverges, whatever the weights
    huge = IORNN(50 * m.A1, 50 * m.U, m.A2, "tanh")
    assert np.abs(huge.hidden_states(data)).max() <= 1.0
    # mixed chains: a tanh forward chain, a polynomial backward one
    mix = BRNN(b.A1, b.U, b.A2, 0.2 * b.B1, b.V, b.B2, "tanh", backward_activation="0,1,0,-0.3333")
    Z2 = mix.hidden_states(data)[1]
    np.testing.assert_allclose(Z2, np_forward(data, 0.2 * b.B1, b.V, lambda u: u - 0.3333 * u**3, reverse=True),
                               atol=1e-12)
    assert mix != b and mix == BRNN(**mix.parameters(), activation="tanh", backward_activation=(0, 1, 0, -0.3333))


def test_random_input_norm():
    for cls in (IORNN, BRNN):
        m = cls.random(10, 4, 8, activation="tanh", input_norm=1.0, random_state=0)
        np.testing.assert_allclose(np.linalg.norm(m.A1, axis=1), 1.0, rtol=1e-12)
        if cls is BRNN:
            np.testing.assert_allclose(np.linalg.norm(m.B1, axis=1), 1.0, rtol=1e-12)
        # input_norm rescales the same draw: directions and the other weights are unchanged
        plain = cls.random(10, 4, 8, activation="tanh", random_state=0)
        np.testing.assert_allclose(m.A1, plain.A1 / np.linalg.norm(plain.A1, axis=1, keepdims=True), rtol=1e-12)
        np.testing.assert_array_equal(m.U, plain.U)
        np.testing.assert_array_equal(m.A2, plain.A2)
    m = IORNN.random(10, 4, 8, input_norm=0.6, random_state=1)
    np.testing.assert_allclose(np.linalg.norm(m.A1, axis=1), 0.6, rtol=1e-12)
    with pytest.raises(InputError):
        IORNN.random(10, 4, 8, input_norm=-1.0)
    with pytest.raises(InputError):
        IORNN.random(10, 4, 8, input_norm=float("nan"))


def test_make_planted_tanh():
    from spectral_rnn import make_planted

    p = make_planted("iornn", n_steps=2000, activation="tanh", input_norm=1.0, random_state=0)
    assert p.model.activation == Tanh() and p.redraws == 0
    np.testing.assert_allclose(np.linalg.norm(p.model.A1, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p.model.predict(p.X_test), p.Y_test)
    b = make_planted("brnn", d_x=12, d_h=3, n_steps=2000, activation="tanh", input_norm=1.0, random_state=0)
    assert isinstance(b.model, BRNN) and b.model.backward_activation == Tanh()
