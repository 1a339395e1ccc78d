"""The model-kind registry and the recurrence kernel: one place decides what a kind is.

A toy kind registered here for one test (a reverse-time IO-RNN with its own torch mapping)
goes through the model file, planting, export, refinement, metrics and the comparison
without any of those modules knowing it."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from spectral_rnn import BRNN, IORNN, DivergenceError, InputError, Polynomial, as_activation
from spectral_rnn.chain import run_chain, step_mask
from spectral_rnn.datasets import make_planted
from spectral_rnn.io import load_model, save_model
from spectral_rnn.kinds import KINDS, ModelKind, from_torch, get_kind, kind_of, resolve_kind
from spectral_rnn.metrics import parameter_errors
from spectral_rnn.models import ChainSpec, RNNModel, _as_matrix
from spectral_rnn.refine import refine


class SkipRNN(RNNModel):
    """Toy kind: an IO-RNN whose output also reads the input directly, ``y_t = A2^T h_t + C^T x_t``
    (a second, memoryless chain: recurrent weights fixed at zero, identity activation)."""

    kind = "skip"
    chains = (ChainSpec("A1", "U", "A2", "activation"), ChainSpec("Ci", "Z", "C", "identity"))

    def __init__(self, A1, U, A2, Ci=None, Z=None, C=None, activation=(0.0, 1.0, 0.5), identity=(0.0, 1.0)):
        self.A1 = _as_matrix(A1, "A1", (None, None))
        d_h, d_x = self.A1.shape
        self.U = _as_matrix(U, "U", (d_h, d_h))
        self.A2 = _as_matrix(A2, "A2", (d_h, None))
        self.Ci = np.eye(d_x) if Ci is None else _as_matrix(Ci, "Ci", (d_x, d_x))
        self.Z = np.zeros((d_x, d_x)) if Z is None else _as_matrix(Z, "Z", (d_x, d_x))
        self.C = _as_matrix(np.zeros((d_x, self.A2.shape[1])) if C is None else C, "C", (d_x, self.A2.shape[1]))
        self.activation = as_activation(activation)
        self.identity = as_activation(identity)

    @classmethod
    def random(cls, d_x, d_h, d_y, activation=(0.0, 1.0, 0.5), random_state=None, **kw):
        base = IORNN.random(d_x, d_h, d_y, activation=activation, random_state=random_state, **kw)
        C = 0.2 * np.random.default_rng(0).standard_normal((d_x, d_y))
        return cls(base.A1, base.U, base.A2, C=C, activation=activation)


@pytest.fixture
def toy_kind(monkeypatch):
    monkeypatch.setitem(KINDS, "skip", ModelKind("skip", SkipRNN, None, "toy"))
    return KINDS["skip"]


def test_registry_names_every_kind_and_its_parts():
    assert list(KINDS) == ["iornn", "brnn"]
    assert get_kind("iornn").cls is IORNN and get_kind("brnn").cls is BRNN
    assert get_kind("brnn").parameter_names == ("A1", "U", "A2", "B1", "V", "B2")
    assert get_kind("brnn").n_chains == 2 and get_kind("iornn").n_chains == 1
    assert resolve_kind(None, True).name == "brnn" and resolve_kind(None, False).name == "iornn"
    with pytest.raises(InputError, match="unknown model kind"):
        get_kind("lstm")
    with pytest.raises(InputError, match="two-chain"):
        resolve_kind("iornn", True)
    with pytest.raises(InputError, match="registered kind"):
        kind_of(object(), "save_model")
    with pytest.raises(InputError, match="unknown model kind"):
        make_planted(kind="lstm", n_steps=100)


def test_from_torch_follows_the_module_kind():
    m = BRNN.random(5, 2, 3, random_state=0)
    mod = m.to_torch(dtype=torch.float64)
    assert mod.model_kind == "brnn"
    assert from_torch(mod) == m
    mod.model_kind = None  # a module built by hand: the kind with its chain layout
    assert isinstance(from_torch(mod), BRNN)
    mod.model_kind = "iornn"  # a one-chain kind cannot hold a two-chain module
    with pytest.raises(InputError, match="does not hold a IORNN"):
        from_torch(mod)


def test_a_new_kind_needs_only_its_class_and_one_registry_line(toy_kind, tmp_path):
    p = make_planted(kind="skip", d_x=4, d_h=2, d_y=3, n_steps=2000, n_test=10, random_state=0)
    m = p.model
    assert type(m) is SkipRNN and np.abs(m.C).sum() > 0
    # the mean is the sum of both chains, computed by the generic model code
    base = IORNN(m.A1, m.U, m.A2, m.activation)
    np.testing.assert_allclose(m.predict(p.X[:5]), base.predict(p.X[:5]) + p.X[:5] @ m.C, atol=1e-12)
    save_model(m, tmp_path / "m.safetensors")
    back = load_model(tmp_path / "m.safetensors")
    assert back == m
    with np.errstate(invalid="ignore"):  # Z is zero in both: 0/0
        errs = parameter_errors(m, m.replace(C=1.1 * m.C))  # every chain compared, the skip chain too
    assert errs["A1"] == errs["U"] == errs["A2"] == 0.0 and errs["C"] == pytest.approx(0.1)
    with pytest.raises(InputError, match="no PyTorch module"):
        refine(m, p.X, p.Y)


def test_kernel_checks_divergence_and_masks_padding():
    drive = torch.full((2, 10, 1), 3.0, dtype=torch.float64)
    W = torch.tensor([[2.0]], dtype=torch.float64)
    f = Polynomial([0.0, 1.0, 1.0])
    with pytest.raises(DivergenceError, match="sequence 0"):
        run_chain(drive, W, f)
    assert torch.isinf(run_chain(drive, W, f, limit=None)).any()  # training: no check
    valid = step_mask(torch.tensor([2, 1]), 10)
    H = run_chain(drive, W, f, valid)
    assert (H[0, 2:] == 0).all() and (H[1, 1:] == 0).all() and H[0, 1, 0] == f(3.0 + 2 * f(3.0))
    Hr = run_chain(drive, W, f, valid, reverse=True)
    assert Hr[1, 0, 0] == f(3.0) and Hr[0, 1, 0] == f(3.0) and Hr[0, 0, 0] == f(3.0 + 2 * f(3.0))
    assert step_mask(torch.tensor([6, 6]), 6) is None and step_mask(None, 6) is None


def test_layers_import_without_cycles():
    """chain <- torch_export <- models <- kinds: a lower layer never imports a higher one."""
    code = (
        "import sys, spectral_rnn.torch_export as t;"
        "assert 'spectral_rnn.models' not in sys.modules and 'spectral_rnn.kinds' not in sys.modules;"
        "import spectral_rnn.models;"
        "assert 'spectral_rnn.kinds' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
