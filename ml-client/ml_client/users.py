"""Who may sign in to the web client: argon2 hashes from settings, a users file, or (when the
storage is a bucket) the bucket's ``config/web-users``, so every client host sees them alike.

Run ``python -m ml_client.users hash`` to hash a password for ``ML_CLIENT_USERS``, or
``python -m ml_client.users add NAME`` to add (or replace) a user in the users file.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import hashlib
import logging
import re
import secrets
import sys
from collections.abc import Sequence

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from ml_client.settings import ClientSettings, get_client_settings
from ml_common.documents import Document, DocumentCopy, web_users_document
from ml_common.logs import configure_logging

logger = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[\w.@-]{1,64}$")
# argon2 hashes contain commas ("m=65536,t=3,p=4"), so split only before "name:$argon2"
ENTRY_SPLIT_RE = re.compile(r"[,;\s]+(?=[\w.@-]{1,64}:\$argon2)")
BOOTSTRAP_USER = "admin"

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of `password` with argon2-cffi's recommended parameters."""
    return _hasher.hash(password)


def parse_users(text: str) -> dict[str, str]:
    """`name:hash` entries, separated by commas or newlines; '#' starts a comment line."""
    users: dict[str, str] = {}
    lines = [line.strip() for line in text.splitlines() if not line.lstrip().startswith("#")]
    for entry in ENTRY_SPLIT_RE.split(" ".join(lines).strip()):
        if not entry:
            continue
        name, sep, hashed = entry.partition(":")
        if not sep or not NAME_RE.fullmatch(name) or not hashed.startswith("$argon2"):
            raise ValueError(f"not a 'name:$argon2...' user entry: {entry[:24]!r}...")
        users[name] = hashed
    return users


def users_document(settings: ClientSettings) -> Document:
    """ML_CLIENT_USERS_FILE when set; else the bucket's copy when the storage is one; else
    ``web-users`` in ML_STORAGE_DIR (docs/deploy.md)."""
    return web_users_document(settings, settings.client_users_file)


def _users_text(users: dict[str, str]) -> bytes:
    return "".join(f"{n}:{h}\n" for n, h in sorted(users.items())).encode()


def bootstrap_users(settings: ClientSettings) -> None:
    """On a first start with no users configured, create `admin` and log its password once."""
    document = users_document(settings)
    if settings.client_users is not None or document.version() is not None:
        return
    password = secrets.token_urlsafe(18)
    if not document.create(_users_text({BOOTSTRAP_USER: hash_password(password)})):
        return  # another process (or host) won the race
    logger.warning(
        "No web users were configured, so user %r was created with password %s . It is shown "
        "only this once and only its hash is kept (in %s); change it with "
        "`python -m ml_client.users add %s`.",
        BOOTSTRAP_USER,
        password,
        document.location,
        BOOTSTRAP_USER,
    )


class UserStore:
    """Checks passwords in constant time; the users document is re-read when it changes (in
    a bucket: its version is asked at most every few seconds, and at once for an unknown name)."""

    def __init__(self, settings: ClientSettings, document: Document | None = None) -> None:
        secret = settings.client_users
        self._fixed = parse_users(secret.get_secret_value()) if secret is not None else None
        self._document = document or users_document(settings)
        self._copy: DocumentCopy[dict[str, str]] = DocumentCopy(
            self._document, lambda data: parse_users(data.decode()), {}
        )
        self._dummy = ""
        self._dummy_for: dict[str, str] | None = None

    def _load(self, fresh: bool = False) -> dict[str, str]:
        if self._fixed is not None:
            return self._fixed
        return self._copy.get(fresh)

    def _dummy_hash(self, users: dict[str, str]) -> str:
        """A hash to check unknown names against, as costly to verify as the real ones."""
        if self._dummy_for is not users:
            hasher = _hasher
            with contextlib.suppress(InvalidHashError, ValueError):
                hasher = PasswordHasher.from_parameters(
                    extract_parameters(next(iter(users.values())))
                )
            self._dummy = hasher.hash(secrets.token_urlsafe(16)) if users else _hasher.hash("x")
            self._dummy_for = users
        return self._dummy

    def fingerprint(self, name: str) -> str | None:
        """A short tag of the user's hash: a session ends when the password changes."""
        hashed = self._load().get(name)
        return hashlib.sha256(hashed.encode()).hexdigest()[:16] if hashed else None

    def verify(self, name: str, password: str) -> bool:
        """True when `name` exists and `password` matches its hash (slow on purpose)."""
        users = self._load()
        hashed = users.get(name)
        if hashed is None and self._document.recheck_s:
            users = self._load(fresh=True)  # perhaps added on another host since our copy
            hashed = users.get(name)
        try:
            _hasher.verify(hashed or self._dummy_hash(users), password)
        except (VerificationError, InvalidHashError):
            return False
        return hashed is not None


def _read_password(confirm: bool) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Repeat: ") != password:
        raise ValueError("the passwords differ")
    return password


def _add_user(settings: ClientSettings, name: str, password: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise ValueError("a user name is 1-64 letters, digits, '.', '@', '-' or '_'")
    document = users_document(settings)
    users = parse_users(document.read().decode()) if document.version() is not None else {}
    users[name] = hash_password(password)
    document.write(_users_text(users))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ml_client.users", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("hash", help="read a password from stdin and write its argon2 hash")
    add = sub.add_parser("add", help="add or replace a user in the users file (or bucket)")
    add.add_argument("name")
    args = parser.parse_args(argv)
    settings = get_client_settings()
    configure_logging(settings.log_level)
    try:
        password = _read_password(confirm=True)
        if len(password) < 8:
            raise ValueError("use a password of at least 8 characters")
        if args.command == "hash":
            sys.stdout.write(hash_password(password) + "\n")
        else:
            if settings.client_users is not None:
                logger.warning("ML_CLIENT_USERS is set, so the client ignores the users file")
            _add_user(settings, args.name, password)
            logger.info("user %r saved in %s", args.name, users_document(settings).location)
    except ValueError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
