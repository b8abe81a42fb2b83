"""The `mlprod` command: API keys, storage clean-up, and `detect` (the SDK's, in ml-sdk)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ml_common.apikeys import ApiKeyStore
from ml_common.errors import InvalidCallbackUrl
from ml_common.logs import configure_logging
from ml_common.retention import cleanup
from ml_common.settings import get_settings

logger = logging.getLogger("mlprod")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlprod", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    keys = sub.add_parser("api-key", help="create, list or revoke API keys")
    key_sub = keys.add_subparsers(dest="action", required=True)
    create = key_sub.add_parser("create", help="create a key; it is shown once")
    create.add_argument("name")
    create.add_argument(
        "--delegate",
        action="store_true",
        help="the key may act on behalf of its own users (X-On-Behalf-Of): the web client's",
    )
    create.add_argument(
        "--callback-url",
        default="",
        help="the default callback_url of the key's uploads that give none (webhooks)",
    )
    key_sub.add_parser("revoke", help="revoke a key by name").add_argument("name")
    key_sub.add_parser("list", help="list key names (never the keys)")
    sub.add_parser("detect", help="detect objects in images or folders (mlprod detect -h)")
    clean = sub.add_parser("cleanup", help="delete old images and never-queued uploads")
    clean.add_argument("--days", type=int, help="override ML_RETENTION_DAYS")
    return parser


# The `mlprod` script is the SDK's entry point (mlprod_client.cli.entry): it hands `main` every
# command but `detect`, as ml-tools/ml_tools/entry-points.txt registers it.
def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["detect"]:  # the SDK's command: needs no server settings at all
        from mlprod_client.cli import main as detect

        return detect(argv[1:])
    args = _parser().parse_args(argv)
    settings = get_settings()
    configure_logging(settings.log_level)
    out = sys.stdout
    if args.command == "api-key":
        store = ApiKeyStore.from_settings(settings)
        if args.action == "create":
            try:
                plain, key = store.create(
                    args.name, delegates=args.delegate, callback_url=args.callback_url
                )
            except (ValueError, InvalidCallbackUrl) as exc:
                logger.error("%s", exc)
                return 2
            out.write(f"{plain}\n")
            logger.info("created API key %r (id %s); it is shown only once", key.name, key.key_id)
        elif args.action == "revoke":
            if not store.revoke(args.name):
                logger.error("no API key named %r", args.name)
                return 1
            logger.info("revoked API key %r", args.name)
        else:
            for key in store.list():
                out.write(f"{key.name}\t{key.key_id}\t{key.created_at}\n")
        return 0
    cleanup(settings, args.days)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
