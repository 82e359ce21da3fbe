"""One typed model of a chat, whatever wire protocol it came in or goes out on.

The router speaks three protocols at both ends (``openai-chat``, ``openai-responses``,
``anthropic-messages``). Inside, a request, an answer and a stream are these types and
nothing else: a codec per protocol turns wire JSON into them and back
(``router/chat/codecs/``), so serving never sees a provider's JSON and a new protocol is
a new codec, not a branch inside an old one (TensorZero's and vLLM's layout).

What no two protocols mean the same by stays in ``extras``: a dict of the original
protocol's fields, carried verbatim only to an upstream of that same protocol
(``ChatRequest.extras_protocol`` says which). A field that changes the answer and that a
target protocol cannot express is never dropped: the codec reports it
(``Unsupported``) and the candidates speaking that protocol become ineligible.

Plain dataclasses with slots, not pydantic: these are built and read on every request
and every stream event, where validation has already happened in the codec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant"]
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "refusal", "error"]
Protocol = Literal["openai-chat", "openai-responses", "anthropic-messages"]
PROTOCOLS: tuple[Protocol, ...] = ("openai-chat", "openai-responses", "anthropic-messages")

# The most turns (chat messages, Responses input items) a request may hold: a bound
# checked at the edge, before anything walks the body (400, never a 500). Here, in the
# leaf every codec imports, so that a codec need not import the pydantic layer for it.
MAX_MESSAGES = 4096


# ---------------------------------------------------------------- content parts


@dataclass(slots=True)
class Text:
    text: str
    # Anthropic prompt caching: {"type": "ephemeral", "ttl"?: "5m" | "1h"}; kept only
    # for an Anthropic upstream (others cache by themselves).
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class Image:
    """An image by URL, inline data (``data`` base64, ``media_type`` set) or an uploaded
    file's id (Responses ``input_image.file_id``, Anthropic's ``file`` source)."""

    url: str | None = None
    data: str | None = None
    media_type: str | None = None
    detail: str | None = None  # OpenAI's "low" | "high" | "auto"
    cache_control: dict[str, Any] | None = None
    file_id: str | None = None


@dataclass(slots=True)
class Document:
    """A file or document part (PDF, text) where a protocol has one."""

    data: str | None = None  # base64
    media_type: str | None = None
    url: str | None = None
    file_id: str | None = None
    filename: str | None = None
    title: str | None = None
    cache_control: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolCall:
    """The assistant calling a tool. ``arguments`` is the JSON text as the model wrote it
    (OpenAI sends a string, Anthropic an object: codecs convert at the edge)."""

    id: str
    name: str
    arguments: str
    # A call of a custom (freeform) tool: ``arguments`` is its raw ``input`` text, not
    # JSON (Responses ``custom_tool_call``; see ``Tool.custom``).
    custom: bool = False


@dataclass(slots=True)
class ToolResult:
    """The result of a tool call, given back by the client."""

    call_id: str
    content: list[Text | Image | Document]
    is_error: bool = False
    cache_control: dict[str, Any] | None = None
    custom: bool = False  # the result of a custom tool's call (``custom_tool_call_output``)


@dataclass(slots=True)
class Reasoning:
    """A model's reasoning (Anthropic thinking, Responses reasoning items).

    ``signature`` (Anthropic) or ``encrypted`` (OpenAI ``encrypted_content``, Anthropic
    ``redacted_thinking`` data) is what the provider needs back to trust the block;
    ``origin`` is the provider protocol that produced it: a block goes back only to the
    protocol that made it (and is dropped, counted, on a switch)."""

    text: str = ""
    signature: str | None = None
    encrypted: str | None = None
    redacted: bool = False
    origin: Protocol | None = None
    id: str | None = None  # Responses' reasoning item id
    summary: list[str] = field(default_factory=list)


Part = Text | Image | Document | ToolCall | ToolResult | Reasoning


@dataclass(slots=True)
class Message:
    """One turn. Tool results are user-side parts (as Anthropic has them); a codec for a
    protocol with a ``tool`` role (OpenAI chat) or items (Responses) splits them out."""

    role: Role
    parts: list[Part]
    name: str | None = None


# ---------------------------------------------------------------- tools and output


@dataclass(slots=True)
class Tool:
    name: str
    description: str | None = None
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None
    cache_control: dict[str, Any] | None = None
    # A Responses custom tool: its input is free text (``format``: OpenAI's
    # ``{"type": "text"}`` or a ``grammar``); ``parameters`` is unused. Protocols with
    # function tools only get it as a function taking one string, ``input``
    # (router/chat/codecs/_custom.py).
    custom: bool = False
    format: dict[str, Any] | None = None


@dataclass(slots=True)
class ToolChoice:
    """``auto`` (the model decides), ``required`` (some tool: Anthropic ``any``),
    ``none``, or ``tool`` with ``name``; ``parallel`` None: the provider's default."""

    mode: Literal["auto", "required", "none", "tool"] = "auto"
    name: str | None = None
    parallel: bool | None = None


@dataclass(slots=True)
class OutputFormat:
    kind: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    # The schema's description (OpenAI chat and Responses have one): the model reads it.
    description: str | None = None


@dataclass(slots=True)
class ReasoningHint:
    """A reasoning control: a hint, not a field that must be honoured. Mapped to the
    target's own control (OpenAI ``reasoning_effort`` / Responses ``reasoning.effort`` /
    Anthropic ``thinking.budget_tokens``) where it has one, else left out and logged."""

    effort: Literal["minimal", "low", "medium", "high"] | None = None
    budget_tokens: int | None = None
    enabled: bool = True
    summary: str | None = None  # Responses' reasoning.summary


# ---------------------------------------------------------------- request


@dataclass(slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    system: list[Text] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    output: OutputFormat | None = None
    reasoning: ReasoningHint | None = None
    max_output_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    n: int | None = None
    seed: int | None = None
    stream: bool = False
    stream_usage: bool = False  # the client asked for usage in the stream (OpenAI chat)
    user: str | None = None  # end-user id / metadata.user_id
    router: dict[str, Any] | None = None  # the ``router`` body field, never forwarded
    extras: dict[str, Any] = field(default_factory=dict)
    extras_protocol: Protocol | None = None  # the protocol ``extras`` is in


# ---------------------------------------------------------------- usage


@dataclass(slots=True)
class Usage:
    """Tokens by the class a provider bills them at.

    ``input_tokens`` is *every* input token (uncached + cache reads + cache writes);
    ``output_tokens`` every output token, reasoning included; the classes below are
    subsets. Normalisers per protocol fill them (Anthropic reports input *excluding*
    cache, OpenAI including it): ``uncached_input_tokens`` is derived, never reported.
    ``None`` means "not reported", which differs from 0. ``doubtful``: the provider's
    object had to be repaired (a count missing, negative or not a number, a class larger
    than its whole), so a bill must not trust it as it stands (router/serving/bills.py).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int | None = None
    cache_write_tokens: int | None = None  # at the 5-minute (or unspecified) rate
    cache_write_1h_tokens: int | None = None
    reasoning_tokens: int | None = None
    doubtful: bool = False

    @property
    def uncached_input_tokens(self) -> int:
        cached = (
            (self.cache_read_tokens or 0)
            + (self.cache_write_tokens or 0)
            + (self.cache_write_1h_tokens or 0)
        )
        return max(0, self.input_tokens - cached)


# ---------------------------------------------------------------- answer


@dataclass(slots=True)
class Answer:
    """A whole answer (one choice; ``n`` > 1 answers carry ``choices``)."""

    id: str
    model: str
    parts: list[Part]
    finish: FinishReason = "stop"
    usage: Usage | None = None
    refusal: str | None = None
    choices: list[Answer] = field(default_factory=list)  # the other choices when n > 1
    created: int = 0
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. system_fingerprint
    extras_protocol: Protocol | None = None


# ---------------------------------------------------------------- stream events


@dataclass(slots=True)
class StreamStart:
    id: str
    model: str
    created: int = 0
    usage: Usage | None = None  # Anthropic reports the input in message_start


@dataclass(slots=True)
class TextDelta:
    text: str
    index: int = 0  # the choice (n > 1)


@dataclass(slots=True)
class ReasoningDelta:
    text: str = ""
    signature: str | None = None
    encrypted: str | None = None
    redacted: bool = False
    index: int = 0


@dataclass(slots=True)
class ToolCallStart:
    call_index: int  # position of the call in the answer
    id: str
    name: str
    index: int = 0
    custom: bool = False  # a custom tool's call: its deltas are raw input text


@dataclass(slots=True)
class ToolCallDelta:
    call_index: int
    arguments: str
    index: int = 0


@dataclass(slots=True)
class ToolCallEnd:
    call_index: int
    index: int = 0


@dataclass(slots=True)
class UsageEvent:
    usage: Usage


@dataclass(slots=True)
class Finish:
    reason: FinishReason
    index: int = 0


StreamEvent = (
    StreamStart
    | TextDelta
    | ReasoningDelta
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | UsageEvent
    | Finish
)


# ---------------------------------------------------------------- what a codec cannot map


@dataclass(frozen=True, slots=True)
class Unsupported:
    """A request field (dotted path, in the client's protocol) that a target protocol
    cannot express and that would change the answer: candidates speaking that protocol
    are not eligible; with none left, a 400 names ``field``."""

    field: str
    protocol: Protocol
    why: str
