"""Every Python block of the README (and of docs/) runs as printed, saved as a script, in a fresh
process: on the engine-test model (``ETS_ASYNC_MODEL``, the documented setting that names the default
policy), and for the fleet example against a real local vLLM server standing in for its servers
(its addresses and model folder are the only substitutions), and for the OpenAI client example
against ``ets-async serve`` started here (its address is the only substitution). A script that forgets the ``__main__``
guard stops with ``UnguardedScriptError``, which says where the guard goes."""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from ets_async import models

ROOT = Path(__file__).resolve().parent.parent
FLEET_URLS = ("http://gpu1:8000", "http://gpu2:8000")
FLEET_MODEL = "/models/qwen-math"
SERVE_URL = "http://localhost:8000"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)

pytestmark = pytest.mark.engine


def python_blocks() -> list[tuple[str, str]]:
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("**/*.md"))]
    return [
        (f"{doc.relative_to(ROOT)}#{i}", code)
        for doc in docs
        for i, code in enumerate(BLOCK.findall(doc.read_text()), 1)
    ]


def example_env() -> dict[str, str]:
    return {**os.environ, models.POLICY_ENV: models.TEST_POLICY, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}


def run_script(code: str, tmp_path: Path, timeout_s: float = 600) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(code)
    return subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=example_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@contextlib.contextmanager
def served(tmp_path: Path, start_timeout_s: float = 400) -> Iterator[str]:
    """``ets-async serve`` on the engine-test model on a free port, until it answers /health; its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "ets_async", "serve", "--port", str(port),
               "--engine-set", "max_model_len=2048", "--engine-set", "cpu_kv_cache_gib=1"]
    with open(tmp_path / "serve.log", "w") as log:
        server = subprocess.Popen(command, cwd=tmp_path, env=example_env(), stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "the server did not start in time"
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_the_readme_has_the_examples_this_test_knows():
    names = [name for name, _ in python_blocks()]
    assert len(names) >= 3 and any(FLEET_URLS[0] in code for _, code in python_blocks()), names


@pytest.mark.parametrize("name", [name for name, _ in python_blocks()])
def test_every_python_block_runs_as_a_script(name, tmp_path, no_shared_engine):
    from ets_async.local_servers import local_servers

    code = dict(python_blocks())[name]
    if SERVE_URL in code:  # a served ets-async in place of the one the example's reader started
        with served(tmp_path) as url:
            done = run_script(code.replace(SERVE_URL, url), tmp_path)
    elif FLEET_URLS[0] not in code:
        done = run_script(code, tmp_path)
    else:  # real servers in place of the fleet's
        model = models.resolve_model(models.TEST_POLICY)
        with local_servers(model, count=len(FLEET_URLS), max_model_len=2048, log_dir=tmp_path / "servers") as servers:
            for url, server in zip(FLEET_URLS, servers, strict=True):
                code = code.replace(url, server.url)
            done = run_script(code.replace(FLEET_MODEL, model), tmp_path)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert done.stdout.strip(), f"{name} printed nothing"


def test_a_script_without_the_guard_is_told_where_it_goes(tmp_path, no_shared_engine):
    first = python_blocks()[0][1]
    head, _, guarded = first.partition('if __name__ == "__main__":')
    assert guarded, "the first README example has no __main__ guard"
    body = textwrap.dedent("\n".join(guarded.splitlines()[1:]))
    done = run_script(head + body, tmp_path, timeout_s=300)
    assert done.returncode != 0
    assert "UnguardedScriptError" in done.stderr and "if __name__ == \"__main__\":" in done.stderr, done.stderr[-4000:]
