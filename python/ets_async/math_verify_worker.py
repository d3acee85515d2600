"""One math-verify worker process, run by path by ``math_verify_pool`` (never imported).

It imports nothing of ets_async, so starting it never loads the package, torch or vllm. math-verify's
own timeouts use ``signal.alarm``; they are off here, since the pool bounds each call by killing a
worker that overruns. Protocol: one JSON line ``{"ready": true}`` once math-verify is loaded, then one
JSON reply line per request line ``["gold", "pred"]``: ``{"eq": bool}``, plus ``"error"`` on an
exception.
"""

from __future__ import annotations

import json
import logging
import sys

from math_verify import parse, verify


def _wrap(answer: str) -> str:
    """An answer as math-verify's LaTeX parser expects it: inside ``$...$``."""
    answer = answer.strip()
    if answer.startswith("$") and answer.endswith("$") and len(answer) > 1:
        return answer
    return "$" + answer + "$"


def _reply(line: str) -> dict[str, object]:
    try:
        gold, pred = json.loads(line)
        verdict = verify(
            parse(_wrap(gold), parsing_timeout=None), parse(_wrap(pred), parsing_timeout=None), timeout_seconds=None
        )
        return {"eq": bool(verdict)}
    except Exception as exc:  # math-verify normally swallows its errors; be safe anyway
        return {"eq": False, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}


def main() -> None:
    logging.disable(logging.WARNING)
    parse(_wrap("1"), parsing_timeout=None)  # load the parser before saying ready
    sys.stdout.write(json.dumps({"ready": True}) + "\n")
    sys.stdout.flush()
    for line in sys.stdin:
        sys.stdout.write(json.dumps(_reply(line)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
