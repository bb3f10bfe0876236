"""Taking secrets out of text before costkit stores or logs it.

An upstream may echo a key back (``Incorrect API key provided: sk-proj-…``), and an
exception may carry a proxy URL with a password. ``redact`` replaces, wherever they
appear: the caller's own credentials (the ``Authorization`` value and its token,
``api-key``/``x-api-key`` values, as ``secrets_of`` collects them), key-shaped strings
(``sk-…``, ``Bearer …``), passwords in URLs, and long tokens that look like keys (32+
hex digits, or 32+ base64 characters mixing upper case, lower case and digits).
Ordinary words, model names, request ids (``req_…``) and URLs without a password
are left alone.
"""

from __future__ import annotations

import re
import traceback
from collections.abc import Iterable, Sequence

REDACTED = "[redacted]"
CREDENTIAL_HEADERS = frozenset({b"authorization", b"proxy-authorization", b"api-key", b"x-api-key"})
_MIN_SECRET = 6  # shorter values would redact ordinary text

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\b(sk|rk|pk)-[A-Za-z0-9_\-]{6,}[A-Za-z0-9_\-*]*"), r"\1-" + REDACTED),
    (re.compile(r"(://)[^/\s:@]+:[^/\s@]+@"), r"\1" + REDACTED + "@"),
    (re.compile(r"(?<![A-Za-z0-9_\-])[0-9a-fA-F]{32,}(?![A-Za-z0-9_\-])"), REDACTED),
)
_SCHEME = re.compile(r"\b(Bearer|Basic|Token)(\s+)([A-Za-z0-9._~+/=\-]{8,})", re.IGNORECASE)
_TOKEN = re.compile(r"(?<![A-Za-z0-9_+/\-])[A-Za-z0-9_+/\-]{32,}={0,2}")


def _scheme(match: re.Match[str]) -> str:
    """``Bearer <credential>``: a credential has a digit or a symbol; ``Bearer authentication`` stays."""
    credential = match.group(3)
    if credential.isalpha():
        return match.group(0)
    return f"{match.group(1)}{match.group(2)}{REDACTED}"


def _token(match: re.Match[str]) -> str:
    text = match.group(0)
    if "/" in text and any(len(part) >= 3 and part.isalpha() and part.islower() for part in text.split("/")):
        return text  # a path (``/home/user/lib/python3.11``), not a key
    if any(c.isdigit() for c in text) and any(c.islower() for c in text) and any(c.isupper() for c in text):
        return REDACTED
    return text


def secrets_of(headers: Sequence[tuple[bytes, bytes]]) -> tuple[str, ...]:
    """The credential values in request headers (whole, and the token after a scheme)."""
    found: list[str] = []
    for name, value in headers:
        if name.lower() not in CREDENTIAL_HEADERS:
            continue
        text = value.decode("latin-1").strip()
        scheme, _, token = text.partition(" ")
        for candidate in (text, token.strip() if token else scheme):
            if len(candidate) >= _MIN_SECRET and candidate not in found:
                found.append(candidate)
    found.sort(key=len, reverse=True)  # the whole value before its token
    return tuple(found)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with the given secrets and anything key-shaped replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, REDACTED)
    text = _SCHEME.sub(_scheme, text)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _TOKEN.sub(_token, text)


def redacted_traceback(exc: BaseException, secrets: Iterable[str] = ()) -> str:
    """An exception's traceback as text, redacted, for a log line."""
    return redact("".join(traceback.format_exception(exc)).rstrip(), tuple(secrets))
