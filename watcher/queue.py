"""The huey queue: one task, and an enqueue that waits out a busy store. Built per process
from the backend's huey (never at import); the backend decides where the tasks live.

Huey is only the dispatcher. Its dequeue deletes a task before it runs, so the sidecars,
not the queue, are the record of what is finished.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

import structlog
from huey.api import Huey, Task, TaskWrapper
from huey.registry import Message
from huey.signals import SIGNAL_INTERRUPTED

from watcher.backends import Backend

TASK_NAME = "hotfolder.convert"  # stored as "watcher.queue.hotfolder.convert"
PART_TASK_NAME = "hotfolder.part"  # a part of a long document (handlers.parts)
GROUP_TASKS = 100  # tasks a group holds back at most before it commits them
GROUP_WAIT = 0.05  # seconds the first held task waits at most, checked at each enqueue
log = structlog.get_logger("hotfolder.queue")


class Runner(Protocol):
    """What runs the tasks in a worker process (watcher.worker.Worker)."""

    def start(self) -> None: ...

    def run(self, rel: str, task: Task | None = None) -> None: ...

    def run_part(self, rel: str, job_id: str, first: int, last: int) -> None: ...

    def interrupted(self, signal: str, task: Task) -> None: ...

    def stop(self) -> None: ...


@dataclass
class Queue:
    huey: Huey
    convert: TaskWrapper
    part: TaskWrapper
    # The task bodies, set in the processes that run tasks (`serve`); the others only enqueue.
    handler: Callable[[str, Task | None], None] | None = None
    part_handler: Callable[[str, str, int, int], None] | None = None
    busy: Callable[[Exception], bool] = lambda exc: False  # a short wait cures it
    # .tasks, .since, .timeout: what this thread's group holds back (`together`)
    held: threading.local = field(default_factory=threading.local)

    def serve(self, worker: Runner) -> None:
        """Run tasks in this process with `worker`: its start-up and shutdown hooks run in
        each worker process, its `interrupted` puts back a task a stop cut short."""
        self.handler, self.part_handler = worker.run, worker.run_part
        self.huey.on_startup()(worker.start)
        self.huey.on_shutdown()(worker.stop)
        self.huey.signal(SIGNAL_INTERRUPTED)(worker.interrupted)

    def enqueue(self, rel: str, priority: int, timeout: float, delay: float = 0) -> None:
        """Enqueue `rel` (to run after `delay` seconds), retrying while another process
        holds the database lock."""
        self.put(self.convert.s(rel, priority=priority, delay=delay or None), rel, timeout)

    def offer_part(
        self, rel: str, job_id: str, pages: tuple[int, int], priority: int, timeout: float
    ) -> None:
        """Offer part `pages` of a running job to any worker, ahead of the waiting jobs of
        its priority: its job has a worker waiting on it already."""
        self.put(self.part.s(rel, job_id, *pages, priority=priority + 1), rel, timeout)

    def is_part(self, task: Task) -> bool:
        return isinstance(task, self.part.task_class)

    def put(self, task: Task, rel: str, timeout: float) -> None:
        tasks: list[tuple[Task, str]] | None = getattr(self.held, "tasks", None)
        if tasks is None:
            self.patiently(lambda: self.huey.enqueue(task), rel, timeout)
            return
        if not tasks:
            self.held.since = time.monotonic()
        tasks.append((task, rel))
        if len(tasks) >= GROUP_TASKS or time.monotonic() - self.held.since > GROUP_WAIT:
            try:
                self.release()
            except Exception as exc:  # the backend's own errors: the group's last commit
                log.warning("queue.group_retry", tasks=len(tasks), error=str(exc))  # retries

    @contextmanager
    def together(self, timeout: float) -> Iterator[None]:
        """Within: the tasks this thread enqueues are committed together, in one queue
        transaction (every GROUP_TASKS tasks, once the first has waited GROUP_WAIT, and
        at the end), not one each: a burst's intake enqueues hundreds in one settle pass.
        If a commit fails, the tasks stay held and the last commit raises; the caller
        takes the group's files in again. A backend without group commits (Redis)
        enqueues each task at once, as always."""
        if not hasattr(self.huey, "enqueue_all") or getattr(self.held, "tasks", None) is not None:
            yield  # no group commits here, or inside another group: that one commits
            return
        self.held.tasks, self.held.timeout = [], timeout
        try:
            yield
            self.release()
        finally:
            self.held.tasks = None

    def release(self) -> None:
        """Commit the held tasks in one transaction; kept held if the queue refuses them."""
        tasks: list[tuple[Task, str]] = self.held.tasks
        if tasks:
            batch = [task for task, _ in tasks]
            self.patiently(lambda: self.huey.enqueue_all(batch), tasks[0][1], self.held.timeout)
            tasks.clear()

    def patiently(self, enqueue: Callable[[], object], rel: str, timeout: float) -> None:
        """Run `enqueue`, retrying while another process holds the database lock."""
        deadline = time.monotonic() + timeout
        pause = 0.05
        while True:
            try:
                enqueue()
                return
            except Exception as exc:  # the backend's own errors; only a busy store waits
                if not self.busy(exc):
                    raise
                if time.monotonic() + pause > deadline:
                    raise
                log.warning("queue.enqueue_retry", source=rel, error=str(exc))
                time.sleep(pause)
                pause = min(pause * 2, 1.0)

    def depth(self) -> int:
        return int(self.huey.storage.queue_size())

    def queued_sources(self) -> set[str]:
        """Relative paths with a task waiting in the queue or scheduled for a retry (read
        without running anything), and those this thread holds back to enqueue together."""
        held = getattr(self.held, "tasks", None) or []
        return {message.args[0] for message in self.waiting()} | {rel for _, rel in held}

    def revoke(self, *rels: str) -> None:
        """Drop the waiting tasks for `rels` (one pass over the queue, however many); a
        worker that dequeues them discards them."""
        dropped = set(rels)
        for message in self.waiting():
            if message.args[0] in dropped:
                self.huey.revoke_by_id(message.id)

    def waiting(self) -> Iterator[Message]:
        """The convert tasks waiting in the queue or the schedule, without running any."""
        name = self.huey._registry.task_to_string(self.convert.task_class)
        storage = self.huey.storage
        for raw in [*storage.enqueued_items(), *storage.scheduled_items()]:
            message = self.huey.serializer.deserialize(raw)
            if message.name == name and message.args:
                yield message


def build_queue(backend: Backend, repair: bool = True, patience: float | None = None) -> Queue:
    """The queue with the convert task, on `backend`'s storage."""
    huey = backend.huey(repair, patience)

    def convert(rel: str, task: Task | None = None) -> None:
        if queue.handler is None:
            raise RuntimeError("this process does not run conversions")
        queue.handler(rel, task)

    def part(rel: str, job_id: str, first: int, last: int) -> None:
        if queue.part_handler is None:
            raise RuntimeError("this process does not run conversions")
        queue.part_handler(rel, job_id, first, last)

    queue = Queue(
        huey,
        huey.task(name=TASK_NAME, context=True)(convert),
        huey.task(name=PART_TASK_NAME)(part),
        busy=backend.busy,
    )
    return queue


def __getattr__(name: str) -> object:
    """`huey_consumer watcher.queue.huey` (or `.hotfolder`): say why not, and what to run."""
    if name in ("huey", "hotfolder", "HUEY"):
        raise AttributeError(
            f"watcher.queue.{name}: hotfolder has no module-level huey instance (its queue is "
            "built from the config at run time) and its tasks run only in hotfolder's "
            "workers. Run `hotfolder work` instead of huey_consumer: see the README's "
            "'If you know huey'."
        )
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
