"""Budgets from a config file: ``[[budget]]`` tables in ``costkit.toml`` or ``pyproject.toml``.

Which file, first found wins: the path given (``load_budgets(path)``, ``--config``),
else ``$COSTKIT_CONFIG``, else ``costkit.toml`` in the working directory, else
``pyproject.toml`` there when it has a ``[tool.costkit]`` table. A path that is
given but does not exist is an error; finding no file at all is not (no budgets).

.. code-block:: toml

    [[budget]]
    name = "search-monthly"
    usd = "25.00"              # a string: a TOML float cannot hold cents exactly
    period = "month"           # day | week | month | total
    tz = "Europe/Berlin"
    tags = {team = "search"}
    hard = true
    warn_at = [0.5, 0.8, 1.0]

Every problem is one ``ConfigError`` whose message is one line naming the file, the
budget and the field: ``costkit.toml: budget 'search-monthly': usd: ...``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from costkit.budgets.budget import FIELDS, Budget, BudgetFieldError, check_field
from costkit.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CONFIG_ENV = "COSTKIT_CONFIG"
CONFIG_FILE = "costkit.toml"
PYPROJECT = "pyproject.toml"
_REQUIRED = ("name", "usd")


def _read(path: Path, shown: str) -> dict[str, Any]:
    try:
        with path.open("rb") as stream:
            return tomllib.load(stream)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{shown}: not valid TOML: {_one_line(str(error))}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: not valid TOML: the file is not UTF-8 text") from None
    except OSError as error:
        raise ConfigError(f"{shown}: cannot be read: {error.strerror or error}") from None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _given(path: str | os.PathLike[str], source: str) -> Path:
    found = Path(path)
    if not found.is_file():
        raise ConfigError(f"{found}: no such config file ({source})")
    return found


def config_path(path: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file budgets are read from (see the module docstring), or None when there is none."""
    if path is not None:
        return _given(path, "given as the config file")
    env = os.environ.get(CONFIG_ENV)
    if env:
        return _given(env, f"named by ${CONFIG_ENV}")
    local = Path(CONFIG_FILE)
    if local.is_file():
        return local
    pyproject = Path(PYPROJECT)
    if pyproject.is_file() and "costkit" in _read(pyproject, PYPROJECT).get("tool", {}):
        return pyproject
    return None


def load_budgets(path: str | os.PathLike[str] | None = None) -> list[Budget]:
    """The budgets of the config file (``config_path``); ``[]`` when there is no config file.

    Raises ``ConfigError`` (one line: file, budget, field) for anything wrong in it.
    """
    found = config_path(path)
    if found is None:
        return []
    shown = str(found)
    data = _read(found, shown)
    if found.name == PYPROJECT:
        shown = f"{found} [tool.costkit]"
        tool = data.get("tool", {})
        section = tool.get("costkit") if isinstance(tool, Mapping) else None
        if section is None:
            return []
        if not isinstance(section, Mapping):
            raise ConfigError(f"{shown}: must be a table")
        data = dict(section)
    tables = data.get("budget", [])
    if isinstance(tables, Mapping):
        raise ConfigError(f"{shown}: budget: write each budget as a [[budget]] table (an array of tables)")
    if not isinstance(tables, list):
        raise ConfigError(f"{shown}: budget: must be [[budget]] tables, not {type(tables).__name__}")
    budgets: list[Budget] = []
    names: set[str] = set()
    for index, table in enumerate(tables, start=1):
        budget = _budget(shown, index, table)
        if budget.name in names:
            raise ConfigError(f"{shown}: budget {budget.name!r}: name: defined twice")
        names.add(budget.name)
        budgets.append(budget)
    return budgets


def _budget(shown: str, index: int, table: object) -> Budget:
    which = f"budget #{index}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{shown}: {which}: must be a table")
    name = table.get("name")
    if isinstance(name, str) and name.strip():
        which = f"budget {name!r}"
    for key in table:
        if key not in FIELDS:
            raise ConfigError(f"{shown}: {which}: {key}: unknown field (known: {', '.join(FIELDS)})")
    for key in _REQUIRED:
        if key not in table:
            raise ConfigError(f"{shown}: {which}: {key}: missing")
    values: dict[str, Any] = {}
    for key in FIELDS:
        if key not in table:
            continue
        value = table[key]
        if key == "usd" and isinstance(value, float):
            raise ConfigError(
                f'{shown}: {which}: usd: write the amount as a string, usd = "{value}" '
                "(a TOML float cannot hold cents exactly)"
            )
        try:
            check_field(key, value)
        except BudgetFieldError as error:
            raise ConfigError(f"{shown}: {which}: {_one_line(str(error))}") from None
        values[key] = value
    name = values.pop("name")
    usd = values.pop("usd")
    return Budget(name, usd, **values)
