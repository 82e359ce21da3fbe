"""Request shapes of the HTTP API, validated into the router's own errors.

Only the fields the router acts on are typed; everything else in a chat request is kept
verbatim (``extra="allow"``) and forwarded unchanged. Validation failures become one
``InvalidRequestError`` whose ``param`` names the field, never a 422 or a 500.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    ValidationError,
)

from router.chat.model import MAX_MESSAGES
from router.config import Strategy
from router.errors import InvalidRequestError
from router.jsonio import JSONDecodeError, loads
from router.policy import request_needs

# Bounds checked at the edge, before anything walks the body (400, never a 500);
# MAX_MESSAGES comes from the chat model, which the codecs share.
MAX_JSON_DEPTH = 64


class RouterOptions(BaseModel):
    """The optional ``router`` body field; stripped before forwarding."""

    model_config = ConfigDict(extra="forbid")

    max_cost_usd: float | None = Field(None, gt=0)
    models: list[str] | None = Field(None, min_length=1)
    strategy: Strategy | None = None
    seed: int | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1)
    messages: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_MESSAGES)
    # Strict: a field the router acts on must mean to the provider what it meant here
    # ("stream": "no" would be read as false and forwarded as a string).
    stream: StrictBool = False
    n: StrictInt | None = Field(None, ge=1)
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    stream_options: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    functions: list[dict[str, Any]] | None = None
    router: RouterOptions | None = None

    _body: dict[str, Any] = PrivateAttr(default_factory=dict)
    _typed: Any = PrivateAttr(default=None)
    _front: str = PrivateAttr(default="openai-chat")

    @property
    def front(self) -> str:
        """The protocol the client spoke (``openai-chat`` unless a front set it)."""
        return self._front

    def set_typed(self, typed: Any, front: str) -> None:
        """The typed request a front of another protocol decoded (router.serving.fronts)."""
        self._typed, self._front = typed, front

    def typed(self) -> Any:
        """The request as the typed chat model (``router.chat``), decoded once, on first
        use: only when a candidate's provider speaks another protocol."""
        if self._typed is None:
            from router.chat.codecs.openai_chat import decode_request

            self._typed = decode_request(self._body)
        return self._typed

    @property
    def output_token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def wants_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.get("include_usage"))

    def needs(self) -> frozenset[str]:
        """Capabilities the request needs of a model (matched against ``supports``)."""
        return request_needs(
            {"messages": self.messages, "tools": self.tools, "functions": self.functions}
        )


class LeaderboardRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] | None = Field(None, min_length=1, max_length=MAX_MESSAGES)
    prompt: str | None = None
    top_k: int | None = Field(None, ge=2, le=64)
    max_tokens: int | None = Field(None, ge=1)

    def chat_messages(self) -> list[dict[str, Any]]:
        if self.messages:
            return self.messages
        if self.prompt:
            return [{"role": "user", "content": self.prompt}]
        raise InvalidRequestError(
            "give 'messages' (a chat message list) or 'prompt' (text)", param="messages"
        )


def _field_error(exc: ValidationError) -> InvalidRequestError:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"])
    kind = err["type"]
    if kind == "missing":
        msg = f"'{loc}' is required"
    elif kind == "extra_forbidden":
        msg = f"unknown field '{loc}'"
    else:
        msg = f"'{loc}': {err['msg'].removeprefix('Value error, ')}"
    return InvalidRequestError(msg, param=loc or None)


def parse_json_object(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise InvalidRequestError("request body is empty; send a JSON object")
    try:
        data = loads(raw)
    except JSONDecodeError as exc:
        raise InvalidRequestError(f"request body is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidRequestError("request body must be a JSON object")
    depth = json_depth(data, MAX_JSON_DEPTH)
    if depth > MAX_JSON_DEPTH:
        raise InvalidRequestError(
            f"request body nests JSON deeper than {MAX_JSON_DEPTH} levels; flatten it"
        )
    return data


def json_depth(value: Any, limit: int) -> int:
    """How deep ``value`` nests (a scalar is 0), counted without recursion and given up
    once past ``limit``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > deepest:
            deepest = d
            if deepest > limit:
                return deepest
        children = v.values() if isinstance(v, dict) else v
        stack.extend((c, d + 1) for c in children if isinstance(c, dict | list))
    return deepest if isinstance(value, dict | list) else 0


def parse_chat(data: dict[str, Any], *, max_n: int) -> ChatRequest:
    try:
        req = ChatRequest.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc) from exc
    req._body = data
    if req.n is not None and req.n > max_n:
        raise InvalidRequestError(f"'n' is {req.n}; at most {max_n} choices per request", param="n")
    return req


def parse_leaderboard(data: dict[str, Any]) -> LeaderboardRequest:
    return parse_model(LeaderboardRequest, data)


M = TypeVar("M", bound=BaseModel)


def parse_model(model: type[M], data: dict[str, Any]) -> M:
    """``data`` validated as ``model``; a failure is a 400 naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc) from exc
