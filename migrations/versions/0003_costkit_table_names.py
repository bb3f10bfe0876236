"""Names of costkit's own: ``requests`` -> ``costkit_requests``, ``request_tags`` -> ``costkit_request_tags``.

An application sharing the database may have its own ``requests`` table. Every
row, index and constraint is kept; their names follow the table names through
the naming convention in ``costkit/ledger/schema.py``.

PostgreSQL renames in place (no data is copied). SQLite cannot rename an index or
a constraint, so there the tables are created anew under the new names, filled
from the old ones and the old ones dropped (tags first: dropping ``requests``
while ``request_tags`` still pointed at it would cascade-delete the tags).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = {"requests": "requests", "tags": "request_tags"}
NEW = {"requests": "costkit_requests", "tags": "costkit_request_tags"}


def _request_columns() -> list[sa.Column[object]]:
    """The columns at 0002 (0001's, then ``notes``), in table order."""
    return [
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
        sa.Column("notes", sa.Text(), nullable=True),
    ]


def _create_tables(names: dict[str, str]) -> None:
    requests, tags = names["requests"], names["tags"]
    op.create_table(
        requests,
        *_request_columns(),
        sa.CheckConstraint(
            "status IN ('ok', 'error', 'partial', 'blocked')", name=op.f(f"ck_{requests}_status")
        ),
        sa.CheckConstraint(
            "usage_source IN ('provider', 'estimated')", name=op.f(f"ck_{requests}_usage_source")
        ),
        sa.PrimaryKeyConstraint("request_id", name=op.f(f"pk_{requests}")),
    )
    op.create_index(op.f(f"ix_{requests}_started_at"), requests, ["started_at"])
    op.create_table(
        tags,
        sa.Column("request_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["request_id"],
            [f"{requests}.request_id"],
            name=op.f(f"fk_{tags}_request_id_{requests}"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("request_id", "key", name=op.f(f"pk_{tags}")),
    )
    op.create_index(op.f(f"ix_{tags}_key_value"), tags, ["key", "value"])


def _copy_sqlite(source: dict[str, str], target: dict[str, str]) -> None:
    """Create ``target``'s tables, copy every row from ``source``'s, drop ``source``'s."""
    _create_tables(target)
    columns = ", ".join(c.name for c in _request_columns())
    op.execute(f"INSERT INTO {target['requests']} ({columns}) SELECT {columns} FROM {source['requests']}")
    op.execute(
        f"INSERT INTO {target['tags']} (request_id, key, value) "
        f"SELECT request_id, key, value FROM {source['tags']}"
    )
    op.drop_table(source["tags"])  # first: dropping requests while tags point at it would cascade
    op.drop_table(source["requests"])


def _rename_postgresql(source: dict[str, str], target: dict[str, str]) -> None:
    old_r, old_t, new_r, new_t = source["requests"], source["tags"], target["requests"], target["tags"]
    op.rename_table(old_r, new_r)
    op.rename_table(old_t, new_t)
    for old, new in (
        (f"pk_{old_r}", f"pk_{new_r}"),  # renames the primary key's index too
        (f"ck_{old_r}_status", f"ck_{new_r}_status"),
        (f"ck_{old_r}_usage_source", f"ck_{new_r}_usage_source"),
    ):
        op.execute(f"ALTER TABLE {new_r} RENAME CONSTRAINT {old} TO {new}")
    for old, new in (
        (f"pk_{old_t}", f"pk_{new_t}"),
        (f"fk_{old_t}_request_id_{old_r}", f"fk_{new_t}_request_id_{new_r}"),
    ):
        op.execute(f"ALTER TABLE {new_t} RENAME CONSTRAINT {old} TO {new}")
    op.execute(f"ALTER INDEX ix_{old_r}_started_at RENAME TO ix_{new_r}_started_at")
    op.execute(f"ALTER INDEX ix_{old_t}_key_value RENAME TO ix_{new_t}_key_value")


def _move(source: dict[str, str], target: dict[str, str]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        _rename_postgresql(source, target)
    else:
        _copy_sqlite(source, target)


def upgrade() -> None:
    _move(OLD, NEW)


def downgrade() -> None:
    _move(NEW, OLD)
