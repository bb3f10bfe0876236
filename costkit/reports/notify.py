"""``--notify URL``: post ``summary.md`` to a Slack-compatible incoming webhook (``{"text": ...}``).

The webhook URL is a credential (it carries its token in the path): it is never printed
or logged; errors name its host only. A refused or failed post is one line and exit 2,
after the report's files were written.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from costkit.cli import BadInput

TIMEOUT_S = 10.0


def check_webhook(url: str) -> None:
    """Refuse, before any work, a webhook that is not an http(s) URL with a host."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput("--notify: give the webhook's http(s) URL")


def post_summary(url: str, markdown: str) -> None:
    """POST ``{"text": markdown}``; ``BadInput`` (naming only the host) unless the webhook answers 2xx."""
    import httpx

    host = urlsplit(url).hostname
    try:
        response = httpx.post(url, json={"text": markdown}, timeout=TIMEOUT_S, follow_redirects=False)
    except httpx.HTTPError as error:
        raise BadInput(
            f"--notify: could not post the summary to {host} ({type(error).__name__}); the files were written"
        ) from None
    if not 200 <= response.status_code < 300:
        raise BadInput(
            f"--notify: the webhook at {host} answered HTTP {response.status_code}; the files were written"
        )
