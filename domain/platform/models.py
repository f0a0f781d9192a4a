"""What every concern's tables share: the declarative base, UTC timestamps and enum-valued string columns.

Each concern declares its own tables in its ``models.py``; Alembic migrations under
``domain/platform/migrations`` are written to match all of them."""

from __future__ import annotations

import datetime as dt
from enum import StrEnum
from typing import Any

from sqlalchemy import DateTime, String, TypeDecorator
from sqlalchemy.orm import DeclarativeBase


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """``timestamptz`` that only takes aware datetimes and always hands back UTC ones."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where UTC is required")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.astimezone(dt.UTC)


class EnumString(TypeDecorator[Any]):
    """A ``StrEnum`` column stored as its plain string value (no database enum type): rows load as members."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: str | None, dialect: Any) -> StrEnum | None:
        return None if value is None else self.enum(value)


class Base(DeclarativeBase):
    pass


def quoted(enum: type[StrEnum]) -> str:
    """The members of a string enum as a SQL list, for a CHECK constraint generated from the enum."""
    return ", ".join(f"'{member.value}'" for member in enum)
