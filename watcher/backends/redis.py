"""Several hosts, through Redis: huey's priority queue, leases that cross hosts (a key with a
TTL that its holder renews), the reconciler's leader lease, and who is alive.

Clocks may differ between hosts: every expiry here is a Redis TTL, never a comparison of
wall clocks.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from typing import Any, ClassVar

import redis
import structlog
from huey import PriorityRedisHuey
from huey.api import Huey

from handlers.lease import Lease, Leases, key_of
from watcher.settings import Settings

log = structlog.get_logger("hotfolder.cluster")
# Take the lease if it is ours (renew it) or free (Redis forgot it, say after a restart
# without its data: nobody else converts the file then); refuse it if another holds it.
RENEW = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] or not holder then
    redis.call('set', KEYS[1], ARGV[1], 'px', ARGV[2])
    return 1
end
return 0
"""
RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
SOCKET_TIMEOUT = 5.0  # seconds; above huey's 1 s blocking read, as its docs require
CANCEL_TTL = 7 * 86400
ALIVE_TTL = 10


@cache
def client(url: str) -> Any:
    """One Redis connection pool per process and URL, with timeouts: a host cut off from
    Redis gets errors (and backs off) instead of waiting forever on a dead connection."""
    return redis.Redis.from_url(
        url,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        health_check_interval=30,
    )


def shown(url: str) -> str:
    """`url` fit to print: its password, if any, masked."""
    return re.sub(r"(://[^:/@]*:)[^/]*@", r"\1***@", url)


def prefix(settings: Settings) -> str:
    return f"hotfolder.{settings.queue.namespace}"


def owner() -> str:
    """Who holds a lease: host, pid and a nonce (a pid may come back after a restart)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class RedisLease:
    """A lease key in Redis, renewed every third of its TTL by a thread while held."""

    def __init__(self, client: Any, key: str, token: str, ttl: float) -> None:
        self.redis, self.key, self.token, self.ttl = client, key, token, ttl
        self.gone = threading.Event()  # another holder took it
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.keep, name="lease", daemon=True)
        self.thread.start()

    def renew(self) -> bool | None:
        """True: still ours; False: another's; None: Redis cannot be reached."""
        try:
            taken = self.redis.eval(RENEW, 1, self.key, self.token, int(self.ttl * 1000))
        except redis.RedisError:
            return None
        if not taken:
            self.gone.set()
        return bool(taken)

    def keep(self) -> None:
        confirmed = time.monotonic()
        while not self.done.wait(self.ttl / 3):
            answer = self.renew()
            if answer is False:
                return
            if answer:
                confirmed = time.monotonic()
            elif time.monotonic() - confirmed > self.ttl:
                self.gone.set()  # not renewed for a whole TTL: it has expired for certain
                return

    def held(self) -> bool:
        """Renewed now, so the caller has a whole TTL to write; through a short outage of
        Redis it keeps asking for one TTL, then gives up (the result is dropped)."""
        deadline = time.monotonic() + self.ttl
        while (answer := self.renew()) is None:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return answer

    @property
    def lost(self) -> bool:
        return self.gone.is_set()

    def release(self) -> None:
        self.done.set()
        self.thread.join(5)
        try:
            self.redis.eval(RELEASE, 1, self.key, self.token)
        except redis.RedisError:
            pass  # it expires by itself


class RedisLeases:
    """Leases for the workers and watchers of every host sharing one Redis."""

    def __init__(self, settings: Settings) -> None:
        self.redis = client(settings.queue.redis_url)
        self.prefix = prefix(settings)
        self.ttl = settings.queue.lease_ttl
        # The leader lease outlives a reconciler interval, so its holder keeps it.
        self.leader_ttl = 2 * settings.jobs.reconcile_interval + settings.queue.lease_ttl
        self.me = owner()

    @contextmanager
    def hold(self, rel: str) -> Iterator[Lease | None]:
        key = f"{self.prefix}.lease.{key_of(rel)}"
        token = owner()
        if not self.redis.set(key, token, nx=True, px=int(self.ttl * 1000)):
            yield None
            return
        lease = RedisLease(self.redis, key, token, self.ttl)
        try:
            yield lease
        finally:
            lease.release()

    def lead(self) -> bool:
        key = f"{self.prefix}.leader"
        try:
            return bool(self.redis.eval(RENEW, 1, key, self.me, int(self.leader_ttl * 1000)))
        except redis.RedisError as exc:
            log.warning("cluster.unreachable", error=str(exc))
            return False

    def cancel_key(self, rel: str) -> str:
        return f"{self.prefix}.cancel.{key_of(rel)}"

    def request_cancel(self, rel: str, job_id: str) -> None:
        self.redis.set(self.cancel_key(rel), job_id, ex=CANCEL_TTL)

    def cancel_requested(self, rel: str, job_id: str) -> bool:
        try:
            value = self.redis.get(self.cancel_key(rel))
        except redis.RedisError:
            return False  # asked again at the next progress point
        return value is not None and value.decode() == job_id

    def clear_cancel(self, rel: str) -> None:
        try:
            self.redis.delete(self.cancel_key(rel))
        except redis.RedisError:
            pass  # a stale request names an ended job: it cancels nothing later


class RedisBackend:
    shared: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.queue.redis_url
        self.prefix = prefix(settings)
        self.title = f"queue on Redis ({shown(self.url)})"
        self.advice = "start Redis, or check queue.redis_url and the network to it"

    def busy(self, exc: Exception) -> bool:
        return False  # huey's own loop backs off; intake tries again later

    def huey(self, repair: bool = True, patience: float | None = None) -> Huey:
        """A priority queue (`PriorityRedisHuey`) named after `queue.namespace`."""
        return PriorityRedisHuey(
            self.settings.queue.namespace,
            connection_pool=client(self.url).connection_pool,
            results=False,
            utc=True,
        )

    def leases(self) -> Leases:
        return RedisLeases(self.settings)

    def publish_alive(self, role: str, record: dict[str, object]) -> None:
        key = f"{self.prefix}.alive.{record['host']}.{role}"
        try:
            client(self.url).set(key, json.dumps(record), ex=ALIVE_TTL)
        except redis.RedisError:
            pass  # the local heartbeat file is still written; status shows Redis as down

    def alive_hosts(self) -> list[dict[str, object]]:
        """The heartbeats of every host's processes that beat within ALIVE_TTL."""
        connection = client(self.url)
        found = []
        for key in connection.scan_iter(f"{self.prefix}.alive.*"):
            value = connection.get(key)
            if value:
                found.append({"role": key.decode().rsplit(".", 1)[1], **json.loads(value)})
        return sorted(found, key=lambda beat: (str(beat["host"]), str(beat["role"])))

    def queue_sizes(self) -> tuple[int, int]:
        storage = self.huey(repair=False).storage
        return storage.queue_size(), storage.schedule_size()

    def unreachable(self, exc: Exception) -> str:
        return f"Redis at {shown(self.url)} is down ({exc})"
