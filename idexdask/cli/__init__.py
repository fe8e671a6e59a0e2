"""The ``idexdask`` command line (console script ``idexdask = idexdask.cli:main``).

One module per command group; :mod:`idexdask.cli.main` assembles the parser.
"""

from idexdask.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
