"""Backends kept serving: started on first use, and started again after their engine died."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .backends import Backends

__all__ = ["BackendsSupervisor"]

log = logging.getLogger("ets_async")


class BackendsSupervisor:
    """The one holder of a set of backends that its callers share (``api``'s defaults, the service).

    ``get`` returns backends that serve: it starts them with ``start`` on first use, and once their
    engine died (``Backends.failure``) it shuts them down and starts new ones, once for all the
    callers waiting on it. ``start`` runs in the event loop, since an in-process engine binds to it.
    """

    def __init__(self, start: Callable[[], Backends], backends: Backends | None = None) -> None:
        self._start = start
        self._backends = backends
        self._lock = asyncio.Lock()

    async def get(self) -> Backends:
        async with self._lock:
            if self._backends is not None and (failure := self._backends.failure()) is not None:
                log.warning("%s; starting new backends", failure)
                self.shutdown()
            if self._backends is None:
                self._backends = self._start()
            return self._backends

    @property
    def current(self) -> Backends | None:
        """The backends started last, dead or alive; None before the first ``get`` or after ``shutdown``."""
        return self._backends

    def shutdown(self) -> None:
        """Stop the current backends, if any; the next ``get`` starts new ones."""
        if self._backends is not None:
            backends, self._backends = self._backends, None
            backends.shutdown()
