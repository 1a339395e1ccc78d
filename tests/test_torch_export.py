"""PyTorch export: the module (torch.nn.RNN for tanh, PolynomialRNN for polynomials) reproduces
predict, both directions, ragged batches, round trip."""

import numpy as np
import pytest
import torch

from spectral_rnn import BRNN, IORNN, GaussianAR1, InputError, Tanh
from spectral_rnn import Polynomial
from spectral_rnn.chain import run_chain
from spectral_rnn.kinds import from_torch
from spectral_rnn.torch_export import PolynomialRNN, TorchRNN, to_torch

ACTS = [(0.0, 1.0, 0.5), (0.1, 1.0, 0.5, -0.2)]


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def data():
    X = GaussianAR1.random(6, random_state=0).sample(40, 11, random_state=1)
    L = np.random.default_rng(2).integers(1, 12, size=40)
    L[0] = 11
    return X, L


def models(act):
    return [
        IORNN.random(6, 3, 5, activation=act, random_state=3),
        BRNN.random(6, 3, 5, activation=act, random_state=4),
        BRNN(*[np.asarray(w) for w in BRNN.random(6, 3, 5, random_state=5).parameters().values()][:3],
             B1=0.3 * np.ones((2, 6)) / 6, V=0.2 * np.eye(2), B2=0.5 * np.ones((2, 5)),
             activation=act, backward_activation=(0.0, 1.0, -0.3)),
    ]


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_module_reproduces_predict(data, act, dtype, tol):
    X, L = data
    for m in models(act):
        mod = to_torch(m, dtype=dtype)
        for lengths in (None, L):
            P = m.predict(X, lengths)
            with torch.no_grad():
                Q = mod(torch.as_tensor(X, dtype=dtype), None if lengths is None else torch.as_tensor(lengths))
            assert Q.dtype == dtype and Q.shape == P.shape
            assert rel(Q.numpy(), P) < tol, (type(m).__name__, lengths is None)


def test_ragged_padding_never_read_and_zero(data):
    X, L = data
    m = BRNN.random(6, 3, 5, random_state=7)
    Xbad = X.copy()
    mask = np.arange(X.shape[1])[None, :] < L[:, None]
    Xbad[~mask] = np.nan
    mod = m.to_torch(dtype=torch.float64)
    with torch.no_grad():
        Q = mod(torch.as_tensor(Xbad), torch.as_tensor(L)).numpy()
    assert np.isfinite(Q).all()
    assert np.all(Q[~mask] == 0)
    # each sequence as if stored alone, without padding: the backward chain starts at its own end
    for i in (1, 2, 3):
        Pi = m.predict(X[i : i + 1, : L[i]])
        np.testing.assert_allclose(Q[i, : L[i]], Pi[0], rtol=1e-12, atol=1e-12)


def test_round_trip_exact():
    for act in ACTS:
        for m in models(act):
            back = from_torch(to_torch(m, dtype=torch.float64))
            assert back == m
            assert type(back) is type(m)
            back32 = from_torch(to_torch(m))
            for k in m._names:
                np.testing.assert_allclose(getattr(back32, k), getattr(m, k), rtol=1e-6, atol=1e-7)


def test_parameter_names_shapes_and_buffers():
    m = BRNN.random(6, 3, 5, random_state=0)
    mod = to_torch(m)
    shapes = {k: tuple(v.shape) for k, v in mod.named_parameters()}
    assert shapes == {
        "weight_ih_l0": (3, 6), "weight_hh_l0": (3, 3), "weight_out": (5, 3),
        "weight_ih_l0_reverse": (3, 6), "weight_hh_l0_reverse": (3, 3), "weight_out_reverse": (5, 3),
    }
    assert not any("bias" in k for k in mod.state_dict())
    assert mod.coefficients.tolist() == [0.0, 1.0, 0.5]
    assert "coefficients" in mod.state_dict() and "coefficients_reverse" in mod.state_dict()
    np.testing.assert_array_equal(mod.weight_ih_l0.detach().double().numpy(), m.A1.astype(np.float32))
    io = to_torch(IORNN.random(6, 3, 5, random_state=0))
    assert {k for k, _ in io.named_parameters()} == {"weight_ih_l0", "weight_hh_l0", "weight_out"}
    # a module built from scratch accepts the state dict and computes the same thing
    fresh = PolynomialRNN(6, 3, 5, [0.0, 0.0, 0.0], bidirectional=True)
    fresh.load_state_dict(mod.state_dict())
    x = torch.randn(4, 7, 6)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), mod(x))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("ragged", [False, True])
def test_custom_backward_matches_autograd(reverse, ragged):
    g = torch.Generator().manual_seed(0)
    drive = (0.5 * torch.randn(5, 8, 3, generator=g, dtype=torch.float64)).requires_grad_()
    W = (0.3 * torch.randn(3, 3, generator=g, dtype=torch.float64)).requires_grad_()
    mask = None
    if ragged:
        L = torch.tensor([8, 3, 1, 6, 8])
        mask = torch.arange(8)[None, :] < L[:, None]
    coefs = Polynomial([0.1, 1.0, 0.5, -0.2])
    w = torch.randn(5, 8, 3, generator=g, dtype=torch.float64)
    grads = []
    for custom in (True, False):
        H = run_chain(drive, W, coefs, mask, reverse, None, custom_backward=custom)
        grads.append(torch.autograd.grad((H * w).sum(), (drive, W)))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(
        lambda d, u: run_chain(d, u, coefs, mask, reverse, None), (drive, W), eps=1e-6, atol=1e-6
    )


def test_module_trains():
    m = IORNN.random(6, 3, 5, random_state=1)
    mod = to_torch(m)
    x = torch.randn(16, 9, 6)
    y = torch.randn(16, 9, 5)
    loss = ((mod(x, torch.full((16,), 9)) - y) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mod.parameters())
    assert mod.coefficients.grad is None


def test_bad_inputs():
    with pytest.raises(InputError):
        to_torch("not a model")
    with pytest.raises(InputError):
        from_torch(torch.nn.Linear(2, 2))
    mod = to_torch(IORNN.random(6, 3, 5, random_state=1))
    with pytest.raises(InputError):
        mod(torch.randn(2, 3, 4))
    with pytest.raises(InputError):
        PolynomialRNN(0, 3, 5, [0, 1, 0.5])
    with torch.no_grad():
        mod.weight_hh_l0.fill_(float("nan"))
    with pytest.raises(InputError):
        from_torch(mod)


def test_reset_parameters_follows_torch_rnn_bounds():
    mod = PolynomialRNN(10, 4, 8, [0, 1, 0.5], bidirectional=True)
    mod.reset_parameters(scale=0.3, generator=torch.Generator().manual_seed(0))
    for name, p in mod.named_parameters():
        bound = 0.3 / np.sqrt(8 if name.startswith("weight_out") else 4)
        assert float(p.detach().abs().max()) <= bound + 1e-7
        assert float(p.detach().abs().max()) > 0.5 * bound


# ---------------------------------------------------------------- tanh: PyTorch's own nn.RNN
def maxrel(a, b):
    """Largest absolute deviation over the largest magnitude."""
    return float(np.abs(np.asarray(a, dtype=np.float64) - b).max() / np.abs(b).max())


def tanh_models():
    return [
        IORNN.random(6, 3, 5, activation="tanh", input_norm=1.0, random_state=3),
        IORNN.random(6, 3, 5, activation="tanh", recurrent_norm=0.9, input_std=1.0, random_state=4),
        BRNN.random(6, 3, 5, activation="tanh", input_norm=1.0, random_state=5),
        BRNN.random(6, 3, 5, activation="tanh", recurrent_norm=0.9, input_std=1.0, random_state=6),
    ]


def test_tanh_exports_to_torch_nn_rnn():
    for m in tanh_models():
        mod = to_torch(m)
        bidir = isinstance(m, BRNN)
        assert isinstance(mod, TorchRNN) and isinstance(mod.rnn, torch.nn.RNN) and isinstance(mod.readout, torch.nn.Linear)
        r = mod.rnn
        assert (r.input_size, r.hidden_size, r.num_layers) == (6, 3, 1)
        assert r.nonlinearity == "tanh" and r.bias is False and r.batch_first and r.bidirectional == bidir
        assert mod.readout.bias is None and tuple(mod.readout.weight.shape) == (5, 6 if bidir else 3)
        assert not any("bias" in k for k in mod.state_dict())
        np.testing.assert_array_equal(r.weight_ih_l0.detach().numpy(), m.A1.astype(np.float32))
        np.testing.assert_array_equal(r.weight_hh_l0.detach().numpy(), m.U.astype(np.float32))
        if bidir:
            np.testing.assert_array_equal(r.weight_hh_l0_reverse.detach().numpy(), m.V.astype(np.float32))
        assert m.to_torch().__class__ is TorchRNN


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-13), (torch.float32, 1e-6)])
def test_tanh_module_reproduces_predict(data, dtype, tol):
    X, L = data
    for m in tanh_models():
        mod = to_torch(m, dtype=dtype)
        for lengths in (None, L):
            P = m.predict(X, lengths)
            with torch.no_grad():
                Q = mod(torch.as_tensor(X, dtype=dtype), None if lengths is None else torch.as_tensor(lengths))
            assert Q.dtype == dtype and Q.shape == P.shape
            assert maxrel(Q.numpy(), P) < tol, (type(m).__name__, lengths is None, maxrel(Q.numpy(), P))


def test_tanh_ragged_padding_never_read_backward_starts_at_own_end(data):
    X, L = data
    m = BRNN.random(6, 3, 5, activation="tanh", input_std=1.0, random_state=7)
    mask = np.arange(X.shape[1])[None, :] < L[:, None]
    Xbad = np.where(mask[..., None], X, np.nan)
    mod = to_torch(m, dtype=torch.float64)
    with torch.no_grad():
        Q = mod(torch.as_tensor(Xbad), torch.as_tensor(L)).numpy()
        H, Z = mod.hidden_states(torch.as_tensor(Xbad), L)  # lengths as a NumPy array works too
    assert np.isfinite(Q).all() and np.all(Q[~mask] == 0)
    assert H.shape == Z.shape == (40, 11, 3)
    Hm, Zm = m.hidden_states(X, L)
    np.testing.assert_allclose(H.numpy(), Hm, atol=1e-13)
    np.testing.assert_allclose(Z.numpy(), Zm, atol=1e-13)
    for i in (1, 2, 3):
        Pi = m.predict(X[i : i + 1, : L[i]])
        np.testing.assert_allclose(Q[i, : L[i]], Pi[0], rtol=1e-12, atol=1e-13)


def test_tanh_round_trip_and_state_dict():
    for m in tanh_models():
        back = from_torch(to_torch(m, dtype=torch.float64))
        assert back == m and type(back) is type(m) and back.activation == Tanh()
        back32 = from_torch(to_torch(m))
        for k in m._names:
            np.testing.assert_allclose(getattr(back32, k), getattr(m, k), rtol=1e-6, atol=1e-7)
        # a module built from scratch accepts the state dict and computes the same thing
        mod = to_torch(m)
        fresh = TorchRNN(6, 3, 5, bidirectional=isinstance(m, BRNN))
        fresh.load_state_dict(mod.state_dict())
        x = torch.randn(4, 7, 6)
        with torch.no_grad():
            torch.testing.assert_close(fresh(x), mod(x))


def test_tanh_module_trains_with_packed_batches():
    m = BRNN.random(6, 3, 5, activation="tanh", random_state=1)
    mod = to_torch(m)
    x, y = torch.randn(16, 9, 6), torch.randn(16, 9, 5)
    L = torch.randint(1, 10, (16,))
    loss = ((mod(x, L) - y) ** 2).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in mod.parameters())


def test_tanh_export_refusals():
    f = BRNN.random(6, 3, 5, activation="tanh", random_state=0)
    unequal = BRNN(f.A1, f.U, f.A2, f.B1[:2], f.V[:2, :2], f.B2[:2], "tanh")
    assert unequal.predict(np.zeros((1, 4, 6))).shape == (1, 4, 5)  # fine as a model
    with pytest.raises(InputError, match="as many backward as forward units"):
        to_torch(unequal)
    mixed = BRNN(f.A1, f.U, f.A2, f.B1, f.V, f.B2, "tanh", backward_activation="0,1,0.5")
    with pytest.raises(InputError, match="all tanh or all polynomial"):
        to_torch(mixed)
    mod = to_torch(f)
    with pytest.raises(InputError):
        mod(torch.randn(2, 3, 4))
    with pytest.raises(InputError):
        TorchRNN(6, 0, 5)
    mod.rnn = torch.nn.RNN(6, 3, bias=True, batch_first=True, bidirectional=True)
    with pytest.raises(InputError):
        from_torch(mod)
    mod = to_torch(IORNN.random(6, 3, 5, activation="tanh", random_state=0))
    with torch.no_grad():
        mod.rnn.weight_hh_l0.fill_(float("nan"))
    with pytest.raises(InputError):
        from_torch(mod)


def test_tanh_reset_parameters_is_torch_default_distribution():
    mod = TorchRNN(10, 4, 8, bidirectional=True)
    mod.reset_parameters(scale=0.3, generator=torch.Generator().manual_seed(0))
    for name, p in mod.named_parameters():
        bound = 0.3 / np.sqrt(8 if name.startswith("readout") else 4)
        assert 0.5 * bound < float(p.detach().abs().max()) <= bound + 1e-7, name
    a, b = TorchRNN(10, 4, 8), TorchRNN(10, 4, 8)
    a.reset_parameters(generator=torch.Generator().manual_seed(1))
    b.reset_parameters(generator=torch.Generator().manual_seed(1))
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q)


def test_tanh_packed_path_equals_plain_path(data):
    # the path that exact=True takes on CUDA (always packed), checked on the CPU
    X, _ = data
    mod = to_torch(BRNN.random(6, 3, 5, activation="tanh", random_state=2), dtype=torch.float64)
    x = torch.as_tensor(X)
    with torch.no_grad():
        full = torch.full((x.shape[0],), x.shape[1])
        torch.testing.assert_close(mod.readout(mod._packed(x, full, x.shape[1])), mod(x), rtol=1e-14, atol=1e-14)
    assert mod.exact


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tanh_module_reproduces_predict_on_cuda(data):
    X, L = data
    for m in tanh_models():
        mod = to_torch(m, device="cuda")
        for lengths in (None, L):
            P = m.predict(X, lengths)
            with torch.no_grad():
                Q = mod(torch.as_tensor(X, dtype=torch.float32, device="cuda"),
                        None if lengths is None else torch.as_tensor(lengths)).cpu().numpy()
            assert maxrel(Q, P) < 1e-6, (type(m).__name__, lengths is None, maxrel(Q, P))
