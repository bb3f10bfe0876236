"""Budgets: definitions, a spend counter per budget and period, reservations in flight, warnings crossed.

Spend is counted by whoever writes rows, in the transaction that inserts them, so
the counters need no backfill here: a budget registered later sums its current
period once when it is registered (``costkit.budgets.store``).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _budget_key(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["budget"],
        ["costkit_budgets.name"],
        name=op.f(f"fk_{table}_budget_costkit_budgets"),
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "costkit_budgets",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("limit_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("period", sa.String(), nullable=False),
        sa.Column("tz", sa.String(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("hard", sa.Boolean(), nullable=False),
        sa.Column("warn_at", sa.String(), nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "period IN ('day', 'week', 'month', 'total')", name=op.f("ck_costkit_budgets_period")
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_costkit_budgets")),
    )
    op.create_table(
        "costkit_budget_periods",
        sa.Column("budget", sa.String(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("spent_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("reserved_nanousd", sa.BigInteger(), nullable=False),
        _budget_key("costkit_budget_periods"),
        sa.PrimaryKeyConstraint("budget", "period_start", name=op.f("pk_costkit_budget_periods")),
    )
    op.create_table(
        "costkit_budget_reservations",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("budget", sa.String(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("host", sa.String(), nullable=True),
        _budget_key("costkit_budget_reservations"),
        sa.PrimaryKeyConstraint("request_id", "budget", name=op.f("pk_costkit_budget_reservations")),
    )
    op.create_index(
        op.f("ix_costkit_budget_reservations_budget_expires_at"),
        "costkit_budget_reservations",
        ["budget", "expires_at"],
    )
    op.create_table(
        "costkit_budget_events",
        sa.Column("budget", sa.String(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("threshold", sa.String(), nullable=False),
        sa.Column("limit_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("spent_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        _budget_key("costkit_budget_events"),
        sa.PrimaryKeyConstraint("budget", "period_start", "threshold", name=op.f("pk_costkit_budget_events")),
    )


def downgrade() -> None:
    op.drop_table("costkit_budget_events")
    op.drop_index(
        op.f("ix_costkit_budget_reservations_budget_expires_at"), table_name="costkit_budget_reservations"
    )
    op.drop_table("costkit_budget_reservations")
    op.drop_table("costkit_budget_periods")
    op.drop_table("costkit_budgets")
