"""The ledger's Alembic migrations: the only place its schema changes.

Installed as the package ``costkit._migrations`` (see ``[tool.setuptools]`` in
pyproject.toml); ``costkit.ledger.migrate`` points Alembic at it.
"""
