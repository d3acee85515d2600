"""Backends on a fleet of OpenAI-compatible servers (vLLM, SGLang): an HTTP client with retries
(``client``), a router that keeps each problem on one server (``router``), the policy over
``/v1/completions`` (``policy``) and the PRM transport (``transport``). ``connect`` opens one fleet."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import ConfigError
from .client import EndpointError, HttpClient, RequestRejected, RetryPolicy
from .policy import HttpPolicy, LazyTokenizer
from .router import ENDPOINTS_ENV, Router, discover_model, endpoints_from_env, parse_endpoints
from .transport import HttpTransport


@dataclass(frozen=True)
class Fleet:
    """Servers of one model behind a router, with that model's tokenizer read locally."""

    router: Router
    tokenizer: LazyTokenizer
    model: str | None  # the name the servers serve it under
    max_model_len: int | None

    def policy(self) -> HttpPolicy:
        return HttpPolicy(self.router, self.tokenizer, model=self.model, max_model_len=self.max_model_len)

    def transport(self) -> HttpTransport:
        return HttpTransport(self.router, self.tokenizer, model=self.model)


def connect(
    endpoints: Sequence[str],
    local_model: str | None,
    client: HttpClient,
    *,
    role: str = "policy",
    max_model_len: int | None = None,
) -> Fleet:
    """The fleet at ``endpoints``. The tokenizer is read from ``local_model`` when it is a directory,
    else from the directory the servers report as the model's ``root`` (servers started from a local
    path on this machine). ``max_model_len`` stands in when the servers do not report theirs."""
    urls = parse_endpoints(endpoints)
    served = discover_model(urls)
    local = [p for p in (local_model, served.root if served else None) if p and os.path.isdir(p)]
    if not local:
        raise ConfigError(
            f"the {role} fleet needs the served model's tokenizer on this machine: set its model to a local "
            f"directory holding it (servers report {served.root if served else 'nothing'!r})"
        )
    name = served.name if served else None
    return Fleet(
        Router(urls, client), LazyTokenizer(local[0]), name, (served.max_model_len if served else None) or max_model_len
    )


__all__ = [
    "ENDPOINTS_ENV",
    "EndpointError",
    "Fleet",
    "HttpClient",
    "HttpPolicy",
    "HttpTransport",
    "LazyTokenizer",
    "RequestRejected",
    "RetryPolicy",
    "Router",
    "connect",
    "endpoints_from_env",
    "parse_endpoints",
]
