"""``python -m edge_agent --config agent.yaml``: the daemon without the CLI's other commands."""

from __future__ import annotations

import sys

from edge_agent.foreground import run_daemon


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] not in ("--config", "-c"):
        print("usage: python -m edge_agent --config agent.yaml", file=sys.stderr)
        return 2
    return run_daemon(args[1])


if __name__ == "__main__":
    sys.exit(main())
