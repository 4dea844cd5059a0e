"""structlog set up once per process: JSON lines off a TTY (journald), readable on a TTY.
When stdout is the journal (systemd's JOURNAL_STREAM names it), each line starts with its
syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug), which journald takes
as the entry's priority: `journalctl -p warning -u hotfolder-work` picks out the trouble.

huey's and watchdog's stdlib loggers, and Python warnings, go through the same formatter.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import TextIO

import structlog

from watcher.settings import LogConfig

SHARED: list[structlog.types.Processor] = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def configure_logging(config: LogConfig, process: str, stream: TextIO = sys.stdout) -> None:
    """Route structlog and stdlib logging to `stream` (stdout for the daemons, stderr for
    the operator commands, whose stdout is their answer) in one format, tagged with
    `process`."""
    as_json = config.format == "json" or (config.format == "auto" and not stream.isatty())

    def tag(_: object, __: str, event: structlog.types.EventDict) -> structlog.types.EventDict:
        event.setdefault("process", process)
        return event

    shared = [*SHARED, tag]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    kind = JournalFormatter if is_journal(stream) else structlog.stdlib.ProcessorFormatter
    formatter = kind(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(OncePerMinute())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # docling logs every document at INFO; keep its warnings, drop the chatter.
    # huey logs every task twice at INFO; the job.* events already say it once.
    noisy_loggers = ("docling", "docling_core", "docling_parse", "watchdog", "PIL", "huey")
    for noisy in (*noisy_loggers, "transformers"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
    logging.getLogger("huey.consumer").setLevel(root.level)
    warnings.showwarning = log_warning


SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


class JournalFormatter(structlog.stdlib.ProcessorFormatter):
    """Each line prefixed with its syslog priority, as journald reads it (sd-daemon(3))."""

    def format(self, record: logging.LogRecord) -> str:
        priority = SYSLOG_PRIORITY.get(record.levelno, 6)
        return f"<{priority}>{super().format(record)}"


def is_journal(stream: TextIO) -> bool:
    """Whether `stream` is the journal: JOURNAL_STREAM holds its device and inode."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        stat = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{stat.st_dev}:{stat.st_ino}" == f"{device}:{inode}"


class Complaint:
    """A trouble that may last (a full or locked disk): one warning when it starts or
    changes, not one per attempt, and one line when it is over."""

    def __init__(self, event: str, **details: object) -> None:
        self.log = structlog.get_logger("hotfolder.trouble")
        self.event, self.details = event, details
        self.current: str | None = None

    def report(self, exc: BaseException) -> None:
        said = f"{type(exc).__name__}: {exc}"
        if said != self.current:
            self.log.warning(self.event, error=said, **self.details)
            self.current = said

    def resolved(self) -> None:
        if self.current is not None:
            self.log.info(f"{self.event}.over", **self.details)
            self.current = None


# huey's lines that say nothing to an operator: its one task listed at start, and a
# cancelled job's task met in the queue (the cancel was logged when it was made: with
# `cancel --all` this would be a warning per job).
HUEY_CHATTER = ("The following commands are available", "Task %s was revoked, not executing")
DOCLING_INVALID = "Input document %s is not valid."


class OncePerMinute(logging.Filter):
    """huey's own errors once a minute each: while Redis is down, every worker would log
    the same traceback at every poll. Its chatter (HUEY_CHATTER), never."""

    def __init__(self) -> None:
        super().__init__()
        self.last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("docling") and record.msg == DOCLING_INVALID:
            return False  # job.failed says it, naming the file, not its private copy
        if not record.name.startswith("huey"):
            return True
        if str(record.msg).startswith(HUEY_CHATTER):
            return False
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self.last.get(key, -60.0) < 60.0:
            return False
        self.last[key] = now
        return True


WARNED: set[tuple[str, int]] = set()
WARNING_CHARS = 300


def log_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    """Python warnings (watchdog's RuntimeWarnings, for one) as one short structured line,
    once per place in the code: some name every watched path, megabytes long."""
    if (filename, lineno) in WARNED:
        return
    WARNED.add((filename, lineno))
    text = str(message)
    if len(text) > WARNING_CHARS:
        text = f"{text[:WARNING_CHARS]}... ({len(text)} characters)"
    structlog.get_logger("py.warnings").warning(
        "python.warning", category=category.__name__, message=text, at=f"{filename}:{lineno}"
    )
