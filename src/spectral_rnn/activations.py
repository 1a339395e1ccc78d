"""Elementwise activations: polynomials ``f(u) = c_0 + c_1 u + ... + c_l u^l`` and ``tanh``.

Every activation is an :class:`Activation`: it evaluates elementwise on torch tensors,
NumPy arrays and Python numbers (``f(u)``), evaluates its derivatives of any order
(``f.deriv(u, k)`` is ``f^(k)(u)``; ``f.derivative(k)`` is that derivative as a
callable), knows whether it is odd (``f.is_odd``), and has a string form that
round-trips exactly (``f.to_string()`` / :func:`parse_activation`), which the model
file stores in its metadata and the command line accepts:

=================  ==========================================================
string             activation
=================  ==========================================================
``"tanh"``         :class:`Tanh`
``"c0,c1,c2"``     :class:`Polynomial` ``(c0, c1, c2)``, lowest order first
                   (``"0,1,0,-0.3333"`` is the odd cubic ``u - 0.3333 u^3``)
=================  ==========================================================

:func:`as_activation` turns any accepted form (an activation, a coefficient
sequence, a string) into an activation; :func:`as_polynomial` does the same but
refuses anything that is not a polynomial (for code that needs coefficients).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Union

import numpy as np
import torch

from ._checks import InputError

__all__ = ["Activation", "Polynomial", "Tanh", "as_activation", "as_polynomial", "parse_activation", "ActivationLike"]

_MALFORMED = "expected 'tanh' or comma-separated numbers such as '0,1,0.5'"

#: highest degree accepted (the estimators use 2 and 3; a model file claiming degree 5e5
#: would otherwise take seconds per time step)
MAX_DEGREE = 16
#: largest |coefficient| accepted: beyond it the estimators' equations overflow float64
MAX_COEFFICIENT = 1e100


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Activation:
    """Base class of elementwise activations.

    Subclasses implement :meth:`__call__`, :meth:`deriv`, :meth:`to_string`,
    :attr:`is_odd`, ``__eq__`` and ``__hash__``. :attr:`torch_nonlinearity` names the
    ``torch.nn.RNN`` nonlinearity computing the same function (``None`` when there is
    none): models whose activations have one export to ``torch.nn.RNN``.
    """

    #: the ``nonlinearity`` argument of :class:`torch.nn.RNN` for this activation, if any
    torch_nonlinearity: str | None = None
    #: bounded activations cannot make a recursion diverge
    bounded: bool = False

    def __call__(self, u):  # pragma: no cover - abstract
        raise NotImplementedError

    def deriv(self, u, order: int = 1):  # pragma: no cover - abstract
        """``f^(order)(u)`` elementwise (``order=0``: ``f(u)``)."""
        raise NotImplementedError

    def derivative(self, order: int = 1):
        """The ``order``-th derivative as a callable ``u -> f^(order)(u)``."""
        _check_order(order)
        return _Derivative(self, order)

    def to_string(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def is_odd(self) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def parse(cls, text: str) -> "Activation":
        """Parse ``"tanh"`` or ``"c0,c1,..."`` (see :func:`parse_activation`)."""
        return parse_activation(text)

    def __str__(self) -> str:
        return self.to_string()


def _check_order(order: int) -> None:
    if not isinstance(order, (int, np.integer)) or isinstance(order, bool) or order < 0:
        raise ValueError(f"derivative order must be a non-negative integer, got {order!r}")


class _Derivative:
    """``u -> f.deriv(u, order)`` (what :meth:`Activation.derivative` returns)."""

    def __init__(self, f: Activation, order: int) -> None:
        self.f, self.order = f, int(order)

    def __call__(self, u):
        return self.f.deriv(u, self.order)

    def __repr__(self) -> str:
        return f"{self.f!r}.derivative({self.order})"


class Polynomial(Activation):
    """A polynomial activation with known coefficients.

    Parameters
    ----------
    coefficients:
        ``(c_0, c_1, ..., c_l)``, lowest order first. Trailing zeros are dropped,
        so the degree is that of the highest non-zero coefficient.

    Examples
    --------
    >>> f = Polynomial([0.0, 1.0, 0.5])      # u + 0.5 u^2
    >>> f.degree, f.derivative().coefficients
    (2, (1.0, 1.0))
    >>> float(f.deriv(2.0, 1)), f.is_odd
    (3.0, False)
    """

    def __init__(self, coefficients: Sequence[float]) -> None:
        if isinstance(coefficients, torch.Tensor):
            coefficients = coefficients.detach().cpu().tolist()
        elif isinstance(coefficients, np.ndarray):
            coefficients = coefficients.tolist()
        try:
            if isinstance(coefficients, (str, bytes, dict, set, frozenset)):
                raise TypeError
            coefficients = list(coefficients)
        except TypeError:
            raise InputError(
                "activation must be a Polynomial, a sequence of coefficients (c0, c1, ...) or a string "
                f"'c0,c1,...', got {type(coefficients).__name__} {_cut(repr(coefficients), 40)}"
            ) from None
        if not all(isinstance(c, numbers.Real) and not isinstance(c, bool) for c in coefficients):
            raise InputError(f"activation coefficients must be real numbers, got {_cut(repr(coefficients))}")
        coefs = [float(c) for c in coefficients]
        if not coefs:
            raise InputError("activation needs at least one coefficient")
        if not all(math.isfinite(c) for c in coefs):
            raise InputError(f"activation coefficients must be finite, got {_cut(repr(coefs))}")
        if any(abs(c) > MAX_COEFFICIENT for c in coefs):
            raise InputError(f"activation coefficients above {MAX_COEFFICIENT:.0e} in magnitude are refused, got "
                             f"{_cut(repr(coefs))}")
        while len(coefs) > 1 and coefs[-1] == 0.0:
            coefs.pop()
        if len(coefs) - 1 > MAX_DEGREE:
            raise InputError(f"activation of degree {len(coefs) - 1}: degrees above {MAX_DEGREE} are refused")
        self._c = tuple(coefs)

    # ------------------------------------------------------------------ basics
    @classmethod
    def parse(cls, text: str) -> "Polynomial":
        """Parse ``"c0,c1,c2"`` (comma-separated, lowest order first)."""
        text = str(text)
        shown = _cut(repr(text))
        if text.count(",") >= 1000:  # bound the work before parsing; the degree is checked below
            raise InputError(f"activation {shown} has {text.count(',') + 1} coefficients: degrees above "
                             f"{MAX_DEGREE} are refused")
        parts = [p.strip() for p in text.split(",")]
        if not parts or any(p == "" for p in parts):
            raise InputError(f"malformed activation {shown}: {_MALFORMED}")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise InputError(f"malformed activation {shown}: {_MALFORMED}") from None
        return cls(values)

    @property
    def coefficients(self) -> tuple[float, ...]:
        """``(c_0, ..., c_l)`` with trailing zeros removed."""
        return self._c

    @property
    def degree(self) -> int:
        return len(self._c) - 1

    def coef(self, k: int) -> float:
        """Coefficient ``c_k`` (0 beyond the degree)."""
        return self._c[k] if 0 <= k < len(self._c) else 0.0

    @property
    def is_odd(self) -> bool:
        """``f(-u) = -f(u)``: every even-order coefficient is zero."""
        return all(c == 0.0 for c in self._c[0::2])

    def derivative(self, order: int = 1) -> "Polynomial":
        """The ``order``-th derivative, itself a :class:`Polynomial`."""
        if order < 0:
            raise ValueError("derivative order must be non-negative")
        c = list(self._c)
        for _ in range(order):
            c = [k * c[k] for k in range(1, len(c))] or [0.0]
        return Polynomial(c)

    def deriv(self, u, order: int = 1):
        """``f^(order)(u)`` elementwise, on tensors, arrays and numbers."""
        _check_order(order)
        return (self if order == 0 else self.derivative(order))(u)

    def __call__(self, u: torch.Tensor | np.ndarray | float) -> torch.Tensor | np.ndarray | float:
        """Evaluate elementwise (Horner, skipping zero coefficients: this runs once per time
        step in every recursion). Works on tensors, arrays and scalars."""
        c = self._c
        if len(c) == 1:
            if isinstance(u, torch.Tensor):
                return torch.full_like(u, c[0])
            if isinstance(u, np.ndarray):
                return np.full_like(u, c[0])
            return c[0]
        out = u * c[-1]
        for k in range(len(c) - 2, -1, -1):
            if c[k] != 0.0:
                out = out + c[k]
            if k > 0:
                out = out * u
        return out

    def abs_bound(self, r: float) -> float:
        """``sum_k |c_k| r^k``: a bound on ``|f(u)|`` for ``|u| <= r``."""
        return float(sum(abs(c) * r**k for k, c in enumerate(self._c)))

    def to_string(self) -> str:
        """The ``"c0,c1,..."`` form accepted by :meth:`parse` (round-trips exactly)."""
        return ",".join(repr(c) for c in self._c)

    def __repr__(self) -> str:
        return f"Polynomial({list(self._c)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Polynomial) and other._c == self._c

    def __hash__(self) -> int:
        return hash(self._c)


class Tanh(Activation):
    """The hyperbolic tangent, ``"tanh"``: odd, bounded by 1, ``torch.nn.RNN``'s default.

    Derivatives of any order are exact: ``tanh^(k)(u) = P_k(tanh u)`` with ``P_0(t) = t``
    and ``P_{k+1}(t) = (1 - t^2) P_k'(t)`` (e.g. ``tanh''' = -2 + 8 t^2 - 6 t^4``).
    """

    torch_nonlinearity = "tanh"
    bounded = True
    _NAME = "tanh"
    _dpolys: list[Polynomial] = [Polynomial([0.0, 1.0])]  # P_k, shared cache

    @classmethod
    def parse(cls, text: str) -> "Tanh":
        if str(text).strip().lower() != cls._NAME:
            raise InputError(f"malformed activation {text!r}: expected 'tanh'")
        return cls()

    @classmethod
    def _poly(cls, order: int) -> Polynomial:
        while len(cls._dpolys) <= order:
            p = cls._dpolys[-1].derivative()
            one_minus_t2 = (1.0, 0.0, -1.0)
            c = [0.0] * (len(p.coefficients) + 2)
            for i, a in enumerate(p.coefficients):
                for j, b in enumerate(one_minus_t2):
                    c[i + j] += a * b
            cls._dpolys.append(Polynomial(c))
        return cls._dpolys[order]

    def __call__(self, u):
        if isinstance(u, torch.Tensor):
            return torch.tanh(u)
        if isinstance(u, np.ndarray):
            return np.tanh(u)
        if isinstance(u, (np.generic,)):
            return np.tanh(u)
        return math.tanh(u)

    def deriv(self, u, order: int = 1):
        """``tanh^(order)(u)`` elementwise, on tensors, arrays and numbers."""
        _check_order(order)
        t = self(u)
        return t if order == 0 else self._poly(order)(t)

    @property
    def is_odd(self) -> bool:
        return True

    def to_string(self) -> str:
        return self._NAME

    def __repr__(self) -> str:
        return "Tanh()"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tanh)

    def __hash__(self) -> int:
        return hash(self._NAME)


#: named (non-polynomial) activations by their string
_NAMED: dict[str, type[Activation]] = {"tanh": Tanh}

ActivationLike = Union[Activation, Sequence[float], str]


def parse_activation(text: str) -> Activation:
    """``"tanh"`` -> :class:`Tanh`; ``"c0,c1,..."`` -> :class:`Polynomial`; else :class:`InputError`.

    Inverse of ``to_string()``: ``parse_activation(f.to_string()) == f`` exactly.
    """
    if not isinstance(text, str):
        raise InputError(f"activation must be a string here, got {type(text).__name__}")
    key = text.strip().lower()
    if key in _NAMED:
        return _NAMED[key]()
    return Polynomial.parse(text)


def as_activation(activation: ActivationLike) -> Activation:
    """Accept an :class:`Activation`, a coefficient sequence, ``"tanh"`` or ``"c0,c1,..."``."""
    if isinstance(activation, Activation):
        return activation
    if isinstance(activation, str):
        return parse_activation(activation)
    try:
        return Polynomial(activation)
    except InputError:
        raise
    except (TypeError, ValueError):
        raise InputError(
            f"activation must be an Activation, coefficients or a string ({_MALFORMED}), got {type(activation).__name__}"
        ) from None


def as_polynomial(activation: ActivationLike, what: str | None = None) -> Polynomial:
    """As :func:`as_activation`, but only a polynomial is accepted: anything else raises
    :class:`InputError` saying that ``what`` needs one (by default: the spectral
    estimators, which fit polynomial activations only in this version)."""
    f = as_activation(activation)
    if not isinstance(f, Polynomial):
        why = (f"{what} needs a polynomial activation" if what else
               "the spectral estimators of this version fit polynomial activations only")
        raise InputError(f"activation {f.to_string()!r} is not a polynomial: {why} (coefficients 'c0,c1,...')")
    return f
