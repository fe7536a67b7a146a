"""Old names kept for one release: each use warns (`DeprecationWarning`) and names the new one.

A module that moved keeps its old path as a module whose ``__getattr__`` is `moved_attribute`;
a method that was renamed keeps its old name as a `renamed` alias.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Collection
from typing import Any

__all__ = ["moved_attribute", "renamed"]


def moved_attribute(old: str, new: str, name: str, names: Collection[str]) -> Any:
    """``new.name`` read through the old module path ``old``, with a `DeprecationWarning`.

    ``names`` are the names ``old`` re-exports; any other raises `AttributeError`, as a missing
    attribute does.
    """
    if name not in names:
        raise AttributeError(f"module {old!r} has no attribute {name!r}")
    module = importlib.import_module(new)
    warnings.warn(
        f"{old}.{name} moved to {new}.{name}; the old path goes away in the next release",
        DeprecationWarning,
        stacklevel=3,
    )
    return getattr(module, name)


def renamed(new_name: str, owner: str, old_name: str) -> Callable[..., Any]:
    """A method named ``old_name`` that warns, then calls ``new_name`` on its instance."""

    def alias(self: object, *args: Any, **kwargs: Any) -> Any:
        warnings.warn(
            f"{owner}.{old_name} is renamed {owner}.{new_name}; the old name goes away in the "
            "next release",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(self, new_name)(*args, **kwargs)

    alias.__name__ = old_name
    alias.__doc__ = f"Deprecated alias of `{new_name}` (removed in the next release)."
    return alias
