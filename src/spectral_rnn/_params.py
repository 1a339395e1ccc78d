"""The scikit-learn parameter contract, written out (scikit-learn is not a core dependency).

:class:`Params` gives a class whose constructor stores every argument under its own name
``get_params`` / ``set_params`` (so ``sklearn.base.clone`` works) and a readable ``repr``
listing the arguments that differ from their defaults. :func:`atomic_fit` makes a failed
``fit`` leave the object as it was before the call (a fresh object: no fitted state).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TypeVar

from ._checks import InputError

__all__ = ["Params", "atomic_fit"]

_F = TypeVar("_F", bound=Callable)


def _same_value(a: object, b: object) -> bool:
    try:
        return bool(a == b) if type(a) is type(b) else False
    except Exception:  # arrays and other objects without a plain truth value
        return a is b


class Params:
    """``get_params`` / ``set_params`` / ``repr`` from the constructor's signature.

    The constructor must store each argument unchanged under its own name (validation
    happens in ``fit`` or without replacing the value); fitted values go to attributes
    ending in ``_``. Parameters without a default are always shown in the ``repr``.
    """

    #: constructor parameters that a subclass fixes to one value (``{name: value}``): they are
    #: not parameters of the subclass (no ``get_params`` entry), and :meth:`_pinned` refuses
    #: any other value than the fixed one or the inherited default
    _fixed_params: dict = {}

    @classmethod
    def _get_param_names(cls) -> list[str]:
        return [n for n, p in inspect.signature(cls.__init__).parameters.items()
                if n != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in cls._fixed_params]

    def _pinned(self, name: str, value: object) -> object:
        """The value of constructor parameter ``name`` in use: ``value``, or the subclass's fixed
        value when it fixes one (given the inherited default or the fixed value itself)."""
        if name not in self._fixed_params:
            return value
        fixed = self._fixed_params[name]
        default = inspect.signature(type(self).__init__).parameters[name].default
        if not (_same_value(value, fixed) or _same_value(value, default)):
            raise InputError(f"{type(self).__name__} fixes {name}={fixed!r}, got {name}={value!r}")
        return fixed

    def get_params(self, deep: bool = True) -> dict:
        """The constructor's parameters as given (``sklearn.base.clone`` works on this object)."""
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params) -> "Params":
        """Set constructor parameters by name; unknown names raise :class:`InputError`. Returns ``self``."""
        valid = self._get_param_names()
        for name, value in params.items():
            if name not in valid:
                raise InputError(f"{type(self).__name__} has no parameter {name!r} (parameters: {', '.join(valid)})")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        sig = inspect.signature(type(self).__init__).parameters
        shown = [f"{n}={v!r}" for n, v in self.get_params().items()
                 if sig[n].default is inspect.Parameter.empty or not _same_value(v, sig[n].default)]
        return f"{type(self).__name__}({', '.join(shown)})"


def atomic_fit(fit: _F) -> _F:
    """Decorate a ``fit`` method so that, when it raises, the object's attributes are restored
    to what they were before the call (no half-fitted state is left behind)."""

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        saved = dict(self.__dict__)
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(saved)
            raise

    return wrapper  # type: ignore[return-value]
