"""The review app as a `panel serve` script (the same pages as `idexdask serve`).

    IDEXDASK_STORE=/path/to/campaign.zarr panel serve dashboards/review.py --show

`idexdask serve STORE` is the supported entry point (it checks the store and the
security options before serving); this script exists for deployments that run
Panel's own server (behind a proxy, with `panel serve --num-procs`, oauth, ...).
The app itself lives in the `idexdask.dashboard` package, so that it is
installed with idexdask and tested there; this file only chooses the page.
"""

import os

import panel as pn

from idexdask.dashboard.server import build_routes, make_context

pn.extension("tabulator")

_context = make_context(os.environ["IDEXDASK_STORE"],
                        read_only=os.environ.get("IDEXDASK_READ_ONLY", "") == "1")
# one script serves one route; choose it with IDEXDASK_PAGE (default: the index)
_route = os.environ.get("IDEXDASK_PAGE", "/")
build_routes(_context)[_route]()
