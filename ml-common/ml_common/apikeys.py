"""API keys: random bearer tokens, stored only as SHA-256 digests in a JSON document.

The keys are 256-bit random tokens, so a fast digest is enough (no password stretching is
needed against guessing); the document (a file written atomically with mode 0600, or a private
object in the bucket) is re-read when it changes, so a revoked key stops working without
restarting the API.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from ml_common.documents import Document, DocumentCopy, FileDocument, api_keys_document
from ml_common.errors import NotAllowed
from ml_common.records import now_iso
from ml_common.settings import Settings
from ml_common.webhooks import check_callback_url

KEY_PREFIX = "mlp_"
# Sent by a delegating key (the web client's) to act as one of its own users: each user is then
# an owner of their own toward the API, so its 404-for-others holds between them too.
ON_BEHALF_HEADER = "X-On-Behalf-Of"


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    created_at: str
    delegates: bool = False
    callback_url: str = ""  # the default callback of its uploads and batches; "" for none

    def on_behalf_of(self, user: str) -> ApiKey:
        """The identity of `user` of this delegating key: its own owner id and rate limits."""
        if not self.delegates:
            raise NotAllowed(
                f"this API key may not act on behalf of others ({ON_BEHALF_HEADER}); "
                "create the web client's key with `mlprod api-key create NAME --delegate`"
            )
        if not 0 < len(user) <= 256:
            raise NotAllowed(f"{ON_BEHALF_HEADER} names a user in 1 to 256 characters")
        user_id = digest(f"{self.key_id}\0{user}")[:16]
        return ApiKey(
            f"{self.key_id}.{user_id}",
            f"{self.name}/{user}",
            self.created_at,
            callback_url=self.callback_url,
        )


def _key(hashed: str, entry: dict[str, str]) -> ApiKey:
    return ApiKey(
        hashed[:16],
        entry["name"],
        entry["created_at"],
        entry.get("delegates") == "yes",
        entry.get("callback_url", ""),
    )


class ApiKeyStore:
    """Create, revoke and check keys kept in one document: a file, or an object in the bucket."""

    def __init__(self, source: Path | Document) -> None:
        self.document = FileDocument(source) if isinstance(source, Path) else source
        self._copy: DocumentCopy[dict[str, dict[str, str]]] = DocumentCopy(
            self.document, _parse_keys, {}
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeyStore:
        """The keys file, or the bucket's copy when the storage is a bucket (docs/deploy.md)."""
        return cls(api_keys_document(settings))

    def _load(self, fresh: bool = False) -> dict[str, dict[str, str]]:
        return self._copy.get(fresh)

    def _save(self, keys: dict[str, dict[str, str]]) -> None:
        self.document.write(json.dumps({"keys": keys}, indent=2, sort_keys=True).encode())
        self._copy.forget()

    def create(
        self, name: str, delegates: bool = False, callback_url: str = ""
    ) -> tuple[str, ApiKey]:
        """Make a new key; the plain key is returned once and never stored. A key that
        `delegates` may act on behalf of its own users (the web client's); `callback_url` is
        the default callback of its uploads (checked like theirs)."""
        if not name or len(name) > 64 or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError("a key name is 1-64 letters, digits, '-' or '_'")
        if callback_url:
            check_callback_url(callback_url)
        keys = dict(self._load())
        if any(entry["name"] == name for entry in keys.values()):
            raise ValueError(f"a key named {name!r} exists already; revoke it first")
        plain = KEY_PREFIX + secrets.token_urlsafe(32)
        hashed = digest(plain)
        keys[hashed] = {"name": name, "created_at": now_iso()}
        if delegates:
            keys[hashed]["delegates"] = "yes"
        if callback_url:
            keys[hashed]["callback_url"] = callback_url
        self._save(keys)
        return plain, _key(hashed, keys[hashed])

    def revoke(self, name: str) -> bool:
        keys = dict(self._load())
        kept = {h: e for h, e in keys.items() if e["name"] != name}
        if len(kept) == len(keys):
            return False
        self._save(kept)
        return True

    def list(self) -> list[ApiKey]:
        return [_key(h, e) for h, e in self._load().items()]

    def check(self, key: str) -> ApiKey | None:
        """The key's record when `key` is valid, else None (compared in constant time)."""
        hashed = digest(key)
        found = _find(hashed, self._load())
        if found is None and self.document.recheck_s:
            # perhaps a key made on another host since our copy: one look at its version
            found = _find(hashed, self._load(fresh=True))
        return found


def _parse_keys(data: bytes) -> dict[str, dict[str, str]]:
    return dict(json.loads(data).get("keys", {}))


def _find(hashed: str, keys: dict[str, dict[str, str]]) -> ApiKey | None:
    found: ApiKey | None = None
    for stored, entry in keys.items():
        if hmac.compare_digest(stored, hashed):
            found = _key(stored, entry)
    return found
