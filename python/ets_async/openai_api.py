"""The OpenAI wire format of ``ets-async serve``: a chat or completions request becomes one problem and
its search settings, a search's result becomes a response or a stream of chunks, and errors become
OpenAI's error objects. No HTTP here: ``service.py`` routes requests to these functions.

The search a request asks for, lowest precedence first: the server's config; a model-name suffix
(``model="NAME:ets-16"``: method ets, width 16; ``NAME:best_of_n`` keeps the width); the OpenAI
fields ``max_tokens`` / ``max_completion_tokens`` (tokens per trajectory), ``temperature``,
``top_p`` and ``seed``; then the ``search`` object (``extra_body={"search": {...}}``) with the fields
in ``SEARCH_FIELDS``, ``budget_tokens`` and ``deadline_s``. ``budget_tokens`` bounds the tokens the
whole search generates: each of the ``width`` trajectories may generate ``budget_tokens // width``.
Other OpenAI fields are ignored, except ``n``, which must be 1 (one answer per search).

The problem is the last user message of a chat (earlier turns and system messages are not sent:
the search's own system prompt asks for the step format and the answer marker that the search reads)
or a completion's ``prompt``.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from .config import SearchConfig
from .errors import ConfigError, ProblemError
from .registry import METHOD_NAMES
from .types import Candidate, ErrorKind, Problem, ProblemResult
from .voting import aggregate_scores, vote_table

__all__ = [
    "SEARCH_FIELDS",
    "ApiError",
    "SearchRequest",
    "answer_chunks",
    "metadata",
    "models_list",
    "opening_chunk",
    "parse_request",
    "response_body",
]

Kind = Literal["chat", "completion"]

SEARCH_FIELDS = (
    "method",
    "width",
    "max_tokens",
    "stop_when",
    "stop_share",
    "stop_confidence",
    "stop_min_finished",
    "wave_size",
    "answer_selection",
    "score_aggregation",
)
"""The SearchConfig fields a request may set in its ``search`` object (the rest are the server's)."""

_OPENAI_FIELDS = {"max_tokens": "max_tokens", "max_completion_tokens": "max_tokens", "temperature": "temperature",
                  "top_p": "top_p", "seed": "seed"}
_MODEL_SUFFIX = re.compile(r"^(?P<name>.*):(?P<method>[a-z_]+)(?:-(?P<width>[0-9]+))?$")
_ERROR_TYPES = {401: "authentication_error", 404: "not_found_error", 429: "rate_limit_error", 504: "timeout_error"}


class ApiError(Exception):
    """A request that gets an OpenAI error object instead of an answer."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, retry_after_s: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.retry_after_s = retry_after_s

    def body(self) -> dict[str, Any]:
        kind = _ERROR_TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": None}}


@dataclass(frozen=True)
class SearchRequest:
    """One OpenAI request, read: the problem, how to search it, and how to answer."""

    kind: Kind
    id: str
    model: str
    problem: Problem
    config: SearchConfig
    deadline_s: Any  # as sent (None: the server's default); the service checks it
    stream: bool
    include_usage: bool
    created: int


def parse_request(body: Any, kind: Kind, base: SearchConfig, max_width: int) -> SearchRequest:
    """Read a ``/v1/chat/completions`` (``chat``) or ``/v1/completions`` body; ApiError 400 if it is bad."""
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, got {type(body).__name__}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "model must be a non-empty string", param="model")
    if body.get("n", 1) != 1:
        raise ApiError(400, "n must be 1: a search gives one answer", param="n")
    search = body.get("search") or {}
    if not isinstance(search, dict):
        raise ApiError(400, "search must be an object", param="search")
    if unknown := sorted(set(search) - set(SEARCH_FIELDS) - {"budget_tokens", "deadline_s"}):
        allowed = ", ".join((*SEARCH_FIELDS, "budget_tokens", "deadline_s"))
        raise ApiError(400, f"unknown search field {unknown[0]!r}; allowed: {allowed}", param="search")
    changes = _model_suffix(model)
    changes.update({field: body[key] for key, field in _OPENAI_FIELDS.items() if body.get(key) is not None})
    changes.update({key: value for key, value in search.items() if key in SEARCH_FIELDS})
    config = _search_config(base, changes, search.get("budget_tokens"), max_width)
    request_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    text = _chat_problem(body.get("messages")) if kind == "chat" else _completion_problem(body.get("prompt"))
    try:
        problem = Problem.coerce(Problem(request_id, text), 0)
    except ProblemError as exc:
        raise ApiError(400, str(exc), param="messages" if kind == "chat" else "prompt") from None
    options = body.get("stream_options") or {}
    return SearchRequest(
        kind=kind,
        id=request_id,
        model=model,
        problem=problem,
        config=config,
        deadline_s=search.get("deadline_s"),
        stream=body.get("stream") is True,
        include_usage=isinstance(options, dict) and options.get("include_usage") is True,
        created=int(time.time()),
    )


def _model_suffix(model: str) -> dict[str, Any]:
    """The search a model name's suffix names: ``NAME:METHOD`` or ``NAME:METHOD-WIDTH``."""
    match = _MODEL_SUFFIX.match(model)
    if match is None:
        return {}
    if match["method"] not in METHOD_NAMES:
        raise ApiError(400, f"unknown search method {match['method']!r} in model {model!r}; methods: "
                       f"{', '.join(METHOD_NAMES)}", param="model")
    return {"method": match["method"]} | ({"width": int(match["width"])} if match["width"] else {})


def _search_config(base: SearchConfig, changes: dict[str, Any], budget_tokens: Any, max_width: int) -> SearchConfig:
    if isinstance(changes.get("max_tokens"), int):
        changes["max_step_tokens"] = min(base.max_step_tokens, changes["max_tokens"])  # a step fits a trajectory
    config = _replaced(base, changes)
    if config.width > max_width:
        raise ApiError(400, f"width may be at most {max_width} on this server, got {config.width}", param="search")
    if budget_tokens is None:
        return config
    if isinstance(budget_tokens, bool) or not isinstance(budget_tokens, int) or budget_tokens < config.width:
        raise ApiError(
            400,
            f"budget_tokens must be a whole number >= the width ({config.width}), got {budget_tokens!r}",
            param="search",
        )
    per_trajectory = min(budget_tokens // config.width, config.max_tokens)
    return _replaced(
        config, {"max_tokens": per_trajectory, "max_step_tokens": min(config.max_step_tokens, per_trajectory)}
    )


def _replaced(config: SearchConfig, changes: dict[str, Any]) -> SearchConfig:
    try:
        return config.replace(**changes)
    except ConfigError as exc:
        raise ApiError(400, str(exc), param="search") from None


def _chat_problem(messages: Any) -> str:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "messages must be a non-empty list", param="messages")
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text(message.get("content"), "messages")
    raise ApiError(400, "messages must hold a user message: the problem", param="messages")


def _completion_problem(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise ApiError(400, "prompt must be one string: the problem", param="prompt")
    return prompt


def _text(content: Any, param: str) -> str:
    """A message's text: a string, or the text parts of a list of content parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise ApiError(400, "a user message's content must be text", param=param)


def _chosen(result: ProblemResult, config: SearchConfig) -> Candidate | None:
    """The trajectory that answers: the best-scored one with the chosen answer (else the best-scored)."""
    voters = [c for c in result.candidates if c.answer == result.answer] or result.candidates
    return max(voters, key=lambda c: aggregate_scores(c.step_scores, config.score_aggregation), default=None)


def metadata(result: ProblemResult, config: SearchConfig) -> dict[str, Any]:
    """What the search did, for the response's ``ets`` field (runs a vote: call it off the event loop)."""
    votes = vote_table([(c.answer, c.step_scores) for c in result.candidates], config.answer_selection,
                       config.score_aggregation)
    return {
        "method": config.method,
        "width": config.width,
        "answer": result.answer,
        "anytime": result.error_kind == ErrorKind.TIMEOUT,
        "stop_reason": result.metrics.stop_reason,
        "votes": [{"answer": v.answer, "weight": v.weight, "count": v.count} for v in votes],
        "candidates": [
            {"answer": c.answer, "score": aggregate_scores(c.step_scores, config.score_aggregation), "tokens": c.tokens}
            for c in result.candidates
        ],
        "metrics": result.metrics.to_dict(),
    }


def _usage(result: ProblemResult) -> dict[str, Any]:
    """Every token the search sent and generated: prompts (cached prefixes included) and steps."""
    metrics = result.metrics
    prompt, generated = int(metrics.prompt_tokens or 0), int(metrics.generated_tokens or 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": generated,
        "total_tokens": prompt + generated,
        "prompt_tokens_details": {"cached_tokens": int(metrics.prefix_cached_tokens or 0)},
    }


def _finish_reason(result: ProblemResult) -> str:
    """``stop``; ``length`` for an anytime answer (the deadline cut the search short) and for a search
    whose budget ran out before any trajectory finished (its content is empty)."""
    return "length" if result.error_kind == ErrorKind.TIMEOUT or not result.candidates else "stop"


def _object(request: SearchRequest, chunk: bool) -> str:
    if request.kind == "chat":
        return "chat.completion.chunk" if chunk else "chat.completion"
    return "text_completion"


def _envelope(request: SearchRequest, chunk: bool) -> dict[str, Any]:
    return {"id": request.id, "object": _object(request, chunk), "created": request.created, "model": request.model}


def response_body(request: SearchRequest, result: ProblemResult, meta: dict[str, Any]) -> dict[str, Any]:
    """The non-streamed answer: the chosen trajectory as ``choices[0]``, ``usage``, and ``ets``."""
    chosen = _chosen(result, request.config)
    text = chosen.text if chosen is not None else ""
    choice: dict[str, Any] = {"index": 0, "finish_reason": _finish_reason(result), "logprobs": None}
    if request.kind == "chat":
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {**_envelope(request, False), "choices": [choice], "usage": _usage(result), "ets": meta}


def _chunk(
    request: SearchRequest, text: str | None, finish_reason: str | None, *, role: bool = False
) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason, "logprobs": None}
    if request.kind == "chat":
        choice["delta"] = ({"role": "assistant"} if role else {}) | ({"content": text} if text is not None else {})
    else:
        choice["text"] = text or ""
    return {**_envelope(request, True), "choices": [choice]}


def opening_chunk(request: SearchRequest) -> dict[str, Any]:
    """The first chunk of a stream, sent before the search starts (the assistant's role)."""
    return _chunk(request, "" if request.kind == "chat" else None, None, role=True)


def answer_chunks(request: SearchRequest, result: ProblemResult, meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The chunks of a finished search: the chosen trajectory line by line, a last chunk with the finish
    reason and ``ets``, and with ``stream_options.include_usage`` a usage chunk (no choices)."""
    chosen = _chosen(result, request.config)
    lines = chosen.text.splitlines(keepends=True) if chosen is not None else []
    chunks = [_chunk(request, line, None) for line in lines]
    chunks.append({**_chunk(request, None, _finish_reason(result)), "ets": meta})
    if request.include_usage:
        chunks.append({**_envelope(request, True), "choices": [], "usage": _usage(result)})
    return chunks


def models_list(served: str) -> dict[str, Any]:
    """``GET /v1/models``: the served model, and the same with each method's suffix."""
    names = [served, *(f"{served}:{method}" for method in METHOD_NAMES)]
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "ets-async"} for name in names],
    }
