"""Small private documents every host must see alike (the API keys, the web users): a file, or
an object in the bucket when the storage is one, so that they outlive Redis and need no shared
folder."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from ml_common.storage import atomic_write, open_storage

if TYPE_CHECKING:
    from ml_common.s3storage import S3Storage
    from ml_common.settings import Settings

API_KEYS = "api-keys.json"
WEB_USERS = "web-users"


class Document(Protocol):
    @property
    def recheck_s(self) -> float:
        """How long a reader may trust its copy before it asks for the version again."""
        ...

    def version(self) -> str | None:
        """A tag that changes with every write; None when the document does not exist."""
        ...

    def read(self) -> bytes: ...
    def write(self, data: bytes) -> None: ...

    def create(self, data: bytes) -> bool:
        """Write `data` only if the document does not exist yet; False when it did."""
        ...

    @property
    def location(self) -> str:
        """Where it is, for messages: a path or an s3:// URL."""
        ...


T = TypeVar("T")


class DocumentCopy(Generic[T]):
    """A process's parsed copy of a document: re-read when its version changes, the version
    asked at most every `recheck_s` of the document (or at once with `fresh`)."""

    def __init__(self, document: Document, parse: Callable[[bytes], T], empty: T) -> None:
        self.document = document
        self._parse, self._empty = parse, empty
        self._version: str | None = None
        self._checked = -math.inf
        self._value = empty

    def get(self, fresh: bool = False) -> T:
        now = time.monotonic()
        if not fresh and now - self._checked < self.document.recheck_s:
            return self._value
        version = self.document.version()
        self._checked = now
        if version is None:
            self._version, self._value = None, self._empty
        elif version != self._version:
            self._value = self._parse(self.document.read())
            self._version = version
        return self._value

    def forget(self) -> None:
        """Read the document anew next time (after this process wrote it)."""
        self._version, self._checked = None, -math.inf


@dataclass(frozen=True)
class FileDocument:
    path: Path
    mode: int = 0o600
    recheck_s: float = 0.0  # a stat per check costs nothing

    def version(self) -> str | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return f"{stat.st_mtime_ns}-{stat.st_size}"

    def read(self) -> bytes:
        return self.path.read_bytes()

    def write(self, data: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(self.path, data, self.mode)

    def create(self, data: bytes) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            atomic_write(self.path, data, self.mode, exclusive=True)
        except FileExistsError:
            return False
        return True

    @property
    def location(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class BucketDocument:
    storage: S3Storage
    name: str
    recheck_s: float = 5.0  # a revoked key stops working on every host within this

    def version(self) -> str | None:
        return self.storage.config_version(self.name)

    def read(self) -> bytes:
        return self.storage.read_config(self.name)

    def write(self, data: bytes) -> None:
        self.storage.write_config(self.name, data)

    def create(self, data: bytes) -> bool:
        return self.storage.write_config(self.name, data, exclusive=True)

    @property
    def location(self) -> str:
        return self.storage.config_url(self.name)


def api_keys_document(settings: Settings) -> Document:
    """ML_API_KEYS_FILE when set; else ``config/api-keys.json`` in the bucket when the storage
    is one; else ``api-keys.json`` in ML_STORAGE_DIR."""
    return _document(settings, settings.api_keys_file, API_KEYS, settings.api_keys_path)


def web_users_document(settings: Settings, users_file: Path | None) -> Document:
    """`users_file` (ML_CLIENT_USERS_FILE) when set; else ``config/web-users`` in the bucket
    when the storage is one; else ``web-users`` in ML_STORAGE_DIR."""
    return _document(settings, users_file, WEB_USERS, settings.storage_dir / WEB_USERS)


def _document(settings: Settings, explicit: Path | None, name: str, local: Path) -> Document:
    if explicit is None and settings.s3_location is not None:
        from ml_common.s3storage import S3Storage

        storage = open_storage(settings)
        assert isinstance(storage, S3Storage)
        return BucketDocument(storage, name)
    return FileDocument(explicit or local)
