"""Configuration: exit 78 on anything wrong, env overrides, and docs kept in step."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.helpers import REPO, hotfolder_argv
from watcher.settings import ConfigError, Settings, load_settings


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        hotfolder_argv(*args),
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


@pytest.mark.parametrize(
    ("content", "env", "expected"),
    [
        (None, {}, "config file not found"),
        ("[watch]\nbogus = 1\n", {}, "watch.bogus: unknown key"),
        ("[nonsense]\nx = 1\n", {}, "nonsense: unknown key"),
        ("[workers]\ncount = -2\n", {}, "workers.count"),
        ("[watch]\nobserver = 'magic'\n", {}, "watch.observer"),
        ("[conversion]\nto = ['pptx']\n", {}, "conversion.to"),
        ("[paths\n", {}, "not valid TOML"),
        ("", {"HOTFOLDER_WORKERS__COUNT": "many"}, "workers.count"),
        ("[paths]\ninput = 'same'\noutput = 'same'\n", {}, "same folder"),
        ("", {"HOTFOLDER_PATHS": "garbage"}, "HOTFOLDER_PATHS: not valid JSON"),
        ("", {"HOTFOLDER_WORKER__COUNT": "4"}, "unknown section [worker]"),
    ],
)
def test_bad_config_exits_78_with_one_line(tmp_path: Path, content, env, expected) -> None:
    config = tmp_path / "config.toml"
    if content is not None:
        config.write_text(content)
    done = run_cli("--config", str(config), "watch", env=env)
    assert done.returncode == 78, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "state").exists(), "nothing may start on a bad config"


@pytest.mark.parametrize(
    ("content", "env", "expected"),
    [
        ("", {"HOTFOLDER_WATCH__IGNORE": "*.bak"}, "HOTFOLDER_WATCH__IGNORE: not valid JSON"),
        ("", {"HOTFOLDER_CONVERSION__TO": "md"}, "HOTFOLDER_CONVERSION__TO: not valid JSON"),
        ("", {"HOTFOLDER_BOGUS__X": "1"}, "HOTFOLDER_BOGUS__X: unknown section [bogus]"),
        ("", {"HOTFOLDER_JOBS__NOPE": "1"}, "jobs.nope: unknown key"),
        ("[workers]\ncount = 500\n", {}, "workers.count: Input should be less than or equal"),
        ("[jobs]\nretry_backoff = 1e308\n", {}, "jobs.retry_backoff"),
        ("[jobs]\nhard_timeout = inf\n", {}, "jobs.hard_timeout: Input should be a finite"),
        ("[watch]\nsettle_seconds = 0\n", {}, "watch.settle_seconds"),
        ("[jobs]\nmax_attempts = 1000\n", {}, "jobs.max_attempts"),
    ],
)
def test_values_past_sane_bounds_and_unknown_variables_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, env: dict, expected: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(content)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert expected in message and "\n" not in message, message


def test_other_hotfolder_variables_are_not_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.toml"
    config.write_text("")
    monkeypatch.setenv("HOTFOLDER_CORPUS", "/elsewhere")  # the tests' own, say
    assert load_settings(config).workers.count == 0


def test_paths_are_relative_to_the_config_file_and_env_overrides(tmp_path, monkeypatch) -> None:
    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir()
    config.write_text("[paths]\ninput = 'in'\n[workers]\ncount = 3\n")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("HOTFOLDER_WORKERS__SHUTDOWN_TIMEOUT", "5")
    monkeypatch.setenv("HOTFOLDER_PATHS__OUTPUT", str(tmp_path / "elsewhere"))
    settings = load_settings(config)
    assert settings.input_dir == tmp_path / "conf" / "in"
    assert settings.state_dir == tmp_path / "conf" / "state"
    assert settings.output_dir == tmp_path / "elsewhere"
    assert settings.workers.count == 3 and settings.workers.shutdown_timeout == 5


def documented_keys() -> dict[str, object]:
    raw = tomllib.loads((REPO / "config.toml").read_text())
    return {
        f"{section}.{key}": value for section, table in raw.items() for key, value in table.items()
    }


def test_config_toml_lists_every_setting_with_its_default() -> None:
    defaults = Settings().model_dump(exclude={"config_file", "profiles"}, mode="json")
    expected = {f"{s}.{k}": v for s, table in defaults.items() for k, v in table.items()}
    assert "\n# [[profiles]]\n" in (REPO / "config.toml").read_text()  # an example, commented
    documented = documented_keys()
    assert documented.keys() == expected.keys()
    for key, value in documented.items():
        assert value == expected[key], key
    text = (REPO / "config.toml").read_text()
    for key in documented:
        name = key.split(".")[1]
        # Every key is preceded by a comment line that states its default.
        block = text.split(f"\n{name} = ")[0].rsplit("\n\n", 1)[-1]
        assert "Default:" in block, key


def test_readme_config_table_matches_config_toml() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("| key | default | meaning |", 1)[1].split("\n\n", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| `([^`]+)` \|", section, flags=re.M)
    documented = documented_keys()
    assert {key for key, _ in rows} == set(documented)
    for key, default in rows:
        assert tomllib.loads(f"v = {default}")["v"] == documented[key], key
