"""Shared planted fixtures (builders in tests/_helpers.py, importable from any test module)."""

import pytest
from _helpers import planted_problem, seeded_problem


@pytest.fixture(scope="session")
def small_refine_data():
    """IO-RNN (6 -> 3 -> 5), 600 sequences of 8 steps, noise 0.1: ``(truth, X, Y)``."""
    truth, _, X, Y = seeded_problem(6, 3, 5, 600, 8)
    return truth, X, Y


@pytest.fixture(scope="session")
def refine_problem():
    """The same problem with 200 fresh held-out sequences and their true conditional mean:
    ``(truth, X, Y, X_test, Y_test_mean)``."""
    truth, proc, X, Y = seeded_problem(6, 3, 5, 600, 8)
    Xt = proc.sample(200, 8, random_state=4)
    return truth, X, Y, Xt, truth.predict(Xt)


@pytest.fixture(scope="session")
def compare_problem():
    """IO-RNN (10 -> 4 -> 8), 2500 sequences of 8 steps, noise 0.1: ``(truth, X, Y)``."""
    truth, _, X, Y = seeded_problem(10, 4, 8, 2500, 8)
    return truth, X, Y


@pytest.fixture(scope="session")
def planted_readme():
    """The planted model of docs/method.md ('Planted models') at 2e4 steps."""
    return planted_problem("iornn", n_steps=20_000, random_state=0)
