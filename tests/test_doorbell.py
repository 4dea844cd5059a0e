"""The doorbell that wakes idle workers when a task is enqueued: real processes, real inotify."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

from tests.helpers import wait_for
from watcher.backends.doorbell import Doorbell


def wait_once(path: str, answers: multiprocessing.Queue) -> None:
    bell = Doorbell(Path(path))
    answers.put("waiting")
    answers.put(bell.wait(60))


def test_a_ring_wakes_a_waiting_process_and_no_ring_is_lost(tmp_path: Path) -> None:
    path = tmp_path / "state" / "queue.bell"
    context = multiprocessing.get_context("fork")
    answers = context.Queue()
    waiter = context.Process(target=wait_once, args=(str(path), answers))
    waiter.start()
    assert answers.get(timeout=10) == "waiting"
    time.sleep(0.3)  # it is inside its 60 s wait now
    Doorbell(path).ring()
    assert answers.get(timeout=10) is True  # woken, not timed out
    waiter.join(5)

    bell = Doorbell(path)
    assert bell.wait(0.05) is False  # nobody rang
    Doorbell(path).ring()  # rung while nobody waits: the next wait returns at once
    started = time.monotonic()
    assert bell.wait(60) is True
    assert time.monotonic() - started < 10
    wait_for(lambda: not waiter.is_alive(), 5, "the waiter to end")
