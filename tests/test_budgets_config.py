"""Budgets from ``costkit.toml``, ``[tool.costkit]`` in ``pyproject.toml`` or ``$COSTKIT_CONFIG``.

Which file wins, and that every mistake is one line naming the file, the budget and the field.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import costkit
from costkit.budgets import config_path, load_budgets

GOOD = """
[[budget]]
name = "search-monthly"
usd = "25.00"
period = "month"
tz = "Europe/Berlin"
tags = {team = "search"}
hard = true
warn_at = [0.5, 0.8, 1.0]

[[budget]]
name = "everything"
usd = "100"
"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("COSTKIT_CONFIG", raising=False)
    return tmp_path


def test_costkit_toml_in_the_working_directory_defines_budgets(here: Path) -> None:
    (here / "costkit.toml").write_text(GOOD)
    search, everything = load_budgets()
    assert search == costkit.Budget(
        "search-monthly", "25.00", period="month", tz="Europe/Berlin", tags={"team": "search"}
    )
    assert search.warn_at == (Decimal("0.5"), Decimal("0.8"), Decimal("1"))
    assert everything == costkit.Budget("everything", "100")
    assert config_path() == Path("costkit.toml")


def test_pyproject_tool_costkit_is_read_when_there_is_no_costkit_toml(here: Path) -> None:
    (here / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert config_path() is None and load_budgets() == []
    (here / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[[tool.costkit.budget]]\nname = "ci"\nusd = "5"\n'
    )
    assert load_budgets() == [costkit.Budget("ci", "5")]
    (here / "costkit.toml").write_text('[[budget]]\nname = "local"\nusd = "1"\n')
    assert load_budgets() == [costkit.Budget("local", "1")]


def test_a_given_path_beats_the_environment_which_beats_the_working_directory(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (here / "costkit.toml").write_text('[[budget]]\nname = "cwd"\nusd = "1"\n')
    (here / "env.toml").write_text('[[budget]]\nname = "env"\nusd = "2"\n')
    (here / "given.toml").write_text('[[budget]]\nname = "given"\nusd = "3"\n')
    assert [b.name for b in load_budgets()] == ["cwd"]
    monkeypatch.setenv("COSTKIT_CONFIG", str(here / "env.toml"))
    assert [b.name for b in load_budgets()] == ["env"]
    assert [b.name for b in load_budgets(here / "given.toml")] == ["given"]
    monkeypatch.setenv("COSTKIT_CONFIG", str(here / "missing.toml"))
    with pytest.raises(
        costkit.ConfigError, match=r"missing\.toml: no such config file \(named by \$COSTKIT_CONFIG\)"
    ):
        load_budgets()
    with pytest.raises(costkit.ConfigError, match=r"nope\.toml: no such config file"):
        load_budgets(here / "nope.toml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[budget]]\nname = "m"\nusd = 25.0\n',
            """costkit.toml: budget 'm': usd: write the amount as a string, usd = "25.0" """
            "(a TOML float cannot hold cents exactly)",
        ),
        (
            '[[budget]]\nname = "m"\nusd = "1"\ntz = "Europe/Berlinn"\n',
            "costkit.toml: budget 'm': tz: unknown time zone 'Europe/Berlinn'",
        ),
        (
            '[[budget]]\nname = "m"\nusd = "1"\nperiod = "year"\n',
            "costkit.toml: budget 'm': period: must be one of day, week, month, total, not 'year'",
        ),
        (
            '[[budget]]\nname = "m"\nusd = "1"\nlimit = "1"\n',
            "costkit.toml: budget 'm': limit: unknown field",
        ),
        ('[[budget]]\nname = "m"\n', "costkit.toml: budget 'm': usd: missing"),
        ('[[budget]]\nusd = "1"\n', "costkit.toml: budget #1: name: missing"),
        (
            '[[budget]]\nname = "m"\nusd = "1"\nhard = "yes"\n',
            "costkit.toml: budget 'm': hard: must be true or false",
        ),
        ('[[budget]]\nname = "m"\nusd = "1"\ntags = {team = 1.5}\n', None),
        (
            '[[budget]]\nname = "m"\nusd = "1"\nwarn_at = [0.5, -1]\n',
            "costkit.toml: budget 'm': warn_at: -1 must be above 0",
        ),
        (
            '[[budget]]\nname = "m"\nusd = "1"\n[[budget]]\nname = "m"\nusd = "2"\n',
            "costkit.toml: budget 'm': name: defined twice",
        ),
        (
            '[budget]\nname = "m"\nusd = "1"\n',
            "costkit.toml: budget: write each budget as a [[budget]] table",
        ),
        (
            '[[budget]]\nname = "m"\nusd = "1"\n[[budget]]\nname = "n"\nusd = "1e-12"\n',
            "costkit.toml: budget 'n': usd: '1e-12' has more than 9 decimal places",
        ),
        ('[[budget]\nname = "m"\n', "costkit.toml: not valid TOML: "),
    ],
)
def test_a_bad_config_is_one_line_naming_file_budget_and_field(
    here: Path, text: str, message: str | None
) -> None:
    (here / "costkit.toml").write_text(text)
    if message is None:  # a number as a tag value is text, as it is on rows
        (budget,) = load_budgets()
        assert dict(budget.tags) == {"team": "1.5"}
        return
    with pytest.raises(costkit.ConfigError) as error:
        load_budgets()
    shown = str(error.value)
    assert "\n" not in shown
    assert shown.startswith(message), shown


def test_a_file_that_is_not_utf8_is_one_line_too(here: Path) -> None:
    (here / "costkit.toml").write_bytes(b'[[budget]]\nname = "\xff"\nusd = "1"\n')
    with pytest.raises(costkit.ConfigError, match=r"^costkit\.toml: not valid TOML"):
        load_budgets()


def test_the_pyproject_table_is_named_in_the_error(here: Path) -> None:
    (here / "pyproject.toml").write_text('[[tool.costkit.budget]]\nname = "ci"\nusd = 5.5\n')
    with pytest.raises(costkit.ConfigError, match=r"^pyproject\.toml \[tool\.costkit\]: budget 'ci': usd: "):
        load_budgets()
