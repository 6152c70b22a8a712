"""Settings from the environment, one object per process (README.md, "Settings")."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# `gantry serve` with no broker set queues through Kombu's filesystem transport: one file per message
# under GANTRY_HOME/queue, which its own worker reads (docs/api.md, "Running the service").
LOCAL_BROKER_URL = "filesystem://localhost/"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GANTRY_", extra="ignore", frozen=True)

    home: Path = Field(Path(".gantry"), description="where the embedded defaults keep their files")
    database_url: str | None = Field(None, description="SQL store; default sqlite under home")
    storage_url: str | None = Field(None, description="object storage root; default file:// under home")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, moto)")
    broker_url: str | None = Field(None, description="unset: embedded mode; redis://...: queued")
    api_url: str | None = None
    api_token: str | None = None
    # The Inception metrics (fid, kid, inception_score, precision_recall; docs/real-images.md, "Metrics").
    inception_weights: str | None = Field(
        None,
        description="path or s3:// URI of weights-inception-2015-12-05-6726825d.pth, the FID Inception weights "
        "torch-fidelity publishes; nothing is downloaded",
    )
    inception_weights_sha256: str | None = Field(
        None,
        description="the full sha256 of another weights file of the same network (tests: a random one); "
        "unset: the file must match the published hash prefix 6726825d",
    )
    # Worker tuning (not part of the user-facing contract).
    lease_seconds: int = Field(120, ge=5, description="a running job whose heartbeat is older is stale")
    retry_seconds: float = Field(
        600, ge=0, description="how long transient infrastructure errors are retried before a job fails"
    )
    max_attempts: int = Field(
        5,
        ge=1,
        description="deaths of a job's attempts (its process killed, its worker lost past the lease) before it is failed",
    )
    requeue_seconds: float = Field(
        300, ge=1, description="a queued job whose message is not on the queue is sent again after this long"
    )
    stop_seconds: float = Field(
        30,
        ge=1,
        description="SIGTERM to a worker: its running job is checkpointed and handed back within this",
    )
    max_input_pixels: int = Field(
        64_000_000, ge=1, description="pixels per image, in every data set and input"
    )
    # Data sets are read within these before memory is spent (gantry.worker.data.limits).
    max_data_files: int = Field(
        1_000_000, ge=1, description="files in a data set (folder, .zip or S3 prefix)"
    )
    max_data_file_bytes: int = Field(
        256 * 2**20, ge=1, description="bytes of one data file or .zip member, decompressed"
    )
    max_data_bytes: int = Field(8 * 2**30, ge=1, description="bytes of a data set in all, decompressed")
    # The HTTP API (`gantry serve`; docs/api.md, "Limits").
    allowed_data_prefixes: str = Field(
        "", description="comma-separated s3:// prefixes API users may train on besides their uploads"
    )
    api_max_body_bytes: int = Field(1 * 2**20, ge=1024, description="bytes of a JSON request body")
    api_max_upload_bytes: int = Field(2 * 2**30, ge=1024, description="bytes of one data set upload")
    api_artifact_url_seconds: int = Field(
        300,
        ge=1,
        le=7 * 24 * 3600,
        description="life of the presigned S3 URL an artifact download redirects to",
    )
    api_max_active_jobs: int = Field(
        20, ge=1, description="queued + running jobs per owner; more answers 429"
    )
    api_max_train_images: int = Field(
        50_000_000, ge=1, description="steps x batch size of one train job submitted through the API"
    )
    api_max_sample_images: int = Field(
        10_000, ge=1, description="images one sample job submitted through the API may make"
    )
    api_rate: float = Field(50, gt=0, description="requests per second per token (sustained)")
    api_burst: int = Field(200, ge=1, description="requests per token allowed at once above the rate")
    api_threads: int = Field(
        4,
        ge=1,
        le=1000,
        description="threads of each API process for its requests' database and storage work",
    )
    api_auth_cache_seconds: float = Field(
        1.0,
        ge=0,
        description="how long an API process trusts a token it has checked before checking it in the "
        "store again (a revoked token is refused within this long; 0: checked on every request)",
    )

    @property
    def data_prefixes(self) -> list[str]:
        return [p.strip() for p in self.allowed_data_prefixes.split(",") if p.strip()]

    @property
    def database(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'gantry.db').resolve()}"

    @property
    def storage(self) -> str:
        if self.storage_url:
            return self.storage_url
        return (self.home / "objects").resolve().as_uri()

    @property
    def embedded(self) -> bool:
        return not self.broker_url

    @property
    def local_queue(self) -> bool:
        """The broker is the local queue (LOCAL_BROKER_URL): its folders are under `queue_dir`."""
        return (self.broker_url or "").startswith("filesystem:")

    @property
    def queue_dir(self) -> Path:
        return (self.home / "queue").resolve()


_made: tuple[tuple[str, tuple[tuple[str, str], ...]], Settings] | None = None


def get_settings() -> Settings:
    """The settings the environment gives now: made again only when a GANTRY_ variable or the
    working folder changed (a worker reads them for every job; reading the environment through
    pydantic costs about a millisecond)."""
    global _made
    key = (
        os.getcwd(),
        tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith("GANTRY_"))),
    )
    made = _made
    if made is None or made[0] != key:
        made = _made = (key, Settings())
    return made[1]
