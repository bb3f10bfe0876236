"""A chat-completions body -> the ``prompt_tokens`` the API will report.

The rules are the OpenAI cookbook's ("How to count tokens with tiktoken") for
the o200k models: 3 tokens per message plus the tokens of every string value in
it, 1 more for a ``name``, 3 for the reply priming, and the cookbook's
``num_tokens_for_tools`` formula for function definitions. Content-part lists
count their text parts and images (see ``costkit.counting.images``); assistant
``tool_calls`` count every string inside them (id, type, name, arguments).

The same walk, measuring UTF-8 bytes instead of tokens, gives an upper bound
(every o200k token is at least one byte) that needs no BPE at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, NamedTuple

from costkit.counting.countcache import CountCache
from costkit.counting.images import ImageCount, ImageSizes, count_image
from costkit.counting.models import Model, resolve_model
from costkit.counting.tokens import count_text, utf8_length
from costkit.errors import InvalidRequest

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLE_SET = frozenset(ROLES)
_NO_IMAGES: tuple[ImageCount, ...] = ()
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # <|start|>assistant<|message|>
# num_tokens_for_tools constants for the o200k models.
FUNC_INIT, PROP_INIT, PROP_KEY, ENUM_INIT, ENUM_ITEM, FUNC_END = 7, 3, 3, -3, 3, 12

# Messages whose text is longer than this are cached under a digest of it, which
# bounds the cache's memory by its entry count.
_DIGEST_ABOVE = 1024

Measure = Callable[[str], int]
_MessageValue = tuple[int, tuple[ImageCount, ...]]

message_cache: CountCache[_MessageValue] = CountCache()
_role_tokens: dict[str, int] = {}


class RequestCount(NamedTuple):
    """Input tokens of one request, with where they come from (an immutable record)."""

    model: str
    input_tokens: int
    per_message: tuple[int, ...]
    tools: int
    priming: int
    images: tuple[ImageCount, ...] = ()

    @property
    def image_tokens(self) -> int:
        return sum(image.tokens for image in self.images)

    @property
    def breakdown(self) -> dict[str, int]:
        """Tokens by part: message text and overheads, images, tool definitions, reply priming."""
        images = self.image_tokens
        return {
            "messages": sum(self.per_message) - images,
            "images": images,
            "tools": self.tools,
            "priming": self.priming,
        }


def _exact_role(role: str) -> int:
    if not _role_tokens:
        _role_tokens.update({r: count_text(r) for r in ROLES})
    return _role_tokens[role]


def _role_counter() -> Callable[[str], int]:
    """The role -> tokens look-up, as a C-level bound method once the table is filled."""
    return _role_tokens.__getitem__ if _role_tokens else _exact_role


def _string_tokens(value: Any, measure: Measure, where: str) -> int:
    """Every string value inside a JSON value (tool calls, legacy function calls)."""
    if isinstance(value, str):
        return measure(value)
    if isinstance(value, dict):
        return sum(_string_tokens(v, measure, f"{where}.{k}") for k, v in value.items())
    if isinstance(value, list):
        return sum(_string_tokens(v, measure, f"{where}[{i}]") for i, v in enumerate(value))
    if value is None or isinstance(value, (bool, int, float)):
        return 0
    raise InvalidRequest(where, f"unexpected value of type {type(value).__name__}")


def _content_parts(
    parts: list[Any], where: str, model: Model, measure: Measure, image_sizes: ImageSizes | None
) -> tuple[int, list[ImageCount]]:
    tokens = 0
    images: list[ImageCount] = []
    for j, part in enumerate(parts):
        if type(part) is not dict:
            raise InvalidRequest(f"{where}.content[{j}]", "a content part must be an object")
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if type(text) is not str:
                raise InvalidRequest(f"{where}.content[{j}].text", "must be a string")
            tokens += measure(text)
        elif kind == "image_url":
            try:
                image = count_image(part, model, f"content[{j}]", image_sizes)
            except InvalidRequest as exc:  # the image speaks relative to its message
                raise InvalidRequest(f"{where}.{exc.where}", exc.problem) from None
            tokens += image.tokens
            images.append(image)
        elif kind == "refusal":
            text = part.get("refusal")
            if type(text) is not str:
                raise InvalidRequest(f"{where}.content[{j}].refusal", "must be a string")
            tokens += measure(text)
        else:
            raise InvalidRequest(
                f"{where}.content[{j}].type",
                f"unsupported content part type {kind!r} (supported: text, image_url, refusal)",
            )
    return tokens, images


def _message_tokens(
    message: Any,
    index: int,
    model: Model,
    measure: Measure,
    role_tokens: Callable[[str], int],
    image_sizes: ImageSizes | None,
) -> _MessageValue:
    if type(message) is not dict:
        raise InvalidRequest(f"messages[{index}]", "a message must be an object")
    role = message.get("role")
    if type(role) is not str or role not in _ROLE_SET:
        raise InvalidRequest(f"messages[{index}].role", f"must be one of {', '.join(ROLES)}, not {role!r}")
    if message.get("content") is None and role != "assistant" and role != "function":
        raise InvalidRequest(f"messages[{index}].content", f"a {role} message needs content")
    tokens = TOKENS_PER_MESSAGE + role_tokens(role)
    images = _NO_IMAGES
    for key, value in message.items():
        if type(value) is str:
            if key != "role":
                tokens += measure(value)
                if key == "name":
                    tokens += TOKENS_PER_NAME
            continue
        if value is None:
            continue
        where = f"messages[{index}]"
        if key == "content":
            if type(value) is not list:
                raise InvalidRequest(f"{where}.content", "must be a string, a list of content parts, or null")
            part_tokens, found = _content_parts(value, where, model, measure, image_sizes)
            tokens += part_tokens
            images = tuple(found)
        elif key in ("tool_calls", "function_call"):
            if type(value) is not (list if key == "tool_calls" else dict):
                kind = "a list" if key == "tool_calls" else "an object"
                raise InvalidRequest(f"{where}.{key}", f"must be {kind}")
            tokens += _string_tokens(value, measure, f"{where}.{key}")
        elif key in ("name", "tool_call_id"):
            raise InvalidRequest(f"{where}.{key}", "must be a string")
        # Other non-string fields (flags, audio references) carry no prompt text.
    return tokens, images


def _tool_definitions(body: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    tools = body.get("tools")
    if tools is not None:
        if type(tools) is not list:
            raise InvalidRequest("tools", "must be a list")
        for i, tool in enumerate(tools):
            if type(tool) is not dict:
                raise InvalidRequest(f"tools[{i}]", "a tool must be an object")
            if tool.get("type", "function") != "function":
                raise InvalidRequest(f"tools[{i}].type", f"unsupported tool type {tool.get('type')!r}")
            function = tool.get("function")
            if type(function) is not dict:
                raise InvalidRequest(f"tools[{i}].function", "must be an object")
            found.append((f"tools[{i}].function", function))
    functions = body.get("functions")
    if functions is not None:
        if type(functions) is not list:
            raise InvalidRequest("functions", "must be a list")
        for i, function in enumerate(functions):
            if type(function) is not dict:
                raise InvalidRequest(f"functions[{i}]", "a function must be an object")
            found.append((f"functions[{i}]", function))
    return found


def _without_period(text: str) -> str:
    return text[:-1] if text.endswith(".") else text


def _text_field(obj: Mapping[str, Any], key: str, where: str) -> str:
    """The string under ``key``; a missing or null one is empty."""
    value = obj.get(key)
    if value is None:
        return ""
    if type(value) is not str:
        raise InvalidRequest(f"{where}.{key}", "must be a string")
    return value


def _tools_tokens(body: Mapping[str, Any], measure: Measure) -> int:
    """The cookbook's ``num_tokens_for_tools`` for the o200k models."""
    if "tools" not in body and "functions" not in body:
        return 0
    definitions = _tool_definitions(body)
    if not definitions:
        return 0
    total = 0
    for where, function in definitions:
        name = function.get("name")
        if type(name) is not str or not name:
            raise InvalidRequest(f"{where}.name", "must be a non-empty string")
        description = _without_period(_text_field(function, "description", where))
        total += FUNC_INIT + measure(f"{name}:{description}")
        parameters = function.get("parameters") or {}
        if type(parameters) is not dict:
            raise InvalidRequest(f"{where}.parameters", "must be an object")
        properties = parameters.get("properties") or {}
        if type(properties) is not dict:
            raise InvalidRequest(f"{where}.parameters.properties", "must be an object")
        if properties:
            total += PROP_INIT
            for key, prop in properties.items():
                pwhere = f"{where}.parameters.properties.{key}"
                if type(prop) is not dict:
                    raise InvalidRequest(pwhere, "must be an object")
                total += PROP_KEY
                enum = prop.get("enum")
                if enum is not None:
                    if type(enum) is not list:
                        raise InvalidRequest(f"{pwhere}.enum", "must be a list")
                    total += ENUM_INIT
                    for item in enum:
                        text = item if type(item) is str else json.dumps(item, ensure_ascii=False)
                        total += ENUM_ITEM + measure(text)
                description = _without_period(_text_field(prop, "description", pwhere))
                total += measure(f"{key}:{prop.get('type', '')}:{description}")
    return total + FUNC_END


def _model_and_messages(body: Any) -> tuple[Model, list[Any]]:
    if type(body) is not dict:
        raise InvalidRequest("body", "a request body must be a JSON object")
    if "model" not in body:
        raise InvalidRequest("model", "missing")
    if type(body["model"]) is not str:
        raise InvalidRequest("model", "must be a string")
    model = resolve_model(body["model"])
    messages = body.get("messages")
    if type(messages) is not list:
        raise InvalidRequest("messages", "missing" if messages is None else "must be a list")
    if not messages:
        raise InvalidRequest("messages", "must not be empty")
    return model, messages


def _structured_key(message: dict[str, Any], model: Model) -> object | None:
    """The key of a message holding content parts or tool calls; None if it is not JSON."""
    try:  # images count differently per model, so the model is part of the key
        text = model.id + "\x00" + json.dumps(message, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    if len(text) <= _DIGEST_ABOVE:
        return text
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _cached_message_tokens(message: Any, index: int, model: Model) -> _MessageValue:
    """``_message_tokens`` through the per-message cache."""
    if type(message) is not dict:
        return _message_tokens(message, index, model, count_text, _exact_role, None)
    items = tuple(message.items())
    try:
        size = sum(map(len, message.values()))
    except TypeError:  # None or numbers beside the strings
        size = sum(len(v) for v in message.values() if type(v) is str)
    try:  # hashable values only: the items themselves are the key
        # A long message is keyed by its hash and size instead of by itself, bounding the
        # cache's memory. str hashes are keyed SipHash; a collision is far less likely
        # than a hardware fault.
        key: object = items if size <= _DIGEST_ABOVE else ("#", hash(items), size)
        value = message_cache.get(key)
    except TypeError:  # unhashable values (content parts, tool calls)
        key = _structured_key(message, model)
        if key is None:
            return _message_tokens(message, index, model, count_text, _exact_role, None)
        value = message_cache.get(key)
    if value is None:
        value = _message_tokens(message, index, model, count_text, _role_counter(), None)
        message_cache.put(key, value)
    return value


def count_request(body: Any, *, image_sizes: ImageSizes | None = None) -> RequestCount:
    """The input tokens of a chat-completions ``body``, exactly as the API's ``prompt_tokens``.

    ``image_sizes`` maps remote image URLs to known (width, height); other remote
    images count at their worst case. Raises ``InvalidRequest`` (naming the field)
    for a malformed body and ``UnknownModel`` for a model not in the catalogue.
    Messages already seen are not encoded again (a bounded per-message cache).
    """
    model, messages = _model_and_messages(body)
    per_message: list[int] = []
    images: list[ImageCount] = []
    for i, message in enumerate(messages):
        if image_sizes is None:
            tokens, found = _cached_message_tokens(message, i, model)
        else:  # caller-supplied sizes are not part of the cache key
            tokens, found = _message_tokens(message, i, model, count_text, _exact_role, image_sizes)
        per_message.append(tokens)
        if found:
            images.extend(replace(image, where=f"messages[{i}].{image.where}") for image in found)
    tools = _tools_tokens(body, count_text) if "tools" in body or "functions" in body else 0
    total = sum(per_message) + tools + REPLY_PRIMING
    return RequestCount(
        model.id, total, tuple(per_message), tools, REPLY_PRIMING, tuple(images) if images else _NO_IMAGES
    )


def input_upper_bound(body: Any, *, image_sizes: ImageSizes | None = None) -> tuple[Model, int]:
    """(model, a bound the input tokens cannot exceed), with no BPE: bytes stand in for tokens.

    Validates the body exactly as ``count_request`` does.
    """
    model, messages = _model_and_messages(body)
    total = REPLY_PRIMING + _tools_tokens(body, utf8_length)
    for i, message in enumerate(messages):
        total += _message_tokens(message, i, model, utf8_length, len, image_sizes)[0]
    return model, total
