"""The Messages API on a local model: requests in, Anthropic messages and stream events out."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pensieve.api import (
    ContentBlockDeltaEvent,
    ContentBlockStartEvent,
    ContentBlockStopEvent,
    CountTokensRequest,
    CountTokensResponse,
    Message,
    MessageDelta,
    MessageDeltaEvent,
    MessagesRequest,
    MessageStartEvent,
    MessageStopEvent,
    ModelList,
    ModelObject,
    PingEvent,
    StreamEvent,
    TextBlock,
    TextBlockDelta,
    Usage,
    new_message_id,
)
from pensieve.core.config import LimitSettings
from pensieve.core.errors import InvalidRequestError, NotFoundError
from pensieve.core.generation import (
    GenerationEvent,
    GenerationFinished,
    GenerationRequest,
    SamplingParams,
    TextDelta,
)
from pensieve.core.protocols import GenerationBackend
from pensieve.claude.catalog import ModelCatalog
from pensieve.claude.prompt import Prompt, render_prompt

__all__ = ["MessagesService"]

# The API's defaults when a request leaves sampling out (the anthropic SDK 2.x never sends it).
_DEFAULT_TEMPERATURE = 1.0


class MessagesService:
    """Answers Messages API requests with the models of a catalog."""

    def __init__(self, catalog: ModelCatalog, limits: LimitSettings | None = None) -> None:
        self._catalog = catalog
        self._limits = limits or LimitSettings()

    @property
    def catalog(self) -> ModelCatalog:
        return self._catalog

    async def create(self, request: MessagesRequest) -> Message:
        """The whole answer to ``request``."""
        backend, prompt, generation = self._admit(request)
        parts: list[str] = []
        async for event in backend.stream(generation):
            if isinstance(event, TextDelta):
                parts.append(event.text)
            else:
                return _message(request, event, content=[TextBlock(text="".join(parts))] if parts else [])
        raise AssertionError("generation ended without finishing")  # the backend always finishes

    def stream(self, request: MessagesRequest) -> AsyncIterator[StreamEvent]:
        """Admit ``request`` now (request errors raise here) and return its SSE events."""
        backend, prompt, generation = self._admit(request)
        return self._events(request, prompt, backend.stream(generation))

    def count_tokens(self, request: CountTokensRequest) -> CountTokensResponse:
        backend = self._catalog.resolve(request.model)
        self._check_limits(request)
        return CountTokensResponse(input_tokens=len(render_prompt(request, backend).tokens))

    def list_models(
        self, limit: int = 20, after_id: str | None = None, before_id: str | None = None
    ) -> ModelList:
        """One page of served model names, as ``GET /v1/models`` pages them."""
        if not 1 <= limit <= 1000:
            raise InvalidRequestError("limit: must be between 1 and 1000")
        objects = [_model_object(name, info.display_name, info.created_at) for name, info in self._catalog.served_names()]
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

    def _admit(self, request: MessagesRequest) -> tuple[GenerationBackend, Prompt, GenerationRequest]:
        backend = self._catalog.resolve(request.model)
        self._check_limits(request)
        prompt = render_prompt(request, backend)
        sampling = SamplingParams(
            temperature=_DEFAULT_TEMPERATURE if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            top_k=0 if request.top_k is None else request.top_k,
        )
        generation = GenerationRequest(
            prompt_tokens=prompt.tokens,
            max_tokens=min(request.max_tokens, self._limits.max_output_tokens),
            sampling=sampling,
            stop_sequences=tuple(request.stop_sequences or ()),
        )
        return backend, prompt, generation

    def _check_limits(self, request: CountTokensRequest) -> None:
        if len(request.messages) > self._limits.max_messages:
            raise InvalidRequestError(f"messages: at most {self._limits.max_messages} messages are accepted")
        if request.tools and len(request.tools) > self._limits.max_tools:
            raise InvalidRequestError(f"tools: at most {self._limits.max_tools} tools are accepted")

    async def _events(
        self, request: MessagesRequest, prompt: Prompt, events: AsyncIterator[GenerationEvent]
    ) -> AsyncIterator[StreamEvent]:
        message_id = new_message_id()
        yield MessageStartEvent(
            message=Message(
                id=message_id,
                model=request.model,
                content=[],
                stop_reason=None,
                stop_sequence=None,
                usage=Usage(input_tokens=len(prompt.tokens), output_tokens=0),
            )
        )
        yield PingEvent()
        block_open = False
        try:
            async for event in events:
                if isinstance(event, TextDelta):
                    if not block_open:
                        yield ContentBlockStartEvent(index=0, content_block=TextBlock(text=""))
                        block_open = True
                    yield ContentBlockDeltaEvent(index=0, delta=TextBlockDelta(text=event.text))
                    continue
                if block_open:
                    yield ContentBlockStopEvent(index=0)
                yield MessageDeltaEvent(
                    delta=MessageDelta(stop_reason=event.stop_reason, stop_sequence=event.stop_sequence),
                    usage=_usage(event),
                )
                yield MessageStopEvent()
                return
        finally:
            await events.aclose()  # type: ignore[attr-defined]


def _message(request: MessagesRequest, finished: GenerationFinished, content: list[TextBlock]) -> Message:
    return Message(
        id=new_message_id(),
        model=request.model,
        content=list(content),
        stop_reason=finished.stop_reason,
        stop_sequence=finished.stop_sequence,
        usage=_usage(finished),
    )


def _usage(finished: GenerationFinished) -> Usage:
    """Anthropic counts cache reads apart from ``input_tokens``."""
    return Usage(
        input_tokens=finished.prompt_tokens - finished.cached_prompt_tokens,
        output_tokens=finished.completion_tokens,
        cache_read_input_tokens=finished.cached_prompt_tokens,
    )


def _model_object(name: str, display_name: str, created_at: str) -> ModelObject:
    return ModelObject(id=name, display_name=display_name, created_at=created_at)


def _position(ids: list[str], model_id: str) -> int:
    try:
        return ids.index(model_id)
    except ValueError:
        raise NotFoundError(f"model: {model_id}") from None
