"""Score functions for non-Gaussian inputs: Stein identities, the density-free score, exact laws,
user log-densities, the automatic choice and the refusals (issue "Inputs as they come")."""

import itertools
import math

import numpy as np
import pytest
import torch

from spectral_rnn import (
    AR1Process,
    GaussianAR1,
    IllConditionedError,
    InputError,
    LogDensityProcess,
    MomentLaw,
    SmoothLaw,
    SpectralBRNN,
    SpectralIORNN,
    StudentTLaw,
    cross_moment,
    make_planted,
    parameter_errors,
)
from spectral_rnn.datasets import draw_innovations
from spectral_rnn.scores import GaussianLaw, StepScores, innovation_stats

LAWS = ["gaussian", "laplace", "uniform", "bimodal", "t10"]


def monomials(d, degree):
    """All exponent tuples of total degree <= degree in d variables."""
    return [e for e in itertools.product(range(degree + 1), repeat=d) if sum(e) <= degree]


def poly_and_hessian(w, coefs, exps):
    """q(w) = sum_m c_m prod_i w_i^e_mi and its Hessian, per row of w (n, d)."""
    n, d = w.shape
    q = np.zeros(n)
    H = np.zeros((n, d, d))
    for c, e in zip(coefs, exps):
        q += c * np.prod(w ** np.array(e), axis=1)
        for i in range(d):
            for j in range(d):
                ee = np.array(e, dtype=float)
                if i == j:
                    if ee[i] < 2:
                        continue
                    f = ee[i] * (ee[i] - 1)
                    ee[i] -= 2
                else:
                    if ee[i] < 1 or ee[j] < 1:
                        continue
                    f = ee[i] * ee[j]
                    ee[i] -= 1
                    ee[j] -= 1
                H[:, i, j] += c * f * np.prod(w ** ee, axis=1)
    return q, H


def s2_of(law, w):
    """Dense S_2 (n, d, d) of a law on whitened samples (basis = identity)."""
    wt = torch.as_tensor(w)
    psi, kappa, tau = law.terms(wt)
    sc = StepScores(psi, kappa.expand_as(psi).contiguous(), torch.eye(w.shape[1], dtype=wt.dtype), tau)
    return sc.dense(2).numpy(), psi.numpy()


@pytest.mark.parametrize("law_name", LAWS)
@pytest.mark.parametrize("degree", [2, 3])
def test_density_free_stein_identity_on_random_polynomials(law_name, degree):
    """E[S_2 q] = E[hess q] for random polynomials q of the needed degree, and the defining moments
    of S_1, on fresh samples, within 5 standard errors; the Gaussian operator fails the same check
    for the non-Gaussian laws."""
    rng = np.random.default_rng(1)
    d, n = 2, 200_000
    law = MomentLaw(degree).fit(innovation_stats([draw_innovations(law_name, (1_000_000, d), rng)], d))
    w = draw_innovations(law_name, (n, d), rng)  # fresh data: the identity is a population property
    exps = monomials(d, degree)
    coefs = rng.standard_normal(len(exps)) / np.sqrt(len(exps))
    q, H = poly_and_hessian(w, coefs, exps)
    S2, S1 = s2_of(law, w)
    terms = q[:, None, None] * S2 - H
    z = np.abs(terms.mean(0)) / (terms.std(0) / np.sqrt(n) + 1e-12)  # in standard errors
    assert z.max() < 5, z
    for i in range(d):  # E[S_1 w^k] = k E[w^(k-1)], k = 0, 1, 2
        for k in range(3):
            t = S1[:, i] * w[:, i] ** k - (k * w[:, i] ** (k - 1) if k else 0.0)
            assert abs(t.mean()) < 5 * t.std() / np.sqrt(n) + 1e-12
    if law_name in ("laplace", "uniform", "bimodal"):
        S2g, _ = s2_of(GaussianLaw(), w)
        tg = q[:, None, None] * S2g - H
        zg = np.abs(tg.mean(0)) / (tg.std(0) / np.sqrt(n))
        assert zg.max() > 6, zg  # the Gaussian operator is biased: many standard errors off


def test_density_free_reduces_to_gaussian_closed_form():
    """On Gaussian data the density-free score is w w^T - I up to sampling error, and the moment
    tensors of the two scores differ by an amount that shrinks like 1/sqrt(N)."""
    rng = np.random.default_rng(0)
    law = MomentLaw(2).fit(innovation_stats([rng.standard_normal((1_000_000, 4))], 4))
    np.testing.assert_allclose(law.c1_, np.tile([0.0, 1.0, 0.0], (4, 1)), atol=0.01)
    np.testing.assert_allclose(law.c2_, np.tile([-1.0, 0.0, 1.0], (4, 1)), atol=0.02)
    diffs = np.zeros((2, 2))
    for i, n_steps in enumerate((40_000, 640_000)):
        for seed in (3, 4):
            p = make_planted("iornn", d_x=6, d_h=3, d_y=5, n_steps=n_steps, random_state=seed)
            gauss = AR1Process(innovations="gaussian").fit(p.X)
            free = AR1Process(innovations="moment").fit(p.X)
            Tg, Tf = cross_moment(p.X, p.Y, gauss), cross_moment(p.X, p.Y, free)
            diffs[i, seed - 3] = np.linalg.norm(Tg - Tf) / np.linalg.norm(Tg)
    # 16x the data: about 4x smaller on average; demand 2x
    assert diffs[1].mean() < diffs[0].mean() / 2, diffs


def test_user_log_density_matches_built_in_student_t():
    """A Student-t log-density written by a user gives the built-in law's S_1 and S_2 (1e-10)."""
    rng = np.random.default_rng(2)
    d = 3
    F = 0.4 * np.linalg.qr(rng.standard_normal((d, d)))[0]
    L = 0.3 * rng.standard_normal((d, d)) + np.eye(d)
    Sigma, b = L @ L.T, 0.2 * rng.standard_normal(d)
    df = np.array([5.0, 7.0, 11.0])
    proc = AR1Process(F=F, noise_cov=Sigma, intercept=b, innovations=StudentTLaw(df), initial_mean=np.zeros(d),
                      initial_cov=np.eye(d))
    W, W0 = torch.as_tensor(proc.whiten_), torch.as_tensor(proc.whiten0_)
    law = proc.law_
    Ft, bt = torch.as_tensor(F), torch.as_tensor(b)

    def log_prob(x, x_prev):
        return law.log_density((x - x_prev @ Ft.T - bt) @ W.T)

    def log_prob_first(x):
        return law.log_density(x @ W0.T)

    user = LogDensityProcess(log_prob, d, log_prob_first=log_prob_first)
    X = torch.as_tensor(proc.sample(7, 6, random_state=3))
    for two_sided in (False, True):
        a = proc.score_terms(X, None, 0, two_sided)
        u = user.score_terms(X, None, 0, two_sided)
        np.testing.assert_allclose(u.s.numpy(), a.s.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(u.dense(2).numpy(), a.dense(2).numpy(), rtol=1e-10, atol=1e-10)


def test_student_t_scores_are_derivatives_of_its_log_density():
    law = StudentTLaw(np.array([4.5, 9.0])).fit(innovation_stats([np.zeros((3, 2))], 2))
    w = torch.linspace(-4, 4, 41, dtype=torch.float64)[:, None].repeat(1, 2).requires_grad_(True)
    logp = law.log_density(w).sum()
    (g,) = torch.autograd.grad(logp, w, create_graph=True)
    psi, kappa, tau = law.terms(w)
    np.testing.assert_allclose(psi.detach().numpy(), -g.detach().numpy(), rtol=1e-10, atol=1e-12)
    (g2,) = torch.autograd.grad(psi.sum(), w, create_graph=True)
    np.testing.assert_allclose(kappa.detach().numpy(), g2.detach().numpy(), rtol=1e-10, atol=1e-12)
    (g3,) = torch.autograd.grad(kappa.sum(), w)
    np.testing.assert_allclose(tau.detach().numpy(), g3.numpy(), rtol=1e-10, atol=1e-12)


def test_smooth_law_table_agrees_with_its_basis_and_fits_the_laplace_score():
    rng = np.random.default_rng(4)
    w = draw_innovations("laplace", (200_000, 2), rng)
    law = SmoothLaw().fit(innovation_stats([w], 2))
    x = torch.linspace(-6, 6, 601, dtype=torch.float64)[:, None].repeat(1, 2)
    for a, b in zip(law.exact_terms(x), law.terms(x)):
        assert float((a - b).abs().max()) < 0.02 * float(a.abs().max())
    # the Laplace score (unit variance) is sqrt(2) sign(w): close in L2(p), and pointwise away from the cusp
    psi = law.terms(x)[0].numpy()
    away = (np.abs(x.numpy()) > 0.5) & (np.abs(x.numpy()) < 2.5)
    np.testing.assert_allclose(psi[away], math.sqrt(2) * np.sign(x.numpy()[away]), atol=0.35)
    fresh = draw_innovations("laplace", (100_000, 2), rng)
    mse = np.mean((law.terms(torch.as_tensor(fresh))[0].numpy() - math.sqrt(2) * np.sign(fresh)) ** 2)
    assert mse < 0.15, mse  # E[psi_true^2] = 2


@pytest.mark.parametrize("two_sided, want", [(False, "moment"), (True, "score-matching")])
def test_auto_choice(two_sided, want):
    p = make_planted("iornn", d_x=4, d_h=2, d_y=3, n_steps=100_000, random_state=0, innovations="laplace")
    proc = AR1Process(two_sided=two_sided).fit(p.X)
    assert proc.law_name_ == want and "not Gaussian" in proc.law_reason_
    g = make_planted("iornn", d_x=4, d_h=2, d_y=3, n_steps=100_000, random_state=0)
    proc = AR1Process(two_sided=two_sided).fit(g.X)
    assert proc.law_name_ == "gaussian" and "look Gaussian" in proc.law_reason_


def test_heavy_tails_are_refused():
    """Student-t with 3 degrees of freedom: infinite fourth moments, refused with a message that says so."""
    rng = np.random.default_rng(5)
    proc = GaussianAR1.random(4, random_state=0)
    from spectral_rnn.datasets import sample_inputs

    X = sample_inputs(proc, 20_000, 10, innovations="t3", random_state=rng)
    with pytest.raises(IllConditionedError, match="heavy-tailed.*refused below 3.5.*fourth moments look infinite"):
        AR1Process().fit(X)
    AR1Process(tail_check=False).fit(X)  # the user may insist
    X5 = sample_inputs(proc, 20_000, 10, innovations="laplace", random_state=rng)
    AR1Process().fit(X5)  # light tails pass


def test_discrete_and_deterministic_columns_are_named():
    rng = np.random.default_rng(6)
    X = GaussianAR1.random(3, random_state=0).sample(3000, 10, random_state=rng)
    Xd = X.copy()
    Xd[..., 1] = (rng.random(Xd.shape[:2]) < 0.3).astype(float)  # an i.i.d. 0/1 flag
    with pytest.raises(IllConditionedError, match="input column 1 is discrete"):
        AR1Process().fit(Xd)
    Xc = X.copy()
    Xc[..., 2] = np.arange(10)[None, :] * 0.1  # a clock: exactly predictable from its past
    with pytest.raises(IllConditionedError, match=r"column\(s\) 2 are \(near\) deterministic"):
        AR1Process().fit(Xc)
    # few values in the first rows (the check's quick look) but many later: counted in full, not refused
    Xs = X.copy()
    Xs[:20, :, 0] = np.where(Xs[:20, :, 0] > 0, 1.0, 0.0)  # 200 steps of a 0/1 flag, then continuous
    AR1Process().fit(Xs)
    Xs[..., 0] = np.where(X[..., 0] > 0, 1.0, 0.0)  # two values throughout: refused
    with pytest.raises(IllConditionedError, match="input column 0 is discrete"):
        AR1Process().fit(Xs)


def test_first_step_rule():
    proc = GaussianAR1.random(3, random_state=0)
    many = proc.sample(5000, 5, random_state=1)
    assert AR1Process().fit(many).first_step_ == "own"
    few = proc.sample(10, 300, random_state=2)
    q = AR1Process().fit(few)
    assert q.first_step_ == "stationary"
    np.testing.assert_allclose(q.F_ @ q.initial_cov_ @ q.F_.T + q.noise_cov_, q.initial_cov_, atol=1e-10)
    # a degenerate first-step law (all sequences start near one point) falls back to the stationary law
    deg = many.copy()
    deg[:, 0, 0] = 0.001 * deg[:, 0, 0]
    assert AR1Process().fit(deg).first_step_ == "stationary"
    assert AR1Process(first_step="own").fit(deg).first_step_ == "own"


def test_bad_options():
    with pytest.raises(InputError, match="unknown score law"):
        AR1Process(innovations="gaussian-ish")
    with pytest.raises(InputError, match="unknown score law"):
        SpectralIORNN(2, scores="magic").fit(*_tiny())
    with pytest.raises(InputError, match="degrees of freedom"):
        StudentTLaw(2.0).fit(innovation_stats([np.zeros((3, 2))], 2))
    with pytest.raises(InputError, match="first_step"):
        AR1Process(first_step="last")
    nan_law = LogDensityProcess(lambda x, xp: (x * np.nan).sum(-1), 3, log_prob_first=lambda x: -(x * x).sum(-1))
    X, Y = _tiny()
    with pytest.raises(InputError, match="NaN"):
        SpectralIORNN(2, process=nan_law).fit(X, Y)
    with pytest.raises(InputError, match="one-sided only"):
        SpectralBRNN(1, scores="moment").fit(X, Y)


def _tiny():
    p = make_planted("iornn", d_x=3, d_h=2, d_y=3, n_steps=5000, random_state=0)
    return p.X, p.Y


def test_forced_gaussian_refusal_names_the_cause():
    """Bimodal inputs with the Gaussian score: the refusal says the innovations are not Gaussian."""
    p = make_planted("brnn", d_x=12, d_h=3, d_y=8, n_steps=200_000, random_state=0, innovations="bimodal")
    with pytest.raises(IllConditionedError, match="not Gaussian.*scores='auto'"), \
            pytest.warns(RuntimeWarning, match="'gaussian' law's scores miss Stein's identity"):
        SpectralBRNN(3, scores="gaussian", random_state=0).fit(p.X, p.Y)


@pytest.mark.parametrize("law", ["laplace", "uniform"])
def test_io_rnn_default_scores_on_non_gaussian_inputs(law):
    """The default (auto) fits non-Gaussian inputs that the Gaussian score gets wrong."""
    p = make_planted("iornn", n_steps=300_000, random_state=1, innovations=law)
    auto = SpectralIORNN(4, random_state=0).fit(p.X, p.Y)
    assert auto.scores_ == "moment"
    err = parameter_errors(p.model, auto.model_)
    assert err["A1"] < 0.05 and err["A2"] < 0.06 and err["U"] < 0.15, err
    # the forced Gaussian score: a warning that it misses Stein's identity here, and a biased fit (or a refusal)
    with pytest.warns(RuntimeWarning, match="'gaussian' law's scores miss Stein's identity"):
        try:
            gauss = parameter_errors(p.model, SpectralIORNN(4, scores="gaussian", random_state=0).fit(p.X, p.Y).model_)
            assert gauss["A1"] > 3 * err["A1"], (gauss, err)
        except IllConditionedError:
            pass  # refused: also fine, the Gaussian score cannot fit these data


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["iornn", "brnn"])
@pytest.mark.parametrize("law", ["laplace", "uniform", "bimodal", "t10"])
def test_acceptance_non_gaussian_defaults(kind, law):
    """Issue floors at 1e6 steps, median over 5 seeds: A1, A2 <= 0.05, U <= 0.10, prediction <= 3e-3.
    Known shortfall (see README, "Your inputs are not Gaussian"): the BRNN on uniform innovations,
    refused, since its two-sided score needs a smooth density and the uniform law has edges."""
    if kind == "brnn" and law == "uniform":  # the known shortfall, refused with its reason (seeds 0-4: miss 2.4-2.7)
        for seed in range(5):
            p = make_planted(kind, n_steps=1_000_000, random_state=seed, innovations=law, d_x=12, d_h=3)
            with pytest.raises(IllConditionedError, match="no density model fits these innovations"):
                SpectralBRNN(3, random_state=0).fit(p.X, p.Y)
        return
    from spectral_rnn import prediction_error

    kw = {"d_x": 10, "d_h": 4} if kind == "iornn" else {"d_x": 12, "d_h": 3}
    E = SpectralIORNN if kind == "iornn" else SpectralBRNN
    rows = []
    for seed in range(5):
        p = make_planted(kind, n_steps=1_000_000, random_state=seed, innovations=law, **kw)
        est = E(kw["d_h"], random_state=0).fit(p.X, p.Y)
        err = parameter_errors(p.model, est.model_)
        pred = prediction_error(p.Y_test, est.predict(p.X_test))
        rows.append([max(err["A1"], err.get("B1", 0)), max(err["A2"], err.get("B2", 0)),
                     max(err["U"], err.get("V", 0)), pred])
    med = np.median(rows, axis=0)
    assert med[0] <= 0.05 and med[1] <= 0.05 and med[2] <= 0.10 and med[3] <= 3e-3, med


# ------------------------------------------------------------------ a law that misses Stein's identity
def _fitted(law, innovations, n=200_000, seed=0):
    rng = np.random.default_rng(seed)
    w = draw_innovations(innovations, (n, 2), rng)
    from spectral_rnn.scores import make_law

    law = make_law(law)
    return law.fit(innovation_stats([w], 2, histogram=law.wants_histogram)), w


@pytest.mark.parametrize("law,innovations,low,high", [
    ("gaussian", "gaussian", 0.0, 0.05), ("mixture", "bimodal", 0.0, 0.05), ("student-t", "t10", 0.0, 0.05),
    ("score-matching", "laplace", 0.0, 0.05),
    ("gaussian", "laplace", 1.2, 2.2), ("mixture", "uniform", 0.8, 2.0), ("score-matching", "uniform", 1.5, 3.5),
])
def test_stein_violation_separates_laws_that_fit_from_laws_that_do_not(law, innovations, low, high):
    """Measured at 2e5 samples (scores.stein_violation's docstring): at most 0.05 where the law fits,
    0.6 to 2.3 where it cannot (edges, or the Gaussian score on Laplace innovations: E[w^4] = 6)."""
    from spectral_rnn.scores import stein_violation

    fitted, w = _fitted(law, innovations)
    viol, se, mom = stein_violation(fitted, w)
    assert np.all((low <= viol) & (viol <= high)), (viol, se)
    if high <= 0.05:  # where the law fits, the measure is precise enough to tell 0.25 from 0
        assert np.all(se < 0.04), se
    if innovations == "laplace" and law == "gaussian":
        np.testing.assert_allclose(mom, 5.0, atol=0.3)  # E[(w^2 - 1) w^2] = E[w^4] - 1 = 5


@pytest.mark.parametrize("law,innovations,low,high", [
    ("gaussian", "gaussian", 0.0, 0.1), ("student-t", "t10", 0.0, 0.05), ("mixture", "bimodal", 0.0, 0.25),
    ("student-t", "laplace", 0.1, 0.3),
    ("gaussian", "t16", 1.0, 2.2), ("gaussian", "laplace", 8.0, 16.0), ("mixture", "uniform", 30.0, 60.0),
])
def test_third_order_stein_violation_flags_what_the_second_order_misses(law, innovations, low, high):
    """Third order (seeds 0-2 at 2e5 samples): at most 0.21 where the law fits (Student-t on Laplace
    included, whose tanh fits are as accurate as the true law's), 1.27-1.69 for the Gaussian score
    on t16 innovations, whose second-order miss (0.23-0.30) was within the first second-order
    tolerance (0.25 plus four standard errors)."""
    from spectral_rnn.scores import stein_violation

    fitted, w = _fitted(law, innovations)
    viol, se, mom = stein_violation(fitted, w, order=3)
    assert np.all((low <= viol) & (viol <= high)), (viol, se)
    if innovations == "t16":
        assert stein_violation(fitted, w)[0].max() < 0.33  # the second order does not tell
    if high <= 0.1:
        np.testing.assert_allclose(mom, 6.0, atol=0.6)  # E[h3 w^3] = E[third derivative of w^3] = 6
    with pytest.raises(InputError, match="order must be 2 or 3"):
        stein_violation(fitted, w, order=4)


def test_third_order_check_runs_only_for_odd_activations_and_refuses_when_auto(monkeypatch):
    """With the second-order check out of the way (its tolerance raised), a forced Gaussian law on t16
    innovations gets the third-order warning where the scores serve an odd activation (third_order)
    and nothing otherwise, and a law chosen by 'auto' that misses it is refused. (Student-t with 20
    degrees of freedom is the case the third order alone catches at the default tolerances, at the
    edge: second-order miss 0.17-0.22, third-order 0.85-1.27, tanh fits 10-27x less accurate.)"""
    import spectral_rnn.processes as processes

    monkeypatch.setattr(processes, "STEIN_TOLERANCE", 10.0)
    p = make_planted("iornn", d_x=3, d_h=1, d_y=3, n_steps=200_000, random_state=0, innovations="t16")
    with pytest.warns(RuntimeWarning, match="'gaussian' law's third-order scores .* miss Stein's identity"):
        proc = AR1Process(innovations="gaussian", third_order=True).fit(p.X)
    assert proc.stein_violation3_.max() > 0.8
    plain = AR1Process(innovations="gaussian").fit(p.X)
    assert np.all(np.isnan(plain.stein_violation3_))
    assert np.all(AR1Process(innovations="moment", third_order=True).fit(p.X).stein_violation3_ == 0)
    monkeypatch.setattr(processes, "choose_law", lambda *a, **k: ("gaussian", "as a test"))
    with pytest.raises(IllConditionedError, match="no density model fits these innovations.*third-order"):
        AR1Process(third_order=True).fit(p.X)


def test_second_order_tolerance_catches_the_gaussian_score_on_t16():
    """The Gaussian score on t16 innovations misses the second-order identity by 0.25 (E[w^4] = 3.5) and
    its planted IO-RNN fits are 5x less accurate (bench_forced_laws.py: A1 0.068 against 0.013 at 3e5
    steps); the first tolerance (0.25 plus four standard errors) let it through, 0.15 plus three warns.
    Light tails stay quiet."""
    import warnings

    p = make_planted("iornn", d_x=10, d_h=1, d_y=3, n_steps=100_000, random_state=0, innovations="t16")
    with pytest.warns(RuntimeWarning, match="'gaussian' law's scores miss Stein's identity"):
        proc = AR1Process(innovations="gaussian").fit(p.X)
    assert 0.2 < proc.stein_violation_.max() < 0.35
    g = make_planted("iornn", d_x=10, d_h=1, d_y=3, n_steps=100_000, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert AR1Process(innovations="gaussian").fit(g.X).stein_violation_.max() < 0.05


def test_a_stein_corrected_law_is_checked_through_its_base_density():
    """The correction makes Stein's identity exact for polynomials only; tanh's other terms keep the
    base density's scores. On uniform innovations (edges) every base misses, and the tanh IO-RNN the
    default returned quietly had A1 error 0.74 (bench_forced_laws.py, 3e5 steps, seeds 0-1): now the
    automatic choice is refused and a forced corrected law warns; on Laplace innovations the base fits
    and nothing is said."""
    import warnings

    p = make_planted("iornn", d_x=4, d_h=1, d_y=3, n_steps=100_000, random_state=0, innovations="uniform",
                     activation="tanh", input_norm=1.0)
    with pytest.raises(IllConditionedError, match="no density model fits.*'score-matching\\+stein' law's base density"):
        SpectralIORNN(1, activation="tanh", random_state=0).fit(p.X, p.Y)
    with pytest.warns(RuntimeWarning, match="'mixture\\+stein' law's base density \\('mixture'"):
        proc = AR1Process(innovations="mixture+stein", third_order=True).fit(p.X)
    assert proc.stein_violation_.max() > 0.5
    q = make_planted("iornn", d_x=4, d_h=1, d_y=3, n_steps=100_000, random_state=0, innovations="laplace")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        auto = AR1Process(third_order=True).fit(q.X)
    assert auto.law_name_.endswith("+stein") and auto.stein_violation3_.max() < 0.5


def test_a_law_that_misses_stein_is_refused_when_chosen_and_warned_when_forced():
    """Uniform innovations have edges: no smooth density has their score. The automatic choice of a
    BRNN (two-sided scores need a density) refuses with the reason; a law the user forces warns, and
    the violation is kept in stein_violation_."""
    p = make_planted("brnn", d_x=6, d_h=1, d_y=4, n_steps=100_000, random_state=0, innovations="uniform")
    with pytest.raises(IllConditionedError, match="no density model fits these innovations.*Stein's identity"):
        SpectralBRNN(1, random_state=0).fit(p.X, p.Y)
    with pytest.warns(RuntimeWarning, match="'mixture' law's scores miss Stein's identity"):
        proc = AR1Process(innovations="mixture").fit(p.X)
    assert proc.stein_violation_.max() > 0.5
    # the density-free score satisfies it by construction; a law that fits stays quiet
    assert np.all(AR1Process(innovations="moment").fit(p.X).stein_violation_ == 0)
    q = make_planted("iornn", d_x=4, d_h=1, d_y=3, n_steps=100_000, random_state=0, innovations="bimodal")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        assert AR1Process(innovations="mixture").fit(q.X).stein_violation_.max() < 0.1


def test_innovation_sample_is_bounded_for_wide_inputs():
    """The kept sample holds at most about SAMPLE_ENTRIES numbers (at d = 500: 40,000 rows, not 200,000),
    while the moments use every row."""
    from spectral_rnn.scores import SAMPLE_ENTRIES

    d, rows, n_chunks = 500, 8_000, 10
    rng = np.random.default_rng(0)
    chunks = (rng.standard_normal((rows, d)) for _ in range(n_chunks))
    stats = innovation_stats(chunks, d, n_total=rows * n_chunks)
    assert stats.n == rows * n_chunks
    assert stats.sample.shape == (SAMPLE_ENTRIES // d, d)
    np.testing.assert_allclose(stats.powers[2], 1.0, atol=0.05)
    narrow = innovation_stats([rng.standard_normal((300_000, 2))], 2, n_total=300_000)
    assert narrow.sample.shape[0] == 300_000 // 2  # stride 2: 150,000 rows, under 2 x max_sample
