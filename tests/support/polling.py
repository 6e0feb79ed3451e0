"""Waiting for a condition in tests: poll it, never sleep a fixed time and hope."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any


async def eventually(check: Any, timeout: float = 15.0, interval: float = 0.1) -> Any:
    """Poll ``check()`` (plain or async) until it returns something truthy; return that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s (last value {value!r})")
        await asyncio.sleep(interval)
