"""Typed, validated configuration: what to search (SearchConfig) and where to run it (EngineConfig),
and the one way to load them: defaults < a base mapping < a recipe or YAML file < fields < KEY=VALUE
settings (``load``). Every bad value raises ConfigError naming the field and what it got.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .registry import (
    METHOD_NAMES,
    PRM_CHOICES,
    PRM_NAMES,
    BeamSettings,
    DvtsSettings,
    EtsSettings,
    ParticleFilterSettings,
    StopSettings,
    check_choice,
)
from .voting import RENAMED_SELECTIONS, AnswerSelection, StepAggregation, resolve_selection

Dtype = Literal["auto", "float32", "bfloat16", "float16", "half", "float"]

DEFAULT_SYSTEM_PROMPT = (
    "Solve the math problem step by step, in plain words and arithmetic, without writing code. "
    "Separate the steps with a blank line. Put the final answer within \\boxed{}."
)

PAPER_TEMPERATURE = 1.0
"""The paper's policy sampling temperature (SPEC §9); the recipes keep it."""

RUNTIME: dict[str, Any] = {"runtime": True}
"""Marks a SearchConfig field that changes how fast a run goes but not what it computes."""


def renamed(old_to_new: Mapping[str, str]) -> dict[str, Any]:
    """Marks a SearchConfig field some of whose values were renamed, ``{old: new}``: configs and run files
    written before still say the old name (``results.settings_changed`` reads it as the new one)."""
    return {"renamed": dict(old_to_new)}


_YAML_ERRORS = (yaml.YAMLError, ValueError, RecursionError)
"""What yaml.safe_load raises on bad input: besides YAMLError, ValueError for impossible dates
("2001-02-30") and bad tagged values ("!!float x"), RecursionError for very deep nesting."""


def _recipe_dir() -> importlib.resources.abc.Traversable:
    return importlib.resources.files("ets_async") / "recipes"


def recipe_names() -> list[str]:
    """Names of the shipped recipes (``ets_16``, ``rebase_64``, ...: the paper's settings), sorted."""
    return sorted(p.name[: -len(".yaml")] for p in _recipe_dir().iterdir() if p.name.endswith(".yaml"))


def read_recipe(spec: str | Path) -> tuple[str, dict[str, Any]]:
    """``(label, fields)`` of a YAML file or a shipped recipe name (``ets_16`` or ``ets_16.yaml``)."""
    path = Path(spec)
    try:
        path = path.expanduser()
    except RuntimeError:  # "~name" for a user that does not exist: taken literally
        pass
    if path.is_file():
        label = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{label}: cannot read it as UTF-8 text: {exc}") from None
    else:
        name = str(spec)[: -len(".yaml")] if str(spec).endswith(".yaml") else str(spec)
        resource = _recipe_dir() / f"{name}.yaml"
        if "/" in name or not resource.is_file():
            raise ConfigError(
                f"{str(spec)!r} is neither a YAML file nor a shipped recipe; recipes: {', '.join(recipe_names())}"
            )
        label, text = f"recipe {name}", resource.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text) or {}
    except _YAML_ERRORS as exc:
        raise ConfigError(f"{label}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{label}: expected a mapping of fields, got {type(data).__name__}")
    if bad := [key for key in data if not isinstance(key, str)]:
        raise ConfigError(f"{label}: field names must be text, got {bad[0]!r} ({type(bad[0]).__name__})")
    return label, data


def _setting_value(raw: str) -> Any:
    """A KEY=VALUE value as YAML (numbers, booleans, null, lists), or the raw string if it is not YAML."""
    try:
        return yaml.safe_load(raw) if raw.strip() else raw
    except _YAML_ERRORS:
        return raw


class _Validated(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **values: Any) -> None:
        """Validate; a bad value raises ConfigError naming each bad field and what it got."""
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_describe(type(self).__name__, exc)) from None

    @classmethod
    def parse_settings(cls, items: Iterable[str]) -> dict[str, Any]:
        """``["width=8", "lambda_s=0"]`` as field values (read as YAML); unknown fields are refused by name."""
        known = sorted(cls.model_fields)
        values: dict[str, Any] = {}
        for item in items:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep or not key:
                raise ConfigError(f"{item!r}: expected KEY=VALUE")
            if key not in known:
                raise ConfigError(f"{item!r}: unknown {cls.__name__} field {key!r}; known fields: {', '.join(known)}")
            values[key] = _setting_value(raw)
        return values

    @classmethod
    def load(
        cls,
        source: str | Path | None = None,
        settings: Iterable[str] = (),
        *,
        base: Mapping[str, Any] | None = None,
        **fields: Any,
    ):
        """A validated config. Precedence, lowest first: the defaults, ``base``, ``source`` (a YAML
        file or a shipped recipe), ``fields`` that are not None, then ``settings`` (``KEY=VALUE``)."""
        values: dict[str, Any] = dict(base or {})
        label = "defaults"
        if source is not None:
            label, data = read_recipe(source)
            values.update(data)
        values.update({key: value for key, value in fields.items() if value is not None})
        values.update(cls.parse_settings(settings))
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{label}: {exc}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any):
        """Load from a YAML file; ``overrides`` win over the file."""
        return cls.load(path, **overrides)

    def replace(self, **changes: Any):
        """A validated copy with some fields changed."""
        return type(self)(**{**self.model_dump(), **changes})


def _describe(name: str, exc: ValidationError) -> str:
    lines = [f"invalid {name}:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(config)"
        lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)


class _SharedSearchConfig(_Validated):
    """The fields every method shares."""

    method: str = Field("ets", description=f"search method: {', '.join(METHOD_NAMES)}")
    width: int = Field(16, ge=1, le=4096, description="search budget W: trajectories per problem")
    temperature: float | None = Field(
        None,
        ge=0.0,
        description="policy sampling temperature; None = the policy's measured temperature (registry models), "
        "else the paper's 1.0",
    )
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_step_tokens: int = Field(256, ge=1, description="tokens per generated step")
    max_tokens: int = Field(1024, ge=1, description="generated tokens per trajectory")
    max_depth: int = Field(25, ge=1, description="steps per trajectory")
    softmax_temperature: float = Field(0.2, gt=0.0, description="REBASE softmax temperature T")
    step_delimiter: str = Field("\n\n", min_length=1)
    answer_markers: tuple[str, ...] = ("The answer is", "The final answer is", "final answer is")
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    prompt_template: str = Field("{problem}", description="user message; must contain {problem}")
    answer_selection: AnswerSelection = Field("weighted_majority", json_schema_extra=renamed(RENAMED_SELECTIONS))
    score_aggregation: StepAggregation = "last"
    seed: int = Field(0, ge=0)
    # runtime fields: how fast a run goes, not what it computes (a resumed run may change them)
    max_concurrent_problems: int = Field(8, ge=1, json_schema_extra=RUNTIME)
    request_rate_limit: float | None = Field(
        None, gt=0.0, description="engine requests per second; None = unlimited", json_schema_extra=RUNTIME
    )
    problem_timeout_s: float | None = Field(None, gt=0.0, json_schema_extra=RUNTIME)
    kv_block_size: int = Field(32, ge=1, description="block size of the block-granular KV metric")

    @field_validator("answer_selection", mode="before")
    @classmethod
    def _selection_by_its_new_name(cls, value: Any) -> Any:
        return resolve_selection(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> _SharedSearchConfig:
        check_choice("method", self.method, METHOD_NAMES)
        if "{problem}" not in self.prompt_template:
            raise ValueError("prompt_template must contain '{problem}'")
        if self.max_step_tokens > self.max_tokens:
            raise ValueError(f"max_step_tokens ({self.max_step_tokens}) exceeds max_tokens ({self.max_tokens})")
        return self

    @property
    def sampling_temperature(self) -> float:
        """The temperature as used: the configured (or the policy's) value, or the paper's."""
        return PAPER_TEMPERATURE if self.temperature is None else self.temperature


class SearchConfig(_SharedSearchConfig, EtsSettings, BeamSettings, DvtsSettings, ParticleFilterSettings, StopSettings):
    """What one search does: the shared fields, every method's own (``registry.METHOD_CHOICES``) and
    the stop rule's. Defaults are the paper's (SPEC §9) unless noted."""

    @model_validator(mode="after")
    def _check_stop_rule(self) -> SearchConfig:
        if self.stop_when == "budget":
            return self
        if self.answer_selection == "highest_score":
            raise ValueError(f"stop_when={self.stop_when} settles a vote; answer_selection=highest_score takes no vote")
        if self.stop_min_finished > self.width:
            raise ValueError(
                f"stop_min_finished ({self.stop_min_finished}) exceeds width ({self.width}): it could never stop"
            )
        if self.wave_size is not None and self.wave_size > self.width:
            raise ValueError(f"wave_size ({self.wave_size}) exceeds width ({self.width})")
        return self


class EngineConfig(_Validated):
    """Where the search runs: the policy engine, the PRM and the embedder."""

    model: str | None = Field(
        None,
        description="policy model: a path, a hub name or a registry name (ets_async.models); None = $ETS_ASYNC_MODEL, "
        "else the embedded default",
    )
    prm: str = Field("confidence", description="; ".join(f"{c.name}: {c.summary}" for c in PRM_CHOICES))
    arithmetic_check: bool = Field(
        False, description="cut a step's score to a tenth when its stated arithmetic is wrong"
    )
    prm_model: str | None = Field(
        None, description="PRM model; None = the policy model (judge PRM), the policy's registered verifier (verifier)"
    )
    prm_gpu_memory_utilization: float = Field(
        0.25, gt=0.0, le=1.0, description="GPU memory share of the PRM's own engine (qwen_prm, math_shepherd)"
    )
    prm_cpu_kv_cache_gib: int = Field(1, ge=1, description="KV cache (GiB) of the PRM's own engine on CPU")
    prm_devices: str | None = Field(
        None,
        pattern=r"^[0-9]+(,[0-9]+)*$",
        description="CUDA_VISIBLE_DEVICES of the PRM's own engine, e.g. '1' (policy on one GPU, PRM on "
        "another); None = the devices this process sees, shared with the policy",
    )
    embedder_model: str | None = Field(
        None, description="sentence-transformers model (path, name or registry name); None = all-MiniLM-L6-v2"
    )
    dtype: Dtype = Field(
        "auto",
        description="model dtype; auto = bfloat16 on GPUs and on CPUs with native bf16, float32 on other CPUs",
    )
    block_size: int | None = Field(32, ge=1, description="engine KV block size (32 suits CPU prefix caching)")
    max_model_len: int = Field(4096, ge=128)
    enforce_eager: bool = True
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    devices: str | None = Field(
        None,
        pattern=r"^[0-9]+(,[0-9]+)*$",
        description="CUDA_VISIBLE_DEVICES of the policy engine; None = this process's",
    )
    cpu_kv_cache_gib: int = Field(2, ge=1, description="VLLM_CPU_KVCACHE_SPACE (GiB) on CPU")
    cpu_cores: str = Field(
        "all",
        pattern=r"^(all|auto|[0-9]+(-[0-9]+)?(,[0-9]+(-[0-9]+)?)*)$",
        description="CPU cores of the engine's worker: all = every core this process may use; auto = vLLM's "
        "own choice (it keeps one core per worker for its scheduler); or a list such as 0-3,6",
    )
    max_num_seqs: int = Field(256, ge=1)
    num_kv_blocks: int | None = Field(
        None,
        ge=1,
        description="KV-cache blocks of the in-process engine (block_size tokens each); None = as many as "
        "cpu_kv_cache_gib or gpu_memory_utilization allow. Must hold one max_model_len sequence plus one block",
    )
    # Scale-out (backends/fleet): run the policy and the PRM on OpenAI-compatible servers instead.
    endpoints: tuple[str, ...] = Field(
        (), description="vLLM/SGLang server URLs; empty = $ETS_ASYNC_ENDPOINTS or in-process"
    )
    prm_endpoints: tuple[str, ...] = Field(
        (), description="servers of a trained PRM (prm='qwen_prm'/'math_shepherd') on a fleet"
    )
    request_timeout_s: float = Field(
        600.0,
        gt=0.0,
        description="time limit of one engine request (in-process or on a server), from submission to its "
        "final output; past it the request is aborted and its problem fails with RequestTimeoutError",
    )
    request_retries: int = Field(3, ge=1, description="attempts on one server before it is marked down")

    @field_validator("prm")
    @classmethod
    def _known_prm(cls, value: str) -> str:
        return check_choice("prm", value, PRM_NAMES)

    def prm_engine(self) -> EngineConfig:
        """The settings of the PRM's own engine: these, with the PRM's memory share and devices."""
        return self.model_copy(
            update={
                "gpu_memory_utilization": self.prm_gpu_memory_utilization,
                "cpu_kv_cache_gib": self.prm_cpu_kv_cache_gib,
                "num_kv_blocks": None,
                "devices": self.prm_devices,
            }
        )
