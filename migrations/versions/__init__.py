"""Numbered ledger migrations, applied in order by ``costkit db upgrade``."""
