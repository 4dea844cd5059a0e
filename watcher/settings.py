"""Configuration: config.toml, overridden by HOTFOLDER_<SECTION>__<KEY> environment variables."""

from __future__ import annotations

import os
import re
import stat
import sys
import tomllib
from dataclasses import replace
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from handlers.converter import ConversionOptions
from handlers.ocr.engine import OcrOptions
from handlers.outputs import FORMATS

EX_CONFIG = 78


class ConfigError(Exception):
    """A missing or invalid configuration; the CLI prints it on one line and exits 78."""


DAY = 86400.0


class Section(BaseModel):
    # Every number within sane bounds, and none infinite or NaN: a value past them is a
    # mistake (workers.count = 500, retry_backoff = 1e308), refused at load with exit 78.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class PathsConfig(Section):
    input: Path = Path("input")
    output: Path = Path("output")
    state: Path = Path("state")
    archive: Path = Path("archive")
    quarantine: Path = Path("quarantine")


class WatchConfig(Section):
    observer: Literal["auto", "native", "polling"] = "auto"
    polling_interval: float = Field(2.0, gt=0, le=3600)
    # A file must stay quiet a little while, or one being written converts many times.
    settle_seconds: float = Field(2.0, ge=0.1, le=3600)
    closed_settle_seconds: float = Field(0.5, ge=0, le=3600)
    recursive: bool = True
    ignore: list[str] = []


class WorkersConfig(Section):
    count: int = Field(0, ge=0, le=64)
    poll_max_delay: float = Field(5.0, gt=0, le=300)
    shutdown_timeout: float = Field(60.0, gt=0, le=DAY)
    max_tasks_per_worker: int = Field(1000, ge=0)
    recycle_memory_mb: int = Field(1024, ge=0, le=2**24)
    max_memory_mb: int = Field(0, ge=0, le=2**24)


class QueueConfig(Section):
    backend: Literal["sqlite", "redis"] = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = Field("hotfolder", pattern=r"^[A-Za-z0-9_]+$")
    lease_ttl: float = Field(30.0, ge=2, le=3600)
    default_priority: int = Field(0, ge=-1000, le=1000)
    priority_rules: dict[str, int] = {}
    enqueue_timeout: float = Field(30.0, gt=0, le=3600)


class JobsConfig(Section):
    max_attempts: int = Field(3, ge=1, le=100)
    retry_backoff: float = Field(10.0, ge=0, le=DAY)
    hard_timeout: float = Field(900.0, ge=0, le=7 * DAY)
    reconcile_interval: float = Field(300.0, gt=0, le=DAY)
    max_file_mb: float = Field(0.0, ge=0, le=2**30)
    max_pages: int = Field(0, ge=0)
    split_pages: int = Field(8, ge=0)
    refuse_hard_links: bool = False
    on_success: Literal["keep", "archive", "delete"] = "keep"
    on_failure: Literal["keep", "quarantine"] = "keep"
    retention_days: float = Field(0.0, ge=0, le=36500)
    pdf_passwords_file: str = ""  # candidate passwords for protected PDFs; "": none


class ConversionConfig(Section):
    to: list[str] = ["md", "json"]
    pdf_pipeline: Literal["native", "standard"] = "native"
    page_images: bool = False
    document_timeout: float = Field(600.0, ge=0, le=7 * DAY)
    progress_interval: float = Field(1.0, ge=0, le=3600)
    ocr: Literal["auto", "off", "force"] = "auto"
    ocr_dpi: float = Field(144.0, ge=36, le=600)
    ocr_language: str = "en"
    ocr_model: Literal["tiny", "small"] = "tiny"
    ocr_models: str = ""
    ocr_threads: int = Field(0, ge=0)
    chunker: Literal["hierarchical", "hybrid"] = "hierarchical"
    chunk_tokenizer: str = ""
    chunk_max_tokens: int = Field(512, ge=16, le=100_000)
    page_range: list[int] = []  # [first] or [first, last], 1-based, inclusive; []: all

    @field_validator("page_range")
    @classmethod
    def a_range(cls, value: list[int]) -> list[int]:
        if value and not (len(value) <= 2 and value[0] >= 1 and value[-1] >= value[0]):
            raise ValueError(
                f"must be [first] or [first, last], 1-based, with last >= first; got {value}"
            )
        return value

    @field_validator("to")
    @classmethod
    def known_formats(cls, value: list[str]) -> list[str]:
        unknown = [fmt for fmt in value if fmt not in FORMATS]
        if unknown or not value:
            raise ValueError(f"must be a non-empty list of {sorted(FORMATS)}; got {value}")
        return value

    def options(self, workers: int) -> ConversionOptions:
        """What shapes a conversion; OCR threads, unless set, share the cores among
        `workers` worker processes."""
        cores = usable_cores()
        ocr = OcrOptions(
            mode=self.ocr,
            dpi=self.ocr_dpi,
            language=self.ocr_language,
            model=self.ocr_model,
            models_dir=self.ocr_models,
            threads=self.ocr_threads or max(1, cores // workers),
        )
        return ConversionOptions(
            to=tuple(self.to),
            pdf_pipeline=self.pdf_pipeline,
            page_images=self.page_images,
            document_timeout=self.document_timeout,
            progress_interval=self.progress_interval,
            ocr=ocr,
            chunker=self.chunker,
            chunk_tokenizer=self.chunk_tokenizer,
            chunk_max_tokens=self.chunk_max_tokens,
            page_range=(
                self.page_range[0],
                self.page_range[-1] if len(self.page_range) > 1 else sys.maxsize,
            )
            if self.page_range
            else None,
        )


Event = Literal["completed", "failed", "cancelled"]


class CommandHook(Section):
    name: str = ""  # "" names it command-1, command-2, ... in the order given
    argv: list[str] = Field(min_length=1)
    on: list[Event] = ["completed"]


class WebhookHook(Section):
    name: str = ""  # "" names it webhook-1, webhook-2, ...
    url: str = Field(pattern=r"^https?://[^\s]+$")
    secret_file: Path | None = None
    on: list[Event] = ["completed", "failed", "cancelled"]


class HooksConfig(Section):
    command: list[CommandHook] = []
    webhook: list[WebhookHook] = []
    timeout_seconds: float = Field(30.0, gt=0, le=3600)
    max_attempts: int = Field(8, ge=1, le=100)
    retry_backoff: float = Field(5.0, ge=0.1, le=DAY)

    @model_validator(mode="after")
    def unique_names(self) -> HooksConfig:
        for n, hook in enumerate(self.command, 1):
            hook.name = hook.name or f"command-{n}"
        for n, web in enumerate(self.webhook, 1):
            web.name = web.name or f"webhook-{n}"
        hooks: list[CommandHook | WebhookHook] = [*self.command, *self.webhook]
        names = [hook.name for hook in hooks]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(f"hook names must be unique; given twice: {', '.join(twice)}")
        return self


class MetricsConfig(Section):
    textfile: str = ""  # "" means off
    listen: str = Field("", pattern=r"^$|^[^\s:]*:\d{1,5}$")  # "host:port"; "" means off
    interval: float = Field(5.0, ge=1, le=3600)


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


PROFILE_JOBS = ("on_success", "on_failure", "max_pages", "pdf_passwords_file")


class ProfileConfig(Section):
    """Settings for the files whose path (relative to paths.input) matches one of `match`:
    what it names replaces the top level's; everything else comes from the top level."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    match: list[str] = Field(min_length=1)
    priority: int | None = Field(None, ge=-1000, le=1000)
    conversion: dict[str, Any] = {}
    jobs: dict[str, Any] = {}
    hooks: list[str] | None = None  # the hooks told of its jobs' outcomes (None: every one)

    @field_validator("match")
    @classmethod
    def reachable(cls, value: list[str]) -> list[str]:
        for glob in value:
            if not glob.strip() or glob.startswith("/") or ".." in glob.split("/"):
                raise ValueError(
                    f"{glob!r} can never match: globs are paths relative to paths.input, "
                    "such as 'invoices/**', without a leading / or '..'"
                )
        return value

    @field_validator("jobs")
    @classmethod
    def known_jobs_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(PROFILE_JOBS))
        if unknown:
            raise ValueError(
                f"a profile may set jobs.{', jobs.'.join(PROFILE_JOBS)}; not {', '.join(unknown)}"
            )
        return value

    def matches(self, rel: str) -> bool:
        return any(fnmatchcase(rel, glob) for glob in self.match)


class Settings(BaseSettings):
    """Every table of config.toml; paths are made absolute against the config file's folder."""

    model_config = SettingsConfigDict(
        env_prefix="HOTFOLDER_", env_nested_delimiter="__", extra="forbid"
    )

    paths: PathsConfig = PathsConfig()
    watch: WatchConfig = WatchConfig()
    workers: WorkersConfig = WorkersConfig()
    queue: QueueConfig = QueueConfig()
    jobs: JobsConfig = JobsConfig()
    conversion: ConversionConfig = ConversionConfig()
    hooks: HooksConfig = HooksConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    profiles: list[ProfileConfig] = []
    config_file: Path | None = Field(None, exclude=True)

    @model_validator(mode="after")
    def profiles_apply(self) -> Settings:
        """Profile names are unique, and each profile's settings, laid over the top level's,
        are valid settings."""
        seen: set[str] = set()
        for profile in self.profiles:
            if profile.name in seen:
                raise ValueError(f"two profiles are named {profile.name!r}")
            seen.add(profile.name)
            hooks: list[CommandHook | WebhookHook] = [*self.hooks.command, *self.hooks.webhook]
            named = {hook.name for hook in hooks}
            unknown = sorted(set(profile.hooks or ()) - named)
            if unknown:
                raise ValueError(
                    f"profile {profile.name!r}: no hook is named {', '.join(unknown)} "
                    f"(hooks: {', '.join(sorted(named)) or 'none'})"
                )
            try:
                self.effective(profile)
            except ValidationError as exc:
                problem = exc.errors()[0]
                where = ".".join(str(part) for part in problem["loc"])
                raise ValueError(f"profile {profile.name!r}: {where}: {problem['msg']}") from None
        return self

    def profile_for(self, rel: str) -> ProfileConfig | None:
        """The first profile whose globs match `rel`, or None: the top level's settings."""
        return next((profile for profile in self.profiles if profile.matches(rel)), None)

    def effective(self, profile: ProfileConfig | None) -> tuple[ConversionConfig, JobsConfig]:
        """`[conversion]` and `[jobs]` with `profile`'s settings laid over them."""
        if profile is None:
            return self.conversion, self.jobs
        conversion = ConversionConfig(**{**self.conversion.model_dump(), **profile.conversion})
        jobs = JobsConfig(**{**self.jobs.model_dump(), **profile.jobs})
        return conversion, jobs

    def fingerprints(self) -> dict[str | None, str]:
        """Profile name (None: the top level) -> the fingerprint of its settings now."""
        return {
            profile.name if profile else None: self.conversion_options(1, profile).fingerprint()
            for profile in (None, *self.profiles)
        }

    def conversion_options(
        self, workers: int, profile: ProfileConfig | None = None
    ) -> ConversionOptions:
        """What shapes a conversion: `[conversion]`, and the password file of `[jobs]`, as
        `profile` (if any) sets them; OCR keeps its cut recogniser in the state folder."""
        conversion, jobs = self.effective(profile)
        options = conversion.options(workers)
        ocr = replace(options.ocr, cache_dir=str(self.models_dir))
        return replace(options, ocr=ocr, pdf_passwords_file=jobs.pdf_passwords_file)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init kwargs; the environment overrides it.
        return env_settings, init_settings

    @property
    def input_dir(self) -> Path:
        return self.paths.input

    @property
    def output_dir(self) -> Path:
        return self.paths.output

    @property
    def state_dir(self) -> Path:
        return self.paths.state

    @property
    def locks_dir(self) -> Path:
        return self.paths.state / "locks"

    @property
    def workers_dir(self) -> Path:
        return self.paths.state / "workers"

    @property
    def models_dir(self) -> Path:
        """Model files made here from the bundled ones (the cut recogniser)."""
        return self.paths.state / "models"

    @property
    def scratch_dir(self) -> Path:
        """Private copies of the inputs being converted, one folder per job."""
        return self.paths.state / "scratch"

    @property
    def worker_count(self) -> int:
        return self.workers.count or usable_cores()

    @property
    def memory_cap_mb(self) -> int:
        """`workers.max_memory_mb`, or three quarters of the memory this service may use
        (the machine's RAM, or its cgroup's limit if lower) shared among the workers."""
        if self.workers.max_memory_mb:
            return self.workers.max_memory_mb
        return max(512, (usable_memory() * 3 // 4 // self.worker_count) >> 20)

    @property
    def recycle_mb(self) -> int:
        """`workers.recycle_memory_mb`, kept below half the cap so a worker is replaced
        between jobs well before one is killed for its memory; 0: never by memory."""
        wanted = self.workers.recycle_memory_mb
        return min(wanted, self.memory_cap_mb // 2) if wanted else 0


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity (systemd's `CPUAffinity=`, a
    container's cpuset, `taskset`), which `os.cpu_count()` ignores."""
    return len(os.sched_getaffinity(0)) or 1


def usable_memory() -> int:
    """Bytes of RAM, or of this process's cgroup limit (systemd's MemoryMax=) if lower."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        group = Path("/proc/self/cgroup").read_text().strip().split("::", 1)[1]
        limit = (Path("/sys/fs/cgroup") / group.lstrip("/") / "memory.max").read_text()
    except (OSError, IndexError):
        return total
    return min(total, int(limit)) if limit.strip().isdigit() else total


def load_settings(config_file: Path) -> Settings:
    """Read and validate `config_file`; every problem becomes one ConfigError line. Every
    command, `doctor` included, goes through here: what one refuses, all refuse."""
    try:
        raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file}: not valid TOML: {exc}") from None
    check_environment()
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(describe(exc, config_file)) from None
    except SettingsError as exc:  # a table or list from the environment that is not JSON
        raise ConfigError(unparsed(exc)) from None
    settings = anchor_paths(settings, config_file)
    check_apart(settings)
    check_passwords_files(settings)
    return settings


def check_environment() -> None:
    """A HOTFOLDER_<SECTION>__<KEY> variable must name a section and key that exist, as a
    key in the file must: a typo (HOTFOLDER_WORKER__COUNT) is an error, never ignored.
    (Other HOTFOLDER_* variables, without `__`, are not configuration.)"""
    sections = {
        name: field for name, field in Settings.model_fields.items() if name != "config_file"
    }
    for name in sorted(os.environ):
        upper = name.upper()
        if not upper.startswith("HOTFOLDER_") or "__" not in upper:
            continue
        section, _, rest = upper.removeprefix("HOTFOLDER_").lower().partition("__")
        key = rest.split("__")[0]
        model = sections[section].annotation if section in sections else None
        if model is None:
            raise ConfigError(f"environment variable {name}: unknown section [{section}]")
        if key not in model.model_fields:  # type: ignore[union-attr]
            raise ConfigError(f"environment variable {name}: {section}.{key}: unknown key")


def unparsed(exc: SettingsError) -> str:
    """pydantic-settings' "error parsing value for field "paths" ...", as one line that
    names the variable and says what it must hold."""
    match = re.search(r'field "(\w+)"', str(exc))
    section = match.group(1) if match else "?"
    variable = f"HOTFOLDER_{section.upper()}"
    for name in sorted(os.environ):
        if name.upper().startswith(variable + "__"):
            variable = name
            break
    return (
        f"environment variable {variable}: not valid JSON (a table or list set from the "
        "environment must be written as JSON, e.g. '[\"*.bak\"]' or '{\"count\": 2}')"
    )


def describe(exc: ValidationError, config_file: Path) -> str:
    """`config.toml: workers.count: Input should be ... (got -1)` for the first error, named
    after the environment variable instead when one set the value."""
    error = exc.errors()[0]
    loc = [str(part) for part in error["loc"]]
    key = ".".join(loc)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    origin = env_origin(loc) or str(config_file)
    if error["type"] == "extra_forbidden":
        return f"{origin}: {key}: unknown key{more}"
    return f"{origin}: {key}: {error['msg']} (got {error.get('input')!r}){more}"


def env_origin(loc: list[str]) -> str | None:
    """The HOTFOLDER_* variable that set the key at `loc` (or its table), if any."""
    names = {name.upper() for name in os.environ}
    for depth in range(len(loc), 0, -1):
        name = "HOTFOLDER_" + "__".join(loc[:depth]).upper()
        if name in names:
            return f"environment variable {name}"
    return None


def anchor_paths(settings: Settings, config_file: Path) -> Settings:
    base = config_file.resolve().parent
    paths = settings.paths
    settings.paths = PathsConfig(
        **{key: (base / value).resolve() for key, value in paths.model_dump().items()}
    )
    settings.config_file = config_file.resolve()
    for web in settings.hooks.webhook:
        if web.secret_file is not None:
            web.secret_file = (base / web.secret_file).resolve()
    if settings.metrics.textfile:
        settings.metrics.textfile = str((base / settings.metrics.textfile).resolve())
    if settings.conversion.chunk_tokenizer:
        tokenizer = (base / settings.conversion.chunk_tokenizer).resolve()
        settings.conversion.chunk_tokenizer = str(tokenizer)
    if settings.conversion.ocr_models:
        settings.conversion.ocr_models = str((base / settings.conversion.ocr_models).resolve())
    if settings.jobs.pdf_passwords_file:
        passwords = (base / settings.jobs.pdf_passwords_file).resolve()
        settings.jobs.pdf_passwords_file = str(passwords)
    for profile in settings.profiles:
        if profile.jobs.get("pdf_passwords_file"):
            profile.jobs["pdf_passwords_file"] = str(
                (base / profile.jobs["pdf_passwords_file"]).resolve()
            )
    return settings


def used_dirs(settings: Settings) -> dict[str, Path]:
    """The folders this configuration reads and writes, by key."""
    dirs = {
        "paths.input": settings.input_dir,
        "paths.output": settings.output_dir,
        "paths.state": settings.state_dir,
    }
    if settings.jobs.on_success == "archive":
        dirs["paths.archive"] = settings.paths.archive
    if settings.jobs.on_failure == "quarantine":
        dirs["paths.quarantine"] = settings.paths.quarantine
    return dirs


def check_apart(settings: Settings) -> None:
    """The same folder for two roles, or input inside output/state, would feed outputs back in."""
    dirs = used_dirs(settings)
    items = list(dirs.items())
    for i, (key, path) in enumerate(items):
        for other_key, other in items[i + 1 :]:
            if path == other:
                raise ConfigError(
                    f"{origin_of(key)} and {origin_of(other_key)} are the same folder: {path}"
                )
    input_dir = dirs["paths.input"]
    for key in sorted(dirs.keys() - {"paths.input"}):
        if input_dir.is_relative_to(dirs[key]):
            raise ConfigError(
                f"paths.input ({input_dir}) must not lie inside {origin_of(key)} ({dirs[key]})"
            )


def check_passwords_files(settings: Settings) -> None:
    check_passwords_file(settings, settings.jobs.pdf_passwords_file, "jobs.pdf_passwords_file")
    for profile in settings.profiles:
        where = f"profile {profile.name!r}: jobs.pdf_passwords_file"
        check_passwords_file(settings, profile.jobs.get("pdf_passwords_file", ""), where)


def check_passwords_file(settings: Settings, file: str, where: str) -> None:
    """A password file must be a file only its owner may read, outside every folder
    hotfolder writes or others drop files in."""
    if not file:
        return
    path = Path(file)
    key = origin_of(where) if where.startswith("jobs.") else where
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise ConfigError(f"{key}: {path} is not a regular file")
    if info.st_mode & 0o077:
        raise ConfigError(
            f"{key}: {path} may be read or written by others (mode {info.st_mode & 0o777:o}); "
            f"make it the service user's alone: chmod 600 {path}"
        )
    for folder_key, folder in used_dirs(settings).items():
        if path.is_relative_to(folder):
            raise ConfigError(f"{key}: {path} lies in {origin_of(folder_key)}; move it out")


def origin_of(key: str) -> str:
    """`paths.output`, with the environment variable named when one set it."""
    env = env_origin(key.split("."))
    return f"{key} (set by {env.removeprefix('environment variable ')})" if env else key
