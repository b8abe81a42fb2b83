"""The Settings every mlprod process shares, read from ML_* variables and .env.

The fields of one process alone (the web client's) extend it in that process's own package
(ClientSettings); the rest are shared, so a process may see fields it does not use (the API
the worker's model folders, the worker the API's upload limits).
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AnyHttpUrl,
    AnyUrl,
    BeforeValidator,
    Field,
    IPvAnyNetwork,
    SecretStr,
    UrlConstraints,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

BrokerUrl = Annotated[
    AnyUrl, UrlConstraints(allowed_schemes=["amqp", "amqps", "pyamqp", "redis", "rediss", "memory"])
]
RedisUrl = Annotated[AnyUrl, UrlConstraints(allowed_schemes=["redis", "rediss", "unix"])]

PLACEHOLDER_SECRETS = frozenset({"", "changeme", "change-me", "secret", "dev-secret-change-me"})
# the one default; a DetectionResult stored before results carried their threshold reads it too
DEFAULT_SCORE_THRESHOLD = 0.3


def _empty_is_unset(value: object) -> object:
    # compose passes optional variables as empty strings: treat those as not set
    return None if value == "" else value


EmptyIsUnset = BeforeValidator(_empty_is_unset)


def _comma_list(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _json_object(value: object) -> object:
    return json.loads(value or "{}") if isinstance(value, str) else value


def _working_dir(*parts: str) -> Path:
    # relative to where the process starts (the checkout for `make run`; the images set the
    # variables), never to where the package is installed
    return Path.cwd().joinpath(*parts)


class Settings(BaseSettings):
    """Configuration shared by the API, the worker and the web client."""

    model_config = SettingsConfigDict(env_prefix="ML_", env_file=".env", extra="ignore")

    environment: Literal["development", "production"] = "development"
    broker_url: BrokerUrl = AnyUrl("amqp://guest:guest@localhost:5672//")
    result_backend: RedisUrl = AnyUrl("redis://localhost:6379/0")
    storage_dir: Path = Field(default_factory=lambda: _working_dir("ml-storages"))
    # uploads and annotated images: a folder (unset: storage_dir) or s3://bucket/prefix; the
    # S3 client reads unset credentials the usual way (AWS_* variables, profile, instance role)
    storage_url: Annotated[str | None, EmptyIsUnset] = None
    s3_endpoint_url: Annotated[AnyHttpUrl | None, EmptyIsUnset] = None  # unset: AWS itself
    s3_region: Annotated[str | None, EmptyIsUnset] = None
    s3_access_key_id: Annotated[str | None, EmptyIsUnset] = None
    s3_secret_access_key: Annotated[SecretStr | None, EmptyIsUnset] = None
    s3_addressing_style: Literal["auto", "path", "virtual"] = "auto"
    s3_connect_timeout_s: float = Field(2.0, gt=0)
    s3_read_timeout_s: float = Field(10.0, gt=0)
    s3_max_attempts: int = Field(3, ge=1, le=10)
    # > 0: GET .../image answers a redirect to a URL of the bucket valid this long
    storage_presign_s: int = Field(0, ge=0, le=7 * 24 * 3600)
    model_dir: Path = Field(
        default_factory=lambda: _working_dir("ml-storages", "models", "nanodet-g-416")
    )
    # the models this deployment serves (comma-separated; unset: the one in model_dir), the one
    # an upload without a `model` field gets, and where each model's folder is
    models: Annotated[list[str], NoDecode, BeforeValidator(_comma_list)] = []
    default_model: Annotated[str | None, EmptyIsUnset] = None
    models_dir: Annotated[Path | None, EmptyIsUnset] = None  # unset: model_dir's parent
    # JSON: a folder per model name, overriding models_dir
    model_dirs: Annotated[dict[str, Path], NoDecode, BeforeValidator(_json_object)] = {}
    detector: Literal["nanodet", "tf_od_api", "fake"] = "nanodet"
    # nanodet only: LiteRT (model.tflite beside the SavedModel) or the TensorFlow SavedModel
    runtime: Literal["tflite", "savedmodel"] = "tflite"
    score_threshold: float = Field(DEFAULT_SCORE_THRESHOLD, ge=0.0, le=1.0)
    # the lowest `min_score` an upload may ask for (COCO AP is measured from 0.05): lower ones
    # make long lists of noise and cost post-processing time for every box
    min_score_floor: float = Field(0.05, ge=0.0, le=1.0)
    iou_threshold: float = Field(0.5, gt=0.0, le=1.0)
    max_detections: int = Field(100, ge=1, le=1000)
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    # the annotated image is a JPEG, whose sides stop at 65,500 px
    max_image_side: int = Field(30_000, ge=1, le=65_500)
    max_image_aspect_ratio: float = Field(20.0, ge=1.0)
    # the API's memory for decoding upload pixels at once (WebP, GIF, RLE BMP): ml_api.decodegate
    decode_memory_mb: int = Field(768, ge=64)
    result_expires_s: int = Field(7 * 24 * 3600, ge=60)
    retention_days: int = Field(7, ge=1)
    task_soft_time_limit_s: float = Field(60.0, gt=0)
    task_time_limit_s: float = Field(90.0, gt=0)
    enqueue_timeout_s: float = Field(3.0, gt=0)
    queue_name: str = "detections"
    secret_key: SecretStr = SecretStr("dev-secret-change-me")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # JSON lines with task and trace ids, or the human format; unset: JSON in production
    log_format: Annotated[Literal["text", "json"] | None, EmptyIsUnset] = None
    # OpenTelemetry traces: off, OTLP over HTTP to tracing_endpoint (unset: the OTLP default,
    # or OTEL_EXPORTER_OTLP_ENDPOINT), or JSON spans appended to tracing_file
    tracing: Literal["off", "otlp", "file"] = "off"
    tracing_endpoint: Annotated[AnyHttpUrl | None, EmptyIsUnset] = None
    tracing_file: Annotated[Path | None, EmptyIsUnset] = None
    intra_op_threads: int = Field(0, ge=0, description="0 lets TensorFlow choose")
    api_keys_file: Annotated[Path | None, EmptyIsUnset] = None
    cors_origins: list[str] = []
    rate_limit_per_minute: int = Field(600, ge=1)
    # batches: files and bytes per batch, batch items per key per day, and the largest
    # uncompressed/compressed ratio an archive may have before it is taken for a bomb
    batch_max_files: int = Field(10_000, ge=1)
    batch_max_bytes: int = Field(2 * 1024**3, ge=1)
    batch_max_items_per_key_per_day: int = Field(100_000, ge=1)
    archive_max_ratio: float = Field(100.0, ge=1.0)
    idempotency_ttl_s: int = Field(24 * 3600, ge=60)
    # RabbitMQ queue priorities (x-max-priority on each model queue), so single uploads
    # overtake queued batch items; 0 declares the model queues without it (RabbitMQ refuses to
    # redeclare a queue with other arguments: PRECONDITION_FAILED). Celery's Redis/Valkey
    # transport has priorities without it.
    queue_max_priority: int = Field(10, ge=0, le=255)
    # the API: its Redis connections (past them a request waits this long, then gets a 503),
    # and how many long-polls and event streams one key may hold open in one API process
    redis_max_connections: int = Field(50, ge=1)
    redis_pool_timeout_s: float = Field(2.0, gt=0)
    max_waits_per_key: int = Field(20, ge=1)
    # Prometheus: the worker's parent serves its processes' metrics on this port (unset: none);
    # under the prefork pool the processes write them to PROMETHEUS_MULTIPROC_DIR
    worker_metrics_port: Annotated[Annotated[int, Field(ge=1, le=65535)] | None, EmptyIsUnset] = (
        None
    )
    prometheus_multiproc_dir: Annotated[
        Path | None, EmptyIsUnset, Field(validation_alias="PROMETHEUS_MULTIPROC_DIR")
    ] = None
    # the API's /metrics asks for `Authorization: Bearer <this>` when set; unset, it is open
    # (for a Prometheus on the private network: the proxy never routes /metrics)
    metrics_token: Annotated[SecretStr | None, EmptyIsUnset] = None
    # how long the API keeps the broker's queue depth and age between scrapes
    queue_stats_cache_s: float = Field(5.0, ge=0)
    # webhooks: attempts with exponential backoff (base, cap; full jitter), about a day in all;
    # callbacks to loopback, private, link-local and metadata addresses are refused unless
    # their network is listed here (comma-separated CIDRs, e.g. 10.1.2.0/24)
    webhook_max_attempts: int = Field(15, ge=1, le=100)
    webhook_backoff_s: float = Field(30.0, gt=0)
    webhook_backoff_max_s: float = Field(3 * 3600.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0, le=60)
    webhook_max_response_bytes: int = Field(64 * 1024, ge=0)
    webhook_allowed_networks: Annotated[
        list[IPvAnyNetwork], NoDecode, BeforeValidator(_comma_list)
    ] = []

    @model_validator(mode="after")
    def _refuse_placeholder_secret(self) -> Settings:
        if (
            self.environment == "production"
            and self.secret_key.get_secret_value() in PLACEHOLDER_SECRETS
        ):
            raise ValueError("ML_SECRET_KEY must be set to a real secret in production")
        if self.default_model is not None and self.models and self.default_model not in self.models:
            raise ValueError(f"ML_DEFAULT_MODEL {self.default_model!r} is not in ML_MODELS")
        url = self.storage_url or ""
        if "://" in url and not re.fullmatch(r"s3://[a-z0-9][a-z0-9.-]{1,62}(/.*)?|file://.+", url):
            raise ValueError("ML_STORAGE_URL is a folder, file://folder or s3://bucket/prefix")
        if self.task_time_limit_s <= self.task_soft_time_limit_s:
            raise ValueError("ML_TASK_TIME_LIMIT_S must exceed ML_TASK_SOFT_TIME_LIMIT_S")
        return self

    @property
    def json_logs(self) -> bool:
        return (
            self.log_format or ("json" if self.environment == "production" else "text")
        ) == "json"

    @property
    def s3_location(self) -> tuple[str, str] | None:
        """(bucket, key prefix) when the storage is an S3 bucket, else None."""
        if not self.storage_url or not self.storage_url.startswith("s3://"):
            return None
        bucket, _, prefix = self.storage_url.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        return bucket, f"{prefix}/" if prefix else ""

    @property
    def storage_root(self) -> Path:
        """The folder of uploads and annotated images when the storage is local."""
        if self.storage_url and self.s3_location is None:
            return Path(self.storage_url.removeprefix("file://"))
        return self.storage_dir

    @property
    def api_keys_path(self) -> Path:
        return self.api_keys_file or self.storage_dir / "api-keys.json"


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
