"""Tool calls in model text: the formats models write them in, their grammars, and a streaming parser.

A format is recognised from the chat template: Hermes/Qwen ``<tool_call>{json}</tool_call>``,
Llama 3 ``{"name": …, "parameters": …}`` as the whole answer, Mistral ``[TOOL_CALLS][{…}]``.
Templates without one get the generic prompt, which asks for the Hermes form. The grammar of a
format describes the text after its opener, so one grammar serves both a call the model starts
by itself (``auto``: decoding is constrained once the opener appears) and a forced call (``any``
and ``tool``: the opener is prefilled and the whole answer is constrained).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

__all__ = [
    "GENERIC",
    "HERMES",
    "LLAMA3",
    "MISTRAL",
    "ToolCallEnd",
    "ToolCallParser",
    "ToolCallStart",
    "ToolFormat",
    "ToolInputDelta",
    "ToolText",
    "detect_tool_format",
    "tool_call_grammar",
]


class ToolFormat(msgspec.Struct, frozen=True, kw_only=True):
    """How one model family writes tool calls.

    ``opener`` starts a call (for Llama 3 it is the ``{`` of the call itself, ``opener_in_json``);
    ``trigger`` is the regular expression that finds it in free text; ``closer`` follows each call
    object; ``array`` says the calls form one JSON array after the opener (Mistral).
    """

    name: str
    opener: str
    trigger: str
    arguments_key: str = "arguments"
    closer: str = ""
    array: bool = False
    opener_in_json: bool = False
    native: bool = True
    parallel: bool = True


HERMES = ToolFormat(
    name="hermes", opener="<tool_call>", trigger=re.escape("<tool_call>"), closer="</tool_call>"
)
# Models without tool training get one call per answer: left free, small ones repeat the call
# until max_tokens. One call is always a valid answer, so this narrows nothing the API promises.
GENERIC = ToolFormat(
    name="generic",
    opener="<tool_call>",
    trigger=re.escape("<tool_call>"),
    closer="</tool_call>",
    native=False,
    parallel=False,
)
LLAMA3 = ToolFormat(
    name="llama3",
    opener="{",
    trigger=r"^\s*\{",
    arguments_key="parameters",
    opener_in_json=True,
    parallel=False,
)
MISTRAL = ToolFormat(name="mistral", opener="[TOOL_CALLS]", trigger=re.escape("[TOOL_CALLS]"), array=True)


def detect_tool_format(template_source: str) -> ToolFormat:
    """The format a chat template's own tool support uses; GENERIC when it has none we know."""
    if not re.search(r"\btools\b", template_source):
        return GENERIC
    if "<tool_call>" in template_source:
        return HERMES
    if "[TOOL_CALLS]" in template_source:
        return MISTRAL
    if "<|python_tag|>" in template_source or (
        "ipython" in template_source and "parameters" in template_source
    ):
        return LLAMA3
    return GENERIC


# Tool input written the way models read JSON in their training data: ", " and ": ", no other
# whitespace (free whitespace lets a small model wander off into blank lines).
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": ", "lenient": True}


def tool_call_grammar(
    fmt: ToolFormat, tools: Sequence[tuple[str, Mapping[str, Any]]], *, parallel: bool
) -> str:
    """An llguidance Lark grammar for the text after ``fmt.opener``: one call, or several if ``parallel``.

    ``tools`` are (name, input_schema) pairs; each call's input must validate against its schema.
    """
    options = [f"t{i}" for i in range(len(tools))]
    rules = [f"tool: {' | '.join(options)}"]
    for rule, (name, schema) in zip(options, tools):
        head = json.dumps(f'"{name}", "{fmt.arguments_key}": ')
        guided = {**_closed(schema), "x-guidance": _JSON_OPTIONS}
        rules.append(f"{rule}: {head} %json {json.dumps(guided)}")
    call = 'call: "{\\"name\\": " tool "}"' if not fmt.opener_in_json else 'call: "\\"name\\": " tool "}"'
    parallel = parallel and fmt.parallel
    if fmt.array:
        start = 'start: "[" call (", " call)* "]"' if parallel else 'start: "[" call "]"'
    elif fmt.closer:
        closed = f"NL? call NL? {json.dumps(fmt.closer)}"
        more = f" (NL? {json.dumps(fmt.opener)} {closed})*" if parallel else ""
        start = f"start: {closed}{more}"
    else:
        start = "start: call"
    return "\n".join([start, call, *rules, 'NL: "\\n"', ""])


def _closed(schema: Any) -> Any:
    """``schema`` with objects that list ``properties`` limited to them, unless it says otherwise.

    JSON Schema allows unlisted keys by default; a small model given that freedom invents keys
    until it runs out of tokens. Any input the narrowed schema admits is valid under the original.
    ``allOf`` branches stay open (closing one would reject the keys of the others).
    """
    if isinstance(schema, list):
        return [_closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    closed = {
        key: value if key in ("allOf", "const", "enum", "default", "examples") else _closed(value)
        for key, value in schema.items()
    }
    if "properties" in schema and "additionalProperties" not in schema and "patternProperties" not in schema:
        closed["additionalProperties"] = False
    if isinstance(schema.get("properties"), dict):
        closed["properties"] = {name: _closed(sub) for name, sub in schema["properties"].items()}
    return closed


class ToolText(msgspec.Struct, frozen=True):
    """Answer text outside any tool call."""

    text: str


class ToolCallStart(msgspec.Struct, frozen=True):
    name: str


class ToolInputDelta(msgspec.Struct, frozen=True):
    """A piece of the call's input JSON; the pieces of one call concatenate to its input."""

    partial_json: str


class ToolCallEnd(msgspec.Struct, frozen=True):
    """The call is over: ``input`` is its parsed input; ``complete`` is False when it was cut off."""

    input: dict[str, Any]
    complete: bool


ToolPart = ToolText | ToolCallStart | ToolInputDelta | ToolCallEnd

_TEXT, _CALL, _AFTER = "text", "call", "after"


class _Malformed(Exception):
    pass


class _CallObject:
    """Follows one ``{"name": …, "<arguments_key>": {…}}`` object character by character.

    Only the top-level keys matter: the ``name`` string and the span of the arguments object,
    which is reported piece by piece as it arrives so a stream can forward it at once.
    """

    def __init__(self, arguments_key: str) -> None:
        self._arguments_key = arguments_key
        self.depth = 0
        self._in_string = False
        self._escape = False
        self._string: list[str] | None = None  # a top-level key or name value being read
        self._key: str | None = None
        self._expect = "open"  # open, key, colon, value, comma
        self.name: str | None = None
        self.arguments: list[str] = []
        self.arguments_state = "none"  # none, open, done
        self._args_stack: list[str] = []
        self.closed = False

    def feed(self, ch: str) -> str:
        """Consume one character; returns the part of it that belongs to the arguments (or "")."""
        if self.arguments_state == "open":
            return self._feed_arguments(ch)
        if self._in_string:
            self._feed_string(ch)
            return ""
        if ch.isspace():
            return ""
        if self._expect == "open":
            if ch != "{":
                raise _Malformed
            self.depth, self._expect = 1, "key"
        elif self._expect == "key":
            if ch == "}" and self._key is None:
                self.closed = True
            elif ch != '"':
                raise _Malformed
            else:
                self._in_string, self._string = True, []
        elif self._expect == "colon":
            if ch != ":":
                raise _Malformed
            self._expect = "value"
        elif self._expect == "value":
            if ch == '"':  # the name, or a string under a key we do not use (Mistral's "id")
                self._in_string, self._string = True, []
            elif self._key == self._arguments_key and ch == "{":
                self.arguments_state, self._args_stack = "open", ["}"]
                self.arguments.append(ch)
                return ch
            else:
                raise _Malformed
        elif self._expect == "comma":
            if ch == ",":
                self._expect, self._key = "key", None
            elif ch == "}":
                self.closed = True
            else:
                raise _Malformed
        return ""

    def _feed_string(self, ch: str) -> None:
        assert self._string is not None
        self._string.append(ch)
        if self._escape:
            self._escape = False
        elif ch == "\\":
            self._escape = True
        elif ch == '"':
            self._in_string = False
            try:
                text = json.loads('"' + "".join(self._string))
            except ValueError:
                raise _Malformed from None
            if self._expect == "key":
                self._key, self._expect = text, "colon"
            else:
                if self._key == "name":
                    self.name = text
                self._expect = "comma"
            self._string = None

    def _feed_arguments(self, ch: str) -> str:
        self.arguments.append(ch)
        if self._in_string:
            if self._escape:
                self._escape = False
            elif ch == "\\":
                self._escape = True
            elif ch == '"':
                self._in_string = False
        elif ch == '"':
            self._in_string = True
        elif ch in "{[":
            self._args_stack.append("}" if ch == "{" else "]")
        elif ch in "}]":
            if not self._args_stack or self._args_stack.pop() != ch:
                raise _Malformed
            if not self._args_stack:
                self.arguments_state, self._expect = "done", "comma"
        return ch

    def parsed_arguments(self) -> tuple[dict[str, Any], bool]:
        """The arguments as a dict, and whether they were complete (a cut-off object is closed)."""
        text = "".join(self.arguments)
        if self.arguments_state == "done":
            try:
                value = json.loads(text)
            except ValueError:
                return {}, False
            return (value, True) if isinstance(value, dict) else ({}, False)
        closing = ('"' if self._in_string else "") + "".join(reversed(self._args_stack))
        try:
            value = json.loads(text + closing)
        except ValueError:
            return {}, False
        return (value if isinstance(value, dict) else {}), False


class ToolCallParser:
    """Splits streamed answer text into text and tool calls.

    Text that may be the start of a call (a partial opener) is held back until it is known not
    to be one; so is whitespace, which is dropped when it only separates calls. A call is reported
    as ToolCallStart once its name is known and valid, then ToolInputDelta pieces, then
    ToolCallEnd. Text after the opener that is not a well-formed call of a known tool is given
    back as plain text, opener included.
    """

    def __init__(self, fmt: ToolFormat, tool_names: Sequence[str], *, inside_call: bool = False) -> None:
        self._fmt = fmt
        self._names = frozenset(tool_names)
        self._held = ""  # text not yet reported
        self._raw = ""  # the current call's text since its opener, to give back if it is malformed
        self._call: _CallObject | None = None
        self._started = False
        self._pending: list[str] = []  # argument pieces that arrived before the name
        self._state = _TEXT
        self._answer_started = False  # for formats whose calls are the whole answer
        self._text_run = False  # non-space text was reported since the last call
        self._array_open = False  # Mistral: the "[" after the opener was seen
        if inside_call:
            self._enter_call()
            if fmt.opener_in_json:
                assert self._call is not None
                self._call.feed(fmt.opener)

    def feed(self, text: str) -> list[ToolPart]:
        parts: list[ToolPart] = []
        self._held += text
        while self._held:
            if self._state == _TEXT:
                if not self._scan_text(parts):
                    break
            elif self._state == _CALL:
                self._scan_call(parts)
            else:
                if not self._scan_after(parts):
                    break
        return parts

    def finish(self) -> list[ToolPart]:
        """Everything still held, at the end of the answer."""
        parts: list[ToolPart] = []
        call = self._call
        if self._state == _CALL and call is not None:
            if not self._started and call.name in self._names:
                # Cut off before its input began: still the call the model was making.
                self._started = True
                parts.append(ToolCallStart(call.name))
                if self._pending:
                    parts.append(ToolInputDelta("".join(self._pending)))
            if self._started:
                arguments, _ = call.parsed_arguments()
                parts.append(ToolCallEnd(arguments, False))
            else:
                self._give_back(parts)
                return [*parts, *self.feed(""), *self.finish()]
        elif self._state == _TEXT:
            self._emit_text(self._held.rstrip(), parts)
        self._held = ""
        return parts

    def _scan_text(self, parts: list[ToolPart]) -> bool:
        """Report text up to an opener; False when the rest must wait for more text."""
        fmt = self._fmt
        if fmt.opener_in_json:
            if self._answer_started:
                self._emit_text(self._held, parts)
                self._held = ""
                return False
            stripped = self._held.lstrip()
            if not stripped:
                return False
            self._answer_started = True
            if stripped.startswith(fmt.opener):
                self._held = stripped
                self._enter_call()
                return True
            return True
        at = self._held.find(fmt.opener)
        if at >= 0:
            before, self._held = self._held[:at], self._held[at + len(fmt.opener) :]
            body = before.rstrip()
            self._emit_text(body, parts)
            self._enter_call()
            self._raw = before[len(body) :] + fmt.opener  # given back as text if no call follows
            return True
        keep = _partial_suffix(self._held, fmt.opener)
        ready, self._held = self._held[: len(self._held) - keep], self._held[len(self._held) - keep :]
        # Spaces are held too: they are dropped if a call follows them.
        body = ready.rstrip()
        self._emit_text(body, parts)
        self._held = ready[len(body) :] + self._held
        return False

    def _emit_text(self, text: str, parts: list[ToolPart]) -> None:
        if not self._text_run:
            text = text.lstrip()
        if text:
            parts.append(ToolText(text))
            self._text_run = True

    def _enter_call(self) -> None:
        self._state = _CALL
        self._call = _CallObject(self._fmt.arguments_key)
        self._started = False
        self._pending = []
        self._array_open = not self._fmt.array
        self._raw = ""

    def _scan_call(self, parts: list[ToolPart]) -> None:
        pieces: list[str] = []
        self._scan_call_text(parts, pieces)
        self._flush(parts, pieces)

    def _flush(self, parts: list[ToolPart], pieces: list[str]) -> None:
        if pieces:
            parts.append(ToolInputDelta("".join(pieces)))
            pieces.clear()

    def _scan_call_text(self, parts: list[ToolPart], pieces: list[str]) -> None:
        """Follow the call over the held text; argument characters collect in ``pieces``."""
        call = self._call
        assert call is not None
        text, self._held = self._held, ""
        for index, ch in enumerate(text):
            self._raw += ch
            try:
                if not self._array_open:
                    if ch.isspace():
                        continue
                    if ch != "[":
                        raise _Malformed
                    self._array_open = True
                    continue
                piece = call.feed(ch)
            except _Malformed:
                self._held = text[index + 1 :]
                self._flush(parts, pieces)
                if self._started:
                    arguments, _ = call.parsed_arguments()
                    parts.append(ToolCallEnd(arguments, False))
                    self._state, self._text_run = _TEXT, False
                else:
                    self._give_back(parts)
                return
            if call.name is not None and not self._started and call.name not in self._names:
                self._held = text[index + 1 :]
                self._give_back(parts)
                return
            if piece:
                (pieces if self._started else self._pending).append(piece)
            if call.name is not None and not self._started and call.arguments_state != "none":
                self._started = True
                parts.append(ToolCallStart(call.name))
                if self._pending:
                    parts.append(ToolInputDelta("".join(self._pending)))
            if call.closed:
                self._held = text[index + 1 :]
                self._flush(parts, pieces)
                if call.name is None:
                    self._give_back(parts)
                    return
                if not self._started:
                    self._started = True
                    parts.append(ToolCallStart(call.name))
                    parts.append(ToolInputDelta("".join(self._pending) or "{}"))
                arguments, complete = call.parsed_arguments()
                parts.append(ToolCallEnd(arguments if call.arguments_state != "none" else {}, complete))
                self._state, self._text_run = _AFTER, False
                return

    def _scan_after(self, parts: list[ToolPart]) -> bool:
        """After a call object: the closer, another call, or back to text."""
        fmt = self._fmt
        text = self._held.lstrip()
        if not text:
            self._held = ""
            return False
        if fmt.array:
            if text[0] == ",":
                self._held = text[1:]
                self._enter_call()
                self._array_open = True
                return True
            if text[0] == "]":
                self._held = text[1:]
                self._state = _TEXT
                return True
        elif fmt.closer:
            if text.startswith(fmt.closer):
                self._held = text[len(fmt.closer) :]
                self._state = _TEXT
                return True
            if fmt.closer.startswith(text):
                self._held = text
                return False
        self._held = text
        self._state = _TEXT
        return True

    def _give_back(self, parts: list[ToolPart]) -> None:
        """The text after an opener was not a call: report opener and all as text, keep scanning."""
        raw = self._raw
        self._state = _TEXT
        self._call = None
        self._answer_started = True
        rest = self._held
        self._held = ""
        if raw:
            self._emit_text(raw, parts)
        self._held = rest


def _partial_suffix(text: str, opener: str) -> int:
    """Length of the longest end of ``text`` that begins ``opener``."""
    for size in range(min(len(opener) - 1, len(text)), 0, -1):
        if text.endswith(opener[:size]):
            return size
    return 0
