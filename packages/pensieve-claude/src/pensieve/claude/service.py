"""The Messages API on a local model: requests in, Anthropic messages and stream events out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pensieve.api import (
    CountTokensRequest,
    CountTokensResponse,
    Message,
    MessageDelta,
    MessageDeltaEvent,
    MessagesRequest,
    MessageStartEvent,
    MessageStopEvent,
    MessageStopReason,
    ModelList,
    ModelObject,
    PingEvent,
    StreamEvent,
    ThinkingEnabled,
    Usage,
    new_message_id,
)
from pensieve.claude.blocks import BlockWriter
from pensieve.claude.catalog import ModelCatalog
from pensieve.claude.prompt import Prompt, render_prompt
from pensieve.claude.thinking import THINK_CLOSE, ThinkingSigner
from pensieve.claude.tool_calls import ToolCallEnd, ToolCallParser, ToolCallStart, ToolInputDelta, ToolText
from pensieve.core.config import LimitSettings, SamplingSettings
from pensieve.core.errors import GenerationError, InvalidRequestError, NotFoundError
from pensieve.core.generation import (
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    GenerationStarted,
    SamplingParams,
    TextDelta,
)
from pensieve.core.protocols import GenerationBackend

__all__ = ["MessagesService"]

class MessagesService:
    """Answers Messages API requests with the models of a catalog.

    ``sampling`` is how requests that leave sampling out are sampled (the API's defaults unless
    given). ``thinking_key`` signs thinking blocks (HMAC-SHA256); by default a random key per
    service, so thinking signed before a restart is no longer replayed to the model.
    """

    def __init__(
        self,
        catalog: ModelCatalog,
        limits: LimitSettings | None = None,
        *,
        sampling: SamplingSettings | None = None,
        thinking_key: bytes | None = None,
    ) -> None:
        self._catalog = catalog
        self._limits = limits or LimitSettings()
        self._sampling = sampling or SamplingSettings()
        self._signer = ThinkingSigner(thinking_key)

    @property
    def catalog(self) -> ModelCatalog:
        return self._catalog

    async def create(self, request: MessagesRequest) -> Message:
        """The whole answer to ``request`` (its model is loaded first if it is not)."""
        self._check_limits(request)
        turn = self._admit(request, await self._catalog.resolve(request.model))
        blocks = turn.blocks()
        try:
            async for _event in blocks:
                pass
        finally:
            await blocks.aclose()
        return Message(
            id=new_message_id(),
            model=request.model,
            content=turn.writer.content,
            stop_reason=turn.stop_reason,
            stop_sequence=turn.stop_sequence,
            usage=turn.usage,
        )

    async def stream(self, request: MessagesRequest) -> AsyncIterator[StreamEvent]:
        """Admit ``request`` (request errors raise here, its model is loaded first if it is not)
        and return its SSE events."""
        self._check_limits(request)
        return self._events(request, self._admit(request, await self._catalog.resolve(request.model)))

    async def count_tokens(self, request: CountTokensRequest) -> CountTokensResponse:
        """The prompt's size, system and tools included: what ``usage`` will count as input
        (``input_tokens`` + ``cache_creation_input_tokens`` + ``cache_read_input_tokens``)."""
        self._check_limits(request)
        backend = await self._catalog.resolve(request.model)
        return CountTokensResponse(input_tokens=len(render_prompt(request, backend, self._signer).tokens))

    def list_models(
        self, limit: int = 20, after_id: str | None = None, before_id: str | None = None
    ) -> ModelList:
        """One page of served model names, as ``GET /v1/models`` pages them."""
        if not 1 <= limit <= 1000:
            raise InvalidRequestError("limit: must be between 1 and 1000")
        objects = [
            _model_object(name, info.display_name, info.created_at)
            for name, info in self._catalog.served_names()
        ]
        ids = [obj.id for obj in objects]
        if before_id is not None:
            stop = _position(ids, before_id)
            start = max(0, stop - limit)
            has_more = start > 0
        else:
            start = 0 if after_id is None else _position(ids, after_id) + 1
            stop = min(len(objects), start + limit)
            has_more = stop < len(objects)
        page = objects[start:stop]
        return ModelList(
            data=page,
            has_more=has_more,
            first_id=page[0].id if page else None,
            last_id=page[-1].id if page else None,
        )

    def get_model(self, model_id: str) -> ModelObject:
        for name, info in self._catalog.served_names():
            if name == model_id:
                return _model_object(name, info.display_name, info.created_at)
        raise NotFoundError(f"model: {model_id}")

    def _admit(self, request: MessagesRequest, backend: GenerationBackend) -> _Turn:
        # No await from here to the backend's first stream: the model stays loaded for it.
        prompt = render_prompt(request, backend, self._signer)
        defaults = self._sampling
        sampling = SamplingParams(
            temperature=defaults.temperature if request.temperature is None else request.temperature,
            top_p=defaults.top_p if request.top_p is None else request.top_p,
            top_k=defaults.top_k if request.top_k is None else request.top_k,
        )
        return _Turn(request, backend, prompt, self._signer, sampling, self._limits.max_output_tokens)

    def _check_limits(self, request: CountTokensRequest) -> None:
        if len(request.messages) > self._limits.max_messages:
            raise InvalidRequestError(f"messages: at most {self._limits.max_messages} messages are accepted")
        if request.tools and len(request.tools) > self._limits.max_tools:
            raise InvalidRequestError(f"tools: at most {self._limits.max_tools} tools are accepted")

    async def _events(self, request: MessagesRequest, turn: _Turn) -> AsyncIterator[StreamEvent]:
        try:
            # After the engine admits the prompt, so the usage says how much the prefix cache held.
            yield MessageStartEvent(
                message=Message(
                    id=new_message_id(),
                    model=request.model,
                    content=[],
                    stop_reason=None,
                    stop_sequence=None,
                    usage=await turn.opening_usage(),
                )
            )
            yield PingEvent()
            blocks = turn.blocks()
            try:
                async for event in blocks:
                    yield event
            finally:
                await blocks.aclose()
        finally:
            await turn.aclose()
        yield MessageDeltaEvent(
            delta=MessageDelta(stop_reason=turn.stop_reason, stop_sequence=turn.stop_sequence),
            usage=turn.usage,
        )
        yield MessageStopEvent()


class _Turn:
    """One answer: its generations (thinking, then the answer) turned into content blocks.

    The first generation is admitted on construction, so request errors (prompt too long,
    overloaded) are raised before any event. ``blocks`` yields the content-block events; once it
    is exhausted, ``writer.content``, ``stop_reason`` and ``usage`` describe the whole answer.
    """

    def __init__(
        self,
        request: MessagesRequest,
        backend: GenerationBackend,
        prompt: Prompt,
        signer: ThinkingSigner,
        sampling: SamplingParams,
        max_output_tokens: int,
    ) -> None:
        self.prompt = prompt
        self._backend = backend
        self._sampling = sampling
        self._stops = tuple(request.stop_sequences or ())
        self._max_tokens = min(request.max_tokens, max_output_tokens)
        thinking = request.thinking
        omitted = getattr(thinking, "display", None) == "omitted"
        self.writer = BlockWriter(signer, show_thinking=not omitted)
        self._budget = self._max_tokens
        if prompt.thinking:
            # Without a budget (adaptive thinking) half the answer's room goes to thinking.
            budget = (
                thinking.budget_tokens if isinstance(thinking, ThinkingEnabled) else self._max_tokens // 2
            )
            self._budget = max(1, min(budget, self._max_tokens))
            first = GenerationRequest(
                prompt_tokens=prompt.tokens,
                max_tokens=self._budget,
                sampling=sampling,
                stop_sequences=(THINK_CLOSE,),
            )
        else:
            first = self._answer_request(prompt.tokens, self._max_tokens)
        self._first = backend.stream(first)
        self._second: AsyncIterator[GenerationEvent] | None = None
        self.stop_reason: MessageStopReason = "end_turn"
        self.stop_sequence: str | None = None
        self.usage = Usage(input_tokens=len(prompt.tokens), output_tokens=0)

    def _answer_request(self, tokens: tuple[int, ...], max_tokens: int) -> GenerationRequest:
        tools = self.prompt.tools
        return GenerationRequest(
            prompt_tokens=tokens,
            max_tokens=max_tokens,
            sampling=self._sampling,
            stop_sequences=self._stops,
            constraint=tools.constraint if tools is not None else None,
        )

    async def opening_usage(self) -> Usage:
        """The prompt's usage once the engine has admitted it (its GenerationStarted), as
        ``message_start`` reports it: the cached and newly cached tokens apart from the rest."""
        started = await anext(self._first, None)
        if not isinstance(started, GenerationStarted):
            raise GenerationError("the model's event stream did not start with GenerationStarted")
        return _usage(started, output_tokens=0)

    async def blocks(self) -> AsyncIterator[StreamEvent]:
        """The content-block events; closing this early cancels the generation."""
        try:
            async for out in self._blocks():
                yield out
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        """Cancel the generations still running (closing a stream twice is harmless)."""
        await self._first.aclose()  # type: ignore[attr-defined]
        if self._second is not None:
            await self._second.aclose()  # type: ignore[attr-defined]

    async def _blocks(self) -> AsyncIterator[StreamEvent]:
        events = self._first
        reading: GenerationFinished | None = None  # how the prompt was read: by the first generation
        output_tokens = 0
        if self.prompt.thinking:
            thinking: list[str] = []
            finished = None
            async for event in events:
                if isinstance(event, TextDelta):
                    thinking.append(event.text)
                    for out in self.writer.thinking(event.text):
                        yield out
                elif isinstance(event, GenerationFinished):
                    finished = event
                    break
            await events.aclose()  # type: ignore[attr-defined]
            if finished is None:
                return
            reading = finished
            output_tokens = finished.completion_tokens
            room = self._max_tokens - output_tokens
            # Stopped at </think>, or at the budget: the section is closed and the answer follows.
            closes = finished.stop_reason == "stop_sequence" or (
                finished.stop_reason == "max_tokens" and finished.completion_tokens >= self._budget
            )
            if not closes or room <= 0:
                for out in self.writer.close():
                    yield out
                self._finish(finished.stop_reason if room > 0 else "max_tokens", None, reading, output_tokens)
                return
            closer = THINK_CLOSE if finished.stop_reason == "stop_sequence" else f"\n{THINK_CLOSE}"
            tail = self._backend.tokenizer.encode("".join(thinking) + closer + "\n\n")
            events = self._second = self._backend.stream(
                self._answer_request(self.prompt.tokens + tuple(tail), room)
            )
        tools = self.prompt.tools
        parser = (
            ToolCallParser(tools.format, tools.names, inside_call=tools.forced) if tools is not None else None
        )
        finished = None
        async for event in events:
            if isinstance(event, TextDelta):
                parts = parser.feed(event.text) if parser is not None else [ToolText(event.text)]
                for part in parts:
                    for out in self._part(part):
                        yield out
            elif isinstance(event, GenerationFinished):
                finished = event
                break
        if finished is None:
            return
        for part in parser.finish() if parser is not None else []:
            for out in self._part(part):
                yield out
        for out in self.writer.close():
            yield out
        reason: MessageStopReason = finished.stop_reason
        if reason == "end_turn" and self.writer.tool_calls:
            reason = "tool_use"
        self._finish(reason, finished.stop_sequence, reading or finished, output_tokens + finished.completion_tokens)

    def _part(self, part: ToolText | ToolCallStart | ToolInputDelta | ToolCallEnd) -> list[StreamEvent]:
        if isinstance(part, ToolText):
            return self.writer.text(part.text)
        if isinstance(part, ToolCallStart):
            return self.writer.tool_start(part.name)
        if isinstance(part, ToolInputDelta):
            return self.writer.tool_input(part.partial_json)
        return self.writer.tool_end(part.input)

    def _finish(
        self, reason: MessageStopReason, sequence: str | None, reading: GenerationFinished, output_tokens: int
    ) -> None:
        self.stop_reason, self.stop_sequence = reason, sequence
        self.usage = _usage(reading, output_tokens=output_tokens)


def _usage(reading: GenerationStarted | GenerationFinished, *, output_tokens: int) -> Usage:
    """As Anthropic counts: the prompt is input_tokens + cache_creation + cache_read."""
    read, written = reading.cache_read_tokens, reading.cache_write_tokens
    return Usage(
        input_tokens=reading.prompt_tokens - read - written,
        output_tokens=output_tokens,
        cache_creation_input_tokens=written,
        cache_read_input_tokens=read,
    )


def _model_object(name: str, display_name: str, created_at: str) -> ModelObject:
    return ModelObject(id=name, display_name=display_name, created_at=created_at)


def _position(ids: list[str], model_id: str) -> int:
    try:
        return ids.index(model_id)
    except ValueError:
        raise NotFoundError(f"model: {model_id}") from None
