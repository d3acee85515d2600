"""The run-file record: one problem's result plus the search settings and the session that made it.

What ``ets-async run`` writes one JSON line of per problem, and what every reader of run files gets
back (``results.read_results``). A line's ``version`` says which form it was written in; reading
upgrades it: version 1 (no ``version`` key) had no ``error_kind``, which is inferred from the error
message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .types import ProblemResult

__all__ = ["RECORD_VERSION", "RunInfo", "RunRecord"]

RECORD_VERSION = 2


@dataclass(frozen=True)
class RunInfo:
    """Which session wrote a record, and when: ``elapsed_s`` counts from that session's start (once
    its backends were up), so a session lasted as long as its last record."""

    session: str
    elapsed_s: float
    label: str | None = None  # names the run where several share a method and width


@dataclass
class RunRecord(ProblemResult):
    """A ``ProblemResult`` as a run file holds it. ``config`` is the ``SearchConfig`` as written
    (a dict: a file may come from a version with other settings); ``run`` is None in files written
    by hand or by tools that do not time their sessions."""

    config: dict[str, Any] = field(default_factory=dict)
    run: RunInfo | None = None

    @classmethod
    def of(
        cls, result: ProblemResult, config: Any, *, session: str, elapsed_s: float, label: str | None = None
    ) -> RunRecord:
        """The record of ``result`` searched with ``config`` (a ``SearchConfig``) by ``session``."""
        fields = {name: getattr(result, name) for name in ProblemResult.__dataclass_fields__}
        return cls(**fields, config=config.model_dump(mode="json"), run=RunInfo(session, round(elapsed_s, 4), label))

    @property
    def label(self) -> str:
        """The run's label if it has one, else its method."""
        return self.run.label if self.run is not None and self.run.label else self.method

    def to_dict(self) -> dict[str, Any]:
        """The run-file line, in the current version's form."""
        record = {"version": RECORD_VERSION, **super().to_dict(), "config": self.config}
        if self.run is not None:
            record["run"] = {key: value for key, value in vars(self.run).items() if value is not None}
        return record

    @classmethod
    def _fields_from_dict(cls, data: Mapping[str, Any]) -> dict[str, Any]:
        run = data.get("run")
        version = data.get("version", 1)
        if not isinstance(version, int) or version > RECORD_VERSION:
            raise ValueError(
                f"record version {version!r}: this version of ets_async reads versions 1 to {RECORD_VERSION}"
            )
        return {
            **super()._fields_from_dict(data),
            "config": dict(data.get("config") or {}),
            "run": None
            if not isinstance(run, Mapping)
            else RunInfo(str(run["session"]), float(run["elapsed_s"]), run.get("label")),
        }
