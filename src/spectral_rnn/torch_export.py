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

:func:`from_torch` turns either module back into an :class:`IORNN` / :class:`BRNN`.

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
recurrence runs in the Python time loop, inside a custom autograd function whose
forward runs without graph recording and whose backward is a hand-written loop of two
tensor operations per step (the derivative of the activation is evaluated for all
steps at once). On two CPU cores this is about 2x faster per training step than
letting autograd record the loop; ``torch.jit.script`` of the loop gave no
measurable gain and ``torch.compile`` was slower to start than it saved on these
short runs, so neither is used (see ``benchmarks/bench_vs_backprop.py --profile``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ._checks import InputError, check_dtype, check_positive_int
from .activations import Polynomial, Tanh

#: parameter dtypes a PolynomialRNN may hold
_MODULE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

__all__ = ["PolynomialRNN", "TorchRNN", "to_torch", "from_torch", "run_polynomial_chain"]


class _ChainFunction(torch.autograd.Function):
    """``h_t = m_t f(drive_t + W h_{prev})`` over time, with a hand-written backward.

    ``drive`` (n, T, d_h); ``W`` (d_h, d_h); ``mask`` (n, T, 1) float or ``None``;
    ``coefs`` Python floats; ``reverse`` runs from the last step to the first.
    """

    @staticmethod
    def forward(ctx, drive, W, mask, coefs, reverse):  # type: ignore[override]
        n, T, dh = drive.shape
        f = Polynomial(coefs)
        Wt = W.t()
        h = drive.new_zeros((n, dh))
        steps = range(T - 1, -1, -1) if reverse else range(T)
        pre = [None] * T
        states = [None] * T
        for t in steps:
            u = torch.addmm(drive[:, t], h, Wt)
            h = f(u)
            if mask is not None:
                h = h * mask[:, t]
            pre[t] = u
            states[t] = h
        H = torch.stack(states, dim=1)
        Upre = torch.stack(pre, dim=1)
        ctx.save_for_backward(Upre, H, W, mask)
        ctx.coefs = coefs
        ctx.reverse = reverse
        return H

    @staticmethod
    def backward(ctx, grad_H):  # type: ignore[override]
        Upre, H, W, mask = ctx.saved_tensors
        coefs, reverse = ctx.coefs, ctx.reverse
        n, T, dh = H.shape
        fp = Polynomial(coefs).derivative()(Upre)  # f'(u_t) for every step at once
        if mask is not None:
            fp = fp * mask
        grad_H = grad_H.contiguous()
        G = [None] * T
        g = None
        # the chain runs forward (reverse=False) or backward in time; its gradient the other way
        steps = range(T) if reverse else range(T - 1, -1, -1)
        for t in steps:
            gh = grad_H[:, t] if g is None else torch.addmm(grad_H[:, t], g, W)
            g = gh * fp[:, t]
            G[t] = g
        Gd = torch.stack(G, dim=1)
        grad_W = None
        if ctx.needs_input_grad[1] and T > 1:
            # u_t = drive_t + W h_prev(t): h_prev is h_{t-1} (forward) or h_{t+1} (reverse)
            if reverse:
                gu, hp = Gd[:, :-1], H[:, 1:]
            else:
                gu, hp = Gd[:, 1:], H[:, :-1]
            grad_W = gu.reshape(-1, dh).t() @ hp.reshape(-1, dh)
        elif ctx.needs_input_grad[1]:
            grad_W = torch.zeros_like(W)
        return Gd, grad_W, None, None, None


def _chain_autograd(drive, W, mask, coefs, reverse):
    """Reference implementation recorded by autograd (supports double backward)."""
    n, T, dh = drive.shape
    f = Polynomial(coefs)
    h = drive.new_zeros((n, dh))
    states = [None] * T
    for t in (range(T - 1, -1, -1) if reverse else range(T)):
        h = f(torch.addmm(drive[:, t], h, W.t()))
        if mask is not None:
            h = h * mask[:, t]
        states[t] = h
    return torch.stack(states, dim=1)


def run_polynomial_chain(
    drive: torch.Tensor,
    W: torch.Tensor,
    coefficients: list[float] | tuple[float, ...],
    mask: torch.Tensor | None = None,
    reverse: bool = False,
    custom_backward: bool = True,
) -> torch.Tensor:
    """States of ``h_t = f(drive_t + W h_prev)`` for all steps, ``(n, T, d_h)``.

    ``mask`` (n, T, 1), 1 on valid steps and 0 on padding: states are zero on padding,
    so a reverse chain starts at each sequence's own last step. ``custom_backward``
    uses the fast hand-written backward (first derivatives only); ``False`` records the
    loop with autograd (slower, supports higher derivatives).
    """
    coefs = [float(c) for c in coefficients]
    if drive.shape[1] == 0:
        return drive.new_zeros(drive.shape)
    if custom_backward and torch.is_grad_enabled() and (drive.requires_grad or W.requires_grad):
        return _ChainFunction.apply(drive, W, mask, coefs, reverse)
    if not torch.is_grad_enabled() or not (drive.requires_grad or W.requires_grad):
        with torch.no_grad():
            return _chain_autograd(drive, W, mask, coefs, reverse)
    return _chain_autograd(drive, W, mask, coefs, reverse)


def _sizes(input_size: int, hidden_size: int, output_size: int) -> tuple[int, int, int]:
    """The three layer sizes of a module, each a positive integer (bools refused)."""
    return (check_positive_int(input_size, "input_size"), check_positive_int(hidden_size, "hidden_size"),
            check_positive_int(output_size, "output_size"))


class PolynomialRNN(nn.Module):
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

    def _mask(self, x: torch.Tensor, lengths) -> torch.Tensor | None:
        if lengths is None:
            return None
        lengths = torch.as_tensor(lengths, device=x.device)
        T = x.shape[1]
        if bool((lengths >= T).all()):
            return None
        return (torch.arange(T, device=x.device)[None, :] < lengths[:, None]).unsqueeze(-1).to(x.dtype)

    def hidden_states(self, x: torch.Tensor, lengths=None):
        """Forward states ``(n, T, d_h)`` (and backward states, bidirectional)."""
        mask = self._mask(x, lengths)
        if mask is not None:
            x = torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))
        H = run_polynomial_chain(x @ self.weight_ih_l0.t(), self.weight_hh_l0, self.coefficients.tolist(),
                                 mask, False, self.custom_backward)
        if not self.bidirectional:
            return H
        Z = run_polynomial_chain(x @ self.weight_ih_l0_reverse.t(), self.weight_hh_l0_reverse,
                                 self.coefficients_reverse.tolist(), mask, True, self.custom_backward)
        return H, Z

    def forward(self, x: torch.Tensor, lengths=None) -> torch.Tensor:
        if x.dim() != 3 or x.shape[2] != self.input_size:
            raise InputError(f"input must have shape (n, T, {self.input_size}), got {tuple(x.shape)}")
        states = self.hidden_states(x, lengths)
        if not self.bidirectional:
            return states @ self.weight_out.t()
        H, Z = states
        return H @ self.weight_out.t() + Z @ self.weight_out_reverse.t()


class TorchRNN(nn.Module):
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


def _poly_module(model, dtype, device, custom_backward, bidir):
    mod = PolynomialRNN(
        model.d_x, model.d_h, model.d_y, model.activation.coefficients, bidirectional=bidir,
        coefficients_reverse=model.backward_activation.coefficients if bidir else None,
        hidden_size_reverse=model.B1.shape[0] if bidir else None,
        custom_backward=custom_backward, dtype=dtype, device=device,
    )
    with torch.no_grad():
        mod.weight_ih_l0.copy_(torch.as_tensor(model.A1))
        mod.weight_hh_l0.copy_(torch.as_tensor(model.U))
        mod.weight_out.copy_(torch.as_tensor(model.A2.T))
        if bidir:
            mod.weight_ih_l0_reverse.copy_(torch.as_tensor(model.B1))
            mod.weight_hh_l0_reverse.copy_(torch.as_tensor(model.V))
            mod.weight_out_reverse.copy_(torch.as_tensor(model.B2.T))
    return mod


def _tanh_module(model, dtype, device, bidir):
    if bidir and model.B1.shape[0] != model.d_h:
        raise InputError(
            f"torch.nn.RNN needs as many backward as forward units; this BRNN has {model.d_h} forward and "
            f"{model.B1.shape[0]} backward units, so it cannot be exported to nn.RNN"
        )
    mod = TorchRNN(model.d_x, model.d_h, model.d_y, bidirectional=bidir, dtype=dtype, device=device)
    with torch.no_grad():
        mod.rnn.weight_ih_l0.copy_(torch.as_tensor(model.A1))
        mod.rnn.weight_hh_l0.copy_(torch.as_tensor(model.U))
        out = model.A2.T
        if bidir:
            mod.rnn.weight_ih_l0_reverse.copy_(torch.as_tensor(model.B1))
            mod.rnn.weight_hh_l0_reverse.copy_(torch.as_tensor(model.V))
            out = np.concatenate([model.A2.T, model.B2.T], axis=1)
        mod.readout.weight.copy_(torch.as_tensor(out))
    return mod


def to_torch(model, dtype: torch.dtype = torch.float32, device: str | torch.device | None = None,
             custom_backward: bool = True) -> "TorchRNN | PolynomialRNN":
    """A module computing ``model.predict`` (an :class:`IORNN` or :class:`BRNN`).

    Tanh activations (both chains, for a BRNN): a :class:`TorchRNN` built on
    ``torch.nn.RNN``; polynomial ones: a :class:`PolynomialRNN` (``custom_backward``
    applies to it only). A BRNN mixing tanh and a polynomial has no such module
    (:class:`InputError`).
    """
    from .models import BRNN, IORNN

    if not isinstance(model, (IORNN, BRNN)):
        raise InputError(f"to_torch expects an IORNN or a BRNN, got {type(model).__name__}")
    dtype = check_dtype(dtype, _MODULE_DTYPES)
    if device is not None:
        from ._checks import resolve_device

        device = resolve_device(device)
    bidir = isinstance(model, BRNN)
    acts = model._activations()
    if all(isinstance(f, Tanh) for f in acts):
        return _tanh_module(model, dtype, device, bidir)
    if all(isinstance(f, Polynomial) for f in acts):
        return _poly_module(model, dtype, device, custom_backward, bidir)
    names = ", ".join(repr(f.to_string()) for f in acts)
    raise InputError(f"no PyTorch module for activations {names}: export needs all tanh or all polynomial chains")


def _numpy(t: torch.Tensor, name: str) -> np.ndarray:
    arr = t.detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(arr).all():
        raise InputError(f"the module's {name} contains NaN or infinite values")
    return arr


def _from_torch_rnn(module: TorchRNN):
    from .models import BRNN, IORNN

    rnn = module.rnn
    if (rnn.nonlinearity != "tanh" or rnn.num_layers != 1 or rnn.bias or not rnn.batch_first
            or getattr(rnn, "proj_size", 0)):
        raise InputError("from_torch expects TorchRNN.rnn to be a one-layer bias-free batch-first tanh nn.RNN")
    if module.readout.bias is not None:
        raise InputError("from_torch expects a bias-free read-out")
    A1 = _numpy(rnn.weight_ih_l0, "rnn.weight_ih_l0")
    U = _numpy(rnn.weight_hh_l0, "rnn.weight_hh_l0")
    W = _numpy(module.readout.weight, "readout.weight")
    d_h = A1.shape[0]
    if not rnn.bidirectional:
        return IORNN(A1, U, W.T, "tanh")
    return BRNN(A1, U, W[:, :d_h].T, _numpy(rnn.weight_ih_l0_reverse, "rnn.weight_ih_l0_reverse"),
                _numpy(rnn.weight_hh_l0_reverse, "rnn.weight_hh_l0_reverse"), W[:, d_h:].T, "tanh")


def from_torch(module: "TorchRNN | PolynomialRNN"):
    """The :class:`IORNN` or :class:`BRNN` with the module's weights (float64 copies)."""
    from .models import BRNN, IORNN

    if isinstance(module, TorchRNN):
        return _from_torch_rnn(module)
    if not isinstance(module, PolynomialRNN):
        raise InputError(f"from_torch expects a TorchRNN or a PolynomialRNN, got {type(module).__name__}")

    def get(name):
        return _numpy(getattr(module, name), name)

    coefs = module.coefficients.detach().cpu().to(torch.float64).tolist()
    if not module.bidirectional:
        return IORNN(get("weight_ih_l0"), get("weight_hh_l0"), get("weight_out").T, coefs)
    return BRNN(
        get("weight_ih_l0"), get("weight_hh_l0"), get("weight_out").T,
        get("weight_ih_l0_reverse"), get("weight_hh_l0_reverse"), get("weight_out_reverse").T,
        coefs, module.coefficients_reverse.detach().cpu().to(torch.float64).tolist(),
    )
