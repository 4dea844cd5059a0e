"""Hostile and careless input, against a real daemon that runs with file permissions in
force: link swaps, names that collide or do not fit, paths too deep, unreadable files and
folders, damaged state, and documents built to eat memory or time."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import zipfile
from pathlib import Path

from tests.helpers import corpus, drop, run_cli, status_json, wait_for

SECRET = "TOP-SECRET-MARKER-7f3a"


def outside_secret(tmp_path: Path) -> Path:
    secret = tmp_path / "outside" / "secret.md"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_text(f"# Private\n\n{SECRET}\n")
    return secret


def leaked(output: Path) -> list[Path]:
    """Every file under `output` that holds the outside file's marker."""
    return [p for p in output.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]


def swap_for_link(path: Path, target: Path) -> None:
    """Replace `path` with a symlink to `target` in one atomic step, as an attacker would."""
    temp = path.with_name(f".{path.name}.swap")
    os.symlink(target, temp)
    os.replace(temp, path)


def test_a_symlink_swapped_in_never_brings_in_an_outside_file(make_daemon, tmp_path) -> None:
    secret = outside_secret(tmp_path)
    watch = make_daemon("watch")
    (watch.input / "waiting.md").write_text("# Waiting\n\nplain words\n")
    watch.wait_state("waiting.md", ("pending",))
    swap_for_link(watch.input / "waiting.md", secret)  # swapped while its job waits
    # The other is swapped once it runs: the converter is slowed so the swap lands mid-job.
    work = make_daemon("work", root=tmp_path, faults="slow:running*:2")
    (watch.input / "running.md").write_text("# Running\n\npublic words\n")
    watch.wait_state("running.md", ("processing",))
    swap_for_link(watch.input / "running.md", secret)
    running = watch.wait_terminal("running.md")
    assert running["state"] == "completed", running
    assert "public words" in (watch.output / "running.md.md").read_text()
    waiting = watch.wait_terminal("waiting.md")
    assert waiting["state"] == "failed" and waiting["error"]["type"] == "unsafe_path", waiting
    assert not leaked(watch.output)
    assert work.stop() == 0 and watch.stop() == 0


def test_a_file_named_like_a_status_file_cannot_overwrite_another_record(make_daemon) -> None:
    daemon = make_daemon("run")
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "y.pdf")
    assert daemon.wait_terminal("y.pdf")["state"] == "completed"
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "y.pdf.status")
    intruder = daemon.wait_terminal("y.pdf.status")
    assert intruder["state"] == "failed" and intruder["error"]["type"] == "invalid_name"
    assert "'.status'" in intruder["error"]["message"]
    passes = len(daemon.events("reconcile.pass"))
    wait_for(lambda: len(daemon.events("reconcile.pass")) >= passes + 2, 20, "two passes")
    record = daemon.sidecar("y.pdf")
    assert record["source"] == "y.pdf" and record["state"] == "completed", record
    assert not (daemon.output / "y.pdf.status.md").exists()
    assert len([e for e in daemon.events("job.started") if e["source"] == "y.pdf"]) == 1
    assert daemon.stop() == 0


def deep_folder(top: Path, depth: int = 22) -> None:
    """Folders nested past PATH_MAX (4096 bytes), made one level at a time, with a file
    at the bottom."""
    top.mkdir(parents=True, exist_ok=True)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d" * 200, dir_fd=fd)
        child = os.open("d" * 200, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    out = os.open("deep.md", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
    os.write(out, b"# too deep\n")
    os.close(out)
    os.close(fd)


def test_a_folder_deeper_than_path_max_is_skipped_and_the_watcher_lives(
    make_daemon, tmp_path
) -> None:
    deep_folder(tmp_path / "input" / "before")  # met by the start-up scan
    # No rescan during the test: what converts later was seen by inotify, still alive.
    daemon = make_daemon("run", config={"jobs": {"reconcile_interval": 300}})
    wait_for(lambda: daemon.events("watch.started"), 30, "the observer to start")
    deep_folder(daemon.input / "during")  # met by live events
    drop(corpus("csv/csv-comma.csv"), daemon.input / "after.csv")
    assert daemon.wait_terminal("after.csv")["state"] == "completed"
    wait_for(
        lambda: (
            {"before", "during"}
            <= {
                Path(e["path"]).relative_to(daemon.input).parts[0]
                for e in daemon.events("watch.skipped")
            }
        ),
        30,
        "both deep folders to be passed over",
    )
    daemon.check_running()
    assert not daemon.events("watch.thread_died")
    skipped = daemon.events("watch.skipped")
    assert len(skipped) == len({e["path"] for e in skipped}), skipped  # once per path
    drop(corpus("csv/csv-tab.csv"), daemon.input / "later.csv")
    assert daemon.wait_terminal("later.csv", timeout=20)["state"] == "completed"
    assert daemon.stop() == 0


def input_entries(daemon) -> set[str]:
    return {p.name for p in daemon.input.iterdir()}


def test_enqueue_refuses_a_folder_that_holds_the_inbox(make_daemon) -> None:
    daemon = make_daemon("run")
    (daemon.input / "parent_link").symlink_to("..")
    before = input_entries(daemon)
    for target in (daemon.root, daemon.input / "parent_link"):
        done = run_cli(daemon.config_file, "enqueue", str(target), timeout=30)
        assert done.returncode == 1, done
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
        assert "input folder" in done.stderr or "unsafe_path" in done.stderr, done.stderr
    assert input_entries(daemon) == before  # nothing copied, no partial copy left
    daemon.check_running()
    assert daemon.stop() == 0


def test_enqueue_refuses_what_is_not_a_file_or_folder(make_daemon) -> None:
    daemon = make_daemon("run")
    before = input_entries(daemon)
    done = run_cli(daemon.config_file, "enqueue", "/dev/zero", timeout=30)
    assert done.returncode == 1 and "not a regular file" in done.stderr, done
    assert input_entries(daemon) == before
    assert daemon.stop() == 0


def test_enqueue_refuses_an_outward_symlink(make_daemon, tmp_path) -> None:
    secret = outside_secret(tmp_path)
    daemon = make_daemon("run")
    (daemon.input / "link.md").symlink_to(secret)
    done = run_cli(daemon.config_file, "enqueue", str(daemon.input / "link.md"))
    assert done.returncode == 1 and "unsafe_path" in done.stderr, done
    drop(corpus("csv/csv-comma.csv"), daemon.input / "fine.csv")
    assert daemon.wait_terminal("fine.csv")["state"] == "completed"
    assert daemon.sidecar("link.md") is None and not leaked(daemon.output)
    assert daemon.stop() == 0


def test_a_symlink_loop_gets_one_line_from_every_command(make_daemon, tmp_path) -> None:
    daemon = make_daemon("run")
    (daemon.input / "loop").symlink_to("loop")
    (tmp_path / "loop2").symlink_to("loop2")
    commands = [
        ("enqueue", str(daemon.input / "loop")),
        ("enqueue", str(tmp_path / "loop2")),
        ("show", str(daemon.input / "loop")),
        ("cancel", str(daemon.input / "loop")),
        ("retry", str(daemon.input / "loop")),
        ("show", str(tmp_path / "loop2")),
    ]
    for command in commands:
        done = run_cli(daemon.config_file, *command)
        assert done.returncode == 1, (command, done)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("hotfolder: "), (command, done.stderr)
    assert daemon.stop() == 0


def test_a_name_too_long_for_its_status_file_ends_with_a_visible_record(make_daemon) -> None:
    daemon = make_daemon("run")
    name = "n" * 241 + ".docx"  # 246 bytes: the name fits, `<name>.status.json` does not
    drop(corpus("docx/word_sample.docx"), daemon.input / name)

    def listed() -> dict | None:
        rows = json.loads(run_cli(daemon.config_file, "jobs", "--json").stdout)
        return next((r for r in rows if r["source"] == name and r["state"] == "failed"), None)

    row = wait_for(listed, 60, "the long name to be listed as failed")
    assert row["error_type"] == "invalid_name"
    shown = run_cli(daemon.config_file, "show", name)
    assert shown.returncode == 0 and "invalid_name" in shown.stdout, shown
    passes = len(daemon.events("reconcile.pass"))
    wait_for(lambda: len(daemon.events("reconcile.pass")) >= passes + 3, 30, "rescans")
    assert len([e for e in daemon.events("job.failed") if e["source"] == name]) == 1
    assert not [e for e in daemon.events("watch.skipped") if name in e["path"]]
    assert daemon.stop() == 0


def test_unreadable_files_are_retried_then_failed_and_converted_once_readable(
    make_daemon,
) -> None:
    daemon = make_daemon("run", config={"jobs": {"max_attempts": 2, "retry_backoff": 0.3}})
    locked = daemon.input / "locked"
    locked.mkdir()
    drop(corpus("csv/csv-tab.csv"), locked / "hidden.csv")
    locked.chmod(0)
    drop(corpus("csv/csv-comma.csv"), daemon.input / "closed.csv")
    (daemon.input / "closed.csv").chmod(0)
    final = daemon.wait_state("closed.csv", ("failed",))
    assert final["error"]["type"] == "io_error" and final["attempts"] == 2, final
    assert "Permission denied" in final["error"]["message"]
    assert "Gave up after 2 attempts" in final["error"]["message"]
    passes = len(daemon.events("reconcile.pass"))
    wait_for(lambda: len(daemon.events("reconcile.pass")) >= passes + 3, 30, "rescans")
    folder_lines = [e for e in daemon.events("watch.skipped") if e["path"] == str(locked)]
    assert len(folder_lines) == 1 and folder_lines[0]["reason"] == "unreadable_folder"
    assert len([e for e in daemon.events("job.failed") if e["source"] == "closed.csv"]) == 1
    (daemon.input / "closed.csv").chmod(0o644)  # fixed: the next pass converts it
    wait_for(
        lambda: (daemon.sidecar("closed.csv") or {}).get("state") == "completed", 30, "convert"
    )
    locked.chmod(0o755)
    assert daemon.stop() == 0


def test_file_names_that_are_not_utf8_convert(make_daemon) -> None:
    daemon = make_daemon("run")
    names = {
        os.fsdecode(b"scan-\xe4\xf6.pdf"): "pdf/multi_page.pdf",
        os.fsdecode(b"notes-\xe9.md"): "md/wiki.md",
    }
    for name, doc in names.items():
        drop(corpus(doc), daemon.input / name)
    for name in names:
        status = daemon.wait_terminal(name)
        assert status["state"] == "completed", (name, status)
        json.loads((daemon.output / f"{name}.status.json").read_bytes())
        assert (daemon.output / f"{name}.md").read_text(errors="replace").strip()
    assert daemon.stop() == 0


def test_a_damaged_index_and_queue_are_rebuilt(make_daemon, tmp_path) -> None:
    first = make_daemon("run")
    for i in range(3):
        drop(corpus("csv/csv-comma.csv"), first.input / f"c{i}.csv")
    for i in range(3):
        first.wait_terminal(f"c{i}.csv")
    assert first.stop() == 0
    state = first.root / "state"
    for name in ("index.db", "queue.db"):
        for extra in ("-wal", "-shm"):
            (state / f"{name}{extra}").unlink(missing_ok=True)
        (state / name).write_bytes(os.urandom(5000))
    for command in (("status",), ("jobs",), ("show", "c0.csv")):
        done = run_cli(first.config_file, *command)
        stopped = 3 if command == ("status",) else 0  # status: nothing runs
        assert done.returncode == stopped and "Traceback" not in done.stderr, (command, done)
    assert json.loads(run_cli(first.config_file, "jobs", "--json").stdout).__len__() == 3
    drop(corpus("csv/csv-tab.csv"), first.input / "new.csv")
    again = make_daemon("run", root=tmp_path)
    assert again.wait_terminal("new.csv")["state"] == "completed"
    assert again.events("queue.damaged")
    assert list(state.glob("queue.db.damaged-*"))
    assert status_json(again.config_file)["states"]["completed"] == 4
    assert again.stop() == 0


def test_doctor_refuses_what_run_refuses(tmp_path) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[paths]\ninput = 'in'\n")
    import subprocess

    from tests.helpers import hotfolder_argv

    for env in (
        {"HOTFOLDER_PATHS__OUTPUT": "/"},
        {"HOTFOLDER_PATHS__OUTPUT": str(tmp_path / "in")},
    ):
        answers = []
        for command in ("doctor", "run"):
            done = subprocess.run(
                hotfolder_argv("--config", str(config), command),
                capture_output=True,
                text=True,
                timeout=60,
                env={**os.environ, **env},
            )
            answers.append((done.returncode, done.stderr.strip()))
        assert answers[0] == answers[1] and answers[0][0] == 78, answers
        assert "HOTFOLDER_PATHS__OUTPUT" in answers[0][1] or "paths." in answers[0][1]


def bloated_docx(target: Path) -> Path:
    """A DOCX of about 450 KB whose document.xml unpacks to 125 MB of paragraphs: under
    docling's 128 MiB member limit, and far over any sane memory budget once parsed."""
    source = zipfile.ZipFile(corpus("docx/word_tables.docx"))
    document = source.read("word/document.xml").decode()
    head, rest = document.split("<w:body>", 1)
    tail = rest.rsplit("</w:body>", 1)[1]
    paragraph = "<w:p><w:r><w:t>All work and no play makes Jack a dull boy.</w:t></w:r></w:p>"
    body = paragraph * ((125 << 20) // len(paragraph))
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for item in source.infolist():
            if item.filename == "word/document.xml":
                out.writestr(item, f"{head}<w:body>{body}</w:body>{tail}")
            else:
                out.writestr(item, source.read(item.filename))
    return target


def test_a_document_that_eats_memory_fails_fast_as_too_large(make_daemon, tmp_path) -> None:
    bomb = bloated_docx(tmp_path / "bloated.docx")
    daemon = make_daemon("run", config={"workers": {"max_memory_mb": 1000}})
    drop(bomb, daemon.input / "bloated.docx")
    drop(corpus("docx/word_sample.docx"), daemon.input / "fine.docx")
    final = daemon.wait_terminal("bloated.docx", timeout=90)
    assert final["state"] == "failed" and final["error"]["type"] == "too_large", final
    assert final["attempts"] == 1 and "workers.max_memory_mb" in final["error"]["message"]
    assert daemon.wait_terminal("fine.docx")["state"] == "completed"
    assert daemon.events("job.memory_exceeded")
    assert daemon.stop() == 0


def entity_bomb(target: Path) -> Path:
    """The corpus's USPTO patent with nested entities that expand to 6 MB inside one
    paragraph (expat's own amplification limit lets this through)."""
    text = corpus("xml/ipa20200022300.xml").read_text()
    entities = f'<!ENTITY a0 "{"lol " * 25}">\n' + "".join(
        f'<!ENTITY a{i} "{f"&a{i - 1};" * 10}">\n' for i in range(1, 4)
    )
    text = text.replace(
        '"us-patent-application-v44-2014-04-03.dtd" [ ]>',
        f'"us-patent-application-v44-2014-04-03.dtd" [\n{entities}]>',
    )
    paragraph = re.search(r'<p id="p-0002" num="0001">', text)
    assert paragraph
    target.write_text(text[: paragraph.end()] + "&a3;" * 60 + text[paragraph.end() :])
    return target


def test_an_xml_entity_bomb_fails_in_seconds(make_daemon, tmp_path) -> None:
    bomb = entity_bomb(tmp_path / "patent.xml")
    daemon = make_daemon("run")
    drop(bomb, daemon.input / "patent.xml")
    final = daemon.wait_terminal("patent.xml", timeout=30)
    assert final["state"] == "failed" and final["error"]["type"] == "too_large", final
    assert "entit" in final["error"]["message"] and final["duration_s"] < 5
    assert daemon.stop() == 0


def test_fifos_sockets_and_devices_get_one_log_line_each(make_daemon) -> None:
    daemon = make_daemon("run")
    specials = {
        "pipe.pdf": lambda p: os.mkfifo(p),
        "dev.pdf": lambda p: os.mknod(p, stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        "sock.pdf": lambda p: socket.socket(socket.AF_UNIX).bind(str(p)),
    }
    for name, make in specials.items():
        make(daemon.input / name)
    drop(corpus("csv/csv-comma.csv"), daemon.input / "fine.csv")
    assert daemon.wait_terminal("fine.csv")["state"] == "completed"
    passes = len(daemon.events("reconcile.pass"))
    wait_for(lambda: len(daemon.events("reconcile.pass")) >= passes + 3, 30, "rescans")
    for name, reason in (
        ("pipe.pdf", "fifo"),
        ("dev.pdf", "character_device"),
        ("sock.pdf", "socket"),
    ):
        lines = [e for e in daemon.events("watch.skipped") if e["path"].endswith(name)]
        assert [e["reason"] for e in lines] == [reason], (name, lines)
        assert daemon.sidecar(name) is None
    assert daemon.stop() == 0


def test_hard_links_can_be_refused(make_daemon, tmp_path) -> None:
    secret = outside_secret(tmp_path)
    daemon = make_daemon("run", config={"jobs": {"refuse_hard_links": True}})
    os.link(secret, daemon.input / "linked.md")
    drop(corpus("md/wiki.md"), daemon.input / "single.md")
    refused = daemon.wait_terminal("linked.md")
    assert refused["state"] == "failed" and refused["error"]["type"] == "unsafe_path"
    assert "hard links" in refused["error"]["message"]
    assert daemon.wait_terminal("single.md")["state"] == "completed"
    assert not leaked(daemon.output)
    assert daemon.stop() == 0


def test_content_replaced_mid_conversion_waits_for_its_turn(make_daemon) -> None:
    daemon = make_daemon("run", faults="slow:swap*:3", config={"jobs": {"reconcile_interval": 0.3}})
    (daemon.input / "swap.md").write_text("# First\n\nfirst content\n")
    first = daemon.wait_state("swap.md", ("processing",))
    replacement = daemon.input / ".swap.md.part"
    replacement.write_text("# Second\n\nsecond content\n")
    os.replace(replacement, daemon.input / "swap.md")
    wait_for(
        lambda: (
            (s := daemon.sidecar("swap.md"))
            and s["state"] == "completed"
            and s["sha256"] != first["sha256"]
        ),
        60,
        "the second content to complete",
    )
    # While the first content converted (several reconciler passes), nothing set its
    # record back to pending: the new content waited for the lock.
    ended = next(e for e in daemon.events("job.completed") if e["job_id"] == first["job_id"])
    started = next(e for e in daemon.events("job.started") if e["job_id"] == first["job_id"])
    meanwhile = [
        e
        for e in daemon.events("job.pending")
        if started["timestamp"] < e["timestamp"] < ended["timestamp"]
    ]
    assert not meanwhile, meanwhile
    assert daemon.events("intake.changed_while_running")
    assert "second content" in (daemon.output / "swap.md.md").read_text()
    assert daemon.stop() == 0


def test_small_cli_answers(make_daemon) -> None:
    daemon = make_daemon("run")
    drop(corpus("docx/word_sample.docx"), daemon.input / "new\nline.docx")
    daemon.wait_terminal("new\nline.docx")
    negative = run_cli(daemon.config_file, "jobs", "--limit", "-5")
    assert negative.returncode == 2 and "--limit" in negative.stderr
    empty = run_cli(daemon.config_file, "cancel", "")
    assert empty.returncode == 1 and "'.'" not in empty.stderr and "job id" in empty.stderr
    table = run_cli(daemon.config_file, "jobs").stdout.strip().splitlines()
    assert len(table) == 2 and "new\\nline.docx" in table[1], table
    assert daemon.stop() == 0
    import subprocess

    from tests.helpers import hotfolder_argv

    bad_env = subprocess.run(
        hotfolder_argv("--config", str(daemon.config_file), "status"),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOTFOLDER_WORKERS__COUNT": "many"},
    )
    assert bad_env.returncode == 78
    assert "HOTFOLDER_WORKERS__COUNT" in bad_env.stderr and "config.toml:" not in bad_env.stderr
    converted = run_cli(
        daemon.config_file,
        "convert",
        str(corpus("csv/csv-comma.csv")),
        "-o",
        str(daemon.root / "t"),
    )
    assert converted.returncode == 0
    assert re.search(r"^status +/\S+csv-comma\.csv\.status\.json", converted.stdout, re.M), (
        converted.stdout
    )


def test_library_warnings_become_one_short_log_line() -> None:
    import io
    import warnings

    from watcher.logs import configure_logging
    from watcher.settings import LogConfig

    stream = io.StringIO()
    configure_logging(LogConfig(format="json"), "watch", stream)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        for n in range(3):  # the same place in the code, three times
            warnings.warn(f"watch {n}: " + "/x/y " * 100_000, RuntimeWarning, stacklevel=1)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 1000, lines[:2]
    record = json.loads(lines[0])
    assert record["event"] == "python.warning" and record["category"] == "RuntimeWarning"
    assert record["message"].endswith("characters)")
