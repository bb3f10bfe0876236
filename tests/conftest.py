"""Shared fixtures: the installed CLI, and plain tiktoken as an independent reference."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

# The suite is a gate: it draws the same examples on every run, so a red run is reproducible from the
# commit alone. `HYPOTHESIS_PROFILE=explore` draws fresh ones (run it as a habit; pin what it finds
# with @example).
settings.register_profile("gate", derandomize=True)
settings.register_profile("explore", derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "gate"))

ROOT = Path(__file__).resolve().parent.parent
COSTKIT = str(Path(sys.executable).with_name("costkit"))


@pytest.fixture(scope="session")
def reference_encoding(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """tiktoken's own ``get_encoding("o200k_base")``, built by tiktoken's own loader from an
    offline cache seeded with the shipped file: the baseline costkit must agree with."""
    import tiktoken

    from costkit.counting.tokens import seed_tiktoken_cache

    cache = tmp_path_factory.mktemp("tiktoken-cache")
    seed_tiktoken_cache(cache)
    old = os.environ.get("TIKTOKEN_CACHE_DIR")
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    try:
        yield tiktoken.get_encoding("o200k_base")
    finally:
        if old is None:
            os.environ.pop("TIKTOKEN_CACHE_DIR", None)
        else:
            os.environ["TIKTOKEN_CACHE_DIR"] = old


def run_costkit(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``costkit`` command for real."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [COSTKIT, *args],
        input=stdin.decode() if stdin is not None else None,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=120,
    )
