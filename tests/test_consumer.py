"""huey's consumer as hotfolder extends it: the log line the recycle filter matches, and the
override points it relies on, pinned against the installed huey."""

from __future__ import annotations

import inspect
import logging

import pytest
from huey import MemoryHuey
from huey.consumer import Consumer

from watcher.daemon.guard import DIED


def test_huey_warns_with_the_line_the_recycle_filter_matches(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A thread consumer never started: its worker is not alive, so the health check
    # replaces it and warns, exactly as it does for a worker process that ended.
    consumer = Consumer(MemoryHuey("pin"), workers=1, worker_type="thread")
    try:
        with caplog.at_level(logging.WARNING, logger="huey.consumer"):
            consumer.check_worker_health()
    finally:
        consumer.stop_flag.set()
        for _, thread in consumer.worker_threads:
            thread.join(5)
    died = [record for record in caplog.records if record.msg == DIED]
    assert died and died[0].args == (1,), [record.msg for record in caplog.records]


def test_the_override_points_hotfolder_uses_exist() -> None:
    assert Consumer.worker_class.__name__ == "Worker"
    for name in ("get_environment", "stop", "check_worker_health", "_create_worker"):
        assert callable(getattr(Consumer, name)), name
    # hotfolder builds its workers itself (to ask each, between tasks, whether it has
    # outgrown its limits), with the arguments huey's own `_create_worker` passes.
    built = list(inspect.signature(Consumer.worker_class.__init__).parameters)
    assert built == [
        "self",
        "huey",
        "stop_flag",
        "default_delay",
        "max_delay",
        "backoff",
        "max_tasks",
    ], built
    assert "task_count" in inspect.getsource(Consumer.worker_class.loop)
