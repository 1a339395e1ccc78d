"""The scikit-learn contract, in 3-D (sequences): scikit-learn's estimator checks that make sense
for sequence estimators, over every estimator and every pluggable part.

Estimators (SpectralIORNN, SpectralBRNN; polynomial and tanh): no parameter mutation in fit,
idempotent fit, ``sklearn.base.clone``, pickling round trip, not-fitted error (a SpectralRNNError
and an AttributeError), ``random_state`` as None / int / Generator / RandomState, a failed fit
leaves no fitted state behind. Parts (input processes, 1-D laws, the decomposer): the same where
they apply, and get_params / set_params / repr.
"""

import copy
import pickle

import numpy as np
import pytest
import torch

from spectral_rnn import (
    AR1Process,
    CPDecomposer,
    GaussianAR1,
    GaussianLaw,
    InputError,
    LogDensityProcess,
    MomentLaw,
    NotFittedError,
    SmoothLaw,
    SpectralBRNN,
    SpectralIORNN,
    SpectralRNNError,
    StudentTLaw,
    make_planted,
)
from spectral_rnn.scores import innovation_stats

sklearn_base = pytest.importorskip("sklearn.base")

ESTIMATORS = {
    "iornn-poly": (SpectralIORNN, "iornn", (0.0, 1.0, 0.5)),
    "brnn-poly": (SpectralBRNN, "brnn", (0.0, 1.0, 0.5)),
    "iornn-tanh": (SpectralIORNN, "iornn", "tanh"),
    "brnn-tanh": (SpectralBRNN, "brnn", "tanh"),
}


def _same(a, b) -> bool:
    """Equal values, arrays and nested containers included."""
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _fitted_names(obj) -> set[str]:
    return {k for k in vars(obj) if k.endswith("_") and not k.startswith("_")}


@pytest.fixture(scope="module", params=list(ESTIMATORS))
def case(request):
    cls, kind, act = ESTIMATORS[request.param]
    d_h = 2 if kind == "iornn" else 1
    p = make_planted(kind=kind, d_x=5, d_h=d_h, d_y=4, n_steps=6000, activation=act, n_test=0,
                     input_norm=1.0 if act == "tanh" else None, random_state=3)
    make = lambda **kw: cls(d_h, act, **{"random_state": 0, **kw})  # noqa: E731
    fitted = make().fit(p.X, p.Y)
    return make, p, fitted


def test_fit_does_not_change_parameters_and_sets_only_underscore_attributes(case):
    make, p, _ = case
    est = make(process=AR1Process(), decomposer=CPDecomposer())
    before = est.get_params()
    public_before = {k: v for k, v in vars(est).items() if not k.startswith("_")}
    est.fit(p.X, p.Y)
    after = est.get_params()
    assert all(after[k] is before[k] for k in before), "fit replaced a constructor parameter"
    assert not est.process.is_fitted, "fit fitted the user's process in place"
    added = {k for k in vars(est) if not k.startswith("_")} - set(public_before)
    assert added and all(k.endswith("_") for k in added), sorted(added)
    assert {k: vars(est)[k] for k in public_before} == public_before


def test_fit_is_idempotent(case):
    make, p, fitted = case
    again = copy.deepcopy(fitted).fit(p.X, p.Y)
    for name in fitted.model_.parameter_names():
        np.testing.assert_array_equal(getattr(again, name + "_"), getattr(fitted, name + "_"))
    np.testing.assert_array_equal(again.predict(p.X[:20]), fitted.predict(p.X[:20]))


def test_clone_and_pickle(case):
    make, p, fitted = case
    c = sklearn_base.clone(fitted)
    assert type(c) is type(fitted) and not _fitted_names(c)
    assert all(_same(v, fitted.get_params()[k]) for k, v in c.get_params().items())
    assert repr(c) == repr(fitted) and "hidden_size" in repr(c)
    back = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(back.predict(p.X[:20]), fitted.predict(p.X[:20]))
    assert _fitted_names(back) == _fitted_names(fitted)


def test_not_fitted_error(case):
    make, p, _ = case
    est = make()
    for call in (lambda: est.predict(p.X), lambda: est.score(p.X, p.Y)):
        with pytest.raises(NotFittedError) as info:
            call()
        assert isinstance(info.value, SpectralRNNError) and isinstance(info.value, AttributeError)
    assert not hasattr(est, "model_")  # hasattr's AttributeError contract


@pytest.mark.parametrize("seed", [None, 7, np.random.default_rng(7), np.random.RandomState(7)],
                         ids=["None", "int", "Generator", "RandomState"])
def test_random_state_kinds(case, seed):
    make, p, _ = case
    est = make(random_state=seed).fit(p.X, p.Y)
    assert est.score(p.X, p.Y) > 0.5
    if isinstance(seed, int):  # an int seed reproduces the fit exactly
        np.testing.assert_array_equal(make(random_state=seed).fit(p.X, p.Y).A1_, est.A1_)


def test_failed_fit_leaves_no_fitted_state(case, monkeypatch):
    make, p, fitted = case
    est = make()
    with pytest.raises(InputError):
        est.fit(p.X, p.Y[:, :, :1] * 0.0)  # constant outputs: refused
    assert not _fitted_names(est)
    # a failure after the fitted attributes were assigned (the last step of a fit) rolls them back
    real = type(est)._set_fitted

    def set_then_fail(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise InputError("late failure")

    monkeypatch.setattr(type(est), "_set_fitted", set_then_fail)
    with pytest.raises(InputError, match="late failure"):
        est.fit(p.X, p.Y)
    assert not _fitted_names(est)
    refit = copy.deepcopy(fitted)
    with pytest.raises(InputError, match="late failure"):
        refit.fit(p.X[: len(p.X) // 2], p.Y[: len(p.X) // 2])
    assert _fitted_names(refit) == _fitted_names(fitted)
    np.testing.assert_array_equal(refit.A1_, fitted.A1_)  # the earlier fit stands, untouched


# ----------------------------------------------------------------------------- parts


def _log_prob(x, x_prev):  # module level: LogDensityProcess must pickle
    return -0.5 * ((x - 0.5 * x_prev) ** 2).sum(-1)


@pytest.fixture(scope="module")
def inputs():
    return GaussianAR1.random(3, random_state=0).sample(400, 8, random_state=1)


PROCESSES = {
    "AR1Process": lambda: AR1Process(innovations="moment", first_step="stationary"),
    "AR1Process-auto": lambda: AR1Process(),
    "GaussianAR1": lambda: GaussianAR1(),
    "LogDensityProcess": lambda: LogDensityProcess(_log_prob, 3),
}


@pytest.mark.parametrize("name", list(PROCESSES))
def test_process_contract(name, inputs, monkeypatch):
    proc = PROCESSES[name]()
    params = proc.get_params()
    assert not proc.is_fitted
    fitted = proc.fit(inputs)
    assert fitted is proc and proc.is_fitted
    assert all(proc.get_params()[k] is v for k, v in params.items()), "fit replaced a constructor parameter"
    state = {k: v for k, v in vars(proc).items() if k.endswith("_")}
    proc.fit(inputs)  # idempotent
    assert state.keys() == {k for k in vars(proc) if k.endswith("_")}
    for k, v in state.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(vars(proc)[k], v, err_msg=k)
    c = sklearn_base.clone(proc)
    assert not c.is_fitted and c.get_params().keys() == params.keys()
    back = pickle.loads(pickle.dumps(proc))
    s1 = proc.score_terms(torch.as_tensor(inputs[:5]), None)
    s2 = back.score_terms(torch.as_tensor(inputs[:5]), None)
    torch.testing.assert_close(s1.s, s2.s)
    assert type(proc).__name__ in repr(proc)
    with pytest.raises(InputError):
        proc.set_params(no_such_parameter=1)
    # a failed fit leaves the process as it was
    fresh = PROCESSES[name]()
    with pytest.raises(InputError):
        fresh.fit(inputs[:1, :2])
    assert not fresh.is_fitted and not _fitted_names(fresh)
    if isinstance(fresh, AR1Process):  # a failure after F_, noise_cov_, ... were assigned
        def fail(*args, **kwargs):
            raise InputError("late failure")

        monkeypatch.setattr(type(fresh), "_fit_laws", fail)
        with pytest.raises(InputError, match="late failure"):
            fresh.fit(inputs)
        assert not fresh.is_fitted and not _fitted_names(fresh)


def test_known_process_keeps_its_arguments():
    """AR1Process.fit used to overwrite the F it was given: fitted values now go to F_."""
    F, S = 0.5 * np.eye(3), np.eye(3)
    proc = AR1Process(F=F, noise_cov=S, innovations="gaussian")
    X = GaussianAR1(F=-0.3 * np.eye(3), noise_cov=S).sample(500, 10, random_state=0)
    proc.fit(X)
    assert proc.F is F and proc.noise_cov is S
    assert np.allclose(proc.F_, -0.3 * np.eye(3), atol=0.05)


LAWS = {"GaussianLaw": GaussianLaw, "MomentLaw": lambda: MomentLaw(2), "StudentTLaw": StudentTLaw,
        "SmoothLaw": SmoothLaw}


@pytest.mark.parametrize("name", list(LAWS))
def test_law_contract(name):
    law = LAWS[name]()
    w = torch.as_tensor(np.random.default_rng(0).standard_t(8, (3000, 2)) * np.sqrt(6 / 8))
    stats = innovation_stats([w], 2)
    before = copy.deepcopy(vars(law))
    fitted = law.fit(stats)
    assert all(_same(v, vars(law)[k]) for k, v in before.items()) and vars(law).keys() == before.keys()
    again = law.fit(stats)
    for a, b in zip(fitted.terms(w[:50]), again.terms(w[:50])):
        if a is not None:
            torch.testing.assert_close(a, b)
    c = sklearn_base.clone(law)
    assert type(c) is type(law) and c.get_params().keys() == law.get_params().keys()
    back = pickle.loads(pickle.dumps(fitted))
    torch.testing.assert_close(back.terms(w[:50])[0], fitted.terms(w[:50])[0])
    assert repr(law).startswith(type(law).__name__ + "(")


def test_decomposer_contract():
    dec = CPDecomposer(n_als=5)
    assert repr(dec) == "CPDecomposer(n_als=5, oversample=6, als_tol=1e-08)"
    assert sklearn_base.clone(dec).get_params() == {"n_als": 5, "oversample": 6, "als_tol": 1e-8}
    assert dec.set_params(oversample=3) is dec and dec.oversample == 3
    assert pickle.loads(pickle.dumps(dec)).get_params() == dec.get_params()
    rng = np.random.default_rng(0)
    A = np.linalg.qr(rng.standard_normal((5, 3)))[0].T  # (r, d_in), unit rows
    W = rng.standard_normal((3, 4)) * np.array([[3.0], [2.0], [1.0]])  # (r, d_out)
    T = np.einsum("ro,ri,rj->oij", W, A, A)
    params = dec.get_params()
    results = [dec.decompose(T, 3, random_state=s) for s in (None, 4, np.random.default_rng(4),
                                                             np.random.RandomState(4), 4)]
    for r in results:
        np.testing.assert_allclose(np.einsum("ro,ri,rj->oij", r.W, r.A, r.A), T, atol=1e-8)
    np.testing.assert_array_equal(results[1].A, results[4].A)
    assert dec.get_params() == params
    with pytest.raises(SpectralRNNError):
        dec.decompose(T, 9)
    assert dec.get_params() == params
