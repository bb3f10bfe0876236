"""Spend reports: SQL aggregates → pandas frames → plotly figures → HTML, JSON, CSV and Markdown files.

``costkit.report()`` is the Python face; ``costkit report`` and ``costkit demo`` the CLI.
Import-light: pandas and plotly are imported only when a report is made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from costkit._lazy import lazy_exports

if TYPE_CHECKING:
    from costkit.reports.report import Report, report

__all__ = ["Report", "report"]

_EXPORTS = {"Report": "costkit.reports.report", "report": "costkit.reports.report"}

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
