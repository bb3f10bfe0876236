"""Local API keys for the proxy: stored only as sha256 hashes, each mapping to tags and an upstream key.

A keys file (TOML)::

    upstream_key_env = "QUBRID_API_KEY"      # optional default for every key

    [[key]]
    sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    tags = {team = "search", user = "ana"}
    upstream_key_env = "QUBRID_SEARCH_KEY"   # optional: the key sent upstream, read from this variable

A caller presents its local key as ``Authorization: Bearer <key>``; the proxy hashes it and
looks the hash up. The local key never leaves the proxy: the upstream gets the key read from
the named environment variable (never written in the file), or no Authorization at all.
``costkit proxy hash-key`` prints the hash of a key read from stdin.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costkit.errors import ConfigError
from costkit.ledger.row import clean_tags

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_HEX = re.compile(r"[0-9a-f]{64}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_BEARER = b"bearer "


def hash_key(key: str) -> str:
    """The sha256 hex digest a keys file holds for ``key`` (surrounding whitespace ignored)."""
    return hashlib.sha256(key.strip().encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LocalKey:
    """What one local key grants: its tags, and the upstream ``Authorization`` value (or None)."""

    tags: Mapping[str, str] = field(default_factory=dict)
    upstream_authorization: bytes | None = None

    @property
    def tags_header(self) -> bytes:
        """The key's tags as an ``X-Costkit-Tags`` value (its items come last, so they win)."""
        return ",".join(f"{k}={v}" for k, v in self.tags.items()).encode("utf-8")


class KeyRing:
    """The local keys of a keys file, by hash. ``match(headers)`` is the only per-request work."""

    def __init__(self, keys: Mapping[str, LocalKey]) -> None:
        self._keys = dict(keys)

    def __len__(self) -> int:
        return len(self._keys)

    def match(self, headers: Sequence[tuple[bytes, bytes]]) -> LocalKey | None:
        """The key presented as ``Authorization: Bearer <key>``, or None when it is missing or unknown."""
        for name, value in headers:
            if name.lower() == b"authorization":
                if value[:7].lower() != _BEARER:
                    return None
                token = value[7:].strip()
                return self._keys.get(hashlib.sha256(token).hexdigest()) if token else None
        return None

    @classmethod
    def load(cls, path: str | os.PathLike[str], environ: Mapping[str, str] | None = None) -> KeyRing:
        """Read a keys file; raises ``ConfigError`` (one line naming the file and the entry) for
        anything wrong in it, including an upstream key variable that is not set."""
        env = os.environ if environ is None else environ
        shown = str(path)
        try:
            with Path(path).open("rb") as stream:
                data = tomllib.load(stream)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{shown}: not valid TOML: {' '.join(str(error).split())}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{shown}: not valid TOML: the file is not UTF-8 text") from None
        except OSError as error:
            raise ConfigError(f"{shown}: cannot be read: {error.strerror or error}") from None
        unknown = set(data) - {"key", "upstream_key_env"}
        if unknown:
            raise ConfigError(f"{shown}: unknown field {sorted(unknown)[0]!r} (expected [[key]] tables)")
        default_env = _env_name(shown, "upstream_key_env", data.get("upstream_key_env"))
        tables = data.get("key", [])
        if not isinstance(tables, list) or not tables:
            raise ConfigError(f"{shown}: no [[key]] tables")
        keys: dict[str, LocalKey] = {}
        for index, table in enumerate(tables, start=1):
            where = f"{shown}: key {index}"
            digest, key = _entry(where, table, default_env, env)
            if digest in keys:
                raise ConfigError(f"{where}: sha256: the same key is listed twice")
            keys[digest] = key
        return cls(keys)


def _entry(where: str, table: Any, default_env: str | None, env: Mapping[str, str]) -> tuple[str, LocalKey]:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = set(table) - {"sha256", "tags", "upstream_key_env"}
    if unknown:
        raise ConfigError(f"{where}: unknown field {sorted(unknown)[0]!r}")
    digest = table.get("sha256")
    if not isinstance(digest, str) or not _HEX.fullmatch(digest.lower()):
        raise ConfigError(f"{where}: sha256: must be 64 hex digits (costkit proxy hash-key prints them)")
    raw_tags = table.get("tags", {})
    if not isinstance(raw_tags, dict):
        raise ConfigError(f'{where}: tags: must be a table such as {{team = "search"}}')
    tags, problems = clean_tags(raw_tags, "keys file")
    if problems:
        raise ConfigError(f"{where}: tags: {problems[0]}")
    for name, value in tags.items():
        if any(c in name + value for c in ",=\r\n"):
            raise ConfigError(f"{where}: tags: {name!r}: no ',', '=' or line breaks in a tag")
    env_name = _env_name(where, "upstream_key_env", table.get("upstream_key_env")) or default_env
    authorization = None
    if env_name is not None:
        secret = env.get(env_name, "").strip()
        if not secret:
            raise ConfigError(f"{where}: upstream_key_env: ${env_name} is not set")
        try:
            authorization = b"Bearer " + secret.encode("ascii")
        except UnicodeEncodeError:
            raise ConfigError(f"{where}: upstream_key_env: ${env_name} is not ASCII text") from None
    return digest.lower(), LocalKey(tags=tags, upstream_authorization=authorization)


def _env_name(where: str, name: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _ENV_NAME.fullmatch(value):
        raise ConfigError(f"{where}: {name}: must be the name of an environment variable")
    return value
