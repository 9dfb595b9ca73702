"""``python -m octopus_emulator <command>``.

- ``serve``: the emulated Octopus Server (see ``octopus_emulator/README.md``);
- every other command (``register-worker`` ...) is the tentacle simulator's: delegated to
  ``octopus_emulator.tentacle.main(argv)`` with the full argument list, the command name included.
"""

from __future__ import annotations

import importlib
import sys

USAGE = "usage: python -m octopus_emulator {serve,register-worker,...} [options]"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    if argv[0] == "serve":
        from .server import main as serve_main

        return serve_main(argv[1:])
    try:
        tentacle = importlib.import_module("octopus_emulator.tentacle")
    except ModuleNotFoundError as exc:
        if exc.name != "octopus_emulator.tentacle":
            raise
        print(f"unknown command {argv[0]!r} (the tentacle simulator is not installed)\n{USAGE}", file=sys.stderr)
        return 2
    result = tentacle.main(argv)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
