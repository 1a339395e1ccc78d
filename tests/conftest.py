"""Shared planted fixtures (builders in tests/_helpers.py, importable from any test module)."""

import signal

import pytest
from _helpers import planted_problem, seeded_problem


@pytest.fixture(autouse=True, scope="session")
def _sigint_handled():
    """A test run started in the background by a non-interactive shell (``pytest &``) inherits
    SIGINT ignored, and the command line rightly leaves an ignored signal ignored; the interrupt
    tests (in process and in child processes) need it handled, as in a terminal. Restored after."""
    old = signal.getsignal(signal.SIGINT)
    if old == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    if old == signal.SIG_IGN:
        signal.signal(signal.SIGINT, old)


@pytest.fixture(scope="session")
def refine_problem():
    """IO-RNN (6 -> 3 -> 5), 600 sequences of 8 steps, noise 0.1, with 200 fresh held-out
    sequences and their true conditional mean: ``(truth, X, Y, X_test, Y_test_mean)``."""
    truth, proc, X, Y = seeded_problem(6, 3, 5, 600, 8)
    Xt = proc.sample(200, 8, random_state=4)
    return truth, X, Y, Xt, truth.predict(Xt)


@pytest.fixture(scope="session")
def small_refine_data(refine_problem):
    """``(truth, X, Y)`` of :func:`refine_problem`."""
    return refine_problem[:3]


@pytest.fixture(scope="session")
def compare_problem():
    """IO-RNN (10 -> 4 -> 8), 2500 sequences of 8 steps, noise 0.1: ``(truth, X, Y)``."""
    return _without_process(seeded_problem(10, 4, 8, 2500, 8))


def _without_process(problem):
    truth, _, X, Y = problem
    return truth, X, Y


@pytest.fixture(scope="session")
def planted_readme():
    """The planted model of docs/method.md ('Planted models') at 2e4 steps."""
    return planted_problem("iornn", n_steps=20_000, random_state=0)
