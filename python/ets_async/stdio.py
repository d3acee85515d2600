"""This process's standard output and error redirected at the file-descriptor level, where C code
and child processes write too (replacing ``sys.stdout`` alone would miss them)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["redirect_output"]


@contextmanager
def redirect_output(path: str | os.PathLike[str], *, stderr: bool = False) -> Iterator[None]:
    """Point fd 1 (and with ``stderr``, fd 2 too) at the file ``path``, appending, while the block
    runs; restore them after it. Python's buffers are flushed on both sides, so what was written
    before the block stays out of ``path`` and what was written inside goes there. Processes started
    inside the block keep writing to ``path`` for their whole life."""
    fds = (1, 2) if stderr else (1,)
    streams = (sys.stdout, sys.stderr)[: len(fds)]
    for stream in streams:
        stream.flush()
    saved = [os.dup(fd) for fd in fds]
    try:
        with open(path, "ab") as sink:
            for fd in fds:
                os.dup2(sink.fileno(), fd)
            try:
                yield
            finally:
                for stream in streams:
                    stream.flush()
                for fd, copy in zip(fds, saved, strict=True):
                    os.dup2(copy, fd)
    finally:
        for copy in saved:
            os.close(copy)
