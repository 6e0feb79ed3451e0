"""The front's view of its media worker processes: start, talk to, restart.

Each :class:`WorkerProcess` is one child process and the front's end of its
socket pair. A worker that exits (a crash, ``kill -9``) is noticed at once as
the end of its stream; the pool then starts a replacement in the same slot and
tells its owner, which moves the lost rooms.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from ..validation import ProtocolError
from . import wire

logger = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds a worker may take to import aiortc and report ready
REQUEST_TIMEOUT = 10.0  # seconds a command may wait for its answer (leave, ice, set_muted)
STOP_TIMEOUT = 10.0  # seconds a worker may take to close its peer connections
RESTART_DELAY = 0.5  # seconds before restarting a slot whose worker just died again

EventHandler = Callable[["WorkerProcess", wire.Message], Awaitable[None]]


class WorkerProcess:
    """One media worker process and the front's end of its wire."""

    def __init__(self, slot: int, config_json: str, on_event: EventHandler) -> None:
        self.slot = slot
        self.pid: int | None = None
        self.alive = False
        self.snapshot: wire.Message = {}  # the worker's latest state report
        self._config_json = config_json
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._process: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def start(self) -> None:
        front_end, worker_end = socket.socketpair()
        try:
            self._process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "server.workers.process",
                "--fd",
                str(worker_end.fileno()),
                "--config",
                self._config_json,
                pass_fds=(worker_end.fileno(),),
            )
        finally:
            worker_end.close()
        reader, self._writer = await asyncio.open_unix_connection(sock=front_end)
        ready = await asyncio.wait_for(wire.receive(reader), START_TIMEOUT)
        self.pid = int(ready["pid"])
        self.alive = True
        logger.info("media worker %d started (pid %d)", self.slot, self.pid)
        self._reading = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await wire.receive(reader)
                if "reply" in message:
                    self._settle(message)
                else:
                    if message.get("event") == "snapshot":
                        self.snapshot = message
                    try:
                        await self._on_event(self, message)
                    except Exception:
                        logger.exception("handling a media worker's %s failed", message["event"])
        except wire.WireClosed:
            pass
        self.alive = False
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ProtocolError("media_unavailable", "media worker lost"))
        self._pending.clear()
        if self._writer is not None:
            self._writer.close()
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                await self._process.wait()
        if not self.ended.done():
            self.ended.set_result(None)

    def _settle(self, message: wire.Message) -> None:
        future = self._pending.pop(message["reply"], None)
        if future is None or future.done():
            return
        if "error" in message:
            future.set_exception(wire.error_from_wire(message["error"]))
        else:
            future.set_result(None)

    def send(self, op: str, **data: Any) -> None:
        """A command whose failure, if any, comes back as an ``error`` event."""
        if not self.alive or self._writer is None:
            raise ProtocolError("media_unavailable", "the room's media worker is restarting")
        wire.send(self._writer, {"op": op, **data})

    async def request(self, op: str, **data: Any) -> None:
        """A command the caller awaits; raises the worker's ProtocolError."""
        if not self.alive or self._writer is None:
            raise ProtocolError("media_unavailable", "the room's media worker is restarting")
        request_id = next(self._ids)
        future = self._pending[request_id] = asyncio.get_running_loop().create_future()
        wire.send(self._writer, {"op": op, "id": request_id, **data})
        try:
            await asyncio.wait_for(future, REQUEST_TIMEOUT)
        except TimeoutError:
            self._pending.pop(request_id, None)
            logger.warning("media worker %d did not answer %s in time", self.slot, op)
            raise ProtocolError("media_unavailable", "the media worker did not answer") from None

    async def stop(self) -> None:
        """Ask the worker to close its rooms; kill it if it takes too long or never started."""
        if self._process is None:
            return
        if self.alive and self._writer is not None:
            with contextlib.suppress(wire.WireClosed):
                wire.send(self._writer, {"op": "shutdown"})
            try:
                await asyncio.wait_for(asyncio.shield(self.ended), STOP_TIMEOUT)
                return
            except TimeoutError:
                logger.warning("media worker %d did not stop; killing it", self.slot)
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        await self._process.wait()


class WorkerPool:
    """A fixed number of worker slots, each kept filled with a live process."""

    def __init__(
        self,
        count: int,
        config_json: str,
        on_event: EventHandler,
        on_lost: Callable[[WorkerProcess], Coroutine[Any, Any, None]],
    ) -> None:
        self._count = count
        self._config_json = config_json
        self._on_event = on_event
        self._on_lost = on_lost
        self.workers: list[WorkerProcess] = []
        self.restarts = 0
        self._closing = False
        self._watchers: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()  # set whenever a worker comes up

    async def start(self) -> None:
        self.workers = [
            WorkerProcess(slot, self._config_json, self._on_event) for slot in range(self._count)
        ]
        await asyncio.gather(*(worker.start() for worker in self.workers))
        for worker in self.workers:
            self._watch(worker)
        self.changed.set()

    def live(self) -> list[WorkerProcess]:
        return [worker for worker in self.workers if worker.alive]

    def _watch(self, worker: WorkerProcess) -> None:
        task = asyncio.create_task(self._supervise(worker))
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    async def _supervise(self, worker: WorkerProcess) -> None:
        await asyncio.shield(worker.ended)  # cancelling the watcher must not cancel `ended`
        if self._closing:
            return
        logger.error("media worker %d (pid %s) died; restarting it", worker.slot, worker.pid)
        replacement = WorkerProcess(worker.slot, self._config_json, self._on_event)
        self.workers[worker.slot] = replacement
        lost = asyncio.create_task(self._on_lost(worker))
        while not self._closing:
            try:
                await replacement.start()
                break
            except (OSError, TimeoutError, wire.WireClosed, KeyError, ValueError):
                logger.exception("media worker %d failed to start; retrying", worker.slot)
                await asyncio.sleep(RESTART_DELAY)
                replacement = WorkerProcess(worker.slot, self._config_json, self._on_event)
                self.workers[worker.slot] = replacement
        self.restarts += 1
        self._watch(replacement)
        self.changed.set()
        await lost

    async def wait_for_live(self) -> list[WorkerProcess]:
        """Live workers, waiting for a restart when none is up."""
        while not self.live():
            self.changed.clear()
            await self.changed.wait()
        return self.live()

    async def close(self) -> None:
        self._closing = True
        for task in list(self._watchers):
            task.cancel()
        await asyncio.gather(*(worker.stop() for worker in self.workers))
