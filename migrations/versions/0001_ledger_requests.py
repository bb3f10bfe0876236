"""The ledger: one row per request, and its attribution tags.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "requests",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("response_id", sa.String(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("endpoint_host", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("stream", sa.Boolean(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("cached_input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("usage_source", sa.String(), nullable=False),
        sa.Column("estimated_input_tokens", sa.Integer(), nullable=True),
        sa.Column("cost_nanousd", sa.BigInteger(), nullable=False),
        sa.Column("price_id", sa.String(), nullable=True),
        sa.Column("latency_us", sa.BigInteger(), nullable=True),
        sa.Column("ttft_us", sa.BigInteger(), nullable=True),
        sa.Column("x_metrics", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("prompt_text", sa.Text(), nullable=True),
        sa.Column("completion_text", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "status IN ('ok', 'error', 'partial', 'blocked')", name=op.f("ck_requests_status")
        ),
        sa.CheckConstraint(
            "usage_source IN ('provider', 'estimated')", name=op.f("ck_requests_usage_source")
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f("pk_requests")),
    )
    op.create_index(op.f("ix_requests_started_at"), "requests", ["started_at"])
    op.create_table(
        "request_tags",
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            ["requests.request_id"],
            name=op.f("fk_request_tags_request_id_requests"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "key", name=op.f("pk_request_tags")),
    )
    op.create_index(op.f("ix_request_tags_key_value"), "request_tags", ["key", "value"])


def downgrade() -> None:
    op.drop_index(op.f("ix_request_tags_key_value"), table_name="request_tags")
    op.drop_table("request_tags")
    op.drop_index(op.f("ix_requests_started_at"), table_name="requests")
    op.drop_table("requests")
