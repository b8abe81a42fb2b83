"""The `mlprod` command's entry point: `detect` is the SDK's, every other command the server's.

It imports nothing beyond the standard library until it knows the command, so that `mlprod
api-key …` runs in an image that has the server but not the SDK's dependencies (the API image
has no httpx or rich), and `mlprod detect` on a machine with the SDK alone.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # nothing more is imported before `entry` guards against Ctrl-C
    from collections.abc import Callable, Sequence

COMMANDS = "mlprod.commands"  # the entry points that add commands to `mlprod`


def entry(argv: Sequence[str] | None = None) -> int:
    """The `mlprod` command (its one declaration: entry-points.txt beside this module).

    `detect` is the SDK's (`mlprod_client.cli`); every other command goes to the server's admin
    CLI, which an install of the whole project registers as the `mlprod.commands` entry point
    `admin`. The SDK on its own has only `detect`. Ctrl-C at any point ends it with 130 and one
    line, never a traceback (the SDK's imports alone take a few tenths of a second).
    """
    try:
        return _run(argv)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130


def _run(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["detect"]:
        try:
            from mlprod_client.cli import main
        except ImportError as exc:  # an image with the server's commands only
            sys.stderr.write(f"mlprod detect needs the SDK's dependencies ({exc.name}): ")
            sys.stderr.write('pip install "mlprod[sdk]" or ./ml-sdk\n')
            return 2
        return main(args[1:])
    from importlib.metadata import entry_points

    admin = [ep for ep in entry_points(group=COMMANDS) if ep.name == "admin"]
    if not admin:
        sys.stderr.write("usage: mlprod detect PATH... (see mlprod detect --help)\n")
        return 2
    command: Callable[[list[str]], int] = admin[0].load()
    return command(args)


if __name__ == "__main__":
    raise SystemExit(entry())
