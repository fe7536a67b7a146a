"""Models the tests share: tenant-scoped items with notes, and one shared (unscoped) table."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from fastapi_tenancy import TenantScoped


class Base(DeclarativeBase):
    pass


class Item(TenantScoped, Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    notes: Mapped[list[Note]] = relationship(back_populates="item", cascade="all, delete-orphan")


class Note(TenantScoped, Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id"))
    body: Mapped[str] = mapped_column(String(100))
    item: Mapped[Item] = relationship(back_populates="notes")


class Plan(Base):
    """Not tenant-scoped: every tenant sees every row."""

    __tablename__ = "plans"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
