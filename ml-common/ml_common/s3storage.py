"""Uploads and annotated images in an S3-compatible bucket (AWS S3, SeaweedFS, MinIO, ...).

Objects are private (no ACL is ever granted; the bucket should block public access) and only
keys that `ml_common.storagekeys` built are written or read. Every call is bounded by botocore's
connect and read timeouts and its retries; what still fails becomes a domain error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

from ml_common.errors import StorageMisconfigured, StorageUnavailable, TaskNotFound
from ml_common.images import FORMATS
from ml_common.storagekeys import KEY_RE, KINDS, UPLOAD, KeyLayout, cutoff_day, parse_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef

    from ml_common.settings import Settings

logger = logging.getLogger(__name__)
MEDIA_TYPES = dict(FORMATS.values())
MISSING = frozenset({"NoSuchKey", "404", "NotFound"})
WRONG_CREDENTIALS = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthorizationHeaderMalformed"}
)
DENIED = frozenset({"AccessDenied", "403", "AllAccessDisabled"})
NO_BUCKET = frozenset({"NoSuchBucket"})
# small documents every host reads (the API keys, the web users); retention never lists this
CONFIG = "config"
CONFIG_NAMES = frozenset({"api-keys.json", "web-users"})
EXISTS = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict"})
DELETE_BATCH = 1000  # the most keys one DeleteObjects call takes


def client_config(settings: Settings) -> Config:
    """Timeouts and retries that bound every call to the store."""
    return Config(
        connect_timeout=settings.s3_connect_timeout_s,
        read_timeout=settings.s3_read_timeout_s,
        retries={"max_attempts": settings.s3_max_attempts, "mode": "standard"},
        s3={"addressing_style": settings.s3_addressing_style},
        signature_version="s3v4",
    )


@dataclass(frozen=True)
class S3Storage(KeyLayout):
    """Keys below `prefix` ("" or "path/") in `bucket`."""

    client: S3Client
    bucket: str
    prefix: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, bucket: str, prefix: str) -> S3Storage:
        secret = settings.s3_secret_access_key
        endpoint = settings.s3_endpoint_url
        # a session of its own: boto3's default session is not safe to share between threads
        client = boto3.session.Session().client(
            "s3",
            endpoint_url=str(endpoint) if endpoint else None,
            region_name=settings.s3_region,
            aws_access_key_id=settings.s3_access_key_id,
            aws_secret_access_key=secret.get_secret_value() if secret else None,
            config=client_config(settings),
        )
        return cls(client, bucket, prefix)

    @contextmanager
    def _errors(self, action: str, key: str = "") -> Iterator[None]:
        """Turn the client's errors into domain errors that name what went wrong. What may pass
        is logged in full here; its message (seen by clients in a 503 and on /readyz) names
        neither the endpoint nor the bucket."""
        where = f"s3://{self.bucket}/{self.prefix}{key}"
        try:
            yield
        except NoCredentialsError as exc:
            raise StorageMisconfigured(
                "no S3 credentials: set ML_S3_ACCESS_KEY_ID and ML_S3_SECRET_ACCESS_KEY "
                "(or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from exc
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING and key:
                raise TaskNotFound(f"no stored file for {key}") from exc
            raise _client_error(code, action, where) from exc
        except BotoCoreError as exc:  # refused, timed out, cut: may pass
            logger.warning("object store: could not %s %s: %s", action, where, exc)
            raise StorageUnavailable(
                f"the object store could not {action} ({type(exc).__name__}); try again shortly"
            ) from exc

    def write(self, key: str, data: bytes) -> None:
        """One PUT: the object appears whole or not at all."""
        ext = parse_key(key)[3]
        with self._errors("store", key):
            self.client.put_object(
                Bucket=self.bucket,
                Key=self.prefix + key,
                Body=data,
                ContentType=MEDIA_TYPES.get(ext, "application/octet-stream"),
            )

    def read(self, key: str) -> bytes:
        parse_key(key)
        with self._errors("read", key):
            body = self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"]
            return body.read()

    def exists(self, key: str) -> bool:
        parse_key(key)
        try:
            with self._errors("look up", key):
                self.client.head_object(Bucket=self.bucket, Key=self.prefix + key)
        except TaskNotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        parse_key(key)
        with self._errors("delete", key):
            self.client.delete_object(Bucket=self.bucket, Key=self.prefix + key)

    def _objects(self, prefix: str) -> Iterator[tuple[str, float]]:
        """(key below our prefix, written at) of each object whose key starts with `prefix`."""
        pages = self.client.get_paginator("list_objects_v2")
        with self._errors("list", prefix):
            for page in pages.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for obj in page.get("Contents", []):
                    key = obj["Key"].removeprefix(self.prefix)
                    if KEY_RE.fullmatch(key):
                        yield key, obj["LastModified"].timestamp()

    def _days(self, kind: str) -> list[str]:
        """The day folders (``2026-11-27``) of `kind`, listed by prefix."""
        pages = self.client.get_paginator("list_objects_v2")
        base = f"{self.prefix}{kind}/"
        days: list[str] = []
        with self._errors("list", f"{kind}/"):
            for page in pages.paginate(Bucket=self.bucket, Prefix=base, Delimiter="/"):
                folders = page.get("CommonPrefixes", [])
                days += [p["Prefix"][len(base) :].strip("/") for p in folders]
        return sorted(days)

    def uploads(self) -> Iterator[tuple[str, float]]:
        """Each stored upload's key and when it was written (epoch seconds)."""
        return self._objects(f"{UPLOAD}/")

    def purge_older_than(self, days: int, now: float | None = None) -> int:
        """Delete objects older than `days`. Only day prefixes up to the cutoff's day are
        listed, so the cost follows what expires, not what the bucket holds."""
        cutoff = (now if now is not None else time.time()) - days * 86400
        last_day = cutoff_day(cutoff)
        doomed = [
            key
            for kind in KINDS
            for day in self._days(kind)
            if day <= last_day
            for key, written in self._objects(f"{kind}/{day}/")
            if written < cutoff
        ]
        for start in range(0, len(doomed), DELETE_BATCH):
            batch: list[ObjectIdentifierTypeDef] = [
                {"Key": self.prefix + key} for key in doomed[start : start + DELETE_BATCH]
            ]
            with self._errors("delete", "(expired objects)"):
                self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True}
                )
        return len(doomed)

    def check(self) -> None:
        """Fail at process start on wrong credentials, a missing bucket or no write access.
        A PUT, not a HEAD: the answer to a HEAD has no body, so its 403 does not say why."""
        probe = f"{self.prefix}.probe"
        with self._errors("write a probe"):
            self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"")
            self.client.delete_object(Bucket=self.bucket, Key=probe)

    def _config_key(self, name: str) -> str:
        if name not in CONFIG_NAMES:
            raise ValueError(f"not a configuration document: {name!r}")
        return f"{self.prefix}{CONFIG}/{name}"

    def config_version(self, name: str) -> str | None:
        """The ETag of configuration document `name`, None when it does not exist."""
        try:
            with self._errors("look up", f"{CONFIG}/{name}"):
                return self.client.head_object(Bucket=self.bucket, Key=self._config_key(name))[
                    "ETag"
                ]
        except TaskNotFound:
            return None

    def read_config(self, name: str) -> bytes:
        with self._errors("read", f"{CONFIG}/{name}"):
            obj = self.client.get_object(Bucket=self.bucket, Key=self._config_key(name))
            return obj["Body"].read()

    def write_config(self, name: str, data: bytes, exclusive: bool = False) -> bool:
        """Store configuration document `name`; with `exclusive`, only if it does not exist
        (a conditional PUT): False when it did."""
        key = self._config_key(name)
        with self._errors("store", f"{CONFIG}/{name}"):
            try:
                if exclusive:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
                else:
                    self.client.put_object(Bucket=self.bucket, Key=key, Body=data)
            except ClientError as exc:
                if exclusive and exc.response.get("Error", {}).get("Code") in EXISTS:
                    return False
                raise
        return True

    def config_url(self, name: str) -> str:
        return f"s3://{self.bucket}/{self._config_key(name)}"

    def presigned_url(self, key: str, expires_s: int) -> str | None:
        """A URL that reads this one object for `expires_s` seconds (signed here, no call)."""
        parse_key(key)
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self.prefix + key},
            ExpiresIn=expires_s,
        )


def _client_error(code: str, action: str, where: str) -> Exception:
    if code in WRONG_CREDENTIALS:
        return StorageMisconfigured(
            f"the object store refused the S3 credentials ({code}) for {where}: check "
            "ML_S3_ACCESS_KEY_ID and ML_S3_SECRET_ACCESS_KEY (or AWS_*)"
        )
    if code in NO_BUCKET:
        return StorageMisconfigured(f"the bucket of {where} does not exist ({code}): create it")
    if code in DENIED:
        return StorageMisconfigured(
            f"access denied to {where} ({code}): wrong S3 credentials, or they may not {action} it"
        )
    logger.warning("object store: could not %s %s: %s", action, where, code)
    return StorageUnavailable(f"the object store could not {action} ({code}); try again shortly")
