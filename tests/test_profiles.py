"""Per-folder profiles against a real daemon: files routed by folder to their own outputs,
dispositions, page limits and priorities; a file matching none gets the top level's; the
sidecar and `jobs --profile` name the profile; bad profiles are refused at load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import corpus, drop, run_cli, status_json, toml_value, wait_for

PROFILES = [
    {
        "name": "invoices-de",
        "match": ["invoices/**"],
        "priority": 5,
        "conversion": {"to": ["md", "json", "text"]},
        "jobs": {"on_success": "archive"},
    },
    {
        "name": "reports",
        "match": ["reports/**", "*.report.md"],
        "priority": -3,
        "conversion": {"to": ["md"]},
        "jobs": {"max_pages": 2},
    },
]


def test_profiles_route_files_by_folder(make_daemon) -> None:
    daemon = make_daemon("run", config={"profiles": PROFILES})
    drop(corpus("md/mixed.md"), daemon.input / "invoices" / "a.md")
    drop(corpus("md/wiki.md"), daemon.input / "reports" / "r.md")
    drop(corpus("pdf/multi_page.pdf"), daemon.input / "reports" / "long.pdf")  # 5 pages
    drop(corpus("md/nested.md"), daemon.input / "q3.report.md")
    drop(corpus("md/mixed.md"), daemon.input / "other.md")
    done = {
        rel: daemon.wait_terminal(rel, timeout=120)
        for rel in ("invoices/a.md", "reports/r.md", "reports/long.pdf", "q3.report.md", "other.md")
    }
    invoice = daemon.wait_disposition("invoices/a.md")
    assert invoice["profile"] == "invoices-de" and invoice["priority"] == 5, invoice
    assert set(invoice["outputs"]) == {"md", "json", "text"}
    assert (
        invoice["disposition"].startswith("archived")
        and not (daemon.input / "invoices/a.md").exists()
    )
    for rel in ("reports/r.md", "q3.report.md"):
        report = done[rel]
        assert report["profile"] == "reports" and report["priority"] == -3, report
        assert set(report["outputs"]) == {"md"} and report["disposition"] is None
    limited = done["reports/long.pdf"]
    assert limited["state"] == "failed" and limited["error"]["type"] == "too_large", limited
    plain = done["other.md"]
    assert plain["profile"] is None and plain["priority"] == 0, plain
    assert set(plain["outputs"]) == {"md", "json"} and (daemon.input / "other.md").exists()
    listed = json.loads(
        run_cli(daemon.config_file, "jobs", "--profile", "reports", "--json").stdout
    )
    assert sorted(row["source"] for row in listed) == [
        "q3.report.md",
        "reports/long.pdf",
        "reports/r.md",
    ]
    shown = run_cli(daemon.config_file, "show", "invoices/a.md").stdout
    assert "profile         invoices-de" in shown, shown
    assert invoice["settings"] and invoice["settings"] != plain["settings"]
    assert status_json(daemon.config_file)["stale_settings"] == 0
    assert daemon.stop() == 0
    # The reports profile changes: its two completed jobs ran with settings that no longer
    # hold, and status says so; nothing is converted again by itself.
    daemon.config["profiles"] = [PROFILES[0], {**PROFILES[1], "conversion": {"to": ["text"]}}]
    daemon.write_config()
    assert status_json(daemon.config_file)["stale_settings"] == 2
    said = run_cli(daemon.config_file, "status").stdout
    assert "2 completed jobs were converted with settings changed since" in said, said
    shown = run_cli(daemon.config_file, "show", "reports/r.md").stdout
    assert "settings now   reports (changed since this job ran" in shown, shown
    assert "  to            text" in shown
    unchanged = run_cli(daemon.config_file, "show", "other.md").stdout
    assert "settings now   the top level\n" in unchanged and "  to            md, json" in unchanged


@pytest.mark.parametrize(
    ("profiles", "said"),
    [
        (
            [{"name": "a", "match": ["x/**"]}, {"name": "a", "match": ["y/**"]}],
            "two profiles are named 'a'",
        ),
        ([{"name": "a", "match": ["../x"]}], "can never match"),
        ([{"name": "a", "match": ["x/**"], "conversion": {"ocr": "maybe"}}], "profile 'a': ocr"),
        ([{"name": "a", "match": ["x/**"], "conversion": {"colour": 1}}], "profile 'a': colour"),
        ([{"name": "a", "match": ["x/**"], "jobs": {"max_attempts": 9}}], "not max_attempts"),
        ([{"name": "a", "match": ["x/**"], "hooks": ["nope"]}], "no hook is named nope"),
    ],
)
def test_bad_profiles_are_refused_at_load(tmp_path: Path, profiles: list, said: str) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f"profiles = {toml_value(profiles)}\n")
    done = run_cli(config, "status")
    assert done.returncode == 78 and said in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_doctor_checks_the_ocr_model_of_each_profile(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    korean = {"name": "kr", "match": ["kr/**"], "conversion": {"ocr_language": "korean"}}
    config.write_text(f"profiles = {toml_value([korean])}\n")
    done = run_cli(config, "doctor", timeout=120)
    assert done.returncode == 1 and "FAIL  profile 'kr': OCR for 'korean'" in done.stdout
    assert "ok    OCR available (RapidOCR, 'en'" in done.stdout  # the top level's is there


def test_a_profile_names_the_hooks_told_of_its_jobs(make_daemon, tmp_path: Path) -> None:
    told = tmp_path / "told"
    told.mkdir()
    touch = 'touch "$0/$(basename "$HOTFOLDER_SOURCE")"'
    hooks = {"command": [{"name": "seen", "argv": ["sh", "-c", touch, str(told)]}]}
    profiles = [
        {"name": "quiet", "match": ["quiet/**"], "hooks": []},
        {"name": "loud", "match": ["loud/**"], "hooks": ["seen"]},
    ]
    daemon = make_daemon("run", config={"hooks": hooks, "profiles": profiles})
    for rel in ("quiet/a.md", "loud/b.md", "c.md"):
        drop(corpus("md/mixed.md"), daemon.input / rel)
    for rel in ("quiet/a.md", "loud/b.md", "c.md"):
        assert daemon.wait_terminal(rel)["state"] == "completed"
    wait_for(lambda: sorted(p.name for p in told.iterdir()) == ["b.md", "c.md"], 30, "two told")
    assert daemon.sidecar("quiet/a.md")["hooks"] == {}  # its profile names no hook
    assert daemon.stop() == 0
