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

:class:`JobView` is the view's side, written once: ``busy``/``progress``/``error``/status traits in step
with the jobs, ``cancel()``, ``wait()`` and the browser's "cancel"/"run" messages.
"""

from __future__ import annotations

import atexit
import logging
import math
import threading
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Sequence
from functools import partial
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
        _ALL.add(self)

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


class JobView:
    """The glue between a view and its :class:`Jobs`, written once for every view that runs one
    computation at a time with a progress bar and a cancel button (TopActivations, ClassHeatmaps,
    ChannelImportance): a view that mixes it in (``class V(Panel, JobView, anywidget.AnyWidget)``) keeps
    its ``busy``, ``progress`` and ``error`` traits and its status text in step with its jobs, and gets
    :meth:`cancel`, :meth:`wait` and the browser's "cancel" and "run" messages.

    The view declares the read-only traits ``busy``, ``progress``, ``error`` and (unless it overrides
    :meth:`_set_status`) ``status``, sets ``self._jobs`` to its :class:`Jobs`, passes :meth:`_on_msg` to
    ``on_msg`` and overrides :meth:`_rerun` (what the browser's "run" asks for)."""

    _jobs: Jobs
    set_trait: Callable[[str, Any], None]  # the view's (traitlets.HasTraits)

    def _start(
        self,
        what: str,
        work: Callable[[Progress], Any],
        done: Callable[[Any], None],
        *,
        key: Hashable = None,
        replace: bool = True,
    ) -> Job:
        """Run ``work`` in the background (after the queued jobs; ``replace=True`` cancels them first),
        showing ``what`` as the status; ``done(result)`` follows in the worker thread. ``key`` is the job's
        cache key (default ``(what,)``)."""
        with self._jobs.lock:
            self.set_trait("error", "")
            self.set_trait("progress", 0.0)
            self.set_trait("busy", True)
            self._set_status(what)
            return self._jobs.submit((what,) if key is None else key, work, partial(self._finish, done),
                                     self._fail, self._progress, replace=replace)

    def _finish(self, done: Callable[[Any], None], value: Any) -> None:
        """A job's result: ``done(value)``; idle again unless more jobs are queued."""
        done(value)
        if len(self._jobs.live()) <= 1:  # this job is still counted until its callback returns
            self.set_trait("busy", False)
            self.set_trait("progress", 1.0)
            self._set_status("")

    def _fail(self, err: Exception) -> None:
        """A job's error: its message in ``error``."""
        from .attribution_view import error_text  # attribution_view imports this module

        self.set_trait("error", error_text(err))
        self.set_trait("busy", False)
        self.set_trait("progress", 0.0)
        self._set_status("")

    def _progress(self, fraction: float) -> None:
        self.set_trait("progress", fraction)

    def _set_status(self, text: str) -> None:
        """Show ``text`` (what runs, "cancelled" or nothing) in the view's ``status``."""
        self.set_trait("status", text)

    def cancel(self) -> None:
        """Stop the computation in progress (and drop the queued ones); the last result stays on screen."""
        with self._jobs.lock:
            if self._jobs.cancel():
                self.set_trait("busy", False)
                self.set_trait("progress", 0.0)
                self._set_status("cancelled")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no computation of this view is running; ``False`` if ``timeout`` passed first."""
        return self._jobs.wait(timeout)

    def _rerun(self) -> None:
        """Start the view's computation again (the browser's "run" message, e.g. after a cancel)."""
        raise NotImplementedError

    def _on_msg(self, widget: Any, content: Any, buffers: Sequence[Any]) -> None:
        """The browser's "cancel" and "run" messages (a view handling more messages extends this)."""
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "cancel":
            self.cancel()
        elif kind == "run":
            self._rerun()


_ALL: weakref.WeakSet[Jobs] = weakref.WeakSet()
EXIT_WAIT = 5.0  # seconds the interpreter's exit waits, in all, for cancelled jobs to stop


@atexit.register
def _stop_all() -> None:
    """At interpreter exit (a script that ends while a view computes): cancel every job and wait briefly
    for the workers, so that no worker thread is still inside torch while the interpreter tears down,
    which aborts the process ("terminate called without an active exception")."""
    deadline = monotonic() + EXIT_WAIT
    engines = list(_ALL)
    for jobs in engines:
        jobs.cancel()
    for jobs in engines:
        thread = jobs._thread
        if thread is not None:
            thread.join(max(0.0, deadline - monotonic()))
