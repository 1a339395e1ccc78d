"""The recurrent models: IO-RNN and bidirectional RNN with polynomial or tanh activations.

Conventions (docs/method.md, section 'Models and conventions'), batch-first::

    X: (n_sequences, T, d_x)    Y: (n_sequences, T, d_y)    lengths: (n_sequences,)

    IO-RNN:  h_t = f(A1 x_t + U h_{t-1}), h_0 = 0;  y_t = A2^T h_t + noise
    BRNN:    also z_t = g(B1 x_t + V z_{t+1}), z_{T+1} = 0;  y_t = A2^T h_t + B2^T z_t + noise

Row j of ``A1``, ``U`` and ``A2`` (and ``B1``, ``V``, ``B2``) belongs to hidden unit j.
Steps past a sequence's length are padding: they are never read, and predictions
there are zero.

A model is a sum of *chains* (:class:`ChainSpec`: input, recurrent and output weights, an
activation, a direction), each run by the one recurrence kernel :func:`spectral_rnn.chain.run_chain`.
:class:`RNNModel` implements prediction, simulation, parameters, planting and the PyTorch
mapping for any chain layout; a model kind is a subclass naming its chains, registered in
:mod:`spectral_rnn.kinds`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._checks import (
    DivergenceError,
    InputError,
    as_sequences,
    check_dtype,
    check_finite,
    check_lengths,
    check_random_state,
    check_real,
    resolve_device,
    valid_mask,
)
from .activations import Activation, ActivationLike, as_activation
from .chain import DIVERGENCE_LIMIT, run_chain, step_mask
from .torch_export import ChainWeights, chains_of_module, module_of_chains, new_module

__all__ = ["IORNN", "BRNN", "RNNModel", "ChainSpec", "random_weights", "run_chain", "DIVERGENCE_LIMIT"]


@dataclass(frozen=True)
class ChainSpec:
    """One chain of a model: the attribute names of its input ``(d_h, d_x)``, recurrent
    ``(d_h, d_h)`` and output ``(d_h, d_y)`` weights and of its activation; ``reverse``:
    it runs backwards in time."""

    input: str
    recurrent: str
    output: str
    activation: str
    reverse: bool = False


def _as_matrix(a: object, name: str, shape: tuple[int | None, int | None]) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().to(torch.float64).numpy() if a.is_floating_point() else a.detach().cpu().numpy()
    try:
        raw = np.asarray(a)
    except Exception:  # a ragged nesting
        raise InputError(f"{name} must be a 2-d matrix of real numbers (a ragged nesting was given)") from None
    if raw.dtype.kind not in "fiu":
        raise InputError(f"{name} must hold real numbers, got dtype {raw.dtype}")
    arr = np.array(raw, dtype=np.float64)  # always a fresh, contiguous, native copy
    if arr.ndim != 2 or any(s is not None and s != d for s, d in zip(shape, arr.shape)):
        want = "(" + ", ".join("?" if s is None else str(s) for s in shape) + ")"
        raise InputError(f"{name} must have shape {want}, got {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return arr


def random_weights(
    shape: tuple[int, int], std: float, rng: np.random.Generator
) -> np.ndarray:
    return std * rng.standard_normal(shape)


def _random_recurrent(d_h: int, norm: float, rng: np.random.Generator) -> np.ndarray:
    M = rng.standard_normal((d_h, d_h))
    return norm * M / np.linalg.norm(M, 2)


def _random_input(shape: tuple[int, int], std: float, norm: float | None, rng: np.random.Generator) -> np.ndarray:
    """Gaussian input weights (std ``std``); with ``norm``, each row rescaled to that Euclidean norm."""
    A = random_weights(shape, std, rng)
    if norm is not None:
        if not (np.isfinite(norm) and norm >= 0):
            raise InputError(f"input_norm must be a non-negative number or None, got {norm!r}")
        A = norm * A / np.linalg.norm(A, axis=1, keepdims=True)
    return A


class RNNModel:
    """A sum of chains (:attr:`chains`): prediction, simulation, planting and the PyTorch mapping.

    A subclass sets :attr:`kind` and :attr:`chains` and a constructor taking every weight
    and activation attribute by name (so ``type(m)(**m.parameters(), **m.activations())``
    rebuilds ``m``).
    """

    kind: str = ""
    chains: tuple[ChainSpec, ...] = ()

    @classmethod
    def parameter_names(cls) -> tuple[str, ...]:
        """The weight matrices' names, chain after chain (input, recurrent, output)."""
        return tuple(n for c in cls.chains for n in (c.input, c.recurrent, c.output))

    @property
    def _names(self) -> tuple[str, ...]:
        return self.parameter_names()

    def parameters(self) -> dict[str, np.ndarray]:
        """The weight matrices by name (copies)."""
        return {k: getattr(self, k).copy() for k in self.parameter_names()}

    def activations(self) -> dict[str, Activation]:
        """The activations by attribute name (one per distinct chain activation)."""
        return {c.activation: getattr(self, c.activation) for c in self.chains}

    def replace(self, **weights: object) -> "RNNModel":
        """A new model of this kind with some weight matrices replaced (activations kept)."""
        return type(self)(**{**self.parameters(), **weights}, **self.activations())

    def to_torch(self, dtype: torch.dtype = torch.float32, device: str | None = None,
                 custom_backward: bool = True) -> torch.nn.Module:
        """This model as a trainable ``nn.Module`` computing :meth:`predict`: a
        :class:`~spectral_rnn.torch_export.TorchRNN` (``torch.nn.RNN`` + ``nn.Linear``) for tanh,
        a :class:`~spectral_rnn.torch_export.PolynomialRNN` for polynomials."""
        dev = None if device is None else resolve_device(device)
        mod = module_of_chains(self._chain_weights(), check_dtype(dtype), dev, custom_backward)
        mod.model_kind = self.kind
        return mod

    @classmethod
    def from_module(cls, module: torch.nn.Module) -> "RNNModel":
        """The model of this kind holding ``module``'s weights (float64 copies)."""
        got = chains_of_module(module)
        if [c.reverse for c in got] != [c.reverse for c in cls.chains]:
            raise InputError(f"a {type(module).__name__} with {len(got)} chain(s) does not hold a {cls.__name__}")
        kw: dict[str, object] = {}
        for spec, w in zip(cls.chains, got):
            kw.update({spec.input: w.input, spec.recurrent: w.recurrent, spec.output: w.output})
            kw.setdefault(spec.activation, w.activation)
        return cls(**kw)

    @classmethod
    def new_module(cls, d_x: int, d_h: int, d_y: int, activation: ActivationLike,
                   dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """An untrained module of this kind's layout (``d_h`` units per chain)."""
        mod = new_module(d_x, d_h, d_y, as_activation(activation), [c.reverse for c in cls.chains], dtype)
        mod.model_kind = cls.kind
        return mod

    def _chain_weights(self) -> list[ChainWeights]:
        return [ChainWeights(getattr(self, c.input), getattr(self, c.recurrent), getattr(self, c.output),
                             getattr(self, c.activation), c.reverse) for c in self.chains]

    @property
    def d_x(self) -> int:
        return getattr(self, self.chains[0].input).shape[1]

    @property
    def d_h(self) -> int:
        return getattr(self, self.chains[0].input).shape[0]

    @property
    def d_y(self) -> int:
        return getattr(self, self.chains[0].output).shape[1]

    @classmethod
    def random(
        cls,
        d_x: int,
        d_h: int,
        d_y: int,
        activation: ActivationLike = (0.0, 1.0, 0.5),
        recurrent_norm: float = 0.3,
        input_std: float = 0.4,
        output_std: float | None = None,
        random_state: int | np.random.Generator | None = None,
        input_norm: float | None = None,
    ) -> "RNNModel":
        """A planted model with ``d_h`` units per chain: Gaussian input weights (std
        ``input_std``; with ``input_norm``, each row then rescaled to that Euclidean norm, e.g.
        1 for the planted tanh model), output weights (std ``output_std``, default
        ``1/sqrt(d_h * chains)``), recurrent weights Gaussian rescaled to spectral norm
        ``recurrent_norm``; drawn chain after chain, input, recurrent, output."""
        rng = check_random_state(random_state)
        output_std = 1.0 / np.sqrt(len(cls.chains) * d_h) if output_std is None else output_std
        weights: dict[str, np.ndarray] = {}
        for c in cls.chains:
            weights[c.input] = _random_input((d_h, d_x), input_std, input_norm, rng)
            weights[c.recurrent] = _random_recurrent(d_h, recurrent_norm, rng)
            weights[c.output] = random_weights((d_h, d_y), output_std, rng)
        return cls(**weights, activation=activation)

    def _prepare(self, X: object, lengths: object, device, dtype: torch.dtype):
        X = as_sequences(X, "inputs", dim=self.d_x)
        lengths = check_lengths(lengths, X.shape[0], X.shape[1])
        check_finite(X, lengths, "inputs")
        dev = resolve_device(device)
        Xt = torch.as_tensor(X, dtype=dtype, device=dev)
        valid = step_mask(lengths, X.shape[1], dev)
        if valid is not None:
            Xt = Xt.masked_fill(~valid.unsqueeze(-1), 0.0)
        W = {k: torch.as_tensor(getattr(self, k), dtype=dtype, device=dev) for k in self.parameter_names()}
        return Xt, valid, W

    def _states(self, Xt: torch.Tensor, valid: torch.Tensor | None, W: dict[str, torch.Tensor]) -> list[torch.Tensor]:
        return [run_chain(Xt @ W[c.input].T, W[c.recurrent], getattr(self, c.activation), valid, c.reverse)
                for c in self.chains]

    def _mean(self, Xt: torch.Tensor, valid: torch.Tensor | None, W: dict[str, torch.Tensor]) -> torch.Tensor:
        states = self._states(Xt, valid, W)
        return sum(H @ W[c.output] for H, c in zip(states, self.chains))

    def hidden_states(self, X: object, lengths: object = None, device: str | None = None):
        """Hidden states, ``(n_sequences, T, d_h)`` per chain: one array for a one-chain
        model (``h``), a tuple for more (``(h, z)`` for a BRNN)."""
        Xt, valid, W = self._prepare(X, lengths, device, torch.float64)
        out = tuple(H.cpu().numpy() for H in self._states(Xt, valid, W))
        return out[0] if len(out) == 1 else out

    def predict(
        self, X: object, lengths: object = None, device: str | None = None, dtype: torch.dtype = torch.float64
    ) -> np.ndarray:
        """Conditional mean ``E[y_t | inputs]``, shape ``(n_sequences, T, d_y)``; zero on padding.

        Raises :class:`DivergenceError` when a hidden state diverges or an output overflows
        (a finite model can still produce ``inf``, e.g. with output weights near 1e308).
        """
        Xt, valid, W = self._prepare(X, lengths, device, check_dtype(dtype))
        out = self._mean(Xt, valid, W)
        if not bool(torch.isfinite(out).all()):
            raise DivergenceError(
                "the predictions overflow (non-finite outputs from finite hidden states): the model's output "
                "weights are too large for this precision"
            )
        return out.cpu().numpy()

    def simulate(
        self,
        X: object,
        lengths: object = None,
        noise_std: float = 0.0,
        random_state: int | np.random.Generator | None = None,
        device: str | None = None,
    ) -> np.ndarray:
        """Outputs ``Y`` (n_sequences, T, d_y): the conditional mean plus i.i.d.
        ``N(0, noise_std^2)`` noise on every valid step (zero on padding)."""
        noise_std = check_real(noise_std, "noise_std", low=0.0)
        Y = self.predict(X, lengths, device=device)
        rng = check_random_state(random_state)
        if noise_std > 0:
            noise = noise_std * rng.standard_normal(Y.shape)
            if lengths is not None:
                noise *= valid_mask(np.asarray(lengths), *Y.shape[:2])[..., None]
            Y = Y + noise
        return Y

    def __eq__(self, other: object) -> bool:  # exact equality of weights and activations
        return (
            type(other) is type(self)
            and all(np.array_equal(getattr(self, k), getattr(other, k)) for k in self.parameter_names())
            and self.activations() == other.activations()
        )

    def _activations(self) -> tuple:
        return tuple(getattr(self, c.activation) for c in self.chains)


class IORNN(RNNModel):
    """Input-output RNN ``h_t = f(A1 x_t + U h_{t-1})``, ``y_t = A2^T h_t + noise``.

    Parameters
    ----------
    A1: (d_h, d_x) input weights.   U: (d_h, d_h) recurrent weights.
    A2: (d_h, d_y) output weights.  activation: ``f``, an
    :class:`~spectral_rnn.activations.Activation` (:class:`Polynomial`, :class:`Tanh`),
    coefficients ``(c0, c1, ...)``, ``"c0,c1,..."`` or ``"tanh"``.
    """

    kind = "iornn"
    chains = (ChainSpec("A1", "U", "A2", "activation"),)

    def __init__(self, A1: object, U: object, A2: object, activation: ActivationLike) -> None:
        self.A1 = _as_matrix(A1, "A1", (None, None))
        d_h = self.A1.shape[0]
        self.U = _as_matrix(U, "U", (d_h, d_h))
        self.A2 = _as_matrix(A2, "A2", (d_h, None))
        self.activation = as_activation(activation)

    def __repr__(self) -> str:
        return f"IORNN(d_x={self.d_x}, d_h={self.d_h}, d_y={self.d_y}, activation={self.activation.to_string()!r})"


class BRNN(RNNModel):
    """Bidirectional RNN: forward chain ``(A1, U, A2, f)``, backward chain ``(B1, V, B2, g)``.

    ``h_t = f(A1 x_t + U h_{t-1})``, ``z_t = g(B1 x_t + V z_{t+1})``,
    ``y_t = A2^T h_t + B2^T z_t + noise``. Shapes: ``A1, B1`` (d_h, d_x);
    ``U, V`` (d_h, d_h); ``A2, B2`` (d_h, d_y). ``backward_activation`` defaults to
    ``activation``. :meth:`random` draws ``d_h`` units per direction.
    """

    kind = "brnn"
    chains = (ChainSpec("A1", "U", "A2", "activation"), ChainSpec("B1", "V", "B2", "backward_activation", True))

    def __init__(
        self,
        A1: object,
        U: object,
        A2: object,
        B1: object,
        V: object,
        B2: object,
        activation: ActivationLike,
        backward_activation: ActivationLike | None = None,
    ) -> None:
        self.A1 = _as_matrix(A1, "A1", (None, None))
        d_h, d_x = self.A1.shape
        self.U = _as_matrix(U, "U", (d_h, d_h))
        self.A2 = _as_matrix(A2, "A2", (d_h, None))
        d_y = self.A2.shape[1]
        self.B1 = _as_matrix(B1, "B1", (None, d_x))
        d_hb = self.B1.shape[0]
        self.V = _as_matrix(V, "V", (d_hb, d_hb))
        self.B2 = _as_matrix(B2, "B2", (d_hb, d_y))
        self.activation = as_activation(activation)
        self.backward_activation = self.activation if backward_activation is None else as_activation(backward_activation)

    def __repr__(self) -> str:
        return (
            f"BRNN(d_x={self.d_x}, d_h={self.d_h}+{self.B1.shape[0]}, d_y={self.d_y}, "
            f"activation={self.activation.to_string()!r}, backward_activation={self.backward_activation.to_string()!r})"
        )
