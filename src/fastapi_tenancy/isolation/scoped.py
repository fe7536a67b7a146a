"""`TenantScoped`: the mixin that marks a model as holding one tenant's rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

__all__ = ["TENANT_ID_LENGTH", "TenantScoped", "tenant_scoped_classes"]

TENANT_ID_LENGTH = 64


class TenantScoped:
    """Gives a declarative model a ``tenant_id`` column and puts it under tenant isolation.

    Under ``row`` isolation every ORM SELECT, UPDATE and DELETE on the model is filtered to the
    session's tenant and every INSERT is stamped with it::

        class Item(TenantScoped, Base):
            __tablename__ = "items"
            id: Mapped[int] = mapped_column(primary_key=True)
            name: Mapped[str]
    """

    tenant_id: Mapped[str] = mapped_column(String(TENANT_ID_LENGTH), index=True, nullable=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _subclasses.append(cls)


_subclasses: list[type[Any]] = []


def tenant_scoped_classes() -> list[type[Any]]:
    """Every mapped model class that inherits `TenantScoped`, in definition order."""
    return [cls for cls in _subclasses if "__table__" in vars(cls)]
