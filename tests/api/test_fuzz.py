"""Whatever arrives, the decoders either return a request or raise InvalidRequestError, nothing else."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from pensieve import api
from pensieve.core.errors import InvalidRequestError
from tests.api.samples import CLAUDE_CODE_BODY, TOOL_HISTORY_BODY

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
_json = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)
# Values near the real schema reach deeper than arbitrary JSON does.
_keys = st.sampled_from(
    [
        "model",
        "max_tokens",
        "messages",
        "role",
        "content",
        "type",
        "text",
        "tools",
        "name",
        "input_schema",
        "tool_choice",
        "thinking",
        "budget_tokens",
        "system",
        "source",
        "tool_use_id",
        "input",
        "id",
        "signature",
    ]
)
_types = st.sampled_from(
    ["text", "image", "tool_use", "tool_result", "thinking", "enabled", "auto", "tool", "base64"]
)
_schema_like = st.recursive(
    _scalars | _types,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=30,
)


def _decode_both(raw: bytes) -> None:
    for decode in (api.decode_messages_request, api.decode_count_tokens_request):
        try:
            decode(raw)
        except InvalidRequestError as exc:
            assert exc.message


@settings(max_examples=300, deadline=None)
@given(_json)
def test_arbitrary_json(value: Any) -> None:
    _decode_both(msgspec.json.encode(value))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _schema_like, max_size=8))
def test_schema_like_objects(value: dict[str, Any]) -> None:
    _decode_both(msgspec.json.encode(value))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes(raw: bytes) -> None:
    _decode_both(raw)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([CLAUDE_CODE_BODY, TOOL_HISTORY_BODY]), st.data())
def test_mutated_real_bodies(sample: dict[str, Any], data: st.DataObject) -> None:
    raw = msgspec.json.encode(sample)
    start = data.draw(st.integers(0, len(raw) - 1))
    cut = data.draw(st.integers(start, min(len(raw), start + 8)))
    _decode_both(raw[:start] + data.draw(st.binary(max_size=4)) + raw[cut:])
