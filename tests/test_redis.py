"""hotfolder on several hosts through Redis, with real processes and a real redis-server of
the test's own (on a free port, with its own data folder), so it can be restarted or cut
off. A "host" is a process group in its own UTS namespace (its own host name) with its
own state dir; the input and output folders are shared, as an NFS mount would be."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from handlers.parts import plan
from tests.helpers import (
    Daemon,
    RedisServer,
    as_host,
    corpus,
    drop,
    drop_batch,
    long_pdf,
    run_cli,
    status_json,
    wait_for,
)

DOCS = [
    "pdf/multi_page.pdf",
    "docx/word_sample.docx",
    "html/example_03.html",
    "csv/csv-comma.csv",
    "md/wiki.md",
]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    server.stop()


def redis_config(url: str, lease_ttl: float = 4, **paths: str) -> dict:
    return {
        "queue": {"backend": "redis", "redis_url": url, "lease_ttl": lease_ttl},
        "jobs": {"reconcile_interval": 1.0, "retry_backoff": 0.5, "max_attempts": 5},
        "workers": {"count": 1, "poll_max_delay": 0.25, "shutdown_timeout": 5},
        **({"paths": paths} if paths else {}),
    }


def start_hosts(make_daemon, tmp_path: Path, url: str, names: list[str], **kwargs) -> list[Daemon]:
    shared = tmp_path / "shared"
    config = redis_config(url, input=str(shared / "input"), output=str(shared / "output"))
    wrap = kwargs.pop("wrap", None)
    return [
        make_daemon(
            "work",
            root=tmp_path / name,
            config=config,
            wrap=wrap or as_host(name),
            session=True,
            **kwargs,
        )
        for name in names
    ]


def all_terminal(watch: Daemon, names: list[str]) -> bool:
    watch.check_running()
    states = watch.states()
    return all(states.get(n) in ("completed", "failed", "cancelled") for n in names)


def starts_by_file(daemons: list[Daemon]) -> dict[str, list[str]]:
    """source -> the worker of each `job.started` across the hosts' logs."""
    found: dict[str, list[str]] = {}
    for daemon in daemons:
        for event in daemon.events("job.started"):
            found.setdefault(event["source"], []).append(daemon.root.name)
    return found


def assert_same_results(watch: Daemon, batch: dict[str, str]) -> None:
    """Every copy of a corpus document holds the same Markdown: nothing was converted twice
    into different results, nothing is partial."""
    by_doc: dict[str, set[str]] = {}
    for name, doc in batch.items():
        by_doc.setdefault(doc, set()).add((watch.output / f"{name}.md").read_text())
    for doc, texts in by_doc.items():
        assert len(texts) == 1 and next(iter(texts)).strip(), doc


def test_two_hosts_share_one_queue_and_convert_each_file_once(
    make_daemon, tmp_path, redis_server
) -> None:
    watch = make_daemon("watch", root=tmp_path / "shared", config=redis_config(redis_server.url))
    hosts = start_hosts(make_daemon, tmp_path, redis_server.url, ["hosta", "hostb"])
    batch = drop_batch(watch.input, 40, DOCS, "f")
    wait_for(lambda: all_terminal(watch, list(batch)), 240, "the batch")
    assert set(watch.states().values()) == {"completed"}
    starts = starts_by_file(hosts)
    assert {name: len(runs) for name, runs in starts.items()} == dict.fromkeys(batch, 1)
    took = {runs[0] for runs in starts.values()}
    assert took == {"hosta", "hostb"}, took  # both hosts took jobs
    workers = {(watch.sidecar(name) or {})["worker"].split(":")[0] for name in batch}
    assert workers == {"hosta", "hostb"}  # host names in the records
    assert_same_results(watch, batch)
    report = status_json(hosts[0].config_file)  # any host's status sees every host
    assert report["states"]["completed"] == 40  # a worker host's index, synced
    alive = {(h["host"], h["role"]) for h in report["hosts"]}
    assert {("hosta", "work"), ("hostb", "work")} <= alive, alive
    for daemon in (*hosts, watch):
        assert daemon.stop() == 0


def test_a_host_killed_mid_batch_loses_nothing(make_daemon, tmp_path, redis_server) -> None:
    watch = make_daemon("watch", root=tmp_path / "shared", config=redis_config(redis_server.url))
    hosta, hostb = start_hosts(make_daemon, tmp_path, redis_server.url, ["hosta", "hostb"])
    slow = ["pdf/redp5110_sampled.pdf", "pdf/normal_4pages.pdf", *DOCS]
    batch = drop_batch(watch.input, 16, slow)
    busy = lambda: any(  # noqa: E731
        (s := watch.sidecar(n) or {}).get("state") == "processing"
        and s["worker"].startswith("hosta:")
        for n in batch
    )
    wait_for(busy, 120, "a job running on hosta")
    hosta.kill_group()  # the whole host at once, workers included
    killed_at = time.monotonic()
    wait_for(lambda: all_terminal(watch, list(batch)), 240, "the batch")
    assert set(watch.states().values()) == {"completed"}
    assert watch.events("job.worker_lost"), "the lost job was recovered"
    assert_same_results(watch, batch)
    print(f"batch done {time.monotonic() - killed_at:.1f} s after the kill")
    assert hostb.stop() == 0 and watch.stop() == 0


@pytest.fixture
def partition(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A network namespace reached over a veth pair: the host side is 10.x.y.1, the
    namespace 10.x.y.2; `cut` and `mend` take the link down and up."""
    tag = secrets.token_hex(3)
    space, outer, inner = f"hf{tag}", f"hfo{tag}", f"hfi{tag}"
    net = f"10.{int(tag[:2], 16)}.{int(tag[2:4], 16)}"
    commands = [
        ["ip", "netns", "add", space],
        ["ip", "link", "add", outer, "type", "veth", "peer", "name", inner],
        ["ip", "link", "set", inner, "netns", space],
        ["ip", "addr", "add", f"{net}.1/24", "dev", outer],
        ["ip", "link", "set", outer, "up"],
        ["ip", "netns", "exec", space, "ip", "addr", "add", f"{net}.2/24", "dev", inner],
        ["ip", "netns", "exec", space, "ip", "link", "set", inner, "up"],
        ["ip", "netns", "exec", space, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield {"space": space, "link": outer, "address": f"{net}.1"}
    finally:
        subprocess.run(["ip", "link", "del", outer], capture_output=True)
        subprocess.run(["ip", "netns", "del", space], capture_output=True)


def test_a_partitioned_host_loses_its_lease_and_its_late_result_is_dropped(
    make_daemon, tmp_path, partition
) -> None:
    redis = RedisServer(tmp_path / "redis", bind=f"127.0.0.1 {partition['address']}")
    try:
        watch = make_daemon("watch", root=tmp_path / "shared", config=redis_config(redis.url))
        far_url = f"redis://{partition['address']}:{redis.port}/0"
        in_namespace = as_host("far", "ip", "netns", "exec", partition["space"])
        (far,) = start_hosts(make_daemon, tmp_path, far_url, ["far"], wrap=in_namespace)
        long_pdf(tmp_path / "long.pdf", copies=8)
        drop(tmp_path / "long.pdf", watch.input / "long.pdf")
        first = watch.wait_state("long.pdf", ("processing",), timeout=60)
        assert first["worker"].startswith("far:")
        (near,) = start_hosts(make_daemon, tmp_path, redis.url, ["near"])
        subprocess.run(["ip", "link", "set", partition["link"], "down"], check=True)  # cut
        final = watch.wait_state("long.pdf", ("completed",), timeout=240)
        assert final["worker"].startswith("near:"), final  # the other host converted it
        subprocess.run(["ip", "link", "set", partition["link"], "up"], check=True)  # mend
        wait_for(lambda: far.events("job.lease_lost"), 60, "the far host to drop its result")
        time.sleep(3)  # the far host is back and running: nothing it does may change this
        assert watch.sidecar("long.pdf") == final
        assert not [e for e in far.events("job.completed") if e["source"] == "long.pdf"]
        assert watch.events("job.worker_lost")
        for daemon in (far, near, watch):
            assert daemon.stop() == 0
    finally:
        redis.stop()


def test_redis_restarted_with_and_without_its_data_loses_nothing(
    make_daemon, tmp_path, redis_server
) -> None:
    watch = make_daemon("watch", root=tmp_path / "shared", config=redis_config(redis_server.url))
    hosts = start_hosts(make_daemon, tmp_path, redis_server.url, ["hosta", "hostb"])
    slow = ["pdf/redp5110_sampled.pdf", *DOCS]
    everything: dict[str, str] = {}
    for keep_data, prefix in ((True, "kept"), (False, "lost")):
        batch = drop_batch(watch.input, 12, slow, prefix)
        running = lambda b=batch: any(  # noqa: E731
            state == "processing" for name, state in watch.states().items() if name in b
        )
        wait_for(running, 120, "a job running")
        redis_server.restart(keep_data=keep_data)
        wait_for(lambda b=batch: all_terminal(watch, list(b)), 300, f"the batch ({prefix})")
        everything.update(batch)
    assert set(watch.states().values()) == {"completed"}, watch.states()
    assert_same_results(watch, everything)
    for daemon in (*hosts, watch):
        daemon.check_running()  # they rode out the outage
        assert daemon.stop() == 0


def test_while_redis_is_down_status_and_doctor_say_so_and_files_wait(
    make_daemon, tmp_path, redis_server
) -> None:
    watch = make_daemon("watch", root=tmp_path / "shared", config=redis_config(redis_server.url))
    (host,) = start_hosts(make_daemon, tmp_path, redis_server.url, ["hosta"])
    drop(corpus("csv/csv-comma.csv"), watch.input / "before.csv")
    watch.wait_state("before.csv", ("completed",), timeout=120)
    redis_server.stop()
    batch = drop_batch(watch.input, 3, DOCS, "during")
    report = wait_for(
        lambda: (r := status_json(watch.config_file))["queue_error"] and r, 30, "status to see"
    )
    assert "is down" in report["queue_error"] and str(redis_server.port) in report["queue_error"]
    doctor = run_cli(host.config_file, "doctor")
    assert doctor.returncode == 1
    assert "FAIL" in doctor.stdout and "queue on Redis" in doctor.stdout, doctor.stdout
    time.sleep(3)  # an outage longer than the settle time and a lease TTL
    for name in batch:
        assert (watch.input / name).is_file()  # nothing taken away
        assert watch.states().get(name) in (None, "pending")  # nothing converted
    redis_server.restart(keep_data=False)  # Redis comes back empty
    wait_for(lambda: all_terminal(watch, list(batch)), 120, "the files dropped in the outage")
    assert set(watch.states().values()) == {"completed"}
    assert status_json(watch.config_file)["queue_error"] is None
    doctor = run_cli(host.config_file, "doctor")  # a worker-only host: its watcher is elsewhere
    assert doctor.returncode == 0
    assert "watcher running (on " in doctor.stdout, doctor.stdout
    for daemon in (host, watch):
        daemon.check_running()  # they rode out the outage
        assert daemon.stop() == 0


def test_a_worker_started_while_redis_is_down_waits_for_it(
    make_daemon, tmp_path, redis_server
) -> None:
    watch = make_daemon("watch", root=tmp_path / "shared", config=redis_config(redis_server.url))
    redis_server.stop()
    (host,) = start_hosts(make_daemon, tmp_path, redis_server.url, ["hosta"])
    wait_for(lambda: host.events("work.queue_unreachable"), 60, "the worker to start")
    time.sleep(2)  # its workers poll the missing queue meanwhile
    host.check_running()
    redis_server.restart(keep_data=False)
    drop(corpus("csv/csv-comma.csv"), watch.input / "after.csv")
    watch.wait_state("after.csv", ("completed",), timeout=120)
    for daemon in (host, watch):
        assert daemon.stop() == 0


def test_two_hosts_share_the_parts_of_a_long_pdf(make_daemon, tmp_path, redis_server) -> None:
    watch = make_daemon("watch", root=tmp_path / "shared", config=redis_config(redis_server.url))
    # Every part takes a second more, so that neither host can do them all alone.
    hosts = start_hosts(
        make_daemon, tmp_path, redis_server.url, ["hosta", "hostb"], faults="slow:long*:1"
    )
    long_pdf(tmp_path / "long.pdf", copies=2)  # 36 pages
    drop(tmp_path / "long.pdf", watch.input / "long.pdf")
    final = watch.wait_state("long.pdf", ("completed", "failed"), timeout=180)
    assert final["state"] == "completed" and final["pages"] == 36
    assert final["parts"] == len(plan(36, 8))
    done = {host.root.name: [e["pages"] for e in host.events("job.part_done")] for host in hosts}
    assert all(done.values()), done  # both hosts converted parts of it
    assert sorted(pages for parts in done.values() for pages in parts) == [
        list(pages) for pages in plan(36, 8)
    ]  # each part once
    for daemon in (*hosts, watch):
        assert daemon.stop() == 0
