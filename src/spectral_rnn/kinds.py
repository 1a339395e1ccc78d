"""The model-kind registry: from a kind's name to its class, parameters, PyTorch mapping and
planted generator.

Every place that depends on the kind of a model (the model file, export and refinement,
metrics, planted problems, the comparison and the command line) asks this registry
instead of switching on ``"iornn"`` / ``"brnn"``. A kind is a subclass of
:class:`~spectral_rnn.models.RNNModel` naming its chains; the class supplies

* ``parameter_names()``: its weight matrices (the tensors of the model file),
* ``to_torch`` / ``from_module`` / ``new_module``: its PyTorch mapping,
* ``random``: the planted generator (:func:`spectral_rnn.datasets.make_planted`).

Adding a model kind: write its module (the class) and add one :class:`ModelKind` line to
:data:`KINDS` below.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ._checks import InputError, _short
from .activations import ActivationLike
from .models import BRNN, IORNN, RNNModel

__all__ = ["ModelKind", "KINDS", "get_kind", "kind_of", "kind_names", "resolve_kind", "from_torch"]


@dataclass(frozen=True)
class ModelKind:
    """One model kind.

    ``name``: its key (the model file's ``kind``, ``make_planted(kind=...)``, ``--kind``);
    ``cls``: the model class; ``estimator``: the name of its spectral estimator class in
    :mod:`spectral_rnn.estimators` (``None``: no spectral fit for this kind yet);
    ``description``: one line for help texts.
    """

    name: str
    cls: type[RNNModel]
    estimator: str | None = None
    description: str = ""

    @property
    def parameter_names(self) -> tuple[str, ...]:
        return self.cls.parameter_names()

    @property
    def n_chains(self) -> int:
        """Chains per model (the hidden size counts per chain)."""
        return len(self.cls.chains)

    def planted(self, d_x: int, d_h: int, d_y: int, activation: ActivationLike = (0.0, 1.0, 0.5),
                **kwargs) -> RNNModel:
        """A random model of this kind (``cls.random``)."""
        return self.cls.random(d_x, d_h, d_y, activation=activation, **kwargs)

    def new_module(self, d_x: int, d_h: int, d_y: int, activation: ActivationLike,
                   dtype: torch.dtype = torch.float32) -> torch.nn.Module:
        """An untrained PyTorch module of this kind (``d_h`` units per chain)."""
        return self.cls.new_module(d_x, d_h, d_y, activation, dtype)


#: the registered kinds, by name
KINDS: dict[str, ModelKind] = {
    k.name: k
    for k in (
        ModelKind("iornn", IORNN, "SpectralIORNN", "input-output RNN"),
        ModelKind("brnn", BRNN, "SpectralBRNN", "bidirectional RNN"),
    )
}


def kind_names() -> list[str]:
    """The registered kinds' names."""
    return list(KINDS)


def get_kind(name: object) -> ModelKind:
    """The registered kind called ``name`` (:class:`InputError` otherwise)."""
    if isinstance(name, str) and name in KINDS:
        return KINDS[name]
    raise InputError(f"unknown model kind {_short(name)} (expected one of {', '.join(KINDS)})")


def resolve_kind(kind: str | None = None, bidirectional: bool = False) -> ModelKind:
    """``get_kind(kind)``; without ``kind``, ``"brnn"`` if ``bidirectional`` else ``"iornn"``
    (the ``bidirectional=`` shorthand of the training functions and the command line)."""
    if kind is None:
        return get_kind("brnn" if bidirectional else "iornn")
    if bidirectional and get_kind(kind).n_chains != 2:
        raise InputError(f"bidirectional=True asks for a two-chain model, but kind {kind!r} has "
                         f"{get_kind(kind).n_chains} chain(s)")
    return get_kind(kind)


def kind_of(model: object, what: str = "this function") -> ModelKind:
    """The registered kind of ``model`` (:class:`InputError` for anything else)."""
    for k in KINDS.values():
        if type(model) is k.cls:
            return k
    raise InputError(f"{what} expects a model of a registered kind ({', '.join(k.cls.__name__ for k in KINDS.values())}), "
                     f"got {type(model).__name__}")


def _kind_of_module(module: torch.nn.Module) -> ModelKind:
    name = getattr(module, "model_kind", None)
    if name is not None:
        return get_kind(name)
    layout = [False, True] if getattr(module, "bidirectional", False) else [False]
    for k in KINDS.values():  # the first kind with the module's chain layout
        if [c.reverse for c in k.cls.chains] == layout:
            return k
    raise InputError(f"no registered model kind has the chain layout of this {type(module).__name__}")


def from_torch(module: torch.nn.Module) -> RNNModel:
    """The model held by a module of :func:`~spectral_rnn.torch_export.to_torch` (or built
    directly as a :class:`~spectral_rnn.torch_export.PolynomialRNN` /
    :class:`~spectral_rnn.torch_export.TorchRNN`), as float64 copies: of the module's
    ``model_kind``, else of the first registered kind with its chain layout."""
    if not isinstance(module, torch.nn.Module):
        raise InputError(f"from_torch expects a TorchRNN or a PolynomialRNN, got {type(module).__name__}")
    return _kind_of_module(module).cls.from_module(module)

