"""Password-protected PDFs and page ranges, through the daemon: an AES-256 PDF opens with
the right password from the password file, fails `password_required` without one, and its
password shows up nowhere hotfolder writes; a page range converts only its pages."""

from __future__ import annotations

import os
from pathlib import Path

import pikepdf

from tests.helpers import corpus, drop, run_cli, status_json
from tests.test_searchable import tool

PASSWORD = "Zq7-unlikely-secret"
ORDINALS = "one two three four five six seven eight nine ten".split()


def locked(target: Path) -> Path:
    """multi_page.pdf encrypted by qpdf: AES-256, with a user password."""
    import subprocess

    qpdf = tool("qpdf")
    done = subprocess.run(
        [
            qpdf,
            "--encrypt",
            PASSWORD,
            "owner-" + PASSWORD,
            "256",
            "--",
            str(corpus("pdf/multi_page.pdf")),
            str(target),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode in (0, 3), done.stderr  # 3: warnings about the source only
    return target


def numbered(target: Path, pages: int) -> Path:
    """A PDF whose page N says "marker page <N in words>"."""
    pdf = pikepdf.new()
    font = pdf.make_indirect(
        pikepdf.Dictionary(
            Type=pikepdf.Name.Font, Subtype=pikepdf.Name.Type1, BaseFont=pikepdf.Name.Helvetica
        )
    )
    for n in range(pages):
        word = (ORDINALS * 2)[n] + ("" if n < 10 else "bis")
        text = f"BT /F1 24 Tf 72 700 Td (marker page {word}) Tj ET".encode()
        page = pikepdf.Dictionary(
            Type=pikepdf.Name.Page,
            MediaBox=[0, 0, 612, 792],
            Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
            Contents=pikepdf.Stream(pdf, text),
        )
        pdf.pages.append(pikepdf.Page(page))
    pdf.save(target)
    return target


def test_a_protected_pdf_opens_with_its_password_and_fails_clearly_without(
    make_daemon, tmp_path: Path
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    passwords = secrets / "pdf-passwords"
    passwords.write_text(f"not-this-one\n{PASSWORD}\n")
    passwords.chmod(0o600)
    daemon = make_daemon("run", config={"jobs": {"pdf_passwords_file": str(passwords)}})
    drop(locked(tmp_path / "src.pdf"), daemon.input / "locked.pdf")
    status = daemon.wait_terminal("locked.pdf", timeout=120)
    assert status["state"] == "completed" and status["decrypted"] is True, status
    markdown = (daemon.output / "locked.pdf.md").read_text()
    assert "The Evolution of the Word Processor" in markdown
    assert daemon.stop() == 0
    # The input is as it was: still encrypted.
    try:
        pikepdf.open(daemon.input / "locked.pdf")
        raise AssertionError("the input was decrypted in place")
    except pikepdf.PasswordError:
        pass

    # Without the password: password_required, a sentence, not retried.
    passwords.write_text("wrong-one\n")
    again = make_daemon(
        "run", root=tmp_path / "b", config={"jobs": {"pdf_passwords_file": str(passwords)}}
    )
    drop(tmp_path / "src.pdf", again.input / "locked.pdf")
    failed = again.wait_terminal("locked.pdf", timeout=120)
    assert failed["state"] == "failed" and failed["attempts"] == 1, failed
    error = failed["error"]
    assert error["type"] == "password_required" and error["retryable"] is False, error
    assert "protected by a password" in error["message"] and "1 in" in error["message"]
    # Once its password is in the file, a retry converts it.
    passwords.write_text(f"{PASSWORD}\n")
    assert run_cli(again.config_file, "retry", "locked.pdf").returncode == 0
    assert again.wait_terminal("locked.pdf", timeout=120)["state"] == "completed"
    assert again.stop() == 0
    # The password is in no log line and no file hotfolder wrote.
    for root in (daemon.root, again.root):
        for path in root.rglob("*"):
            if path.is_file() and path.resolve() != passwords.resolve():
                assert PASSWORD.encode() not in path.read_bytes(), path


def test_the_password_file_must_be_private_and_outside_the_data_folders(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    open_file = tmp_path / "pw"
    open_file.write_text("x\n")
    open_file.chmod(0o644)
    config.write_text(f'[jobs]\npdf_passwords_file = "{open_file}"\n')
    shared = run_cli(config, "status")
    assert shared.returncode == 78 and "chmod 600" in shared.stderr, shared.stderr
    (tmp_path / "input").mkdir()
    inside = tmp_path / "input" / "pw"
    inside.write_text("x\n")
    inside.chmod(0o600)
    config.write_text(f'[jobs]\npdf_passwords_file = "{inside}"\n')
    dropped = run_cli(config, "status")
    assert dropped.returncode == 78 and "lies in paths.input" in dropped.stderr, dropped.stderr


def test_a_page_range_converts_only_its_pages(make_daemon, tmp_path: Path) -> None:
    daemon = make_daemon("run", config={"conversion": {"page_range": [3, 5]}})
    drop(numbered(tmp_path / "twenty.pdf", 20), daemon.input / "twenty.pdf")
    status = daemon.wait_terminal("twenty.pdf", timeout=120)
    assert status["state"] == "completed", status
    assert status["pages"] == 3 and status["pages_total"] == 3, status
    markdown = (daemon.output / "twenty.pdf.md").read_text()
    found = [word for word in ORDINALS if f"marker page {word}" in markdown]
    assert found == ["three", "four", "five"], markdown
    assert "bis" not in markdown
    assert status_json(daemon.config_file)["states"]["completed"] == 1
    assert daemon.stop() == 0
    assert os.path.exists(daemon.input / "twenty.pdf")
