"""The model catalogue: ids, aliases, limits and how each model counts images."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from costkit.errors import UnknownModel

ImageMethod = Literal["tiles", "patches"]

GPT41_CONTEXT_WINDOW = 1_047_576
GPT41_MAX_OUTPUT = 32_768


@dataclass(frozen=True, slots=True)
class Model:
    """One model: ``id`` is canonical; ``aliases`` are the other names a request may use."""

    id: str
    aliases: tuple[str, ...]
    context_window: int
    max_output_tokens: int
    image_method: ImageMethod
    # Tokens per 32 px patch for patch-counted models (None for tile-counted ones).
    patch_multiplier: Fraction | None = None


MODELS: tuple[Model, ...] = (
    Model(
        id="gpt-4.1",
        aliases=("openai/gpt-4.1", "gpt-4.1-2025-04-14", "openai/gpt-4.1-2025-04-14"),
        context_window=GPT41_CONTEXT_WINDOW,
        max_output_tokens=GPT41_MAX_OUTPUT,
        image_method="tiles",
    ),
    Model(
        id="gpt-4.1-mini",
        aliases=("openai/gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", "openai/gpt-4.1-mini-2025-04-14"),
        context_window=GPT41_CONTEXT_WINDOW,
        max_output_tokens=GPT41_MAX_OUTPUT,
        image_method="patches",
        patch_multiplier=Fraction(162, 100),
    ),
    Model(
        id="gpt-4.1-nano",
        aliases=("openai/gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", "openai/gpt-4.1-nano-2025-04-14"),
        context_window=GPT41_CONTEXT_WINDOW,
        max_output_tokens=GPT41_MAX_OUTPUT,
        image_method="patches",
        patch_multiplier=Fraction(246, 100),
    ),
)

_BY_NAME: dict[str, Model] = {name: m for m in MODELS for name in (m.id, *m.aliases)}


def known_model_names() -> tuple[str, ...]:
    """Every name a request may use, canonical ids and aliases alike."""
    return tuple(sorted(_BY_NAME))


def resolve_model(name: object) -> Model:
    """The catalogue entry for ``name``; raises ``UnknownModel`` naming the known ones."""
    model = _BY_NAME.get(name) if isinstance(name, str) else None
    if model is None:
        raise UnknownModel(name, (m.id for m in MODELS))
    return model
