"""The ``idexdask`` command line: the parser of every command, and ``main``.

Sub-commands, one module each group: ``decode`` and ``simulate``
(:mod:`~idexdask.cli.decode`); ``submit``, ``status``, ``export``, ``compile``
and ``demo`` (:mod:`~idexdask.cli.submit`); ``config``
(:mod:`~idexdask.cli.config`); ``time2mass`` (:mod:`~idexdask.cli.time2mass`);
``serve`` (:mod:`~idexdask.cli.serve`).

Exit codes: 0 success; 2 usage, configuration, input or store error, detected
before any work starts; 3 partial failure (some inputs or units failed, the
others are in the store; see ``idexdask status``).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from idexdask.cli import config, decode, serve, submit, time2mass
from idexdask.cli.output import echo
from idexdask.errors import IdexDaskError

__all__ = ["build_parser", "main"]

logger = logging.getLogger("idexdask.cli")

# third-party loggers kept at ERROR below -vv: the cluster's chatter, cdflib's
# ISTP auto-fix notes
_QUIET_LOGGERS = ("distributed", "distributed.scheduler", "distributed.nanny",
                  "distributed.core", "distributed.worker", "distributed.http.proxy", "cdflib")


def build_parser() -> argparse.ArgumentParser:
    """The ``idexdask`` parser with every sub-command."""
    parser = argparse.ArgumentParser(
        prog="idexdask", description="IDEX dust events: decode, analyse, calibrate, review.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    sub = parser.add_subparsers(dest="command", required=True)
    decode.add_parsers(sub)
    submit.add_parsers(sub)
    config.add_parser(sub)
    time2mass.add_time2mass_parser(sub)
    serve.add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; errors of the :class:`~idexdask.errors.IdexDaskError` family exit 2."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if args.verbose < 2:
        import dask

        # distributed sets its loggers' levels from this when it is imported (later,
        # by the commands that use it), overriding a level set on them before
        dask.config.set({"distributed.logging.distributed": "error"})
        for name in _QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        return args.func(args)
    except IdexDaskError as exc:
        logger.error("%s", exc)
        echo(f"error: {exc}")
        return 2
