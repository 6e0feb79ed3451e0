"""Speech-to-text engines and the worker pool that runs them off the event loop.

The default engine, PocketSphinx, holds the GIL for the whole decode (measured: a
thread decoding 3 s of speech stalls the event loop for ~1 s), so by default the pool
is made of *processes*; ``isolation="thread"`` suits engines that release the GIL or
wait on the network (faster-whisper, cloud APIs).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from array import array
from collections.abc import Callable
from typing import Any, Literal, Protocol

logger = logging.getLogger(__name__)


class Recognizer(Protocol):
    """A speech-to-text engine: the text of one utterance of 16 kHz mono s16le audio.

    Each pool worker builds its own instance from a factory and calls it from one
    thread at a time, so an engine may keep state and need not be thread-safe. In the
    default process pool the factory must be picklable (a class or module-level
    function, or a ``functools.partial`` of one).
    """

    def transcribe(self, pcm: bytes) -> str: ...


RecognizerFactory = Callable[[], Recognizer]


class PocketSphinxRecognizer:
    """CMU PocketSphinx 5 with the US English models shipped inside the PyPI package.

    Keyword arguments are PocketSphinx configuration (``hmm``, ``lm``, ``dict``,
    ``kws``...), e.g. a smaller domain language model for better accuracy.
    """

    def __init__(self, **config: Any) -> None:
        from pocketsphinx import Decoder  # noqa: PLC0415 - only the workers need it

        config.setdefault("loglevel", "FATAL")
        self._decoder = Decoder(**config)

    def transcribe(self, pcm: bytes) -> str:
        if sys.byteorder == "big":
            swapped = array("h", pcm)
            swapped.byteswap()
            pcm = swapped.tobytes()
        decoder = self._decoder
        decoder.start_utt()
        # full_utt: normalise the cepstra over this utterance, not a running estimate
        # that a new speaker or a fresh decoder would have wrong.
        decoder.process_raw(pcm, no_search=False, full_utt=True)
        decoder.end_utt()
        hypothesis = decoder.hyp()
        return clean_text(hypothesis.hypstr) if hypothesis is not None else ""


def clean_text(text: str) -> str:
    """Drop engine markup: filler tokens like ``<sil>``/``[NOISE]`` and ``word(2)`` variants."""
    text = re.sub(r"<[^>]*>|\[[^\]]*\]|\(\d+\)", " ", text)
    return " ".join(text.split())


# --- worker side: runs in the pool's processes or threads --------------------------------

_worker = threading.local()


def _init_worker(factory: RecognizerFactory, isolation: str, parent_pid: int) -> None:
    """Build this worker's engine once.

    A process worker also ignores Ctrl-C (the terminal sends it to the whole process
    group; the server shuts the pool down) and exits when the server dies without
    shutting it down (SIGKILL, OOM killer), which would otherwise leave it running.
    """
    if isolation == "process":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        threading.Thread(
            target=_exit_with_parent, args=(parent_pid,), name="stt-watchdog", daemon=True
        ).start()
    _worker.engine = factory()


def _exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(1.0)
    os._exit(0)


def _transcribe(pcm: bytes) -> tuple[str, float]:
    """The engine's text for ``pcm`` and the CPU seconds it took."""
    started = time.thread_time()
    text = _worker.engine.transcribe(pcm) if pcm else ""
    return text, time.thread_time() - started


class EnginePool:
    """The workers that run engines; rebuilt (at most every ``retry_after`` s) if broken."""

    def __init__(
        self,
        factory: RecognizerFactory,
        workers: int,
        isolation: Literal["process", "thread"],
        retry_after: float = 10.0,
    ) -> None:
        self._factory = factory
        self._workers = workers
        self._isolation = isolation
        self._retry_after = retry_after
        self._executor: concurrent.futures.Executor | None = None
        self._broken_at = -float("inf")
        self._closed = False

    def _get(self) -> concurrent.futures.Executor:
        if self._executor is not None:
            return self._executor
        if self._closed:
            raise RuntimeError("the speech recognizer is closed")
        if time.monotonic() - self._broken_at < self._retry_after:
            raise RuntimeError("the speech engine failed recently; not retrying yet")
        initargs = (self._factory, self._isolation, os.getpid())
        if self._isolation == "process":
            # spawn, not fork: the server has threads (aiortc, executors) a fork would break.
            self._executor = concurrent.futures.ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=initargs,
            )
        else:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                self._workers,
                thread_name_prefix="stt",
                initializer=_init_worker,
                initargs=initargs,
            )
        return self._executor

    async def transcribe(self, pcm: bytes) -> tuple[str, float]:
        executor = self._get()
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, _transcribe, pcm)
        except concurrent.futures.BrokenExecutor:
            logger.error("the speech engine's worker pool broke; rebuilding it later")
            self._broken_at = time.monotonic()
            if self._executor is executor:
                self._executor = None
                executor.shutdown(wait=False, cancel_futures=True)
            raise

    async def warm_up(self) -> None:
        """Start every worker and load its engine now rather than at the first utterance."""
        await asyncio.gather(*(self.transcribe(b"") for _ in range(self._workers)))

    async def shutdown(self, timeout: float) -> None:
        self._closed = True
        executor, self._executor = self._executor, None
        if executor is None:
            return
        waiting = asyncio.ensure_future(
            asyncio.to_thread(executor.shutdown, wait=True, cancel_futures=True)
        )
        done, _ = await asyncio.wait({waiting}, timeout=timeout)
        if done:
            return
        logger.warning("speech engine workers did not stop within %.0f s", timeout)
        # A stuck engine: processes can be terminated (threads cannot be).
        processes = getattr(executor, "_processes", None) or {}
        for process in list(processes.values()):
            process.terminate()
