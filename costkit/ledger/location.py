"""Where the ledger lives: its database URL and its spool directory.

Precedence for the URL: the explicit argument (``Ledger(url)``, ``--db``), then
``COSTKIT_DB_URL``, then an SQLite file in the user's data directory. A value
without ``://`` is a path to an SQLite file. ``postgresql://`` and ``postgres://``
mean psycopg 3 (``postgresql+psycopg://``).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from costkit.ledger.errors import LedgerError

ENV_DB_URL = "COSTKIT_DB_URL"
SUPPORTED_BACKENDS = ("sqlite", "postgresql")


def default_sqlite_path() -> Path:
    """``platformdirs.user_data_dir("costkit")/ledger.sqlite``; nothing is created here."""
    import platformdirs

    return Path(platformdirs.user_data_dir("costkit")) / "ledger.sqlite"


def resolve_url(url: str | URL | None = None) -> URL:
    """The ledger URL to use, checked for syntax and backend; raises ``LedgerError`` on bad input."""
    if isinstance(url, URL):
        parsed = url
    else:
        text = url if url is not None else os.environ.get(ENV_DB_URL) or None
        if text is None:
            return URL.create("sqlite", database=str(default_sqlite_path()))
        text = text.strip()
        if not text:
            raise LedgerError("empty database URL")
        if "://" not in text:
            return URL.create("sqlite", database=str(Path(text).expanduser().absolute()))
        text = re.sub(r"^(postgresql|postgres)://", "postgresql+psycopg://", text)
        try:
            parsed = make_url(text)
        except (ArgumentError, ValueError) as exc:
            raise LedgerError(f"bad database URL: {exc}") from None
    if parsed.get_backend_name() not in SUPPORTED_BACKENDS:
        raise LedgerError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:///PATH or postgresql+psycopg://..."
        )
    return parsed


def safe_url(url: URL) -> str:
    """The URL as text with any password hidden: the only form costkit prints or logs."""
    return url.render_as_string(hide_password=True)


def sqlite_file(url: URL) -> Path | None:
    """The database file of an SQLite URL, or None for in-memory SQLite and for other backends."""
    if url.get_backend_name() != "sqlite":
        return None
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    return Path(database).expanduser().absolute()


def default_spool_dir(url: URL) -> Path:
    """Next to an SQLite file (``ledger.sqlite.spool/``); else in the user data dir, one per database.

    The per-database name hashes the URL without its password, so no secret reaches the disk.
    """
    path = sqlite_file(url)
    if path is not None:
        return path.with_name(path.name + ".spool")
    import platformdirs

    shown = url.render_as_string(hide_password=True)
    digest = hashlib.sha256(shown.encode()).hexdigest()[:16]
    label = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{url.host or 'local'}-{url.database or 'db'}")[:60]
    return Path(platformdirs.user_data_dir("costkit")) / "spool" / f"{label}-{digest}"
