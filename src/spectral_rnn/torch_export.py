"""Export fitted models to PyTorch as ``nn.Module`` objects, and back.

:func:`to_torch` returns a module computing exactly what :meth:`IORNN.predict` /
:meth:`BRNN.predict` compute (the conditional mean of the outputs), batch-first, with
ragged batches through ``forward(x, lengths)``, differentiable, so it can be trained
further (:mod:`spectral_rnn.refine`) and deployed like any other module:

* a **tanh** model becomes a :class:`TorchRNN`: PyTorch's own
  ``torch.nn.RNN(d_x, d_h, nonlinearity="tanh", bias=False, batch_first=True)``
  (``bidirectional=True`` for a BRNN) in ``.rnn`` and a bias-free
  ``torch.nn.Linear(d_h * directions, d_y)`` read-out in ``.readout`` (cuDNN on a GPU;
  ``.rnn`` and ``.readout`` drop into existing training code). Ragged batches go
  through ``pack_padded_sequence``, so the reverse direction starts at each
  sequence's own last step. ``nn.RNN`` needs the same number of units in both
  directions: a BRNN with unequal sizes is refused.
* a **polynomial** model becomes a :class:`PolynomialRNN` (below).

:func:`spectral_rnn.kinds.from_torch` turns either module back into the model of its kind.
This module knows no model class: it maps *chains* (:class:`ChainWeights`: input, recurrent and
output weights, an activation, a direction) to modules and back; the model classes
(:mod:`spectral_rnn.models`) and the kind registry (:mod:`spectral_rnn.kinds`) sit above it.

:class:`TorchRNN` layout (``torch.nn.RNN`` names)::

    rnn.weight_ih_l0          (d_h, d_x)  = A1      rnn.weight_ih_l0_reverse  (d_h, d_x) = B1
    rnn.weight_hh_l0          (d_h, d_h)  = U       rnn.weight_hh_l0_reverse  (d_h, d_h) = V
    readout.weight            (d_y, d_h)  = A2^T    (d_y, 2 d_h) = [A2^T | B2^T] for a BRNN

:class:`PolynomialRNN` layout:

Parameter names follow :class:`torch.nn.RNN` where they correspond::

    weight_ih_l0          (d_h, d_x)   = A1      weight_ih_l0_reverse  (d_hb, d_x)  = B1
    weight_hh_l0          (d_h, d_h)   = U       weight_hh_l0_reverse  (d_hb, d_hb) = V
    weight_out            (d_y, d_h)   = A2^T    weight_out_reverse    (d_y, d_hb)  = B2^T

(the output layers are stored like :class:`torch.nn.Linear` weights, ``out x in``).
There are no biases, as in the model. The activation coefficients ``(c_0, ..., c_l)``
are buffers ``coefficients`` and ``coefficients_reverse`` (saved in the state dict,
not trained).

Speed: the input projection of all steps is one matrix product; only the
recurrence runs in the Python time loop, the kernel :func:`spectral_rnn.chain.run_chain`
with its hand-written backward. ``torch.jit.script`` of the loop gave no
measurable gain and ``torch.compile`` was slower to start than it saved on these
short runs, so neither is used (see ``benchmarks/bench_vs_backprop.py --profile``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from dataclasses import dataclass

from ._checks import InputError, check_dtype, check_positive_int
from .activations import Activation, Polynomial, Tanh
from .chain import run_chain, step_mask

#: parameter dtypes a PolynomialRNN may hold
_MODULE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

__all__ = ["PolynomialRNN", "TorchRNN", "to_torch", "ChainWeights", "module_of_chains", "chains_of_module",
           "new_module"]


def _sizes(input_size: int, hidden_size: int, output_size: int) -> tuple[int, int, int]:
    """The three layer sizes of a module, each a positive integer (bools refused)."""
    return (check_positive_int(input_size, "input_size"), check_positive_int(hidden_size, "hidden_size"),
            check_positive_int(output_size, "output_size"))


class _ChainModule(nn.Module):
    """What the modules of this file share: the model kind they hold."""

    #: the registered model kind this module holds (:mod:`spectral_rnn.kinds`; set by ``to_torch``,
    #: ``None``: the kind whose chain layout matches)
    model_kind: str | None = None


class PolynomialRNN(_ChainModule):
    """Single-layer RNN with a polynomial activation, unidirectional or bidirectional.

    ``h_t = f(W_ih x_t + W_hh h_{t-1})``, ``y_t = W_out h_t`` (plus, bidirectional,
    ``z_t = g(W_ih_rev x_t + W_hh_rev z_{t+1})`` and ``W_out_rev z_t``); no biases.

    Parameters
    ----------
    input_size, hidden_size, output_size: ``d_x``, ``d_h``, ``d_y``.
    coefficients: ``(c_0, ..., c_l)`` of ``f``.
    bidirectional: add the backward chain.
    coefficients_reverse: of ``g`` (default: those of ``f``).
    hidden_size_reverse: units of the backward chain (default ``hidden_size``).
    custom_backward: use the fast hand-written backward of the recurrence.
    dtype, device: of the parameters. Weights start at zero: load them with
        :func:`to_torch`, ``load_state_dict`` or :meth:`reset_parameters`.

    ``forward(x, lengths=None)``: ``x`` (n, T, d_x), ``lengths`` (n,) -> outputs
    (n, T, d_y), zero on padding (padding inputs are never read).
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        coefficients,
        bidirectional: bool = False,
        coefficients_reverse=None,
        hidden_size_reverse: int | None = None,
        custom_backward: bool = True,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = _sizes(input_size, hidden_size, output_size)
        self.bidirectional = bool(bidirectional)
        self.custom_backward = custom_backward
        kw = {"dtype": check_dtype(dtype, _MODULE_DTYPES), "device": device}
        self.weight_ih_l0 = nn.Parameter(torch.zeros(hidden_size, input_size, **kw))
        self.weight_hh_l0 = nn.Parameter(torch.zeros(hidden_size, hidden_size, **kw))
        self.weight_out = nn.Parameter(torch.zeros(output_size, hidden_size, **kw))
        self.register_buffer("coefficients", torch.tensor([float(c) for c in coefficients], **kw))
        if self.bidirectional:
            hb = hidden_size if hidden_size_reverse is None else int(hidden_size_reverse)
            self.hidden_size_reverse = hb
            self.weight_ih_l0_reverse = nn.Parameter(torch.zeros(hb, input_size, **kw))
            self.weight_hh_l0_reverse = nn.Parameter(torch.zeros(hb, hb, **kw))
            self.weight_out_reverse = nn.Parameter(torch.zeros(output_size, hb, **kw))
            cr = coefficients if coefficients_reverse is None else coefficients_reverse
            self.register_buffer("coefficients_reverse", torch.tensor([float(c) for c in cr], **kw))

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}, {self.output_size}, coefficients={self.coefficients.tolist()}"
        if self.bidirectional:
            s += f", bidirectional=True, hidden_size_reverse={self.hidden_size_reverse}"
        return s

    @torch.no_grad()
    def reset_parameters(self, scale: float = 1.0, generator: torch.Generator | None = None) -> None:
        """PyTorch's standard RNN initialisation, times ``scale``.

        As :class:`torch.nn.RNN`: recurrent-layer weights ``U(-k, k)``, ``k = 1/sqrt(hidden_size)``;
        as :class:`torch.nn.Linear`: output weights ``U(-k, k)``, ``k = 1/sqrt(fan_in)``
        (``fan_in`` = all hidden units feeding the output).
        """
        k = 1.0 / math.sqrt(self.hidden_size)
        k_out = 1.0 / math.sqrt(self.hidden_size + (self.hidden_size_reverse if self.bidirectional else 0))
        for name, p in self.named_parameters():
            bound = k_out if name.startswith("weight_out") else k
            if self.bidirectional and name.endswith("_reverse") and not name.startswith("weight_out"):
                bound = 1.0 / math.sqrt(self.hidden_size_reverse)
            p.uniform_(-bound * scale, bound * scale, generator=generator)

    def hidden_states(self, x: torch.Tensor, lengths=None):
        """Forward states ``(n, T, d_h)`` (and backward states, bidirectional)."""
        valid = step_mask(lengths, x.shape[1], x.device)
        if valid is not None:
            x = torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device))
        f = Polynomial(self.coefficients.tolist())
        H = run_chain(x @ self.weight_ih_l0.t(), self.weight_hh_l0, f, valid, False, None, self.custom_backward)
        if not self.bidirectional:
            return H
        g = Polynomial(self.coefficients_reverse.tolist())
        Z = run_chain(x @ self.weight_ih_l0_reverse.t(), self.weight_hh_l0_reverse, g, valid, True, None,
                      self.custom_backward)
        return H, Z

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise InputError(f"input must have shape (n, T, {self.input_size}), got {tuple(x.shape)}")
        states = self.hidden_states(x, lengths)
        if not self.bidirectional:
            return states @ self.weight_out.t()
        H, Z = states
        return H @ self.weight_out.t() + Z @ self.weight_out_reverse.t()


class TorchRNN(_ChainModule):
    """PyTorch's own single-layer tanh RNN plus a linear read-out, no biases.

    ``h_t = tanh(W_ih x_t + W_hh h_{t-1})`` (and, bidirectional, the reverse chain),
    ``y_t = W_out [h_t; z_t]``: exactly an :class:`IORNN` / :class:`BRNN` with
    activation ``"tanh"``.

    Attributes
    ----------
    rnn: ``torch.nn.RNN(input_size, hidden_size, nonlinearity="tanh", bias=False,
        batch_first=True, bidirectional=bidirectional)``.
    readout: ``torch.nn.Linear(hidden_size * (2 if bidirectional else 1), output_size, bias=False)``.

    exact: on a CUDA device, run cuDNN without TF32 and always through
        ``pack_padded_sequence`` (default ``True``). Measured on an H100 (PyTorch 2.11,
        cuDNN 9.19; n=4000, T=30, d_h=4, float32, largest deviation from the float64
        recursion over the largest output): cuDNN with PyTorch's default
        ``torch.backends.cudnn.allow_tf32=True`` gave 6.9e-4; without TF32 but unpacked
        (cuDNN's full-length kernel) 6.3e-6; without TF32 and packed 1.6e-7, ragged batches
        and the bidirectional case included, in 1.4 ms per forward against 0.3 ms for the
        fastest unpacked TF32 one. ``exact=False`` uses whatever the global flags say (the
        fast path). On the CPU both give the same results (about 1.5e-7).

    ``forward(x, lengths=None)``: ``x`` (n, T, d_x), ``lengths`` (n,) -> outputs
    (n, T, d_y), zero on padding (padding inputs are never read: a ragged batch is
    packed with ``pack_padded_sequence``). Weights start as PyTorch starts them.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        bidirectional: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device | None = None,
        exact: bool = True,
    ) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.output_size = _sizes(input_size, hidden_size, output_size)
        self.bidirectional = bool(bidirectional)
        self.exact = bool(exact)
        kw = {"dtype": dtype, "device": device}
        self.rnn = nn.RNN(self.input_size, self.hidden_size, num_layers=1, nonlinearity="tanh", bias=False,
                          batch_first=True, bidirectional=self.bidirectional, **kw)
        dirs = 2 if self.bidirectional else 1
        self.readout = nn.Linear(dirs * self.hidden_size, self.output_size, bias=False, **kw)

    @property
    def activation(self) -> Tanh:
        return Tanh()

    @torch.no_grad()
    def reset_parameters(self, scale: float = 1.0, generator: torch.Generator | None = None) -> None:
        """PyTorch's default initialisation (that of ``nn.RNN.reset_parameters`` and
        ``nn.Linear``: ``U(-k, k)``, ``k = 1/sqrt(hidden_size)`` resp. ``1/sqrt(fan_in)``),
        times ``scale``, drawn from ``generator``."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.rnn.parameters():
            p.uniform_(-k * scale, k * scale, generator=generator)
        k_out = 1.0 / math.sqrt(self.readout.in_features)
        self.readout.weight.uniform_(-k_out * scale, k_out * scale, generator=generator)

    def _run(self, x: torch.Tensor, lengths) -> torch.Tensor:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise InputError(f"input must have shape (n, T, {self.input_size}), got {tuple(x.shape)}")
        n, T = x.shape[:2]
        exact_cuda = self.exact and x.is_cuda
        if lengths is not None:
            lengths = torch.as_tensor(lengths).to("cpu", torch.int64)
            if bool((lengths >= T).all()) and not exact_cuda:
                lengths = None
        elif exact_cuda:
            lengths = torch.full((n,), T, dtype=torch.int64)
        if exact_cuda:
            with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled,
                                            benchmark=torch.backends.cudnn.benchmark,
                                            deterministic=torch.backends.cudnn.deterministic, allow_tf32=False):
                return self._packed(x, lengths, T)
        if lengths is None:
            out, _ = self.rnn(x)
            return out
        return self._packed(x, lengths, T)

    def _packed(self, x: torch.Tensor, lengths: torch.Tensor, T: int) -> torch.Tensor:
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
        return out

    def hidden_states(self, x: torch.Tensor, lengths=None):
        """Forward states ``(n, T, d_h)`` (and backward states, bidirectional); zero on padding."""
        out = self._run(x, lengths)
        if not self.bidirectional:
            return out
        return out[..., : self.hidden_size], out[..., self.hidden_size :]

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        return self.readout(self._run(x, lengths))


@dataclass(frozen=True)
class ChainWeights:
    """One chain's weights as a model holds them: ``input`` (d_h, d_x), ``recurrent`` (d_h, d_h),
    ``output`` (d_h, d_y) (NumPy arrays), its ``activation``, and ``reverse`` (runs backwards)."""

    input: np.ndarray
    recurrent: np.ndarray
    output: np.ndarray
    activation: Activation
    reverse: bool = False


def _check_layout(reverse: list[bool]) -> bool:
    """Whether the chain directions fit these modules (one forward chain, then maybe one
    reverse chain); returns ``bidirectional``."""
    if reverse not in ([False], [False, True]):
        raise InputError(f"no PyTorch module for chains running {reverse} (reversed?): the modules hold one "
                         "forward chain and at most one backward chain")
    return len(reverse) == 2


def new_module(d_x: int, d_h: int, d_y: int, activation: Activation, reverse: list[bool],
               dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
               custom_backward: bool = True, hidden_size_reverse: int | None = None,
               activation_reverse: Activation | None = None) -> "TorchRNN | PolynomialRNN":
    """An untrained module for chains with these directions: a :class:`TorchRNN` for tanh, a
    :class:`PolynomialRNN` for a polynomial (weights as the module's constructor leaves them)."""
    bidir = _check_layout(list(reverse))
    g = activation if activation_reverse is None else activation_reverse
    if isinstance(activation, Tanh) and isinstance(g, Tanh):
        if bidir and hidden_size_reverse not in (None, d_h):
            raise InputError(
                f"torch.nn.RNN needs as many backward as forward units; this model has {d_h} forward and "
                f"{hidden_size_reverse} backward units, so it cannot be exported to nn.RNN"
            )
        return TorchRNN(d_x, d_h, d_y, bidirectional=bidir, dtype=dtype, device=device)
    if isinstance(activation, Polynomial) and isinstance(g, Polynomial):
        return PolynomialRNN(d_x, d_h, d_y, activation.coefficients, bidirectional=bidir,
                             coefficients_reverse=g.coefficients if bidir else None,
                             hidden_size_reverse=hidden_size_reverse if bidir else None,
                             custom_backward=custom_backward, dtype=dtype, device=device)
    names = ", ".join(repr(f.to_string()) for f in ((activation, g) if bidir else (activation,)))
    raise InputError(f"no PyTorch module for activations {names}: export needs all tanh or all polynomial chains")


def module_of_chains(chains: list[ChainWeights], dtype: torch.dtype = torch.float32,
                     device: str | torch.device | None = None, custom_backward: bool = True
                     ) -> "TorchRNN | PolynomialRNN":
    """The module computing ``sum_c A2_c^T h^c_t`` for these chains (layout in the module docstring)."""
    dtype = check_dtype(dtype, _MODULE_DTYPES)
    first, last = chains[0], chains[-1]
    mod = new_module(first.input.shape[1], first.input.shape[0], first.output.shape[1], first.activation,
                     [c.reverse for c in chains], dtype, device, custom_backward,
                     last.input.shape[0] if len(chains) > 1 else None, last.activation if len(chains) > 1 else None)
    sfx = ["", "_reverse"]
    with torch.no_grad():
        if isinstance(mod, TorchRNN):
            for c, x in zip(chains, sfx):
                getattr(mod.rnn, "weight_ih_l0" + x).copy_(torch.as_tensor(c.input))
                getattr(mod.rnn, "weight_hh_l0" + x).copy_(torch.as_tensor(c.recurrent))
            mod.readout.weight.copy_(torch.as_tensor(np.concatenate([c.output.T for c in chains], axis=1)))
        else:
            for c, x in zip(chains, sfx):
                getattr(mod, "weight_ih_l0" + x).copy_(torch.as_tensor(c.input))
                getattr(mod, "weight_hh_l0" + x).copy_(torch.as_tensor(c.recurrent))
                getattr(mod, "weight_out" + x).copy_(torch.as_tensor(c.output.T))
    return mod


def to_torch(model, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
             custom_backward: bool = True) -> "TorchRNN | PolynomialRNN":
    """A module computing ``model.predict`` (any registered model kind: ``model.to_torch``).

    Tanh activations (both chains, for a BRNN): a :class:`TorchRNN` built on
    ``torch.nn.RNN``; polynomial ones: a :class:`PolynomialRNN` (``custom_backward``
    applies to it only). A BRNN mixing tanh and a polynomial has no such module
    (:class:`InputError`).
    """
    if not callable(getattr(model, "to_torch", None)) or not hasattr(model, "chains"):
        raise InputError(f"to_torch expects a model (IORNN, BRNN, ...), got {type(model).__name__}")
    return model.to_torch(dtype=dtype, device=device, custom_backward=custom_backward)


def _numpy(t: torch.Tensor, name: str) -> np.ndarray:
    arr = t.detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(arr).all():
        raise InputError(f"the module's {name} contains NaN or infinite values")
    return arr


def chains_of_module(module: "TorchRNN | PolynomialRNN") -> list[ChainWeights]:
    """The chains a module holds (float64 copies): one, or two for a bidirectional module."""
    if isinstance(module, TorchRNN):
        rnn = module.rnn
        if (rnn.nonlinearity != "tanh" or rnn.num_layers != 1 or rnn.bias or not rnn.batch_first
                or getattr(rnn, "proj_size", 0)):
            raise InputError("from_torch expects TorchRNN.rnn to be a one-layer bias-free batch-first tanh nn.RNN")
        if module.readout.bias is not None:
            raise InputError("from_torch expects a bias-free read-out")
        W = _numpy(module.readout.weight, "readout.weight")
        d_h = rnn.hidden_size
        sfx = ["", "_reverse"][: 2 if rnn.bidirectional else 1]
        return [ChainWeights(_numpy(getattr(rnn, "weight_ih_l0" + x), "rnn.weight_ih_l0" + x),
                             _numpy(getattr(rnn, "weight_hh_l0" + x), "rnn.weight_hh_l0" + x),
                             W[:, i * d_h:(i + 1) * d_h].T, Tanh(), bool(i)) for i, x in enumerate(sfx)]
    if not isinstance(module, PolynomialRNN):
        raise InputError(f"from_torch expects a TorchRNN or a PolynomialRNN, got {type(module).__name__}")
    sfx = ["", "_reverse"][: 2 if module.bidirectional else 1]
    out = []
    for i, x in enumerate(sfx):
        coefs = getattr(module, "coefficients" + x).detach().cpu().to(torch.float64).tolist()
        out.append(ChainWeights(_numpy(getattr(module, "weight_ih_l0" + x), "weight_ih_l0" + x),
                                _numpy(getattr(module, "weight_hh_l0" + x), "weight_hh_l0" + x),
                                _numpy(getattr(module, "weight_out" + x), "weight_out" + x).T,
                                Polynomial(coefs), bool(i)))
    return out
