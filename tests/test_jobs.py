"""The widgets' job engine (cnn_widgets.widgets.jobs): jobs run one after another in at most one thread
that exists only while there is work, a cancelled job stops at its next progress report and never
reaches the widget, progress is throttled, results are cached (least recently used dropped first), and
a failing job or callback does not stop the worker; JobView keeps a view's busy/progress/error/status
traits in step with its jobs."""

from __future__ import annotations

import threading

import pytest
import traitlets as t

from cnn_widgets import Cancelled
from cnn_widgets.widgets import jobs as jobs_module
from cnn_widgets.widgets.jobs import Jobs, JobView

TIMEOUT = 10


class Log:
    """Collects callbacks: ("done", key, value), ("error", key, message), ("progress", key, fraction)."""

    def __init__(self) -> None:
        self.events: list[tuple] = []
        self.lock = threading.Lock()

    def done(self, key):
        return lambda value: self._add(("done", key, value))

    def error(self, key):
        return lambda err: self._add(("error", key, str(err)))

    def progress(self, key):
        return lambda fraction: self._add(("progress", key, fraction))

    def _add(self, event: tuple) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str) -> list[tuple]:
        return [e for e in self.events if e[0] == kind]


def gate_job(started: threading.Event, release: threading.Event, steps: int = 1000):
    """A job that reports progress until ``release`` is set (then finishes), for as long as it is not
    cancelled; it records the steps it took."""
    taken: list[int] = []

    def work(progress):
        started.set()
        for i in range(steps):
            progress(i / steps)
            taken.append(i)
            if release.wait(0.005):
                return "released"
        return "all steps"

    return work, taken


def test_jobs_run_in_order_in_one_thread_that_ends_when_idle():
    log, names = Log(), []
    jobs = Jobs("test-jobs")

    def workers() -> int:
        return sum(th.name == "test-jobs" and th.is_alive() for th in threading.enumerate())

    def work(key):
        def run(progress):
            progress(0.0)
            names.append((key, threading.current_thread().name, workers()))
            return key * 10
        return run

    for key in range(5):
        jobs.submit(key, work(key), log.done(key), log.error(key))
    assert jobs.wait(TIMEOUT)
    assert [e[1:] for e in log.of("done")] == [(k, 10 * k) for k in range(5)]
    assert [n[0] for n in names] == list(range(5))
    assert {n[1] for n in names} == {"test-jobs"}
    assert all(n[2] == 1 for n in names), "one worker thread, never more"
    assert jobs._thread is None, "an idle engine holds no thread"
    for th in threading.enumerate():
        if th.name == "test-jobs":
            th.join(TIMEOUT)  # it has left the engine's lock; only the return is left
    assert workers() == 0
    # a new job after idling starts a new worker
    jobs.submit("again", work(7), log.done("again"), log.error("again"))
    assert jobs.wait(TIMEOUT) and log.of("done")[-1] == ("done", "again", 70)


def test_cancel_stops_the_running_job_and_drops_the_queue_without_callbacks():
    log = Log()
    jobs = Jobs("test-cancel")
    started, release = threading.Event(), threading.Event()
    slow, taken = gate_job(started, release)
    jobs.submit("slow", slow, log.done("slow"), log.error("slow"), log.progress("slow"))
    jobs.submit("next", lambda p: "next", log.done("next"), log.error("next"))
    assert started.wait(TIMEOUT)
    assert [j.key for j in jobs.live()] == ["slow", "next"]
    assert jobs.cancel() is True
    assert jobs.live() == [] and jobs.cancel() is False
    assert jobs.wait(TIMEOUT)
    assert len(taken) < 1000, "the job stopped at a progress report"
    assert log.of("done") == [] and log.of("error") == []
    # nothing of the cancelled job arrives after cancel() returned
    n = len(log.events)
    release.set()
    assert len(log.events) == n


def test_replace_cancels_older_jobs_and_the_newest_runs():
    log = Log()
    jobs = Jobs("test-replace")
    started, release = threading.Event(), threading.Event()
    slow, taken = gate_job(started, release)
    jobs.submit("slow", slow, log.done("slow"), log.error("slow"))
    assert started.wait(TIMEOUT)
    jobs.submit("queued", lambda p: "queued", log.done("queued"), log.error("queued"))
    jobs.submit("newest", lambda p: "newest", log.done("newest"), log.error("newest"), replace=True)
    assert [j.key for j in jobs.live()] == ["newest"]
    assert jobs.wait(TIMEOUT)
    assert log.of("done") == [("done", "newest", "newest")]
    assert len(taken) < 1000


def test_errors_go_to_on_error_and_a_failing_callback_does_not_stop_the_worker(caplog):
    log = Log()
    jobs = Jobs("test-errors")

    def fails(progress):
        raise ValueError("bad option")

    def broken_callback(value):
        raise RuntimeError("bug in a widget")

    jobs.submit("a", fails, log.done("a"), log.error("a"))
    jobs.submit("b", lambda p: 1, broken_callback, log.error("b"))
    jobs.submit("c", lambda p: 2, log.done("c"), log.error("c"))
    assert jobs.wait(TIMEOUT)
    assert log.of("error") == [("error", "a", "bad option")]
    assert log.of("done") == [("done", "c", 2)]
    assert "bug in a widget" in caplog.text


def test_cancelled_raised_by_the_work_itself_is_silent():
    log = Log()
    jobs = Jobs("test-silent")

    def stops(progress):
        raise Cancelled()

    jobs.submit("x", stops, log.done("x"), log.error("x"))
    assert jobs.wait(TIMEOUT) and log.events == []


def test_progress_is_throttled_but_the_first_report_of_each_job_passes(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(jobs_module, "monotonic", lambda: clock[0])
    log = Log()
    jobs = Jobs("test-throttle", interval=0.1)

    def work(progress):
        for step in range(10):  # 0.03 s of fake time between reports: every fourth one is passed on
            progress(step / 10)
            clock[0] += 0.03
        return "ok"

    jobs.submit("one", work, log.done("one"), log.error("one"), log.progress("one"))
    jobs.submit("two", work, log.done("two"), log.error("two"), log.progress("two"))
    assert jobs.wait(TIMEOUT)
    reports = [(e[1], round(e[2], 6)) for e in log.of("progress")]
    # job one: 0.0 at t=0, then 0.4 at t=0.12 (0.1 s passed), 0.8 at t=0.24; job two's first report
    # passes at once although only 0.03 s passed since job one's last
    assert reports == [("one", 0.0), ("one", 0.4), ("one", 0.8), ("two", 0.0), ("two", 0.4), ("two", 0.8)]


def test_cache_keeps_the_most_recently_used_results():
    log = Log()
    jobs = Jobs("test-cache", cache_size=3)
    for key in "abcd":
        jobs.submit(key, lambda p, k=key: k.upper(), log.done(key), log.error(key))
        assert jobs.wait(TIMEOUT)
        if key == "c":
            assert jobs.cached("a") == "A"  # a is now the most recently used: b goes first
    assert [jobs.cached(k) for k in "abcd"] == ["A", None, "C", "D"]
    assert len(jobs._cache) == 3


def test_failed_and_cancelled_jobs_are_not_cached():
    jobs = Jobs("test-cache-fail", cache_size=4)

    def fails(progress):
        raise ValueError("no")

    jobs.submit("bad", fails, lambda v: None, lambda e: None)
    jobs.submit("stop", lambda p: (_ for _ in ()).throw(Cancelled()), lambda v: None, lambda e: None)
    assert jobs.wait(TIMEOUT)
    assert jobs.cached("bad") is None and jobs.cached("stop") is None and not jobs._cache


def test_wait_times_out_and_refuses_to_wait_for_itself():
    jobs = Jobs("test-wait")
    started, release = threading.Event(), threading.Event()
    slow, _ = gate_job(started, release)
    jobs.submit("slow", slow, lambda v: None, lambda e: None)
    assert started.wait(TIMEOUT)
    assert jobs.wait(0.05) is False
    release.set()
    assert jobs.wait(TIMEOUT) is True

    seen: list[str] = []

    def waits_in_callback(value):
        try:
            jobs.wait(1)
        except RuntimeError as err:
            seen.append(str(err))

    jobs.submit("self", lambda p: 1, waits_in_callback, lambda e: None)
    assert jobs.wait(TIMEOUT)
    assert seen and "forever" in seen[0]


@pytest.mark.parametrize("cancel_from_callback", [False, True])
def test_callbacks_hold_the_lock_so_cancel_is_atomic(cancel_from_callback):
    """A widget that cancels inside a progress callback (same thread, re-entrant lock) stops the job."""
    log = Log()
    jobs = Jobs("test-reentrant", interval=0.0)

    def on_progress(fraction):
        log.progress("x")(fraction)
        if cancel_from_callback and fraction >= 0.5:
            jobs.cancel()

    def work(progress):
        for i in range(10):
            progress(i / 10)
        return "finished"

    jobs.submit("x", work, log.done("x"), log.error("x"), on_progress)
    assert jobs.wait(TIMEOUT)
    if cancel_from_callback:
        assert log.of("done") == [] and log.of("progress")[-1][2] == 0.5
    else:
        assert log.of("done") == [("done", "x", "finished")]


class View(JobView, t.HasTraits):
    """The smallest view using the mixin: its traits, its Jobs, a ``_rerun`` that counts calls."""

    busy = t.Bool(False, read_only=True)
    progress = t.Float(0.0, read_only=True)
    error = t.Unicode("", read_only=True)
    status = t.Unicode("", read_only=True)

    def __init__(self) -> None:
        super().__init__()
        self._jobs = Jobs("test-view", interval=0.0)
        self.reruns = 0
        self.shown: list = []
        self.seen: list[tuple] = []  # (busy, progress, status) at every progress report
        self.observe(lambda c: self.seen.append((self.busy, c["new"], self.status)), "progress")

    def _rerun(self) -> None:
        self.reruns += 1

    def start_slow(self, what: str, done=None, **kwargs) -> tuple[threading.Event, list[int]]:
        """Start a job that runs until the returned event is set; its steps taken (see gate_job)."""
        started, release = threading.Event(), threading.Event()
        slow, taken = gate_job(started, release)
        self._start(what, slow, done or self.shown.append, **kwargs)
        assert started.wait(TIMEOUT)
        return release, taken


def test_job_view_is_busy_with_progress_and_status_until_the_result_then_idle():
    view = View()
    halfway, release = threading.Event(), threading.Event()

    def work(progress):
        progress(0.25)
        progress(0.5)
        halfway.set()
        release.wait(TIMEOUT)
        return "result"

    view._start("slow thing", work, view.shown.append)
    assert view.busy and view.status == "slow thing" and view.error == ""
    assert halfway.wait(TIMEOUT)
    assert (view.busy, view.progress, view.status) == (True, 0.5, "slow thing")
    assert view.shown == []
    release.set()
    assert view.wait(TIMEOUT)
    assert view.shown == ["result"]
    assert (view.busy, view.progress, view.status) == (False, 1.0, "")
    assert view.seen[:2] == [(True, 0.25, "slow thing"), (True, 0.5, "slow thing")]


def test_job_view_stays_busy_until_the_last_queued_job_is_done():
    view = View()
    states: list[tuple] = []

    def first(value):
        view.shown.append(value)
        states.append((view.busy, view.status))

    release, _ = view.start_slow("first", first)
    view._start("second", lambda p: "two", view.shown.append, replace=False)
    release.set()
    assert view.wait(TIMEOUT)
    assert view.shown == ["released", "two"]
    assert states == [(True, "second")], "the first result arrives while the second job is queued"
    assert (view.busy, view.progress, view.status) == (False, 1.0, "")


def test_job_view_cancel_stops_the_job_and_says_so_and_a_new_start_clears_it():
    view = View()
    release, taken = view.start_slow("slow")
    view.cancel()
    assert (view.busy, view.progress, view.status) == (False, 0.0, "cancelled")
    assert view.wait(TIMEOUT)
    release.set()
    assert view.shown == [] and len(taken) < 1000
    view.cancel()  # nothing to cancel: nothing changes
    assert view.status == "cancelled"
    view._start("again", lambda p: 5, view.shown.append)
    assert view.wait(TIMEOUT) and view.shown == [5] and view.status == ""


@pytest.mark.parametrize("err, text", [(ValueError("layer 'x' is not a layer"), "layer 'x' is not a layer"),
                                       (RuntimeError("boom"), "RuntimeError: boom")])
def test_job_view_shows_a_failure_as_error_text_and_clears_it_on_the_next_start(err, text):
    view = View()

    def fails(progress):
        progress(0.5)
        raise err

    view._start("failing", fails, view.shown.append)
    assert view.wait(TIMEOUT)
    assert (view.error, view.busy, view.progress, view.status) == (text, False, 0.0, "")
    assert view.shown == []
    release, _ = view.start_slow("next")
    assert view.error == "" and view.busy
    release.set()
    assert view.wait(TIMEOUT) and view.error == ""


def test_job_view_messages_cancel_and_run_and_ignore_others():
    view = View()
    release, _ = view.start_slow("slow")
    for content in ({"type": "other"}, "cancel", None):
        view._on_msg(view, content, [])
    assert view.busy and view.reruns == 0
    view._on_msg(view, {"type": "cancel"}, [])
    assert not view.busy and view.status == "cancelled"
    view._on_msg(view, {"type": "run"}, [])
    assert view.reruns == 1
    release.set()
    assert view.wait(TIMEOUT) and view.shown == []


def test_job_view_cache_key_is_the_given_one():
    view = View()
    view._jobs = Jobs("test-view-cache", cache_size=2)
    view._start("computing", lambda p: "result", view.shown.append, key=("layer", "metric"))
    assert view.wait(TIMEOUT)
    assert view._jobs.cached(("layer", "metric")) == "result"


def test_the_dataset_views_take_their_job_glue_from_job_view():
    """One place for the glue: the views that run one computation at a time do not repeat it."""
    from cnn_widgets.widgets.channel_importance_view import ChannelImportance
    from cnn_widgets.widgets.class_heatmaps import ClassHeatmaps
    from cnn_widgets.widgets.top_activations import TopActivations

    glue = {"_start", "_finish", "_fail", "_progress", "cancel", "wait"}
    for cls in (TopActivations, ClassHeatmaps, ChannelImportance):
        assert issubclass(cls, JobView) and not glue & set(vars(cls)), cls.__name__
        assert "_rerun" in vars(cls), cls.__name__


def test_a_script_that_ends_while_a_view_computes_exits_cleanly(tmp_path):
    """The interpreter's exit cancels the running jobs and waits for their workers: a worker still inside
    torch at teardown aborted the process ("terminate called without an active exception")."""
    import subprocess
    import sys

    script = tmp_path / "ends_early.py"
    script.write_text(
        "import threading, torch\n"
        "from torch import nn\n"
        "from cnn_widgets import AttributionView\n"
        "torch.manual_seed(0)\n"
        "model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),\n"
        "                      nn.Linear(16, 4)).eval()\n"
        "view = AttributionView(model, torch.rand(3, 96, 96), 'integrated_gradients', options={'n_steps': 5000})\n"
        "assert view.busy and any(t.name == 'cnn_widgets-attribution' for t in threading.enumerate())\n"
        "print('leaving while busy', flush=True)\n"
    )
    for _ in range(3):  # the abort came at random: on about half of the exits
        done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert "leaving while busy" in done.stdout
        assert "terminate called" not in done.stderr, done.stderr[-2000:]
