"""Config generations: a request keeps the config (and the upstream client built for it)
that it started with until it is settled and logged, whatever a reload does meanwhile.

A reload makes a new :class:`Generation`; the old one is retired and its upstream
connections close when its last request ends, not on a timer. The same counts tell a
graceful shutdown when everything in flight has finished.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from router.config import RouterConfig


@dataclass(eq=False)
class Generation:
    config: RouterConfig
    upstream: Any  # router.upstream.UpstreamClient
    active: int = 0
    retired: bool = False


class Generations:
    def __init__(self, config: RouterConfig, make_upstream: Callable[[RouterConfig], Any]) -> None:
        self._make_upstream = make_upstream
        self.current = Generation(config, make_upstream(config))
        self._retired: set[Generation] = set()
        self.in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def enter(self) -> Generation:
        g = self.current
        g.active += 1
        self.in_flight += 1
        self._idle.clear()
        return g

    async def leave(self, g: Generation) -> None:
        g.active -= 1
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()
        if g.retired and g.active == 0:
            await self._close(g)

    async def swap(self, config: RouterConfig) -> None:
        old = self.current
        self.current = Generation(config, self._make_upstream(config))
        old.retired = True
        if old.active == 0:
            await self._close(old)
        else:
            self._retired.add(old)

    async def wait_idle(self, timeout_s: float) -> bool:
        """True when nothing is in flight any more, False when ``timeout_s`` ran out."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        for g in [self.current, *self._retired]:
            await self._close(g)

    async def _close(self, g: Generation) -> None:
        self._retired.discard(g)
        await g.upstream.aclose()
