"""Prometheus metrics from the watcher: a textfile for node_exporter's collector, written
atomically every `metrics.interval` seconds, and/or an HTTP `/metrics` endpoint. Every
figure is read from the job index, the queue and the heartbeats when scraped, never kept in
process memory, so the totals survive restarts (a `purge` lowers them, as a reset would)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import structlog
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from handlers.atomic import write_atomic
from handlers.converter import DOCLING_VERSION
from handlers.sidecar import STATES, TERMINAL, age_of
from watcher.heartbeat import read_heartbeat
from watcher.logs import Complaint
from watcher.services import Services

log = structlog.get_logger("hotfolder.metrics")
BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800)  # seconds


class IndexCollector:
    """What `status` knows, as Prometheus metrics."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        index = self.services.index
        yield self.jobs(index.counts())
        with index.connect() as db:
            yield from self.finished(db)
            yield self.durations(db)
        yield self.oldest(index.oldest_pending())
        yield self.hooks(index.deliveries())
        yield from self.queue()
        yield self.workers()
        info = GaugeMetricFamily(
            "hotfolder_build_info", "hotfolder's version", labels=["version", "docling_version"]
        )
        info.add_metric([version("hotfolder"), DOCLING_VERSION], 1)
        yield info

    def jobs(self, counts: dict[str, int]) -> Metric:
        family = GaugeMetricFamily("hotfolder_jobs", "Jobs by state", labels=["state"])
        for state in STATES:
            family.add_metric([state], counts.get(state, 0))
        return family

    def finished(self, db: sqlite3.Connection) -> Iterator[Metric]:
        marks = ", ".join("?" * len(TERMINAL))
        rows = db.execute(
            "select state, coalesce(error_type, ''), coalesce(input_format, ''), count(*),"
            f" coalesce(sum(pages), 0) from jobs where state in ({marks}) group by 1, 2, 3",
            sorted(TERMINAL),
        ).fetchall()
        total = CounterMetricFamily(
            "hotfolder_jobs_finished",
            "Jobs that ended, by how",
            labels=["state", "error_type", "input_format"],
        )
        pages = CounterMetricFamily("hotfolder_pages_converted", "Pages of completed jobs")
        converted = 0
        for state, error_type, input_format, count, page_sum in rows:
            total.add_metric([state, error_type, input_format], count)
            converted += page_sum if state == "completed" else 0
        pages.add_metric([], converted)
        yield total
        yield pages

    def durations(self, db: sqlite3.Connection) -> Metric:
        """One query: per input format, how many completed jobs took at most each bound."""
        family = HistogramMetricFamily(
            "hotfolder_job_duration_seconds",
            "Conversion time of completed jobs",
            labels=["input_format"],
        )
        below = ", ".join(f"sum(duration_s <= {float(bound)!r})" for bound in BUCKETS)
        rows = db.execute(
            f"select coalesce(input_format, ''), count(*), coalesce(sum(duration_s), 0), {below}"
            " from jobs where state = 'completed' group by 1"
        ).fetchall()
        for input_format, count, total, *counts in rows:
            buckets = [(str(float(b)), n or 0) for b, n in zip(BUCKETS, counts, strict=True)]
            family.add_metric([input_format], [*buckets, ("+Inf", count)], total)
        return family

    def oldest(self, created_at: str | None) -> Metric:
        family = GaugeMetricFamily(
            "hotfolder_oldest_pending_age_seconds", "Age of the oldest pending job (0: none)"
        )
        family.add_metric([], age_of(created_at) or 0.0)
        return family

    def hooks(self, deliveries: dict[str, int]) -> Metric:
        family = GaugeMetricFamily(
            "hotfolder_hook_deliveries", "Hook deliveries on record, by state", labels=["state"]
        )
        for state, count in deliveries.items():
            family.add_metric([state], count)
        return family

    def queue(self) -> Iterator[Metric]:
        storage = self.services.queue.huey.storage  # the watcher's own, already open
        try:
            depth, scheduled = storage.queue_size(), storage.schedule_size()
        except Exception:  # the queue cannot be read: no figure rather than a wrong one
            return
        yield GaugeMetricFamily("hotfolder_queue_depth", "Tasks waiting", value=depth)
        yield GaugeMetricFamily(
            "hotfolder_retries_scheduled", "Retries waiting for their time", value=scheduled
        )

    def workers(self) -> Metric:
        family = GaugeMetricFamily(
            "hotfolder_workers_up", "Live worker processes, by host", labels=["host"]
        )
        beats = {}
        local = read_heartbeat(self.services.settings.state_dir, "work")
        if local["alive"]:
            beats[str(local["host"])] = len(local.get("workers", []))  # type: ignore[arg-type]
        try:
            for beat in self.services.backend.alive_hosts():
                if beat["role"] == "work":
                    beats[str(beat["host"])] = len(beat.get("workers", []))  # type: ignore[arg-type]
        except Exception:  # Redis down: this host's heartbeat still counts
            pass
        for host, count in sorted(beats.items()):
            family.add_metric([host], count)
        return family


def registry_of(services: Services) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(IndexCollector(services))
    return registry


def serve_metrics(services: Services, stop: threading.Event) -> None:
    """The endpoint (in prometheus_client's own daemon thread) and the textfile loop."""
    config = services.settings.metrics
    registry = registry_of(services)
    if config.listen:
        host, _, port = config.listen.rpartition(":")
        try:
            start_http_server(int(port), addr=host or "127.0.0.1", registry=registry)
        except OSError as exc:  # the port is taken: the rest of the watcher goes on
            log.error("metrics.listen_failed", address=config.listen, error=str(exc))
        else:
            log.info("metrics.listening", address=config.listen)
    if not config.textfile:
        stop.wait()  # the endpoint serves from its own thread; this one stays supervised
        return
    target, trouble = Path(config.textfile), Complaint("metrics.write_failed")
    while not stop.is_set():
        try:
            write_atomic(target, generate_latest(registry), durable=False)
        except Exception as exc:  # per-write boundary: a full disk or a locked index passes
            trouble.report(exc)
        else:
            trouble.resolved()
        stop.wait(config.interval)
