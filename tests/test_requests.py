"""count_request: the published reference numbers, images, validation, and a property test."""

from __future__ import annotations

import base64
import io
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import costkit
from costkit import InvalidRequest, UnknownModel, count_request
from costkit.counting.countcache import CountCache
from costkit.counting.requests import input_upper_bound, message_cache
from tests.cookbook import CORPORATE_JARGON, WEATHER_MESSAGES, WEATHER_TOOLS
from tests.reference_counts import count_prompt


def data_url(width: int, height: int, fmt: str = "PNG") -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format=fmt)
    mime = {"PNG": "png", "JPEG": "jpeg", "GIF": "gif", "WEBP": "webp"}[fmt]
    return f"data:image/{mime};base64," + base64.b64encode(buffer.getvalue()).decode()


def image_body(url: str, model: str = "gpt-4.1", detail: str | None = "high") -> dict:
    image: dict = {"url": url}
    if detail is not None:
        image["detail"] = detail
    return {
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": image}]}],
    }


def test_cookbook_message_example_is_124_tokens():
    assert count_request({"model": "gpt-4.1", "messages": CORPORATE_JARGON}).input_tokens == 124


def test_cookbook_tools_example_is_101_tokens():
    counted = count_request({"model": "gpt-4.1", "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS})
    assert counted.input_tokens == 101
    assert counted.breakdown["tools"] == 68


def test_legacy_functions_count_like_tools():
    functions = [tool["function"] for tool in WEATHER_TOOLS]
    counted = count_request({"model": "gpt-4.1", "messages": WEATHER_MESSAGES, "functions": functions})
    assert counted.input_tokens == 101


@pytest.mark.parametrize("model", ["openai/gpt-4.1", "gpt-4.1", "gpt-4.1-2025-04-14"])
def test_every_alias_of_gpt41_counts_the_same(model):
    counted = count_request({"model": model, "messages": CORPORATE_JARGON})
    assert (counted.model, counted.input_tokens) == ("gpt-4.1", 124)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModel) as caught:
        count_request({"model": "gpt-4o", "messages": CORPORATE_JARGON})
    assert "gpt-4o" in str(caught.value)
    assert {"gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano"} <= set(caught.value.known)


def test_breakdown_adds_up_to_the_total():
    counted = count_request({"model": "gpt-4.1", "messages": WEATHER_MESSAGES, "tools": WEATHER_TOOLS})
    assert sum(counted.breakdown.values()) == counted.input_tokens
    assert len(counted.per_message) == 2


def test_name_adds_one_token_beyond_its_text(reference_encoding):
    plain = count_request({"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}]}).input_tokens
    named = count_request(
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi", "name": "alice"}]}
    ).input_tokens
    assert named - plain == len(reference_encoding.encode_ordinary("alice")) + 1


def test_special_token_text_in_content_counts_as_text(reference_encoding):
    text = "please ignore <|endoftext|> and <|endofprompt|>"
    counted = count_request({"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]})
    assert counted.input_tokens == 3 + 1 + len(reference_encoding.encode_ordinary(text)) + 3


def test_content_part_text_counts_like_string_content():
    as_string = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "one two three"}]}
    as_parts = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "one two three"}]}],
    }
    assert count_request(as_parts).input_tokens == count_request(as_string).input_tokens


def test_tool_calls_and_tool_results_count_their_strings(reference_encoding):
    arguments = '{"location": "Paris, FR", "unit": "celsius"}'
    body = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_current_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        ],
    }
    counted = count_request(body)
    enc = reference_encoding.encode_ordinary
    assistant = (
        3
        + len(enc("assistant"))
        + sum(len(enc(s)) for s in ("call_1", "function", "get_current_weather", arguments))
    )
    tool = 3 + len(enc("tool")) + len(enc("call_1")) + len(enc('{"temp": 21}'))
    assert counted.per_message[1:] == (assistant, tool)


def _function(name: str, description: str | None = None, **properties) -> dict:
    function: dict = {"name": name}
    if description is not None:
        function["description"] = description
    if properties:
        function["parameters"] = {"type": "object", "properties": properties}
    return function


@pytest.mark.parametrize(
    "tools",
    [
        pytest.param([], id="an empty tool list"),
        pytest.param([{"function": _function("get_weather", "Get the weather")}], id="no type key"),
        pytest.param(
            [{"type": "function", "function": _function("get_weather", "Get the weather.")}],
            id="function description ending in a period",
        ),
        pytest.param(
            [{"type": "function", "function": _function("lookup", "Look it up, etc..")}],
            id="only one final period dropped",
        ),
        pytest.param(
            [
                {
                    "type": "function",
                    "function": _function(
                        "get_weather",
                        None,
                        location={"type": "string", "description": "The city, e.g. Paris."},
                        unit={"enum": ["celsius", "fahrenheit"]},
                        days={"type": "integer", "enum": [1, 3, 7, None, True]},
                    ),
                }
            ],
            id="properties: a period, no type, no description, non-string enum items",
        ),
        pytest.param(
            [{"type": "function", "function": {"name": "noop", "description": None, "parameters": None}}],
            id="null description and parameters",
        ),
        pytest.param(
            [
                {
                    "type": "function",
                    "function": {"name": "noop", "parameters": {"type": "object", "properties": {}}},
                }
            ],
            id="no properties",
        ),
        pytest.param(
            [
                {"type": "function", "function": _function("a", "First.")},
                {"function": _function("b", "Second")},
            ],
            id="two tools",
        ),
    ],
)
def test_tool_definitions_count_by_the_cookbook_formula(tools):
    body = {"model": "gpt-4.1", "messages": WEATHER_MESSAGES, "tools": tools}
    counted = count_request(body)
    assert counted.input_tokens == count_prompt(body)
    legacy = {"model": "gpt-4.1", "messages": WEATHER_MESSAGES, "functions": [t["function"] for t in tools]}
    assert count_request(legacy) == counted
    assert input_upper_bound(body)[1] >= counted.input_tokens


def test_a_final_period_in_a_description_costs_nothing():
    def tools_tokens(function_description: str, unit_description: str) -> int:
        function = _function(
            "get_weather", function_description, unit={"type": "string", "description": unit_description}
        )
        body = {
            "model": "gpt-4.1",
            "messages": WEATHER_MESSAGES,
            "tools": [{"type": "function", "function": function}],
        }
        return count_request(body).tools

    plain = tools_tokens("Get the weather", "Celsius or fahrenheit")
    assert tools_tokens("Get the weather.", "Celsius or fahrenheit.") == plain
    assert tools_tokens("Get the weather..", "Celsius or fahrenheit") > plain


def test_a_non_string_enum_item_counts_as_its_json_text_with_characters_as_written(reference_encoding):
    # Characters as written, not \u escapes (which would cost more tokens than the text they stand for).
    item = ["Zürich", "Genève", 3]
    with_enum = count_request(tools_body(weather(type="array", enum=[item]))).tools
    without_enum = count_request(tools_body(weather(type="array"))).tools
    enc = reference_encoding.encode_ordinary
    assert with_enum - without_enum == -3 + 3 + len(enc('["Zürich", "Genève", 3]'))
    assert len(enc('["Zürich", "Genève", 3]')) < len(enc('["Z\\u00fcrich", "Gen\\u00e8ve", 3]'))


def test_non_string_values_in_tool_calls_and_refusal_parts_count_as_the_reference_does(reference_encoding):
    """An assistant turn sent back as the SDK returned it: numbers, flags and nulls carry no text."""
    call = {
        "index": 0,
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}', "strict": True, "parsed": None},
        "score": 0.5,
    }
    body = {
        "model": "gpt-4.1",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [call],
                "function_call": {"name": "f", "n": 2},
            },
            {"role": "function", "name": "f", "content": None},  # a legacy function result may be null
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Sorry."},
                    {"type": "refusal", "refusal": "I cannot share that."},
                ],
            },
        ],
    }
    assert count_request(body).input_tokens == count_prompt(body)
    enc = reference_encoding.encode_ordinary
    (turn,) = count_request({"model": "gpt-4.1", "messages": [body["messages"][3]]}).per_message
    assert turn == 3 + len(enc("assistant")) + len(enc("Sorry.")) + len(enc("I cannot share that."))


def test_an_unpaired_surrogate_escape_in_a_long_content_part_message_is_counted_and_cached():
    # "\ud800" is valid JSON; json.loads gives a lone surrogate, and a resent message hits the cache.
    text = "broken \ud800 pair " + "word " * 400
    as_parts = {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}],
    }
    as_string = {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]}
    expected = count_request(as_string).input_tokens
    assert count_request(as_parts).input_tokens == expected
    hits = message_cache.hits
    assert count_request(as_parts).input_tokens == expected
    assert message_cache.hits == hits + 1


def test_long_messages_of_one_length_are_cached_apart():
    # Past 1,024 characters a message is cached by its hash and size: different messages of the
    # same length must not share an entry. Each count is the cookbook's: 3 tokens a message, 1 for
    # the role "user", the content's own tokens, 3 priming the reply.
    enc = costkit.count_text
    same_length = ["word " * 400, "w" * 2000, "wo rd" * 400]
    assert len({len(text) for text in same_length}) == 1 and len(same_length[0]) > 1024
    counts = []
    for text in same_length:
        body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]}
        counts.append(count_request(body).input_tokens)
        assert count_request(body).input_tokens == counts[-1]  # again, from the cache
    assert counts == [3 + 1 + enc(text) + 3 for text in same_length]
    assert len(set(counts)) == 3


# Images -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "high", 765),
        ((2048, 4096), "high", 1105),
        ((1024, 1024), "low", 85),
        ((4096, 8192), "low", 85),
    ],
)
def test_tile_method_matches_published_examples(size, detail, tokens):
    counted = count_request(image_body(data_url(*size), detail=detail))
    (image,) = counted.images
    assert (image.tokens, image.width, image.height, image.dims_known) == (tokens, size[0], size[1], True)
    assert counted.breakdown["images"] == tokens


def test_detail_auto_is_never_taken_as_low():
    url = data_url(1024, 1024)
    auto = count_request(image_body(url, detail="auto")).images[0].tokens
    default = count_request(image_body(url, detail=None)).images[0].tokens
    assert auto == default == 765


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP"])
def test_data_url_dimensions_are_read_from_each_image_format(fmt):
    (image,) = count_request(image_body(data_url(2048, 4096, fmt))).images
    assert (image.width, image.height, image.tokens) == (2048, 4096, 1105)


def test_remote_url_counts_at_its_worst_case_unless_its_size_is_known():
    url = "https://cdn.example.com/statue.jpg"
    (worst,) = count_request(image_body(url, detail="auto")).images
    assert (worst.tokens, worst.tiles, worst.dims_known) == (1445, 8, False)
    (known,) = count_request(image_body(url), image_sizes={url: (1024, 1024)}).images
    assert (known.tokens, known.dims_known) == (765, True)


@pytest.mark.parametrize(
    ("model", "size", "patches", "multiplier"),
    [
        ("gpt-4.1-mini", (1024, 1024), 1024, 1.62),
        ("gpt-4.1-mini", (1800, 2400), 1452, 1.62),
        ("gpt-4.1-nano", (1024, 1024), 1024, 2.46),
        ("openai/gpt-4.1-nano", (1800, 2400), 1452, 2.46),
    ],
)
def test_patch_method_matches_published_examples(model, size, patches, multiplier):
    (image,) = count_request(image_body(data_url(*size), model=model)).images
    assert image.patches == patches
    assert image.tokens == math.ceil(round(patches * multiplier, 6))


def test_remote_image_on_patch_models_counts_the_patch_cap():
    (image,) = count_request(image_body("https://example.com/x.png", model="gpt-4.1-mini")).images
    assert (image.patches, image.tokens) == (1536, math.ceil(1536 * 162 / 100))


def test_an_image_in_a_later_message_is_located_in_the_breakdown():
    body = image_body(data_url(1024, 1024))
    body["messages"].insert(0, {"role": "system", "content": "look"})
    (image,) = count_request(body).images
    assert image.where == "messages[1].content[0]"


def test_corrupt_data_url_is_an_invalid_request():
    with pytest.raises(InvalidRequest) as caught:
        count_request(image_body("data:image/png;base64,AAAAAAAA"))
    assert caught.value.where == "messages[0].content[0].image_url.url"


# Validation ---------------------------------------------------------------------------------

USER = {"role": "user", "content": "x"}


def tools_body(*tools, key: str = "tools") -> dict:
    return {"model": "gpt-4.1", "messages": [USER], key: list(tools)}


def weather(**prop) -> dict:
    """A tool with one property ``unit`` made of ``prop``."""
    parameters = {"type": "object", "properties": {"unit": prop}}
    return {"type": "function", "function": {"name": "get_weather", "parameters": parameters}}


UNIT = "tools[0].function.parameters.properties.unit"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "body: a request body must be a JSON object"),
        ({"messages": []}, "model: missing"),
        ({"model": 41, "messages": []}, "model: must be a string"),
        ({"model": "gpt-4.1"}, "messages: missing"),
        ({"model": "gpt-4.1", "messages": []}, "messages: must not be empty"),
        ({"model": "gpt-4.1", "messages": "hi"}, "messages: must be a list"),
        ({"model": "gpt-4.1", "messages": ["hi"]}, "messages[0]: a message must be an object"),
        (
            {"model": "gpt-4.1", "messages": [{"content": "x"}]},
            "messages[0].role: must be one of system, developer, user, assistant, tool, function, not None",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "robot", "content": "x"}]},
            "messages[0].role: must be one of system, developer, user, assistant, tool, function, "
            "not 'robot'",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "user"}]},
            "messages[0].content: a user message needs content",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "tool", "tool_call_id": "c", "content": None}]},
            "messages[0].content: a tool message needs content",
        ),
        (
            {"model": "gpt-4.1", "messages": [USER] * 3 + [{"role": "user", "content": 7}]},
            "messages[3].content: must be a string, a list of content parts, or null",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "user", "content": ["hi"]}]},
            "messages[0].content[0]: a content part must be an object",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]},
            "messages[0].content[0].text: must be a string",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "assistant", "content": [{"type": "refusal"}]}]},
            "messages[0].content[0].refusal: must be a string",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0].type: unsupported content part type 'input_audio' "
            "(supported: text, image_url, refusal)",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "user", "content": "x", "name": 3}]},
            "messages[0].name: must be a string",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "tool", "content": "x", "tool_call_id": 3}]},
            "messages[0].tool_call_id: must be a string",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "assistant", "content": None, "tool_calls": {}}]},
            "messages[0].tool_calls: must be a list",
        ),
        (
            {"model": "gpt-4.1", "messages": [{"role": "assistant", "content": None, "function_call": []}]},
            "messages[0].function_call: must be an object",
        ),
        (
            {
                "model": "gpt-4.1",
                "messages": [
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"id": "c", "function": {"name": b"f"}}],
                    }
                ],
            },
            "messages[0].tool_calls[0].function.name: unexpected value of type bytes",
        ),
        (
            {
                "model": "gpt-4.1",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "ultra"}}
                        ],
                    }
                ],
            },
            "messages[0].content[0].image_url.detail: must be one of auto, low, high",
        ),
        ({"model": "gpt-4.1", "messages": [USER], "tools": {}}, "tools: must be a list"),
        (tools_body("get_weather"), "tools[0]: a tool must be an object"),
        (
            tools_body({"type": "code_interpreter"}),
            "tools[0].type: unsupported tool type 'code_interpreter'",
        ),
        (tools_body({"type": "function"}), "tools[0].function: must be an object"),
        (
            tools_body({"type": "function", "function": {"description": "d"}}),
            "tools[0].function.name: must be a non-empty string",
        ),
        (
            tools_body({"type": "function", "function": {"name": ""}}),
            "tools[0].function.name: must be a non-empty string",
        ),
        (
            tools_body({"type": "function", "function": {"name": "f", "description": 5}}),
            "tools[0].function.description: must be a string",
        ),
        (
            tools_body({"type": "function", "function": {"name": "f", "parameters": ["unit"]}}),
            "tools[0].function.parameters: must be an object",
        ),
        (
            tools_body(
                {"type": "function", "function": {"name": "f", "parameters": {"properties": ["unit"]}}}
            ),
            "tools[0].function.parameters.properties: must be an object",
        ),
        (
            tools_body(
                {"type": "function", "function": {"name": "f", "parameters": {"properties": {"unit": "C"}}}}
            ),
            f"{UNIT}: must be an object",
        ),
        (tools_body(weather(type="string", enum="celsius")), f"{UNIT}.enum: must be a list"),
        (tools_body(weather(type="string", description=["C"])), f"{UNIT}.description: must be a string"),
        ({"model": "gpt-4.1", "messages": [USER], "functions": {}}, "functions: must be a list"),
        (tools_body("f", key="functions"), "functions[0]: a function must be an object"),
        (tools_body({"description": "d"}, key="functions"), "functions[0].name: must be a non-empty string"),
    ],
)
def test_malformed_bodies_say_what_is_wrong_and_where(body, message):
    where = message.split(": ", 1)[0]
    for count in (count_request, lambda b: count_request(b, image_sizes={}), input_upper_bound):
        with pytest.raises(InvalidRequest) as caught:
            count(body)
        assert (caught.value.where, str(caught.value)) == (where, message)


# The per-message cache ----------------------------------------------------------------------


def test_resent_history_is_served_from_the_cache():
    history = [
        {"role": "system", "content": "You answer questions about the costkit ledger, briefly (test)."}
    ]
    already_counted = 0
    for turn in range(1, 6):
        history.append({"role": "user", "content": f"question number {turn}: how are cached tokens priced?"})
        before_hits, before_misses = message_cache.hits, message_cache.misses
        counted = count_request({"model": "gpt-4.1", "messages": list(history)})
        assert message_cache.misses - before_misses == len(history) - already_counted  # only new ones
        assert message_cache.hits - before_hits == already_counted
        already_counted = len(history)
        message_cache_free = count_request({"model": "gpt-4.1", "messages": history}, image_sizes={})
        assert counted == message_cache_free
        history.append({"role": "assistant", "content": f"answer {turn}: at the cached rate, once."})


def test_cache_is_bounded_and_forgets_the_least_recently_used():
    cache: CountCache[int] = CountCache(max_entries=16)
    for i in range(16):
        cache.put(("k", i), i)
    assert cache.get(("k", 0)) == 0  # used: now the most recent
    for i in range(16, 100):
        cache.put(("k", i), i)
        assert len(cache) <= 16
    assert cache.get(("k", 99)) == 99
    assert cache.get(("k", 1)) is None
    cache.put(("k", 100), 100)
    assert len(cache) <= 16


def _largest_key_text(cache: CountCache) -> int:
    sizes = [0]
    for key in cache._data:
        if isinstance(key, tuple):
            pairs = [item for item in key if isinstance(item, tuple)]
            sizes.append(sum(len(v) for pair in pairs for v in pair if isinstance(v, str)))
        elif isinstance(key, str):
            sizes.append(len(key))
    return max(sizes)


def test_large_messages_are_cached_under_a_small_digest():
    text = "lorem ipsum dolor sit amet " * 10_000
    for body in (
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": text}]},
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi", "name": "n" * 5000}]},
        {"model": "gpt-4.1", "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}]},
    ):
        first = count_request(body)
        assert _largest_key_text(message_cache) <= 1100
        before = message_cache.hits
        assert count_request(body) == first
        assert message_cache.hits == before + 1


# Independent reference ------------------------------------------------------------------------


def cookbook_count(encoding, messages: list[dict]) -> int:
    """The cookbook's num_tokens_from_messages, written independently of costkit."""
    total = 0
    for message in messages:
        total += 3
        for key, value in message.items():
            total += len(encoding.encode_ordinary(value))
            if key == "name":
                total += 1
    return total + 3


_messages = st.lists(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["system", "developer", "user", "assistant"]),
            "content": st.one_of(st.text(max_size=200), st.text(alphabet="ab <|>endoftx\n", max_size=60)),
        },
        optional={"name": st.from_regex(r"[A-Za-z0-9_-]{1,20}", fullmatch=True)},
    ),
    min_size=1,
    max_size=8,
)


@settings(max_examples=200, deadline=None)
@given(_messages)
def test_count_request_equals_plain_tiktoken_on_random_messages(reference_encoding, messages):
    body = {"model": "gpt-4.1", "messages": messages}
    expected = cookbook_count(reference_encoding, messages)
    assert count_request(body).input_tokens == expected
    assert count_request(body).input_tokens == expected  # again, from the cache
    assert input_upper_bound(body)[1] >= expected


def test_long_message_counts_equal_plain_tiktoken(reference_encoding):
    text = "The ledger keeps every row.\nCached tokens are part of the prompt. " * 20_000
    messages = [{"role": "user", "content": text}]
    assert count_request({"model": "gpt-4.1", "messages": messages}).input_tokens == cookbook_count(
        reference_encoding, messages
    )


def test_public_api_exports():
    assert callable(costkit.count_request) and callable(costkit.preflight) and callable(costkit.cost)


@pytest.mark.parametrize("empty", [{"tools": []}, {"tools": None}, {"functions": []}])
def test_an_empty_tool_list_adds_no_tokens_to_the_count_or_to_the_bound(empty):
    body = {"model": "gpt-4.1", "messages": [{"role": "user", "content": "What is the weather?"}]}
    assert count_request({**body, **empty}).input_tokens == count_request(body).input_tokens
    assert input_upper_bound({**body, **empty}) == input_upper_bound(body)


def test_a_message_holding_a_value_json_cannot_write_is_still_counted_with_its_image():
    # A Python caller's body may hold a Decimal beside an image part: it cannot be cached by its
    # JSON text, and is counted without the cache, with the model's image rules (85 tokens: low).
    part = {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}}
    message = {"role": "user", "content": [{"type": "text", "text": "hi"}, {**part, "x": Decimal(1)}]}
    counted = count_request({"model": "gpt-4.1", "messages": [message]})
    assert counted.images[0].tokens == 85
    assert counted.input_tokens == 3 + 1 + costkit.count_text("hi") + 85 + 3
