"""The recurrent models: IO-RNN and bidirectional RNN with polynomial or tanh activations.

Conventions (docs/method.md, section 'Models and conventions'), batch-first::

    X: (n_sequences, T, d_x)    Y: (n_sequences, T, d_y)    lengths: (n_sequences,)

    IO-RNN:  h_t = f(A1 x_t + U h_{t-1}), h_0 = 0;  y_t = A2^T h_t + noise
    BRNN:    also z_t = g(B1 x_t + V z_{t+1}), z_{T+1} = 0;  y_t = A2^T h_t + B2^T z_t + noise

Row j of ``A1``, ``U`` and ``A2`` (and ``B1``, ``V``, ``B2``) belongs to hidden unit j.
Steps past a sequence's length are padding: they are never read, and predictions
there are zero.
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import (
    DivergenceError,
    InputError,
    as_sequences,
    check_finite,
    check_dtype,
    check_lengths,
    check_random_state,
    check_real,
    resolve_device,
)
from .activations import Activation, ActivationLike, as_activation

__all__ = ["IORNN", "BRNN", "random_weights"]

#: |hidden state| above which a recursion is declared divergent.
DIVERGENCE_LIMIT = 1e6


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


def run_chain(
    drive: torch.Tensor,
    W_rec: torch.Tensor,
    f: Activation,
    lengths: torch.Tensor | None,
    reverse: bool = False,
    limit: float = DIVERGENCE_LIMIT,
) -> torch.Tensor:
    """Run ``h_t = f(drive_t + W_rec h_{t-1})`` over time.

    ``drive``: (n, T, d_h), already ``A1 x_t``; ``W_rec``: (d_h, d_h). With
    ``reverse=True`` the recursion runs from each sequence's own last step
    backwards (the backward chain of a BRNN). Padding steps hold zeros and do not
    move the state. Returns the states (n, T, d_h); raises :class:`DivergenceError`
    if any state is non-finite or exceeds ``limit`` in magnitude.
    """
    n, T, dh = drive.shape
    H = torch.zeros_like(drive)
    h = drive.new_zeros((n, dh))
    Wt = W_rec.T.contiguous()
    steps = range(T - 1, -1, -1) if reverse else range(T)
    valid = None if lengths is None else (torch.arange(T, device=drive.device)[None, :] < lengths[:, None])
    for t in steps:
        new = f(torch.addmm(drive[:, t], h, Wt))
        if valid is not None:
            v = valid[:, t : t + 1]
            new = torch.where(v, new, torch.zeros_like(new))
            # padding steps leave the state as it is (a forward chain) or at zero
            h = new if reverse else torch.where(v, new, h)
        else:
            h = new
        H[:, t] = new
    peak = H.abs().amax() if H.numel() else H.new_zeros(())
    if not torch.isfinite(peak) or peak > limit:
        bad = (~torch.isfinite(H)) | (H.abs() > limit)
        idx = torch.nonzero(bad.any(-1))
        i, t = (int(idx[0, 0]), int(idx[0, 1])) if len(idx) else (0, 0)
        raise DivergenceError(
            f"the recursion diverged (|hidden state| > {limit:.0e} at sequence {i}, step {t}): "
            "polynomial RNNs are not globally stable; use smaller weights or inputs "
            "(spectral_rnn.stability.stabilize shrinks U to a stable one)"
        )
    return H


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


class _Model:
    """Shared plumbing: shapes, tensors, validation of X and lengths."""

    kind: str = ""
    _names: tuple[str, ...] = ()

    def parameters(self) -> dict[str, np.ndarray]:
        """The weight matrices by name (copies)."""
        return {k: getattr(self, k).copy() for k in self._names}

    def to_torch(self, dtype: torch.dtype = torch.float32, device: str | None = None):
        """This model as a trainable ``nn.Module`` computing :meth:`predict`: a
        :class:`~spectral_rnn.torch_export.TorchRNN` (``torch.nn.RNN`` + ``nn.Linear``) for tanh,
        a :class:`~spectral_rnn.torch_export.PolynomialRNN` for polynomials."""
        from .torch_export import to_torch

        return to_torch(self, dtype=dtype, device=device)

    @property
    def d_x(self) -> int:
        return self.A1.shape[1]

    @property
    def d_h(self) -> int:
        return self.A1.shape[0]

    @property
    def d_y(self) -> int:
        return self.A2.shape[1]

    def _prepare(self, X: object, lengths: object, device, dtype: torch.dtype):
        X = as_sequences(X, "inputs", dim=self.d_x)
        lengths = check_lengths(lengths, X.shape[0], X.shape[1])
        check_finite(X, lengths, "inputs")
        dev = resolve_device(device)
        Xt = torch.as_tensor(X, dtype=dtype, device=dev)
        if lengths is not None:
            Xt = Xt.masked_fill(~(torch.arange(X.shape[1], device=dev)[None, :] < torch.as_tensor(lengths, device=dev)[:, None]).unsqueeze(-1), 0.0)
        Lt = None if lengths is None else torch.as_tensor(lengths, device=dev)
        W = {k: torch.as_tensor(getattr(self, k), dtype=dtype, device=dev) for k in self._names}
        return Xt, Lt, W

    def predict(
        self, X: object, lengths: object = None, device: str | None = None, dtype: torch.dtype = torch.float64
    ) -> np.ndarray:
        """Conditional mean ``E[y_t | inputs]``, shape ``(n_sequences, T, d_y)``; zero on padding.

        Raises :class:`DivergenceError` when a hidden state diverges or an output overflows
        (a finite model can still produce ``inf``, e.g. with output weights near 1e308).
        """
        Xt, Lt, W = self._prepare(X, lengths, device, check_dtype(dtype))
        out = self._mean(Xt, Lt, W)
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
                L = np.asarray(lengths)
                noise *= (np.arange(Y.shape[1])[None, :] < L[:, None])[..., None]
            Y = Y + noise
        return Y

    def __eq__(self, other: object) -> bool:  # exact equality of weights and activations
        return (
            type(other) is type(self)
            and all(np.array_equal(getattr(self, k), getattr(other, k)) for k in self._names)
            and self._activations() == other._activations()
        )

    def _activations(self) -> tuple:
        return (self.activation,)


class IORNN(_Model):
    """Input-output RNN ``h_t = f(A1 x_t + U h_{t-1})``, ``y_t = A2^T h_t + noise``.

    Parameters
    ----------
    A1: (d_h, d_x) input weights.   U: (d_h, d_h) recurrent weights.
    A2: (d_h, d_y) output weights.  activation: ``f``, an
    :class:`~spectral_rnn.activations.Activation` (:class:`Polynomial`, :class:`Tanh`),
    coefficients ``(c0, c1, ...)``, ``"c0,c1,..."`` or ``"tanh"``.
    """

    kind = "iornn"
    _names = ("A1", "U", "A2")

    def __init__(self, A1: object, U: object, A2: object, activation: ActivationLike) -> None:
        self.A1 = _as_matrix(A1, "A1", (None, None))
        d_h = self.A1.shape[0]
        self.U = _as_matrix(U, "U", (d_h, d_h))
        self.A2 = _as_matrix(A2, "A2", (d_h, None))
        self.activation = as_activation(activation)

    def __repr__(self) -> str:
        return f"IORNN(d_x={self.d_x}, d_h={self.d_h}, d_y={self.d_y}, activation={self.activation.to_string()!r})"

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
    ) -> "IORNN":
        """A planted model: Gaussian ``A1`` (std ``input_std``; with ``input_norm``, each
        row then rescaled to that Euclidean norm, e.g. 1 for the planted tanh model), ``A2``
        (std ``output_std``, default ``1/sqrt(d_h)``), ``U`` Gaussian rescaled to spectral
        norm ``recurrent_norm``."""
        rng = check_random_state(random_state)
        output_std = 1.0 / np.sqrt(d_h) if output_std is None else output_std
        return cls(
            A1=_random_input((d_h, d_x), input_std, input_norm, rng),
            U=_random_recurrent(d_h, recurrent_norm, rng),
            A2=random_weights((d_h, d_y), output_std, rng),
            activation=activation,
        )

    def hidden_states(self, X: object, lengths: object = None, device: str | None = None) -> np.ndarray:
        """Hidden states ``h_t``, shape ``(n_sequences, T, d_h)``."""
        Xt, Lt, W = self._prepare(X, lengths, device, torch.float64)
        return run_chain(Xt @ W["A1"].T, W["U"], self.activation, Lt).cpu().numpy()

    def _mean(self, Xt: torch.Tensor, Lt: torch.Tensor | None, W: dict[str, torch.Tensor]) -> torch.Tensor:
        H = run_chain(Xt @ W["A1"].T, W["U"], self.activation, Lt)
        return H @ W["A2"]


class BRNN(_Model):
    """Bidirectional RNN: forward chain ``(A1, U, A2, f)``, backward chain ``(B1, V, B2, g)``.

    ``h_t = f(A1 x_t + U h_{t-1})``, ``z_t = g(B1 x_t + V z_{t+1})``,
    ``y_t = A2^T h_t + B2^T z_t + noise``. Shapes: ``A1, B1`` (d_h, d_x);
    ``U, V`` (d_h, d_h); ``A2, B2`` (d_h, d_y). ``backward_activation`` defaults to
    ``activation``.
    """

    kind = "brnn"
    _names = ("A1", "U", "A2", "B1", "V", "B2")

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

    def _activations(self) -> tuple:
        return (self.activation, self.backward_activation)

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
    ) -> "BRNN":
        """A planted BRNN with ``d_h`` units per direction (see :meth:`IORNN.random`)."""
        rng = check_random_state(random_state)
        output_std = 1.0 / np.sqrt(2 * d_h) if output_std is None else output_std
        return cls(
            A1=_random_input((d_h, d_x), input_std, input_norm, rng),
            U=_random_recurrent(d_h, recurrent_norm, rng),
            A2=random_weights((d_h, d_y), output_std, rng),
            B1=_random_input((d_h, d_x), input_std, input_norm, rng),
            V=_random_recurrent(d_h, recurrent_norm, rng),
            B2=random_weights((d_h, d_y), output_std, rng),
            activation=activation,
        )

    def hidden_states(self, X: object, lengths: object = None, device: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Forward and backward states ``(h, z)``, each ``(n_sequences, T, d_h)``."""
        Xt, Lt, W = self._prepare(X, lengths, device, torch.float64)
        H = run_chain(Xt @ W["A1"].T, W["U"], self.activation, Lt)
        Z = run_chain(Xt @ W["B1"].T, W["V"], self.backward_activation, Lt, reverse=True)
        return H.cpu().numpy(), Z.cpu().numpy()

    def _mean(self, Xt: torch.Tensor, Lt: torch.Tensor | None, W: dict[str, torch.Tensor]) -> torch.Tensor:
        H = run_chain(Xt @ W["A1"].T, W["U"], self.activation, Lt)
        Z = run_chain(Xt @ W["B1"].T, W["V"], self.backward_activation, Lt, reverse=True)
        return H @ W["A2"] + Z @ W["B2"]
