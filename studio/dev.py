"""Start `langgraph dev` on the Studio graphs, offline, on the port asked for or not at all.

    cd studio && python dev.py              # http://127.0.0.1:2024
    cd studio && python dev.py --port 2025  # any other arguments go to `langgraph dev`

Why not plain `langgraph dev --port 2024`: when that port is taken, langgraph-api 0.16 moves to a
random free port and says so only in one warning among its start-up lines, so the URL you
were going to open (and Studio's `baseUrl=` link) reaches another server or nothing. This
checks the port first and stops with one line saying what to do. It also sets the variables
that keep `langgraph dev` offline (no analytics, no version check, no tracing) unless they are
already set, and passes `--no-browser --no-reload`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
from pathlib import Path

DEFAULT_PORT = 2024
OFFLINE = {"LANGGRAPH_CLI_NO_ANALYTICS": "1", "LANGGRAPH_NO_VERSION_CHECK": "true", "LANGSMITH_TRACING": "false"}


def port_free(host: str, port: int) -> bool:
    """Whether `port` can be bound on `host` now (the same test langgraph-api makes)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]  # IPv4 or IPv6
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Check the port, set the offline environment, then run `langgraph dev`; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    parser.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (loopback only)")
    args, rest = parser.parse_known_args(argv)
    try:
        free = port_free(args.host, args.port)
    except socket.gaierror:
        print(f"studio: error: {args.host!r} is not an address of this machine; use --host 127.0.0.1", file=sys.stderr)
        return 2
    if not free:
        print(
            f"studio: error: port {args.port} on {args.host} is in use (another `langgraph dev`?); stop that "
            f"server, or pick another port: python dev.py --port {args.port + 1}",
            file=sys.stderr,
        )
        return 2
    cli = Path(sys.executable).with_name("langgraph")
    command = str(cli) if cli.exists() else shutil.which("langgraph")
    if command is None:
        print("studio: error: the langgraph CLI is not installed: pip install 'selfmoa[studio]'", file=sys.stderr)
        return 2
    for name, value in OFFLINE.items():
        os.environ.setdefault(name, value)
    config = Path(__file__).resolve().with_name("langgraph.json")
    print(f"studio: serving the graphs of {config} at http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    os.chdir(config.parent)  # langgraph dev resolves graph paths and writes .langgraph_api/ here
    argv_out = [command, "dev", "--config", config.name, "--no-browser", "--no-reload",
                "--host", args.host, "--port", str(args.port), *rest]
    os.execv(command, argv_out)  # replaces this process: signals reach the server directly
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
