"""``python -m idexdask.cli``: the ``idexdask`` command."""

import sys

from idexdask.cli.main import main

sys.exit(main())
