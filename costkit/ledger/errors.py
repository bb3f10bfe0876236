"""The ledger's own errors. Each is a ``CostkitError``, so the CLI prints it as one line."""

from __future__ import annotations

from costkit.errors import CostkitError


class LedgerError(CostkitError):
    """The ledger cannot be opened or used: bad URL, unsupported backend, unknown schema revision."""


class DatabaseDown(LedgerError):
    """The database did not answer (refused, dropped, locked past the busy timeout). Rows go to the spool."""


class RowsRefused(LedgerError):
    """The database answered but refused these rows (e.g. a NUL byte in text on PostgreSQL)."""
