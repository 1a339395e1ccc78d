"""Planted problems: the data follow the returned model exactly."""

from __future__ import annotations

import numpy as np
import pytest

from spectral_rnn import BRNN, IORNN, DivergenceError, GaussianAR1, InputError, make_planted


@pytest.mark.parametrize("kind, cls", [("iornn", IORNN), ("brnn", BRNN)])
def test_data_follow_the_model(kind, cls):
    p = make_planted(kind, 6, 2, 5, n_steps=20_000, length=8, noise_std=0.1, n_test=300, random_state=0)
    assert isinstance(p.model, cls)
    assert p.X.shape == (2500, 8, 6) and p.Y.shape == (2500, 8, 5)
    assert p.X_test.shape == (300, 8, 6) and p.Y_test.shape == (300, 8, 5)
    resid = p.Y - p.model.predict(p.X)
    assert abs(resid.std() - 0.1) < 0.005 and abs(resid.mean()) < 0.005
    np.testing.assert_allclose(p.Y_test, p.model.predict(p.X_test))
    # seeded: the same draw twice
    q = make_planted(kind, 6, 2, 5, n_steps=20_000, length=8, noise_std=0.1, n_test=300, random_state=0)
    np.testing.assert_array_equal(p.Y, q.Y)


def test_divergent_draws_are_redrawn_then_refused():
    # moderately large input weights: some draws blow up and are redrawn
    p = make_planted("iornn", 10, 4, 8, n_steps=20_000, input_std=0.8, random_state=1, max_redraws=50)
    assert p.redraws > 0
    p.model.predict(p.X)  # the returned model is stable on its data
    with pytest.raises(DivergenceError, match="diverged"):
        make_planted("iornn", 10, 4, 8, n_steps=20_000, input_std=5.0, random_state=1, max_redraws=3)


def test_redraw_count_is_the_number_of_rejected_draws():
    """Replay make_planted's draws by hand: ``redraws`` counts exactly the models that diverged
    before the returned one, and the returned model is the first that did not."""
    from spectral_rnn.datasets import sample_inputs

    kw = dict(n_steps=20_000, input_std=0.8, random_state=1, max_redraws=50)
    p = make_planted("iornn", 10, 4, 8, **kw)
    rng = np.random.default_rng(1)
    proc = GaussianAR1.random(10, rho=0.5, random_state=rng)
    X = sample_inputs(proc, 2000, 10, random_state=rng)
    X_test = sample_inputs(proc, 2000, 10, random_state=rng)
    rejected = 0
    while True:
        model = IORNN.random(10, 4, 8, input_std=0.8, random_state=rng)
        try:
            model.simulate(X, noise_std=0.1, random_state=rng)
            model.predict(X_test)
            break
        except DivergenceError:
            rejected += 1
    assert rejected >= 2  # the premise: this seed rejects several draws
    assert p.redraws == rejected and p.model == model


def test_bad_arguments():
    with pytest.raises(InputError):
        make_planted("gru")
    with pytest.raises(InputError):
        make_planted(n_steps=5, length=10)
