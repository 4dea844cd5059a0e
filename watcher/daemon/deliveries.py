"""Hook deliveries, from a thread of the watcher (the leading one, with Redis): pending
deliveries are found through the job index, each command hook is run or webhook POSTed, and
where it stands is written back into the job's sidecar. At least once: a delivery is marked
done only after it succeeded, so a crash in between delivers it again, with the same id.
A hook reports an outcome; it never changes it, and never holds up a conversion."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import threading
from pathlib import Path

import structlog
import urllib3

from handlers.outbox import DELIVERED, GIVEN_UP, PENDING
from handlers.sidecar import JobStatus, now_iso
from watcher.logs import Complaint
from watcher.services import Services
from watcher.settings import CommandHook, WebhookHook

log = structlog.get_logger("hotfolder.hooks")
POLL = 1.0  # seconds between looks for due deliveries
BATCH = 200  # records looked at per pass
MAX_DELAY = 3600.0  # seconds: retries back off, but never past an hour
OUTPUT_CHARS = 2000  # of a command hook's output, logged


class Deliverer:
    def __init__(self, services: Services) -> None:
        self.services = services
        config = services.settings.hooks
        self.config = config
        hooks: list[CommandHook | WebhookHook] = [*config.command, *config.webhook]
        self.hooks = {hook.name: hook for hook in hooks}
        self.http = urllib3.PoolManager(retries=False)

    def run(self, stop: threading.Event) -> None:
        trouble = Complaint("hooks.pass_failed")
        while not stop.wait(POLL):
            try:
                if self.services.leases.lead():
                    self.deliver_due()
            except Exception as exc:  # per-pass boundary: a full or locked disk passes
                trouble.report(exc)
            else:
                trouble.resolved()

    def deliver_due(self) -> None:
        with self.services.index.connect() as db:
            keys = db.execute(
                "select source_key from jobs where hooks_pending > 0 limit ?", (BATCH,)
            ).fetchall()
        for (key,) in keys:
            self.deliver(bytes(key).decode("utf-8", "surrogateescape"))

    def deliver(self, rel: str) -> None:
        """Every due delivery of `rel`'s record, under its lease: a conversion of the file
        does not start meanwhile, and waits at most a hook's timeout."""
        leases, ledger = self.services.leases, self.services.ledger
        with leases.hold(rel) as lease:
            status = ledger.read(rel) if lease else None
            if status is None:
                return  # running now (delivered after), or gone (the next sync says so)
            due = [
                name
                for name, entry in status.hooks.items()
                if entry.get("state") == PENDING and str(entry.get("next_at") or "") <= now_iso()
            ]
            for name in due:
                self.attempt(status, name)
            if due:
                ledger.save(status)

    def attempt(self, status: JobStatus, name: str) -> None:
        entry = status.hooks[name]
        hook = self.hooks.get(name)
        attempts = int(str(entry.get("attempts") or 0)) + 1
        try:
            if hook is None:
                raise HookFailed("the hook is no longer configured")
            payload = self.payload(status, name)
            if isinstance(hook, CommandHook):
                self.run_command(hook, status, payload)
            else:
                self.post(hook, payload, str(entry["delivery"]))
        except HookFailed as exc:
            entry["attempts"], entry["last_error"] = attempts, str(exc)
            if hook is None or attempts >= self.config.max_attempts:
                entry["state"], entry["next_at"] = GIVEN_UP, None
                log.error("hook.given_up", hook=name, source=status.source, error=str(exc))
            else:
                delay = min(self.config.retry_backoff * 2 ** (attempts - 1), MAX_DELAY)
                entry["next_at"] = now_iso(delay)
                log.warning("hook.failed", hook=name, source=status.source, error=str(exc))
            return
        entry.update(attempts=attempts, state=DELIVERED, next_at=None, last_error=None)
        log.info("hook.delivered", hook=name, source=status.source, delivery=entry["delivery"])

    def payload(self, status: JobStatus, name: str) -> bytes:
        """The sidecar as written, with the event and the delivery id."""
        entry = status.hooks[name]
        body = {**status.model_dump(), "event": entry["event"], "delivery": entry["delivery"]}
        return json.dumps(body, ensure_ascii=True).encode("ascii")

    def run_command(self, hook: CommandHook, status: JobStatus, payload: bytes) -> None:
        entry = status.hooks[hook.name]
        env = {
            **os.environ,
            **self.environment(status, str(entry["delivery"]), str(entry["event"])),
        }
        try:
            done = subprocess.run(
                hook.argv,
                input=payload,
                capture_output=True,
                env=env,
                timeout=self.config.timeout_seconds,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HookFailed(f"timed out after {self.config.timeout_seconds:g} s") from None
        except OSError as exc:
            raise HookFailed(f"cannot run {hook.argv[0]}: {exc.strerror}") from None
        output = (done.stdout + done.stderr).decode("utf-8", "replace").strip()
        if output:
            log.info("hook.output", hook=hook.name, output=output[:OUTPUT_CHARS])
        if done.returncode != 0:
            raise HookFailed(f"exited with {done.returncode}")

    def environment(self, status: JobStatus, delivery: str, event: str) -> dict[str, str]:
        output_dir = self.services.settings.output_dir
        outputs = {fmt: str(output_dir / path) for fmt, path in status.outputs.items()}
        error = status.error or {}
        return {
            "HOTFOLDER_EVENT": event,
            "HOTFOLDER_JOB_ID": status.job_id,
            "HOTFOLDER_SOURCE": status.source,
            "HOTFOLDER_STATE": status.state,
            "HOTFOLDER_SIDECAR": str(self.services.ledger.path(status.source)),
            "HOTFOLDER_OUTPUT_MD": outputs.get("md", ""),
            "HOTFOLDER_OUTPUT_JSON": outputs.get("json", ""),
            "HOTFOLDER_ERROR_TYPE": str(error.get("type") or ""),
            "HOTFOLDER_DELIVERY": delivery,
        }

    def post(self, hook: WebhookHook, payload: bytes, delivery: str) -> None:
        event = json.loads(payload)["event"]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "hotfolder",
            "X-Hotfolder-Event": event,
            "X-Hotfolder-Delivery": delivery,
        }
        if hook.secret_file is not None:
            headers["X-Hotfolder-Signature"] = "sha256=" + sign(secret(hook.secret_file), payload)
        try:
            answer = self.http.request(
                "POST",
                hook.url,
                body=payload,
                headers=headers,
                timeout=urllib3.Timeout(total=self.config.timeout_seconds),
            )
        except urllib3.exceptions.HTTPError as exc:
            raise HookFailed(f"{type(exc).__name__}: {exc}") from None
        if not 200 <= answer.status < 300:
            raise HookFailed(f"HTTP {answer.status}")


class HookFailed(Exception):
    """A delivery that did not succeed; the message says why, without secrets."""


def secret(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except OSError as exc:
        raise HookFailed(f"cannot read the secret file ({exc.strerror})") from None


def sign(key: bytes, body: bytes) -> str:
    """The GitHub webhook convention: the hex HMAC-SHA256 of the exact body."""
    return hmac.new(key, body, hashlib.sha256).hexdigest()
