"""A chat-completions body -> the ``prompt_tokens`` the API will report.

The rules are the OpenAI cookbook's ("How to count tokens with tiktoken") for
the o200k models: 3 tokens per message plus the tokens of every string value in
it, 1 more for a ``name``, 3 for the reply priming, and the cookbook's
``num_tokens_for_tools`` formula for function definitions. Content-part lists
count their text parts and images (see ``costkit.images``); assistant
``tool_calls`` count every string inside them (id, type, name, arguments).

The same walk, measuring UTF-8 bytes instead of tokens, gives an upper bound
(every o200k token is at least one byte) that needs no BPE at all.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from costkit.countcache import CountCache
from costkit.errors import InvalidRequest
from costkit.images import ImageCount, ImageSizes, count_image
from costkit.models import Model, resolve_model
from costkit.tokens import count_text, utf8_length

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING = 3  # <|start|>assistant<|message|>
# num_tokens_for_tools constants for the o200k models.
FUNC_INIT, PROP_INIT, PROP_KEY, ENUM_INIT, ENUM_ITEM, FUNC_END = 7, 3, 3, -3, 3, 12

# Messages whose text is longer than this are cached under a digest of it.
_DIGEST_ABOVE = 2048

Measure = Callable[[str], int]
_MessageValue = tuple[int, tuple[ImageCount, ...]]

message_cache: CountCache[_MessageValue] = CountCache()
_role_tokens: dict[str, int] = {}


@dataclass(frozen=True, slots=True)
class RequestCount:
    """Input tokens of one request, with where they come from."""

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
    tokens = _role_tokens.get(role)
    if tokens is None:
        tokens = _role_tokens[role] = count_text(role)
    return tokens


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
    where: str,
    model: Model,
    measure: Measure,
    role_tokens: Callable[[str], int],
    image_sizes: ImageSizes | None,
) -> _MessageValue:
    if type(message) is not dict:
        raise InvalidRequest(where, "a message must be an object")
    role = message.get("role")
    if role not in ROLES or type(role) is not str:
        raise InvalidRequest(f"{where}.role", f"must be one of {', '.join(ROLES)}, not {role!r}")
    if message.get("content") is None and role not in ("assistant", "function"):
        raise InvalidRequest(f"{where}.content", f"a {role} message needs content")
    tokens = TOKENS_PER_MESSAGE + role_tokens(role)
    images: list[ImageCount] = []
    for key, value in message.items():
        if key == "role":
            continue
        if type(value) is str:
            tokens += measure(value)
            if key == "name":
                tokens += TOKENS_PER_NAME
        elif value is None:
            continue
        elif key == "content":
            if type(value) is not list:
                raise InvalidRequest(f"{where}.content", "must be a string, a list of content parts, or null")
            part_tokens, images = _content_parts(value, where, model, measure, image_sizes)
            tokens += part_tokens
        elif key in ("tool_calls", "function_call"):
            if type(value) is not (list if key == "tool_calls" else dict):
                kind = "a list" if key == "tool_calls" else "an object"
                raise InvalidRequest(f"{where}.{key}", f"must be {kind}")
            tokens += _string_tokens(value, measure, f"{where}.{key}")
        elif key in ("name", "tool_call_id"):
            raise InvalidRequest(f"{where}.{key}", "must be a string")
        # Other non-string fields (flags, audio references) carry no prompt text.
    return tokens, tuple(images)


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


def _text_field(obj: Mapping[str, Any], key: str, where: str, default: str = "") -> str:
    value = obj.get(key, default)
    if value is None:
        return default
    if type(value) is not str:
        raise InvalidRequest(f"{where}.{key}", "must be a string")
    return value


def _tools_tokens(body: Mapping[str, Any], measure: Measure) -> int:
    """The cookbook's ``num_tokens_for_tools`` for the o200k models."""
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


def _cache_key(message: Any, model: Model) -> tuple[object, int] | None:
    """(key, weight) for a message, or None when it cannot be cached."""
    if type(message) is not dict:
        return None
    size = 0
    for value in message.values():
        if type(value) is str:
            size += len(value)
        else:
            break
    else:  # every value is a string: the items themselves are the key
        if size <= _DIGEST_ABOVE:
            return tuple(message.items()), size
        digest = hashlib.blake2b(digest_size=16)
        for key, value in message.items():
            digest.update(key.encode("utf-8", "surrogatepass") + b"\x00")
            digest.update(value.encode("utf-8", "surrogatepass") + b"\x01")
        return digest.digest(), 16
    try:  # images count differently per model, so the model is part of the key
        text = model.id + "\x00" + json.dumps(message, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError):
        return None
    if len(text) <= _DIGEST_ABOVE:
        return text, len(text)
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest(), 16


def count_request(body: Any, *, image_sizes: ImageSizes | None = None) -> RequestCount:
    """The input tokens of a chat-completions ``body``, exactly as the API's ``prompt_tokens``.

    ``image_sizes`` maps remote image URLs to known (width, height); other remote
    images count at their worst case. Raises ``InvalidRequest`` (naming the field)
    for a malformed body and ``UnknownModel`` for a model not in the catalogue.
    Messages already seen are not encoded again (a bounded per-message cache).
    """
    model, messages = _model_and_messages(body)
    use_cache = image_sizes is None
    per_message: list[int] = []
    images: list[ImageCount] = []
    for i, message in enumerate(messages):
        keyed = _cache_key(message, model) if use_cache else None
        value = message_cache.get(keyed[0]) if keyed is not None else None
        if value is None:
            value = _message_tokens(message, f"messages[{i}]", model, count_text, _exact_role, image_sizes)
            if keyed is not None:
                message_cache.put(keyed[0], value, keyed[1])
        per_message.append(value[0])
        if value[1]:
            images.extend(replace(image, where=f"messages[{i}].{image.where}") for image in value[1])
    tools = _tools_tokens(body, count_text)
    total = sum(per_message) + tools + REPLY_PRIMING
    return RequestCount(model.id, total, tuple(per_message), tools, REPLY_PRIMING, tuple(images))


def input_upper_bound(body: Any, *, image_sizes: ImageSizes | None = None) -> tuple[Model, int]:
    """(model, a bound the input tokens cannot exceed), with no BPE: bytes stand in for tokens.

    Validates the body exactly as ``count_request`` does.
    """
    model, messages = _model_and_messages(body)
    total = REPLY_PRIMING + _tools_tokens(body, utf8_length)
    for i, message in enumerate(messages):
        total += _message_tokens(message, f"messages[{i}]", model, utf8_length, len, image_sizes)[0]
    return model, total
