"""Decomposition of partially symmetric tensors sum_j w_j (x) a_j (x) a_j with signed weights."""

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from spectral_rnn import CPDecomposer, IllConditionedError, InputError, decompose, decompose_projected
from spectral_rnn.decomposition import als_refine, jennrich, output_factors


def planted(d_out=8, d_in=10, r=4, seed=0):
    """T = sum_j w_j (x) a_j (x) a_j, a_j unit (not orthogonal), w_j of mixed signs."""
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((r, d_in))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    W = rng.standard_normal((r, d_out))
    W *= rng.choice([-1.0, 1.0], (r, 1))
    return np.einsum("jy,ja,jb->yab", W, A, A), A, W


def match(A_true, A_est):
    """Hungarian matching on |cos|; returns perm with A_est[perm[j]] ~ +-A_true[j] and the cosines."""
    nt = A_true / np.linalg.norm(A_true, axis=1, keepdims=True)
    ne = A_est / np.linalg.norm(A_est, axis=1, keepdims=True)
    C = np.abs(nt @ ne.T)
    rows, cols = linear_sum_assignment(-C)
    return cols, C[rows, cols]


def factor_errors(A, W, dec):
    p, _ = match(A, dec.A)
    # unit-norm directions: a_j enters twice, so its sign is free and W is fixed exactly
    At = A / np.linalg.norm(A, axis=1, keepdims=True)
    Ae = dec.A[p]
    a_err = np.max(np.minimum(np.linalg.norm(Ae - At, axis=1), np.linalg.norm(Ae + At, axis=1)))
    w_err = np.linalg.norm(dec.W[p] - W) / np.linalg.norm(W)
    return a_err, w_err


def test_signed_weights_are_recovered_with_their_signs():
    """The contracted weights mu_j = w_j . v of the planted tensor have mixed signs (no whitening route
    applies); the decomposition must return them with their signs, not their magnitudes."""
    T, A, W = planted()
    v = np.random.default_rng(9).standard_normal(8)
    mu = W @ v
    assert mu.min() < 0 < mu.max()  # the premise: mixed signs
    dec = decompose(T, 4, random_state=0)
    p, _ = match(A, dec.A)
    mu_est = dec.W[p] @ v
    np.testing.assert_allclose(mu_est, mu, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("seed", range(6))
def test_decompose_exact(seed):
    T, A, W = planted(seed=seed)
    dec = decompose(T, 4, random_state=seed)
    assert dec.A.shape == (4, 10) and dec.W.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(dec.A, axis=1), 1.0, atol=1e-12)
    a_err, w_err = factor_errors(A, W, dec)
    assert a_err < 1e-8 and w_err < 1e-8, (a_err, w_err)
    assert dec.gap > 1e6  # exact rank: sigma_5 ~ 0


@pytest.mark.parametrize("shape", [(3, 3, 3), (5, 7, 3), (9, 5, 5), (4, 12, 4)])
def test_decompose_other_shapes(shape):
    d_out, d_in, r = shape
    T, A, W = planted(d_out, d_in, r, seed=11)
    a_err, w_err = factor_errors(A, W, decompose(T, r, random_state=0))
    assert a_err < 1e-7 and w_err < 1e-7


def test_decompose_projected_from_larger_space():
    d_in, r = 30, 4
    T, A, W = planted(8, d_in, r, seed=3)
    rng = np.random.default_rng(0)
    # Q spans the A rows plus 5 random directions (as from a sketch with oversampling)
    Q = np.linalg.qr(np.hstack([A.T, rng.standard_normal((d_in, 5))]))[0]
    Q = Q @ np.linalg.qr(rng.standard_normal((9, 9)))[0]  # any basis of that span
    Tp = np.einsum("yab,ap,bq->ypq", T, Q, Q)
    dec = decompose_projected(Tp, Q, r, random_state=1)
    assert dec.A.shape == (r, d_in)
    a_err, w_err = factor_errors(A, W, dec)
    assert a_err < 1e-8 and w_err < 1e-8
    dec2 = CPDecomposer().decompose_projected(Tp, Q, r, random_state=1)
    np.testing.assert_allclose(dec2.A, dec.A)
    with pytest.raises(InputError):
        decompose_projected(Tp, Q, 10)


@pytest.mark.parametrize("seed", range(4))
def test_jennrich_on_core(seed):
    rng = np.random.default_rng(seed)
    r = 5
    G = rng.standard_normal((r, r))
    G /= np.linalg.norm(G, axis=0, keepdims=True)
    beta = rng.standard_normal((r, r))  # beta_j (columns) of mixed signs
    core = np.einsum("pj,qj,sj->pqs", beta, G, G)
    Gh = jennrich(core, random_state=seed)
    np.testing.assert_allclose(np.linalg.norm(Gh, axis=0), 1.0, atol=1e-12)
    p, cos = match(G.T, Gh.T)
    assert np.min(cos) > 1 - 1e-9


def test_jennrich_singular_core_raises():
    core = np.zeros((3, 3, 3))
    core[:, 0, 0] = 1.0  # rank 1 in a 3x3x3 core: every contraction is singular
    with pytest.raises(IllConditionedError):
        jennrich(core, random_state=0)


def test_output_factors_and_als_exact():
    T, A, W = planted(seed=5)
    np.testing.assert_allclose(output_factors(T, A), W, atol=1e-12)
    rng = np.random.default_rng(0)
    A0 = A + 0.05 * rng.standard_normal(A.shape)
    A0 /= np.linalg.norm(A0, axis=1, keepdims=True)
    A1, W1 = als_refine(T, A0, output_factors(T, A0), n_iter=50)
    p, cos = match(A, A1)
    assert np.min(cos) > 1 - 1e-8
    np.testing.assert_allclose(W1[p], W, atol=1e-6)


@pytest.mark.parametrize("eps", [1e-3, 1e-2])
def test_noise_robustness(eps):
    errs = []
    for seed in range(5):
        T, A, W = planted(seed=seed)
        N = np.random.default_rng(100 + seed).standard_normal(T.shape)
        N = 0.5 * (N + N.transpose(0, 2, 1))
        Tn = T + eps * np.linalg.norm(T) * N / np.linalg.norm(N)
        errs.append(factor_errors(A, W, decompose(Tn, 4, random_state=seed)))
    errs = np.array(errs)
    # first-order perturbation: factor error a small multiple of the relative noise
    assert np.all(errs < 3 * eps), errs  # measured ~0.4 eps


def test_rank_too_large():
    T, A, W = planted(5, 6, 3, seed=2)
    with pytest.raises(InputError):
        decompose(T, 6)  # exceeds d_out = 5
    with pytest.raises(InputError):
        decompose(T, 7)
    with pytest.raises(IllConditionedError):
        decompose(T, 4)  # exact rank 3: no 4th component
    Tn = T + 1e-3 * np.random.default_rng(0).standard_normal(T.shape)
    with pytest.raises(IllConditionedError):
        decompose(Tn, 4)  # noisy: the 4th singular value is noise, no gap


def test_bad_tensor_shape():
    with pytest.raises(InputError):
        decompose(np.zeros((3, 4, 5)), 2)
    with pytest.raises(InputError):
        decompose(np.zeros((3, 4)), 2)


def test_seeded_reproducibility():
    T, A, W = planted(seed=7)
    Tn = T + 1e-2 * np.random.default_rng(0).standard_normal(T.shape)
    d1, d2 = decompose(Tn, 4, random_state=42), decompose(Tn, 4, random_state=42)
    np.testing.assert_array_equal(d1.A, d2.A)
    np.testing.assert_array_equal(d1.W, d2.W)
    d3 = decompose(Tn, 4, random_state=np.random.default_rng(42))
    np.testing.assert_array_equal(d1.A, d3.A)
    # another seed: the same components up to order and sign, to within the noise level (1e-2 relative:
    # the ALS sweeps stop before full convergence, so two seeds differ at a fraction of the noise)
    d4 = decompose(Tn, 4, random_state=7)
    p, cos = match(d1.A, d4.A)
    assert np.min(cos) > 1 - 1e-4
    assert np.linalg.norm(d4.W[p] - d1.W) / np.linalg.norm(d1.W) < 1e-2
    assert max(factor_errors(A, W, d1)) < 0.1 and max(factor_errors(A, W, d4)) < 0.1


def test_many_draws_never_fail():
    """Robust to unlucky random draws: 30 seeds on one noisy tensor with two close components."""
    T, A, W = planted(seed=8)
    A[1] = A[0] + 0.3 * A[1]
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    T = np.einsum("jy,ja,jb->yab", W, A, A)
    for seed in range(30):
        a_err, w_err = factor_errors(A, W, decompose(T, 4, random_state=seed))
        assert a_err < 1e-6 and w_err < 1e-6, (seed, a_err, w_err)


def _planted_correlated(seed, d_out=8, d_in=10, r=8, rho=0.5):
    """A full-rank output mode (r = d_out, as in the BRNN's tensor) and input factors sharing a common
    direction (pairwise cosines about 0.5): a tensor on which alternating least squares converges slowly."""
    rng = np.random.default_rng(seed)
    A = rho * rng.standard_normal(d_in) + (1 - rho) * rng.standard_normal((r, d_in))
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    W = rng.standard_normal((r, d_out))
    return np.einsum("jy,ja,jb->yab", W, A, A), A, W


@pytest.mark.parametrize("seed", range(3))
def test_als_runs_to_convergence_so_the_error_shrinks_with_the_noise(seed):
    """Sweeps run until the factors stop moving: the error is then proportional to the noise in the
    tensor (consistency), where a fixed ten sweeps stop short of the optimum by several times the
    statistical error (what made the BRNN's error grow from 3e6 to 3e7 steps)."""
    from spectral_rnn.decomposition import ALS_TOL, MAX_ALS

    T, A, W = _planted_correlated(seed)
    N = np.random.default_rng(100 + seed).standard_normal(T.shape)
    N = 0.5 * (N + N.transpose(0, 2, 1))
    noisy = {eps: T + eps * np.linalg.norm(T) * N / np.linalg.norm(N) for eps in (1e-3, 1e-4)}
    errs = {}
    for eps, Tn in noisy.items():
        dec = decompose(Tn, 8, random_state=0, min_gap=1.0)
        assert dec.als_sweeps < MAX_ALS and dec.als_change <= ALS_TOL
        errs[eps] = factor_errors(A, W, dec)[0]
    few = decompose(noisy[1e-3], 8, random_state=0, n_als=10, als_tol=0.0, min_gap=1.0)
    assert few.als_sweeps == 10
    assert errs[1e-4] <= 0.15 * errs[1e-3], errs  # error proportional to the noise
    assert errs[1e-3] <= 0.5 * factor_errors(A, W, few)[0]  # ten sweeps were not the optimum


def test_als_settings_are_checked():
    T, _, _ = planted()
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(InputError, match="n_als"):
            decompose(T, 4, random_state=0, n_als=bad)
    for bad in (-1e-3, float("nan"), "x"):
        with pytest.raises(InputError, match="als_tol"):
            decompose(T, 4, random_state=0, als_tol=bad)
    assert decompose(T, 4, random_state=0, n_als=0).als_sweeps == 0


def test_als_that_stops_at_its_cap_says_so():
    T, A, W = _planted_correlated(1)
    N = np.random.default_rng(101).standard_normal(T.shape)
    Tn = T + 1e-3 * np.linalg.norm(T) * 0.5 * (N + N.transpose(0, 2, 1)) / np.linalg.norm(N)
    with pytest.warns(RuntimeWarning, match="did not converge in 3 sweeps"):
        dec = decompose(Tn, 8, random_state=0, n_als=3, min_gap=1.0)
    assert dec.als_sweeps == 3 and dec.als_change > 1e-6
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        decompose(Tn, 8, random_state=0, n_als=3, als_tol=0.0, min_gap=1.0)  # exactly 3 asked: no warning
        decompose(Tn, 8, random_state=0, min_gap=1.0)  # converged: no warning


def test_a_breakdown_is_an_ill_conditioned_error_not_a_linalg_error():
    """Non-finite numbers inside the decomposition (a garbage tensor, e.g. from a score law that misses
    Stein's identity: a forced mixture on uniform innovations did it) are refused as IllConditionedError
    before LAPACK sees them, not raised as numpy's LinAlgError."""
    rng = np.random.default_rng(0)
    T = rng.standard_normal((4, 3, 3))
    A = rng.standard_normal((2, 3))
    A[0, 0] = np.nan
    with pytest.raises(IllConditionedError, match="broke down"):
        output_factors(T, A)
    with pytest.raises(IllConditionedError, match="broke down"):
        als_refine(T, A, rng.standard_normal((2, 4)), 5)
    T[0, 0, 0] = np.inf
    with pytest.raises(IllConditionedError, match="broke down"):
        als_refine(T, rng.standard_normal((2, 3)), rng.standard_normal((2, 4)), 5)
