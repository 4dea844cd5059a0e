"""Configuration: config.toml, overridden by HOTFOLDER_<SECTION>__<KEY> environment variables."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from handlers.converter import ConversionOptions
from handlers.index import JobIndex
from handlers.ledger import Ledger
from handlers.outputs import EXTENSIONS
from handlers.pipeline import JobPolicy

EX_CONFIG = 78


class ConfigError(Exception):
    """A missing or invalid configuration; the CLI prints it on one line and exits 78."""


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PathsConfig(Section):
    input: Path = Path("input")
    output: Path = Path("output")
    state: Path = Path("state")
    archive: Path = Path("archive")
    quarantine: Path = Path("quarantine")


class WatchConfig(Section):
    observer: Literal["native", "polling"] = "native"
    polling_interval: float = Field(2.0, gt=0)
    settle_seconds: float = Field(2.0, ge=0)
    recursive: bool = True
    ignore: list[str] = []


class WorkersConfig(Section):
    count: int = Field(0, ge=0)
    poll_max_delay: float = Field(1.0, gt=0)
    shutdown_timeout: float = Field(60.0, gt=0)
    max_tasks_per_worker: int = Field(200, ge=0)
    max_memory_mb: int = Field(0, ge=0)


class QueueConfig(Section):
    default_priority: int = 0
    priority_rules: dict[str, int] = {}
    enqueue_timeout: float = Field(30.0, gt=0)


class JobsConfig(Section):
    max_attempts: int = Field(3, ge=1)
    retry_backoff: float = Field(10.0, ge=0)
    hard_timeout: float = Field(900.0, ge=0)
    reconcile_interval: float = Field(300.0, gt=0)
    max_file_mb: float = Field(0.0, ge=0)
    max_pages: int = Field(0, ge=0)
    refuse_hard_links: bool = False
    on_success: Literal["keep", "archive", "delete"] = "keep"
    on_failure: Literal["keep", "quarantine"] = "keep"
    retention_days: float = Field(0.0, ge=0)


class ConversionConfig(Section):
    to: list[str] = ["md", "json"]
    pdf_pipeline: Literal["native", "standard"] = "native"
    page_images: bool = False
    document_timeout: float = Field(600.0, ge=0)
    progress_interval: float = Field(1.0, ge=0)

    @field_validator("to")
    @classmethod
    def known_formats(cls, value: list[str]) -> list[str]:
        unknown = [fmt for fmt in value if fmt not in EXTENSIONS]
        if unknown or not value:
            raise ValueError(f"must be a non-empty list of {sorted(EXTENSIONS)}; got {value}")
        return value

    def options(self) -> ConversionOptions:
        return ConversionOptions(
            to=tuple(self.to),
            pdf_pipeline=self.pdf_pipeline,
            page_images=self.page_images,
            document_timeout=self.document_timeout,
            progress_interval=self.progress_interval,
        )


class LogConfig(Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


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
    log: LogConfig = LogConfig()
    config_file: Path | None = Field(None, exclude=True)

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
    def scratch_dir(self) -> Path:
        """Private copies of the inputs being converted, one folder per job."""
        return self.paths.state / "scratch"

    @property
    def worker_count(self) -> int:
        return self.workers.count or os.cpu_count() or 1


def job_policy(settings: Settings) -> JobPolicy:
    jobs = settings.jobs
    return JobPolicy(
        max_attempts=jobs.max_attempts,
        retry_backoff=jobs.retry_backoff,
        max_file_bytes=int(jobs.max_file_mb * 2**20),
        max_pages=jobs.max_pages,
        refuse_hard_links=jobs.refuse_hard_links,
        on_success=jobs.on_success,
        on_failure=jobs.on_failure,
        archive_dir=settings.paths.archive,
        quarantine_dir=settings.paths.quarantine,
    )


def open_ledger(settings: Settings) -> Ledger:
    """The sidecars under the output dir, mirrored into the job index in the state dir."""
    return Ledger(settings.output_dir, JobIndex(settings.state_dir / "index.db"))


def load_settings(config_file: Path) -> Settings:
    """Read and validate `config_file`; every problem becomes one ConfigError line."""
    try:
        raw = tomllib.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {config_file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {config_file}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_file}: not valid TOML: {exc}") from None
    try:
        settings = Settings(**raw)
    except ValidationError as exc:
        raise ConfigError(f"{config_file}: {describe(exc)}") from None
    return anchor_paths(settings, config_file)


def describe(exc: ValidationError) -> str:
    """`workers.count: Input should be greater than or equal to 0 (got -1)` for the first error."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{more}"
    return f"{key}: {error['msg']} (got {error.get('input')!r}){more}"


def anchor_paths(settings: Settings, config_file: Path) -> Settings:
    base = config_file.resolve().parent
    paths = settings.paths
    settings.paths = PathsConfig(
        **{key: (base / value).resolve() for key, value in paths.model_dump().items()}
    )
    settings.config_file = config_file.resolve()
    return settings
