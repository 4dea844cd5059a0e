"""Why a job failed, in words a person understands, and whether trying again could help."""

from __future__ import annotations

import errno


class JobError(Exception):
    """A failure with an error type (an identifier), a human sentence and a retry hint."""

    def __init__(self, type: str, message: str, retryable: bool = False) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.retryable = retryable

    def as_dict(self) -> dict[str, object]:
        return {"type": self.type, "message": self.message, "retryable": self.retryable}


def models_missing(what: str) -> JobError:
    return JobError(
        "models_missing",
        f"{what} needs docling's layout/OCR models (PyTorch), which this installation does "
        "not include. Install them (see 'Images and scanned documents' in the README) "
        "or convert the file to a PDF with a text layer first.",
    )


def classify(exc: BaseException) -> JobError:
    """Turn an unexpected exception from the conversion into a JobError."""
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, ModuleNotFoundError) and (exc.name or "").split(".")[0] == "torch":
        return models_missing("This document")
    if isinstance(exc, ImportError):
        return JobError(
            "missing_dependency",
            f"A converter component is not installed: {exc}",
        )
    if isinstance(exc, MemoryError):
        return JobError("out_of_memory", "The conversion ran out of memory.", retryable=True)
    if isinstance(exc, OSError):
        return os_error(exc)
    return JobError(
        "internal_error",
        f"The converter raised {type(exc).__name__}: {exc}",
        retryable=True,
    )


FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def disk_full(role: str, folder: object) -> JobError:
    """A full disk (or quota) under the `role` folder ("output", "state"): transient."""
    return JobError(
        "disk_full",
        f"The disk of the {role} folder ({folder}) is full. Free some space there.",
        retryable=True,
    )


def os_error(exc: OSError) -> JobError:
    """I/O errors are transient (disk full, permissions fixed later, a flaky share)."""
    if exc.errno in FULL:
        return disk_full("output", exc.filename or "its disk")
    return JobError("io_error", f"{exc.strerror or exc} ({exc.filename or 'no file'})", True)


def lost_worker(reason: str, hard_timeout: float, memory_mb: int) -> JobError:
    """The job's worker process is gone: it crashed, or was killed for running too long or
    using too much memory (that one is the document's doing: it is not retried)."""
    if reason == "timeout":
        return JobError(
            "timeout",
            f"The conversion ran longer than jobs.hard_timeout ({hard_timeout:g} s); its "
            "worker process was killed.",
            retryable=True,
        )
    if reason == "memory":
        return JobError(
            "too_large",
            f"The conversion needed more than {memory_mb} MiB of memory "
            "(workers.max_memory_mb); its worker process was stopped. A document this "
            "large needs a higher cap, or splitting into parts.",
        )
    return JobError(
        "worker_crashed",
        "The worker process converting this file died (a crash in a native library, the "
        "out-of-memory killer, or a kill signal).",
        retryable=True,
    )
