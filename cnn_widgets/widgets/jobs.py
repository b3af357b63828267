"""The widgets' job engine: slow computations run in a worker thread, so the kernel stays free to
receive a cancel click, with throttled progress, cancellation and a cache of finished results.

A job is a function ``work(progress) -> result``; ``progress(fraction)`` (give it to
:func:`cnn_widgets.attribute`) raises :class:`~cnn_widgets.Cancelled` once the job is cancelled, and
passes the fraction on to the job's ``on_progress``: its first report at once (the job has started),
later ones at most every :data:`PROGRESS_INTERVAL` seconds, because iopub counts every comm message.

One :class:`Jobs` per widget runs its jobs one after another in at most one thread, which exists only
while there is work (an idle widget holds no thread), so widgets never oversubscribe the cores and a
discarded widget leaves nothing running. Widgets that share a model are serialised by the model's lock,
which :func:`cnn_widgets.attribute` holds for a whole run.

Callbacks (``on_done``, ``on_error``, ``on_progress``) run in the worker thread while :attr:`Jobs.lock`
is held, and never for a cancelled job: once :meth:`Jobs.cancel` returns, nothing of the jobs it
cancelled reaches the widget. Widgets take the same lock to change their traits consistently.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from time import monotonic
from typing import Any

from ..attribution import Cancelled

PROGRESS_INTERVAL = 0.1  # seconds between progress reports passed on (iopub counts every comm message)
CACHE_SIZE = 32

Progress = Callable[[float], None]
_log = logging.getLogger(__name__)


class Job:
    """One submitted computation (see :meth:`Jobs.submit`)."""

    __slots__ = ("key", "work", "on_done", "on_error", "on_progress", "started", "_cancelled")

    def __init__(
        self,
        key: Hashable,
        work: Callable[[Progress], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[Exception], None],
        on_progress: Progress | None,
    ) -> None:
        self.key = key
        self.work = work
        self.on_done = on_done
        self.on_error = on_error
        self.on_progress = on_progress
        self.started = False
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """Whether the job was cancelled (or superseded); its work stops at its next progress report."""
        return self._cancelled.is_set()


class Jobs:
    """A widget's queue of jobs and their worker thread (see the module docstring).

    ``name`` names the worker thread; ``cache_size`` finished results are kept by job key (least
    recently used dropped first; 0: no cache)."""

    def __init__(self, name: str, *, cache_size: int = 0, interval: float = PROGRESS_INTERVAL) -> None:
        self.name = name
        self.lock = threading.RLock()
        self._idle = threading.Condition(self.lock)
        self._queue: deque[Job] = deque()
        self._running: Job | None = None
        self._thread: threading.Thread | None = None
        self._cache: OrderedDict[Hashable, Any] = OrderedDict()
        self._cache_size = cache_size
        self._interval = interval
        self._last_report = -math.inf

    # -- the widget's side ---------------------------------------------------------------------------

    def submit(
        self,
        key: Hashable,
        work: Callable[[Progress], Any],
        on_done: Callable[[Any], None],
        on_error: Callable[[Exception], None],
        on_progress: Progress | None = None,
        *,
        replace: bool = False,
    ) -> Job:
        """Queue ``work`` (run after the jobs already queued; ``replace=True`` cancels them first).
        ``on_done(result)`` or ``on_error(exception)`` follows unless the job is cancelled."""
        job = Job(key, work, on_done, on_error, on_progress)
        with self.lock:
            if replace:
                self.cancel()
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name=self.name, daemon=True)
                self._thread.start()
        return job

    def cancel(self) -> bool:
        """Cancel the running job and every queued one; ``True`` if there was any."""
        with self.lock:
            jobs = list(self._queue) + ([self._running] if self._running is not None else [])
            self._queue.clear()
            live = [job for job in jobs if not job.cancelled]
            for job in live:
                job._cancelled.set()
            return bool(live)

    def live(self) -> list[Job]:
        """The jobs not cancelled: the running one first, then the queue in order."""
        with self.lock:
            jobs = ([self._running] if self._running is not None else []) + list(self._queue)
            return [job for job in jobs if not job.cancelled]

    def cached(self, key: Hashable) -> Any | None:
        """The cached result of a job with ``key`` (now the most recently used), or ``None``."""
        with self.lock:
            value = self._cache.get(key)
            if value is not None:
                self._cache.move_to_end(key)
            return value

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker is idle (also cancelled jobs have stopped); ``False`` on timeout."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("wait() from a job's own callback would wait for itself forever")
        with self._idle:
            return self._idle.wait_for(lambda: self._thread is None, timeout)

    # -- the worker's side ---------------------------------------------------------------------------

    def _drain(self) -> None:
        """The worker thread: run queued jobs in order; end (and wake :meth:`wait`) when none is left."""
        while True:
            with self.lock:
                if not self._queue:
                    self._thread = None
                    self._idle.notify_all()
                    return
                job = self._running = self._queue.popleft()
            try:
                self._run(job)
            finally:
                with self.lock:
                    self._running = None

    def _run(self, job: Job) -> None:
        try:
            result = job.work(lambda fraction: self._report(job, fraction))
        except Cancelled:
            return
        except Exception as err:  # a thread cannot raise to the user: the widget shows the message
            self._settle(job, job.on_error, err)
            return
        with self.lock:
            if self._cache_size:
                self._cache[job.key] = result
                self._cache.move_to_end(job.key)
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        self._settle(job, job.on_done, result)

    def _settle(self, job: Job, callback: Callable[[Any], None], value: Any) -> None:
        with self.lock:
            if job.cancelled:
                return
            try:
                callback(value)
            except Exception:  # a widget's bug must not stop the worker (wait() would hang)
                _log.exception("cnn_widgets: a %s callback failed", self.name)

    def _report(self, job: Job, fraction: float) -> None:
        """A job's progress callback: stop a cancelled job; pass progress on, throttled."""
        if job.cancelled:
            raise Cancelled()
        if job.on_progress is None:
            return
        now = monotonic()
        if job.started and now - self._last_report < self._interval:
            return
        with self.lock:
            if job.cancelled:
                raise Cancelled()
            job.started = True
            self._last_report = now
            job.on_progress(float(fraction))
