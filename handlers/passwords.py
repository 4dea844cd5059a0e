"""Password-protected PDFs. One that opens without a password (at most an owner password
restricting printing or copying) converts as any other. One that needs a user password is
opened with the candidates of `jobs.pdf_passwords_file`, tried in order; the one that opens
it decrypts a copy in the job's private scratch folder (removed with it), and that copy is
converted. No password is ever put in a message, a log line or a record."""

from __future__ import annotations

from pathlib import Path

from handlers.errors import JobError

UNLOCKED = "unlocked"  # the folder of the decrypted copy, beside the private copy


def unlock(source: Path, passwords_file: str) -> Path | None:
    """None if `source` needs no password (or is not a PDF: docling judges it); else a
    decrypted copy of it. Raises `password_required` when no candidate opens it."""
    with source.open("rb") as head:
        if head.read(1024).lstrip()[:5] != b"%PDF-":
            return None
    import pikepdf

    try:
        with pikepdf.open(source):
            return None
    except pikepdf.PasswordError:
        pass
    except pikepdf.PdfError:
        return None  # damaged: docling reads what it can, or says it is corrupt
    candidates = read_passwords(passwords_file)
    for password in candidates:
        try:
            pdf = pikepdf.open(source, password=password)
        except pikepdf.PasswordError:
            continue
        target = source.parent / UNLOCKED / source.name  # the same name: docling records it
        target.parent.mkdir(exist_ok=True)
        with pdf:
            pdf.save(target, encryption=False)
        return target
    if not passwords_file:
        raise JobError(
            "password_required",
            "This PDF is protected by a password, and no password file is configured: put "
            "its password in the file named by jobs.pdf_passwords_file, then retry the job.",
        )
    raise JobError(
        "password_required",
        f"This PDF is protected by a password, and none of the {len(candidates)} in "
        f"jobs.pdf_passwords_file ({passwords_file}) opens it: add its password there, "
        "then retry the job.",
    )


def read_passwords(passwords_file: str) -> list[str]:
    """The candidates, one per line, in order (empty lines skipped; spaces are kept, they
    may be part of a password), read at each use, so
    a password added to the file serves the next retry without a restart."""
    if not passwords_file:
        return []
    try:
        text = Path(passwords_file).read_text(encoding="utf-8")
    except OSError as exc:
        raise JobError(
            "io_error",
            f"The password file {passwords_file} cannot be read ({exc.strerror}).",
            retryable=True,
        ) from None
    return [line for line in text.splitlines() if line]
