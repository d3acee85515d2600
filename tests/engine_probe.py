"""What the engine core itself holds, asked in its own process (not this process's view of it)."""

from __future__ import annotations

import asyncio
import time


async def engine_idle(engine, settle_s: float = 5.0) -> bool:
    """Whether the engine core (of an ``InProcessEngine``) holds no request (waiting, running or
    preempted) and this process tracks none, within ``settle_s`` seconds (aborts take a moment to land)."""
    deadline = time.monotonic() + settle_s
    while True:
        busy = await engine.llm.engine_core.call_utility_async("has_work")
        if not busy and engine.llm.get_num_unfinished_requests() == 0:
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
