"""The ledger schema as SQLAlchemy typed models.

The migrations in ``migrations/versions`` are the source of truth; these models
must agree with them (a test compares both on SQLite and PostgreSQL). Money is
``BigInteger`` nano-USD. Times are timezone-aware UTC on the way in and out on
both backends. Tags live in a child table so that filtering by ``key = value``
is plain indexed SQL on every backend (no JSON functions, no per-key
expression indexes), and reports can ``GROUP BY`` a tag with a join.

Every name costkit creates starts with ``costkit_`` (tables, the Alembic version
table) or derives from such a table name (indexes and constraints, through
``NAMING_CONVENTION``), so the ledger can share a database with an application
that has its own ``requests`` table.

The budget tables (``costkit_budget*``, see ``costkit.budgets``) hold each registered
budget's definition, a spend counter per budget and period (kept by whoever writes
rows, in the same transaction), the reservations of requests in flight, and the
warning thresholds crossed, once per budget, period and threshold.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, ClassVar, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from costkit.ledger.row import STATUSES, USAGE_SOURCES

VERSION_TABLE = "costkit_alembic_version"
"""Alembic's version table for the ledger, named so it never collides with an application's own."""

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is timezone-aware UTC in Python on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores UTC text in one fixed format,
    so comparisons in SQL are comparisons in time. A naive datetime is refused:
    guessing its zone would silently shift money between days.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value.isoformat()} in the ledger: give a timezone")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        str: String(),
        int: Integer,
        bool: Boolean,
    }


class Request(Base):
    """One accounted chat-completions request: one row per ``request_id``."""

    __tablename__ = "costkit_requests"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        CheckConstraint(_in("usage_source", USAGE_SOURCES), name="usage_source"),
        Index(None, "started_at"),
    )

    request_id: Mapped[str] = mapped_column(primary_key=True)
    response_id: Mapped[str | None]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    model: Mapped[str]
    endpoint_host: Mapped[str]
    status: Mapped[str]
    http_status: Mapped[int | None]
    stream: Mapped[bool]
    input_tokens: Mapped[int]
    cached_input_tokens: Mapped[int]
    output_tokens: Mapped[int]
    usage_source: Mapped[str]
    estimated_input_tokens: Mapped[int | None]
    cost_nanousd: Mapped[int] = mapped_column(BigInteger)
    price_id: Mapped[str | None]
    latency_us: Mapped[int | None] = mapped_column(BigInteger)
    ttft_us: Mapped[int | None] = mapped_column(BigInteger)
    x_metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    prompt_text: Mapped[str | None] = mapped_column(Text)
    completion_text: Mapped[str | None] = mapped_column(Text)
    notes: Mapped[str | None] = mapped_column(Text)  # last: migration 0002 appended it

    tags: Mapped[list[RequestTag]] = relationship(
        back_populates="request", cascade="all, delete-orphan", passive_deletes=True
    )


class RequestTag(Base):
    """One attribution pair (team, user, feature, job…) of a request; a key appears once per request."""

    __tablename__ = "costkit_request_tags"
    __table_args__ = (Index(None, "key", "value"),)

    request_id: Mapped[str] = mapped_column(
        ForeignKey("costkit_requests.request_id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str]

    request: Mapped[Request] = relationship(back_populates="tags")


BUDGET_PERIODS = ("day", "week", "month", "total")


class BudgetDefinition(Base):
    """A budget registered by some process: spend is counted toward it by every writer of the ledger."""

    __tablename__ = "costkit_budgets"
    __table_args__ = (CheckConstraint(_in("period", BUDGET_PERIODS), name="period"),)

    name: Mapped[str] = mapped_column(primary_key=True)
    limit_nanousd: Mapped[int] = mapped_column(BigInteger)
    period: Mapped[str]
    tz: Mapped[str]
    tags: Mapped[str] = mapped_column(Text)  # a JSON object, keys sorted
    hard: Mapped[bool]
    warn_at: Mapped[str]  # the thresholds as decimal text, comma-separated ("0.5,0.8,1")
    registered_at: Mapped[datetime]


class BudgetPeriod(Base):
    """One budget's counter for one period: settled spend and the worst cases reserved in flight."""

    __tablename__ = "costkit_budget_periods"

    budget: Mapped[str] = mapped_column(
        ForeignKey("costkit_budgets.name", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    spent_nanousd: Mapped[int] = mapped_column(BigInteger)
    reserved_nanousd: Mapped[int] = mapped_column(BigInteger)


class BudgetReservation(Base):
    """A request's worst case held against a budget until its row is written or its lease ends."""

    __tablename__ = "costkit_budget_reservations"
    __table_args__ = (Index(None, "budget", "expires_at"),)

    request_id: Mapped[str] = mapped_column(primary_key=True)
    budget: Mapped[str] = mapped_column(
        ForeignKey("costkit_budgets.name", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime]
    amount_nanousd: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    pid: Mapped[int | None]
    host: Mapped[str | None]


class BudgetEvent(Base):
    """A warning threshold crossed: recorded once per budget, period and threshold, by any process."""

    __tablename__ = "costkit_budget_events"

    budget: Mapped[str] = mapped_column(
        ForeignKey("costkit_budgets.name", ondelete="CASCADE"), primary_key=True
    )
    period_start: Mapped[datetime] = mapped_column(primary_key=True)
    threshold: Mapped[str] = mapped_column(primary_key=True)  # decimal text: "0.8"
    limit_nanousd: Mapped[int] = mapped_column(BigInteger)
    spent_nanousd: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


requests_table = cast(Table, Request.__table__)
request_tags_table = cast(Table, RequestTag.__table__)

budgets_table = cast(Table, BudgetDefinition.__table__)
budget_periods_table = cast(Table, BudgetPeriod.__table__)
budget_reservations_table = cast(Table, BudgetReservation.__table__)
budget_events_table = cast(Table, BudgetEvent.__table__)

REQUEST_COLUMNS: tuple[str, ...] = tuple(c.name for c in Request.__table__.columns)
"""Every column of ``costkit_requests``, in table order: the keys of one insert parameter dict."""
