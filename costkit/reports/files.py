"""Writing a report's files: ``report.html``, ``report.json``, ``summary.md`` and one CSV per table.

Each file is written beside its final name and renamed into place, so a nightly job
that fails half-way never leaves a torn file where yesterday's good one was. The CSV
files hold exactly the rows of ``report.json``'s ``tables`` (money as decimal text).
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from costkit.reports.report import Report

KNOWN = ("html", "json", "csv", "md")


def check_formats(formats: list[str]) -> list[str]:
    """The formats, checked (``ValueError`` names an unknown one); duplicates removed, order kept."""
    chosen: list[str] = []
    for name in formats:
        if name not in KNOWN:
            raise ValueError(f"unknown report format {name!r} (known: {', '.join(KNOWN)})")
        if name not in chosen:
            chosen.append(name)
    if not chosen:
        raise ValueError(f"no report format chosen (known: {', '.join(KNOWN)})")
    return chosen


def _write(path: Path, text: str) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8", newline="")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def csv_text(rows: list[dict[str, object]], columns: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write_files(report: Report, directory: Path, formats: list[str]) -> list[Path]:
    """Write the chosen formats into ``directory`` (created if needed); returns the paths written."""
    chosen = check_formats(formats)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    if "html" in chosen:
        written.append(_write(directory / "report.html", report.to_html()))
    if "json" in chosen:
        written.append(_write(directory / "report.json", report.to_json()))
    if "csv" in chosen:
        for name, frame in report.frames.items():
            columns = [str(c) for c in frame.columns]
            written.append(_write(directory / f"{name}.csv", csv_text(report.data["tables"][name], columns)))
    if "md" in chosen:
        written.append(_write(directory / "summary.md", report.to_markdown()))
    return written
