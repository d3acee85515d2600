"""The run file: one JSON line per finished problem, appended durably; resume by skipping ids already written."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .records import RunRecord

try:  # advisory lock against two runs appending to one file; POSIX only
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "HEADER_KEY",
    "ResultWriter",
    "header_differences",
    "read_header",
    "read_lines",
    "read_results",
    "read_runs",
    "settings_changed",
]

logger = logging.getLogger(__name__)

HEADER_KEY = "run_header"
"""A line ``{"run_header": {...}}`` describes the run; it is not a problem record."""

PathLike = str | os.PathLike[str]

def settings_changed(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"key: old -> new"`` for every search setting that differs between two configs as written in
    run files. Runtime fields (how fast a run goes, not what it computes: ``SearchConfig``'s fields
    marked ``runtime``) may differ. A field that one side does not have was written by a version of
    the package without it, which behaved as its default does: it counts as the default (None for a
    field this version does not know), so adding a setting does not stop older runs from resuming. A
    value written under a former name (a field marked ``renamed``) counts as its new name."""
    defaults, runtime, renamed = _search_fields()

    def value(config: Mapping[str, Any], key: str) -> Any:
        found = config.get(key, defaults.get(key))
        return renamed.get(key, {}).get(found, found) if isinstance(found, str) else found

    keys = sorted(k for k in set(old) | set(new) if k not in runtime)
    values = {k: (value(old, k), value(new, k)) for k in keys}
    return [f"{k}: {a!r} -> {b!r}" for k, (a, b) in values.items() if a != b]


class _Absent:
    def __repr__(self) -> str:
        return "(absent)"


_ABSENT = _Absent()


def header_differences(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``"key: old -> new"`` for every value that differs between two run headers, nested keys dotted
    (``config.width``); a key only one side has reads as ``(absent)`` on the other, as when a newer
    version of the package added a setting."""
    differences: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            differences += header_differences(a, b, f"{prefix}{key}.")
        elif a != b:
            differences.append(f"{prefix}{key}: {a!r} -> {b!r}")
    return differences


def _search_fields() -> tuple[dict[str, Any], set[str], dict[str, Mapping[str, Any]]]:
    """SearchConfig's defaults as a run file writes them, its runtime fields, and its renamed values
    (field -> {old: new}) (imported here: this module also runs standalone, with every field compared
    as written and no defaults)."""
    try:
        from .config import SearchConfig
    except ImportError:
        return {}, set(), {}
    fields = SearchConfig.model_fields
    defaults = {name: json.loads(json.dumps(field.default)) for name, field in fields.items()}
    marks = {
        name: field.json_schema_extra for name, field in fields.items() if isinstance(field.json_schema_extra, dict)
    }
    runtime = {name for name, extra in marks.items() if extra.get("runtime")}
    renamed: dict[str, Mapping[str, Any]] = {
        name: old_to_new for name, extra in marks.items() if isinstance(old_to_new := extra.get("renamed"), dict)
    }
    return defaults, runtime, renamed


def _json_default(value: Any) -> Any:
    """Serialise numpy scalars and arrays (via ``item``/``tolist``); reject anything else."""
    for attr in ("item", "tolist"):
        method = getattr(value, attr, None)
        if callable(method):
            return method()
    raise TypeError(f"result field of type {type(value).__name__} is not JSON serialisable")


def _iter_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset just past the line, raw line) for each line of a file."""
    with path.open("rb") as handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            offset += len(raw)
            yield number, offset, raw


def _parse_line(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The JSON object on a line, or None with the reason it is unusable."""
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"not valid JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {type(value).__name__}"
    return value, None


class ResultWriter:
    """Appends one JSON line per finished problem to ``path``; safe to kill at any moment.

    On open, a torn last line (no trailing newline: the run was killed mid-write) is truncated
    away and reported, and the ids already written are read back (``done_ids``). Each ``write``
    is a single ``os.write`` of ``json.dumps(record) + "\\n"`` followed by ``os.fsync``, so a
    SIGKILL leaves at most one torn line, at the end. Ids already written are not written again.
    An exclusive advisory lock keeps a second writer off the same file. ``run_header`` is written
    as the first line of a new file; on resume a different header is only warned about, naming what differs.
    """

    def __init__(self, path: PathLike, *, run_header: Mapping[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.torn_bytes = 0
        self.bad_lines: list[int] = []
        self.existing_header: dict[str, Any] | None = None
        self._done: set[str] = set()
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise RuntimeError(
                        f"{self.path} is being written by another process; use another output file"
                    ) from None
                except OSError as exc:  # e.g. a file system without locks: go on unlocked
                    logger.debug("%s: no advisory lock (%s)", self.path, exc)
            self._recover()
            if run_header is not None:
                if os.fstat(self._fd).st_size == 0:
                    self._append({HEADER_KEY: dict(run_header)})
                elif self.existing_header is not None and (
                    differences := header_differences(
                        self.existing_header, json.loads(json.dumps(dict(run_header), default=_json_default))
                    )
                ):
                    logger.warning(
                        "%s: resuming with a run header that differs from the file's first one: %s",
                        self.path,
                        "; ".join(differences),
                    )
        except BaseException:
            self.close()
            raise

    def _recover(self) -> None:
        """Drop a torn tail, then collect the ids of the complete, valid lines."""
        good_end = 0
        size = os.fstat(self._fd).st_size  # type: ignore[arg-type]
        for number, end, raw in _iter_lines(self.path):
            if not raw.endswith(b"\n"):
                self.torn_bytes = size - good_end
                logger.warning(
                    "%s: line %d is torn (%d bytes, no trailing newline; the run was killed mid-write); "
                    "removing it, that problem will be run again",
                    self.path,
                    number,
                    self.torn_bytes,
                )
                os.truncate(self.path, good_end)
                break
            good_end = end
            if not raw.strip():
                continue
            record, reason = _parse_line(raw)
            if record is None:
                self.bad_lines.append(number)
                logger.warning("%s: line %d skipped: %s", self.path, number, reason)
                continue
            if HEADER_KEY in record and "id" not in record:
                if self.existing_header is None:
                    self.existing_header = record[HEADER_KEY]
                continue
            if not isinstance(record.get("id"), str):
                self.bad_lines.append(number)
                logger.warning("%s: line %d skipped: no string 'id' field", self.path, number)
                continue
            self._done.add(record["id"])

    def settings_changed(self, header: Mapping[str, Any]) -> list[str]:
        """What a resume may not change, as ``"key: old -> new"``: the search settings
        (``settings_changed`` of the headers' ``config``) and the dataset ``shard`` (None: all of it);
        empty for a new file or one without a header."""
        if self.existing_header is None:
            return []
        old = self.existing_header.get("config")
        changed = settings_changed(old, header.get("config", {})) if isinstance(old, Mapping) else []
        if self.existing_header.get("shard") != header.get("shard"):
            changed.append(f"shard: {self.existing_header.get('shard')!r} -> {header.get('shard')!r}")
        return changed

    def done_ids(self) -> set[str]:
        """Ids of the problems already in the file (read on open, plus those written since)."""
        with self._lock:
            return set(self._done)

    def _append(self, record: Mapping[str, Any]) -> None:
        data = (json.dumps(record, default=_json_default) + "\n").encode("utf-8")
        if self._fd is None:
            raise ValueError(f"{self.path}: writer is closed")
        view = memoryview(data)
        while view:  # one call in practice; a short write to a regular file is only possible on a full disk
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)

    def write(self, record: RunRecord | Mapping[str, Any]) -> bool:
        """Append one problem's record durably; False (and a warning) if its id is already written."""
        if not isinstance(record, Mapping):
            record = record.to_dict()
        problem_id = record.get("id")
        if not isinstance(problem_id, str):
            raise ValueError(f"a result record needs a string 'id', got {problem_id!r}")
        with self._lock:
            if problem_id in self._done:
                logger.warning("%s: id %r is already written; not writing it twice", self.path, problem_id)
                return False
            self._append(record)
            self._done.add(problem_id)
        return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)  # also releases the flock
                self._fd = None

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def _read_file(path: Path) -> tuple[dict[str, Any] | None, list[tuple[int, dict[str, Any]]]]:
    """(the first run header, ``(line number, record)`` of every problem record) of one run file.

    Tolerant: blank lines and later headers are skipped; invalid lines, lines without an id and a
    torn last line are skipped with a warning that names the file and line number. Repeated ids are
    kept: the caller decides.
    """
    header: dict[str, Any] | None = None
    records: list[tuple[int, dict[str, Any]]] = []
    for number, _, raw in _iter_lines(path):
        if not raw.strip():
            continue
        if not raw.endswith(b"\n"):
            logger.warning("%s:%d: torn last line (no trailing newline) skipped", path, number)
            continue
        record, reason = _parse_line(raw)
        if record is None:
            logger.warning("%s:%d: skipped: %s", path, number, reason)
            continue
        if HEADER_KEY in record and "id" not in record:
            if header is None and isinstance(record[HEADER_KEY], dict):
                header = record[HEADER_KEY]
            continue
        if not isinstance(record.get("id"), str):
            logger.warning("%s:%d: skipped: no string 'id' field", path, number)
            continue
        records.append((number, record))
    return header, records


def read_header(path: PathLike) -> dict[str, Any] | None:
    """The run header of a run file (its first ``run_header`` line), or None."""
    return _read_file(Path(path))[0]


def read_lines(paths: PathLike | Iterable[PathLike]) -> list[dict[str, Any]]:
    """The JSON objects with an ``id`` of one or more files written by ``ResultWriter``, in file order:
    any records (``read_results`` reads them as run records).

    Tolerant: blank lines and header lines are skipped; invalid lines, lines without an id, a torn
    last line and repeated ids within a file (the first is kept) are skipped with a warning that
    names the file and line number.
    """
    return [line for _, _, line in _unique_lines(paths)]


def read_results(paths: PathLike | Iterable[PathLike]) -> list[RunRecord]:
    """The run records of one or more run files, in file order; as tolerant as ``read_lines``, and a
    line that is not a run record is skipped with a warning that names the file, the line and why."""
    records = []
    for path, number, line in _unique_lines(paths):
        if (record := _run_record(path, number, line)) is not None:
            records.append(record)
    return records


def _unique_lines(paths: PathLike | Iterable[PathLike]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for path in map(Path, paths):
        seen: dict[str, int] = {}
        for number, record in _read_file(path)[1]:
            problem_id = record["id"]
            if problem_id in seen:
                logger.warning("%s:%d: skipped: id %r already on line %d", path, number, problem_id, seen[problem_id])
                continue
            seen[problem_id] = number
            yield path, number, record


def _run_record(path: Path, number: int, line: Mapping[str, Any]) -> RunRecord | None:
    from .records import RunRecord  # imported here: this module also runs standalone (see the tests)

    try:
        return RunRecord.from_dict(line)
    except (KeyError, TypeError, ValueError) as exc:
        logger.warning("%s:%d: skipped: not a run record (%s: %s)", path, number, type(exc).__name__, exc)
        return None


class _Row:
    """What ``read_runs`` knows of one summary row: where its first record is, its settings, the
    place of each problem id, and the shards of its files."""

    def __init__(self, first: str, config: Mapping[str, Any]) -> None:
        self.first = first
        self.config = config
        self.ids: dict[str, str] = {}
        self.shards: set[Any] = set()


def read_runs(paths: Iterable[PathLike]) -> list[RunRecord]:
    """Problem records of run files to summarise together (``ets-async eval``), in file order: the
    shards of a run, or several runs; one summary row per (label, width) as in ``report.group_runs``.

    Strict, so that no row silently counts a problem twice or mixes two searches: RunFileError if a
    problem id is twice in one row (in two files, or twice in one), or if one row's records were
    searched with different search settings (``settings_changed`` of their ``config``). A file
    named twice is read once. A warning names the shards missing from a row whose files are shards
    (their headers say ``"shard": "I/N"``), since that row covers part of the dataset.
    Otherwise as tolerant as ``read_results``.
    """
    from .datasets import Shard  # imported here: this module also runs standalone (see the tests)
    from .errors import RunFileError
    files: dict[Path, Path] = {}  # resolved -> as named
    for path in map(Path, paths):
        if path.resolve() in files:
            logger.warning("%s is named twice; reading it once", path)
        files.setdefault(path.resolve(), path)
    records: list[RunRecord] = []
    rows: dict[tuple[str, Any], _Row] = {}
    for path in files.values():
        header, lines = _read_file(path)
        for number, line in lines:
            if (record := _run_record(path, number, line)) is None:
                continue
            key = (record.label, record.width)
            where = f"{path}:{number}"
            row = rows.setdefault(key, _Row(where, record.config))
            name = f"{key[0]}, width {key[1]}"
            if changed := settings_changed(row.config, record.config):
                raise RunFileError(
                    f"{row.first} and {where} are both {name} but were searched with different settings "
                    f"({', '.join(changed)}); one summary would mix them: eval them separately"
                )
            if (first := row.ids.setdefault(record.id, where)) != where:
                raise RunFileError(
                    f"problem {record.id!r} is in {first} and in {where} (both {name}); a summary counts each "
                    "problem once: leave one of the files out (the shards of one run never share a problem)"
                )
            row.shards.add((header or {}).get("shard"))
            records.append(record)
    for (label, width), row in rows.items():
        shards = [Shard.parse(text) for text in row.shards if isinstance(text, str)]
        for count in sorted({shard.count for shard in shards}):
            missing = sorted(set(range(count)) - {shard.index for shard in shards if shard.count == count})
            if missing:
                logger.warning(
                    "%s, width %s: no run file of shard %s; its summary covers part of the dataset",
                    label,
                    width,
                    ", ".join(f"{index}/{count}" for index in missing),
                )
    return records
