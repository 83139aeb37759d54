"""Background tasks of the backends: the one way a service ends its task.

One job: ``cancel_and_wait``: cancel an asyncio task and wait until it has really ended (its
``finally`` blocks run, its device released), swallowing only the cancellation itself, so that
a service's ``stop`` returns with nothing of it still running.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(task: asyncio.Task[Any] | None) -> None:
    """Cancel ``task`` (None: nothing to do) and wait for its end."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
