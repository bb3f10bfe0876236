"""Image input tokens: tiles for gpt-4.1, 32 px patches for gpt-4.1-mini and -nano.

A data URL's dimensions are read from its image header (Pillow reads headers
without decoding pixels). A remote URL is counted at its worst case unless the
caller passes its dimensions. ``detail: auto`` lets the model choose, so a
pre-flight never takes it as ``low``.
"""

from __future__ import annotations

import binascii
import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction

from costkit.counting.models import Model
from costkit.errors import InvalidRequest

DETAILS = ("auto", "low", "high")

LOW_DETAIL_TOKENS = 85
TILE_BASE_TOKENS = 85
TOKENS_PER_TILE = 170
TILE_SIZE = 512
FIT_SIDE = 2048
SHORT_SIDE = 768
PATCH_SIZE = 32
MAX_PATCHES = 1536
# Worst case of an unknown image for the tile method: 768 x 2048 -> 2 x 4 tiles.
WORST_TILE_SIZE = (768, 2048)
# Enough of a data URL to reach the size header of any common image file.
_HEADER_CHARS = 64 * 1024

ImageSizes = Mapping[str, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class ImageCount:
    """The tokens of one image part, and how they were reached."""

    where: str
    tokens: int
    detail: str
    width: int | None
    height: int | None
    dims_known: bool
    tiles: int | None = None
    patches: int | None = None


def tile_count(width: int, height: int) -> int:
    """512 px tiles after fitting inside 2048x2048 and scaling the short side down to 768."""
    w, h = Fraction(width), Fraction(height)
    if max(w, h) > FIT_SIDE:
        scale = FIT_SIDE / max(w, h)
        w, h = w * scale, h * scale
    if min(w, h) > SHORT_SIDE:
        scale = SHORT_SIDE / min(w, h)
        w, h = w * scale, h * scale
    return math.ceil(w / TILE_SIZE) * math.ceil(h / TILE_SIZE)


def tile_tokens(width: int, height: int, detail: str) -> tuple[int, int | None]:
    """(tokens, tiles) for gpt-4.1; ``low`` is a flat 85 tokens and has no tiles."""
    if detail == "low":
        return LOW_DETAIL_TOKENS, None
    tiles = tile_count(width, height)
    return TILE_BASE_TOKENS + TOKENS_PER_TILE * tiles, tiles


def patch_count(width: int, height: int) -> int:
    """32 px patches, shrinking images of more than 1536 patches so whole patches fit; capped at 1536."""
    patches = math.ceil(width / PATCH_SIZE) * math.ceil(height / PATCH_SIZE)
    if patches <= MAX_PATCHES:
        return patches
    shrink = math.sqrt(PATCH_SIZE * PATCH_SIZE * MAX_PATCHES / (width * height))
    w_patches = width * shrink / PATCH_SIZE
    h_patches = height * shrink / PATCH_SIZE
    shrink *= min(math.floor(w_patches) / w_patches, math.floor(h_patches) / h_patches)
    new_w, new_h = int(width * shrink), int(height * shrink)
    return min(MAX_PATCHES, math.ceil(new_w / PATCH_SIZE) * math.ceil(new_h / PATCH_SIZE))


def patch_tokens(patches: int, multiplier: Fraction) -> int:
    """Patches times the model's multiplier, rounded up (a pre-flight must not under-count)."""
    return math.ceil(patches * multiplier)


def data_url_size(url: str, where: str) -> tuple[int, int]:
    """(width, height) from the image header inside a base64 data URL."""
    header, sep, payload = url.partition(",")
    if not sep or ";base64" not in header:
        raise InvalidRequest(where, "a data URL must be base64 encoded (data:image/...;base64,...)")
    from PIL import Image, UnidentifiedImageError

    prefix = payload[:_HEADER_CHARS]
    attempts = [prefix[: len(prefix) - len(prefix) % 4]]
    if len(payload) > _HEADER_CHARS:
        attempts.append(payload)
    for attempt in attempts:
        try:
            raw = binascii.a2b_base64(attempt)
            with Image.open(io.BytesIO(raw)) as image:
                width, height = image.size
        except (binascii.Error, UnidentifiedImageError, OSError, ValueError, SyntaxError):
            continue
        if width > 0 and height > 0:
            return width, height
    raise InvalidRequest(where, "cannot read the image size from this data URL (not a readable image)")


def count_image(part: object, model: Model, where: str, image_sizes: ImageSizes | None) -> ImageCount:
    """Tokens for one ``{"type": "image_url", "image_url": {...}}`` content part."""
    spec = part.get("image_url") if isinstance(part, dict) else None
    if isinstance(spec, str):
        spec = {"url": spec}
    if not isinstance(spec, dict):
        raise InvalidRequest(f"{where}.image_url", "must be an object with a url")
    url = spec.get("url")
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"{where}.image_url.url", "must be a non-empty string")
    detail = spec.get("detail", "auto")
    if detail is None:
        detail = "auto"
    if detail not in DETAILS:
        raise InvalidRequest(f"{where}.image_url.detail", f"must be one of {', '.join(DETAILS)}")

    size: tuple[int, int] | None
    if url.startswith("data:"):
        size = data_url_size(url, f"{where}.image_url.url")
    elif image_sizes is not None and url in image_sizes:
        size = image_sizes[url]
    else:
        size = None

    if model.image_method == "tiles":
        if size is None:
            tokens, tiles = tile_tokens(*WORST_TILE_SIZE, detail)
            return ImageCount(where, tokens, detail, None, None, False, tiles=tiles)
        tokens, tiles = tile_tokens(size[0], size[1], detail)
        return ImageCount(where, tokens, detail, size[0], size[1], True, tiles=tiles)

    assert model.patch_multiplier is not None
    patches = MAX_PATCHES if size is None else patch_count(size[0], size[1])
    tokens = patch_tokens(patches, model.patch_multiplier)
    width, height = size if size is not None else (None, None)
    return ImageCount(where, tokens, detail, width, height, size is not None, patches=patches)
