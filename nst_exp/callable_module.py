"""Modules that can be called as their main function, so a function and its module share one name.

``from nst_exp import run`` gives the module ``nst_exp.run``; calling it calls
``nst_exp.run.run``. Without this the package attribute ``nst_exp.run`` would be
the module or the function depending on what was imported first, and
``monkeypatch.setattr(nst_exp.run, ...)`` or ``import nst_exp.run as runner``
would break once the function had replaced the module.
"""

from __future__ import annotations

import sys
import types
from typing import Any


class CallableModule(types.ModuleType):
    """A module whose call is a call of its function of the same name (``nst_exp.report`` -> ``report()``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


def make_callable(name: str) -> None:
    """Make the imported module ``name`` callable as its function of the same name."""
    sys.modules[name].__class__ = CallableModule
