"""Hook deliveries, planned in the job's record itself: when a terminal record is saved, it
gets one pending delivery per hook that listens for its state, in the same atomic write.
The sidecars are the outbox: a pending delivery survives any crash and is delivered at
least once, under the same delivery id every time."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from handlers.sidecar import TERMINAL, JobStatus

PENDING, DELIVERED, GIVEN_UP = "pending", "delivered", "given_up"


@dataclass(frozen=True)
class Hook:
    name: str
    kind: str  # "command" or "webhook"
    on: frozenset[str]  # the terminal states it hears of
    profiles: frozenset[str | None] | None = None  # whose jobs it hears of (None: all)


def delivery_id(status: JobStatus, hook: str) -> str:
    """One id per job outcome and hook: receivers deduplicate on it."""
    outcome = f"{status.job_id}\0{status.state}\0{status.finished_at}\0{hook}"
    return hashlib.sha256(outcome.encode("utf-8", "surrogateescape")).hexdigest()[:24]


def plan(status: JobStatus, hooks: tuple[Hook, ...]) -> None:
    """Give a terminal record its pending deliveries (once per outcome; a record saved
    again for the same outcome keeps where its deliveries stand)."""
    if status.state not in TERMINAL:
        return
    for hook in hooks:
        if status.state not in hook.on:
            continue
        if hook.profiles is not None and status.profile not in hook.profiles:
            continue
        delivery = delivery_id(status, hook.name)
        if status.hooks.get(hook.name, {}).get("delivery") == delivery:
            continue
        status.hooks[hook.name] = {
            "delivery": delivery,
            "kind": hook.kind,
            "event": status.state,
            "state": PENDING,
            "attempts": 0,
            "next_at": None,
            "last_error": None,
        }


def tally(status: JobStatus) -> dict[str, int]:
    """Deliveries of the record by state."""
    counts = {PENDING: 0, DELIVERED: 0, GIVEN_UP: 0}
    for entry in status.hooks.values():
        state = str(entry.get("state"))
        if state in counts:
            counts[state] += 1
    return counts
