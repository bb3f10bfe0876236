"""What one ``costkit proxy`` was started with, checked once, and carried to its worker processes.

uvicorn starts ``--workers N`` processes with ``spawn``: each builds its own app from the
settings the command line checked, passed in ``$COSTKIT_PROXY_SETTINGS`` as JSON (paths and
names only: never a key, which each worker reads from the environment itself).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from urllib.parse import urlsplit

SETTINGS_ENV = "COSTKIT_PROXY_SETTINGS"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8787
DEFAULT_GRACE_S = 10


@dataclass(frozen=True)
class ProxySettings:
    """``upstream`` is the provider's base URL as an SDK takes it (``https://host/v1``): the proxy's
    ``/v1`` stands for it. ``db`` is a ledger URL (None: the default ledger), ``config`` a budgets
    file (None: no budgets), ``keys`` a keys file (None: callers' own Authorization is forwarded)."""

    upstream: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db: str | None = None
    workers: int = 1
    config: str | None = None
    keys: str | None = None
    grace: int = DEFAULT_GRACE_S

    def __post_init__(self) -> None:
        parts = urlsplit(self.upstream)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"--upstream must be an http(s) URL such as https://host/v1, not {self.upstream!r}"
            )
        if parts.query or parts.fragment:
            raise ValueError("--upstream must not carry a query or a fragment")
        if not 0 < self.port < 65536:
            raise ValueError(f"--port must be 1-65535, not {self.port}")
        if self.workers < 1:
            raise ValueError(f"--workers must be at least 1, not {self.workers}")
        if self.grace < 0:
            raise ValueError(f"--grace must be 0 or more seconds, not {self.grace}")

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ProxySettings:
        """The settings the ``costkit proxy`` command put in the environment of its workers."""
        text = os.environ.get(SETTINGS_ENV)
        if not text:
            raise RuntimeError(f"${SETTINGS_ENV} is not set: start the proxy with `costkit proxy`")
        return cls(**json.loads(text))
