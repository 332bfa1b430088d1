"""python -m sandbox up|down|status  (state dir: $HOTELBOT_SANDBOX_DIR or <repo>/.sandbox)"""
from __future__ import annotations

import argparse
import sys

from sandbox import stack, state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description="local stack for demos and tests")
    parser.add_argument("command", choices=("up", "down", "status"))
    parser.add_argument("--dir", help=f"state dir (default: ${state.ENV_DIR} or <repo>/.sandbox)")
    args = parser.parse_args(argv)
    dir = state.state_dir(args.dir)
    return {"up": stack.up, "down": stack.down, "status": stack.status}[args.command](dir)


if __name__ == "__main__":
    sys.exit(main())
