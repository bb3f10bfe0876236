"""Where the ledger lives: URL precedence, SQLite paths, psycopg by default, no password on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

from costkit.ledger.errors import LedgerError
from costkit.ledger.location import ENV_DB_URL, default_spool_dir, resolve_url, safe_url


def test_url_precedence_is_argument_then_environment_then_user_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.delenv(ENV_DB_URL, raising=False)
    assert resolve_url(None).database == str(tmp_path / "data" / "costkit" / "ledger.sqlite")
    monkeypatch.setenv(ENV_DB_URL, f"sqlite:///{tmp_path}/env.sqlite")
    assert resolve_url(None).database == f"{tmp_path}/env.sqlite"
    assert resolve_url(f"sqlite:///{tmp_path}/arg.sqlite").database == f"{tmp_path}/arg.sqlite"


def test_a_bare_path_is_an_sqlite_file_and_postgres_means_psycopg(tmp_path: Path) -> None:
    url = resolve_url(str(tmp_path / "x.sqlite"))
    assert (url.drivername, url.database) == ("sqlite", str(tmp_path / "x.sqlite"))
    assert resolve_url("postgres://u@db.internal/costs").drivername == "postgresql+psycopg"
    assert resolve_url("postgresql://u@db.internal/costs").drivername == "postgresql+psycopg"
    with pytest.raises(LedgerError, match="unsupported"):
        resolve_url("mysql://u@h/db")
    with pytest.raises(LedgerError, match="bad database URL"):
        resolve_url("postgresql+psycopg://u@h:notaport/db")


def test_the_spool_sits_next_to_sqlite_and_never_names_a_password(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_spool_dir(resolve_url(str(tmp_path / "l.sqlite"))) == tmp_path / "l.sqlite.spool"
    url = resolve_url("postgresql://ledger:hunter2@db.internal:5432/costs")
    spool = default_spool_dir(url)
    assert spool.parent == tmp_path / "data" / "costkit" / "spool"
    assert "hunter2" not in str(spool) and "hunter2" not in safe_url(url)
    other = default_spool_dir(resolve_url("postgresql://ledger:hunter2@db.internal:5432/other"))
    assert other != spool
