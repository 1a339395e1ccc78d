"""Elementwise polynomial activations ``f(u) = c_0 + c_1 u + ... + c_l u^l``."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

from ._checks import InputError

__all__ = ["Polynomial"]

#: highest degree accepted (the estimators use 2 and 3; a model file claiming degree 5e5
#: would otherwise take seconds per time step)
MAX_DEGREE = 16
#: largest |coefficient| accepted: beyond it the estimators' equations overflow float64
MAX_COEFFICIENT = 1e100


def _cut(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Polynomial:
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
            raise InputError(f"malformed activation {shown}: expected comma-separated numbers such as '0,1,0.5'")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            raise InputError(
                f"malformed activation {shown}: expected comma-separated numbers such as '0,1,0.5'"
            ) from None
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

    def derivative(self, order: int = 1) -> "Polynomial":
        """The ``order``-th derivative, itself a :class:`Polynomial`."""
        if order < 0:
            raise ValueError("derivative order must be non-negative")
        c = list(self._c)
        for _ in range(order):
            c = [k * c[k] for k in range(1, len(c))] or [0.0]
        return Polynomial(c)

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

    def to_string(self) -> str:
        """The ``"c0,c1,..."`` form accepted by :meth:`parse` (round-trips exactly)."""
        return ",".join(repr(c) for c in self._c)

    def __repr__(self) -> str:
        return f"Polynomial({list(self._c)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Polynomial) and other._c == self._c

    def __hash__(self) -> int:
        return hash(self._c)


def as_polynomial(activation: "Polynomial | Sequence[float] | str") -> Polynomial:
    """Accept a :class:`Polynomial`, a coefficient sequence or a ``"c0,c1,..."`` string."""
    if isinstance(activation, Polynomial):
        return activation
    if isinstance(activation, str):
        return Polynomial.parse(activation)
    return Polynomial(activation)
