"""``idexdask serve STORE``: the science-review server of a campaign store.

The pages themselves are :mod:`idexdask.dashboard`'s; this module holds the
command's options and starts the server.
"""

from __future__ import annotations

import argparse
from typing import Any

from idexdask.cli.output import echo

__all__ = ["add_serve_parser", "run_serve"]


def add_serve_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``serve`` on the ``idexdask`` sub-command parsers."""
    p = subparsers.add_parser(
        "serve", help="serve the science-review dashboard of a campaign store",
        description="Serve the review pages (/campaign, /event?event=N, /lines?event=N, "
        "/composition, /noise?event=N&channel=TOF_High, /browser, /docs) of one store, "
        "live while `idexdask submit` fills it.  Exit code 2 if STORE is not a campaign "
        "store or the options are unsafe.",
    )
    p.add_argument("store", help="campaign store written by `idexdask submit`")
    p.add_argument("--port", type=int, default=5006, help="TCP port (default 5006)")
    p.add_argument("--address", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--allow-websocket-origin", action="append", default=[], metavar="HOST",
                   help="host[:port] browsers may connect from (required with a "
                   "non-local --address); repeatable")
    p.add_argument("--read-only", action="store_true",
                   help="disable every write (the lines studio cannot save)")
    p.add_argument("--show", action="store_true", help="open a browser on the index page")
    p.add_argument("--docs", help="directory of the Markdown docs for /docs "
                   "(default: docs/ of the source tree)")
    p.set_defaults(func=run_serve)
    return p


def run_serve(args: argparse.Namespace) -> int:
    """Serve until interrupted (errors in the store or options: exit 2 via the CLI)."""
    from idexdask.dashboard.server import check_address, make_context, serve
    from idexdask.errors import ConfigError

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port (0-65535)")
    check_address(args.address, args.allow_websocket_origin)
    context = make_context(args.store, read_only=args.read_only, docs_dir=args.docs)
    mode = " read-only" if args.read_only else ""
    echo(f"serving {context.data.path}{mode} on http://{args.address}:{args.port}/ "
         "(Ctrl-C to stop)")
    try:
        serve(context, port=args.port, address=args.address,
              allow_websocket_origin=args.allow_websocket_origin, show=args.show)
    except KeyboardInterrupt:
        return 0
    return 0
