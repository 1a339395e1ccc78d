"""Planted problems: data drawn from a known model, for tests, examples and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._checks import DivergenceError, InputError, check_random_state
from .activations import ActivationLike
from .kinds import get_kind
from .models import RNNModel
from .processes import GaussianAR1

__all__ = ["PlantedProblem", "make_planted", "draw_innovations", "sample_inputs", "INNOVATION_LAWS"]

#: innovation laws of planted inputs (each i.i.d. per coordinate, zero mean, unit variance);
#: ``"t<df>"`` (e.g. ``"t10"``) is a standardised Student-t with that many degrees of freedom
INNOVATION_LAWS = ("gaussian", "laplace", "uniform", "bimodal", "t<df>")


def draw_innovations(law: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """I.i.d. draws with zero mean and unit variance from ``law`` (see :data:`INNOVATION_LAWS`).

    ``"bimodal"``: an equal mixture of N(-0.9, 0.19) and N(0.9, 0.19)."""
    if law == "gaussian":
        return rng.standard_normal(shape)
    if law == "laplace":
        return rng.laplace(0.0, 1.0 / np.sqrt(2.0), shape)
    if law == "uniform":
        return rng.uniform(-np.sqrt(3.0), np.sqrt(3.0), shape)
    if law == "bimodal":
        a = 0.9
        return np.where(rng.random(shape) < 0.5, -a, a) + np.sqrt(1 - a * a) * rng.standard_normal(shape)
    if isinstance(law, str) and law.startswith("t"):
        try:
            df = float(law[1:])
        except ValueError:
            df = float("nan")
        if not df > 2:
            raise InputError(f"a Student-t law needs more than 2 degrees of freedom, got {law!r}")
        return rng.standard_t(df, shape) * np.sqrt((df - 2) / df)
    raise InputError(f"unknown innovation law {law!r}: expected one of {', '.join(INNOVATION_LAWS)}")


def sample_inputs(
    process: GaussianAR1, n_sequences: int, length: int, innovations: str = "gaussian", chain: str = "linear",
    random_state: int | np.random.Generator | None = None,
) -> np.ndarray:
    """Inputs ``(n_sequences, length, d)`` from the autoregression of ``process`` (its ``F``, ``b``,
    ``Sigma`` and first-step law) with i.i.d. innovations ``Sigma^(1/2) w``, ``w`` from
    ``innovations``; ``chain="tanh"`` draws the nonlinear chain ``x_t = tanh(F x_{t-1}) + b + e_t``.
    Gaussian linear inputs are exactly ``process.sample``."""
    if chain not in ("linear", "tanh"):
        raise InputError(f"chain must be 'linear' or 'tanh', got {chain!r}")
    rng = check_random_state(random_state)
    if innovations == "gaussian" and chain == "linear":
        return process.sample(n_sequences, length, random_state=rng)
    d = process.dim
    ev, V = np.linalg.eigh(process.noise_cov_)
    L = (V * np.sqrt(ev)) @ V.T
    ev0, V0 = np.linalg.eigh(process.initial_cov_)
    L0 = (V0 * np.sqrt(ev0)) @ V0.T
    X = np.empty((n_sequences, length, d))
    X[:, 0] = process.initial_mean_ + draw_innovations(innovations, (n_sequences, d), rng) @ L0
    for t in range(1, length):
        prev = X[:, t - 1] @ process.F_.T
        if chain == "tanh":
            prev = np.tanh(prev)
        X[:, t] = prev + process.intercept_ + draw_innovations(innovations, (n_sequences, d), rng) @ L
    return X


@dataclass
class PlantedProblem:
    """A known model, its input process and data drawn from them.

    ``X`` (n_sequences, length, d_x), ``Y`` (n_sequences, length, d_y);
    ``X_test`` (n_test, length, d_x) fresh inputs and ``Y_test`` the true conditional
    mean of their outputs (no noise); ``redraws``: how many model draws were rejected
    because the polynomial recursion diverged on these inputs (see :func:`make_planted`).
    """

    process: GaussianAR1
    model: RNNModel
    X: np.ndarray
    Y: np.ndarray
    X_test: np.ndarray
    Y_test: np.ndarray
    noise_std: float
    redraws: int
    innovations: str = "gaussian"
    chain: str = "linear"

    def held_out(self, n_sequences: int, random_state: int | np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Fresh inputs and the true conditional mean of their outputs (no noise).

        Unlike ``X_test``, these inputs were not part of the stability check of the
        planted model, so on rare draws the true recursion may diverge on them
        (:class:`DivergenceError`)."""
        X = sample_inputs(self.process, n_sequences, self.X.shape[1], self.innovations, self.chain, random_state)
        return X, self.model.predict(X)


def make_planted(
    kind: str = "iornn",
    d_x: int = 10,
    d_h: int = 4,
    d_y: int = 8,
    n_steps: int = 100_000,
    length: int = 10,
    activation: ActivationLike = (0.0, 1.0, 0.5),
    recurrent_norm: float = 0.3,
    input_std: float = 0.4,
    output_std: float | None = None,
    noise_std: float = 0.1,
    n_test: int = 2000,
    test_length: int | None = None,
    rho: float = 0.5,
    random_state: int | np.random.Generator | None = None,
    max_redraws: int = 20,
    innovations: str = "gaussian",
    chain: str = "linear",
    input_norm: float | None = None,
) -> PlantedProblem:
    """Draw a planted model of a registered kind (:mod:`spectral_rnn.kinds`: ``"iornn"``,
    ``"brnn"`` with ``d_h`` units per direction, ...) and ``n_steps`` time steps of data in
    sequences of ``length``.

    Inputs follow :meth:`GaussianAR1.random` (``rho``; unit stationary variance);
    weights follow the kind's planted generator (:meth:`RNNModel.random`; ``input_norm``: rescale each
    row of ``A1`` (and ``B1``) to that norm, e.g. ``activation="tanh", input_norm=1.0`` for
    the planted tanh model of issue 8); outputs get i.i.d.
    ``N(0, noise_std^2)`` noise; ``n_test`` held-out sequences of ``test_length`` steps
    (default ``length``) come with the true conditional mean of their outputs. Polynomial recursions are not
    globally stable: with heavy enough inputs some weight draws blow up on some
    sequence. Such a draw is rejected and the weights drawn again (at most
    ``max_redraws`` times; the count is in ``redraws``), so the training and held-out
    data always follow the returned model exactly.

    ``innovations`` (:data:`INNOVATION_LAWS`) and ``chain`` ("linear" or "tanh") choose the
    law of the inputs (:func:`sample_inputs`): non-Gaussian innovations with the same
    covariance, or the nonlinear chain ``x_t = tanh(F x_{t-1}) + e_t``.
    """
    spec = get_kind(kind)
    if n_steps < length:
        raise InputError(f"n_steps ({n_steps}) must be at least one sequence of length {length}")
    rng = check_random_state(random_state)
    process = GaussianAR1.random(d_x, rho=rho, random_state=rng)
    X = sample_inputs(process, n_steps // length, length, innovations, chain, rng)
    test_length = length if test_length is None else test_length
    X_test = sample_inputs(process, max(1, n_test), test_length, innovations, chain, rng)[:n_test]
    for redraws in range(max_redraws + 1):
        model = spec.planted(d_x, d_h, d_y, activation=activation, recurrent_norm=recurrent_norm,
                             input_std=input_std, output_std=output_std, random_state=rng, input_norm=input_norm)
        try:
            Y = model.simulate(X, noise_std=noise_std, random_state=rng)
            Y_test = model.predict(X_test) if n_test else np.zeros((0, test_length, d_y))
        except DivergenceError:
            continue
        return PlantedProblem(process, model, X, Y, X_test, Y_test, noise_std, redraws, innovations, chain)
    raise DivergenceError(
        f"every one of {max_redraws + 1} planted models diverged on these inputs: use smaller weights or inputs"
    )
