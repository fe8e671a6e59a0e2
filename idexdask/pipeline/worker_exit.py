"""How an embedded cluster's worker process ends once its worker has closed.

A worker process whose :class:`distributed.Worker` has closed (its tasks done,
their files written and closed, its results sent, its connections closed) ends
with the interpreter's finalization: the objects of every module freed one by
one.  In a worker that has imported the analysis (numba and LLVM, xarray,
pandas, SciPy) that takes 0.4-0.6 s, and the nanny, hence the end of a run,
waits for it (docs/performance.md, "the serial time of a run").  Nothing in it
concerns the run: :class:`QuickExit` ends such a process at its first exit
handler instead, after the logs are flushed, with status 0.

A process whose worker did not close (it failed to start, or the process is
stopping for another reason) ends as usual.  The plugin is for worker
*processes* only (:func:`idexdask.pipeline.cluster.open_client` gives it to
those): in a worker running inside the client's process it would end the
client.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
from typing import Any

from distributed import WorkerPlugin

__all__ = ["QuickExit"]


class QuickExit(WorkerPlugin):
    """Worker plugin ending its worker's process without finalization once the worker closed.

    Attributes
    ----------
    name : str
        The plugin's name on the worker.
    """

    name = "idexdask-quick-exit"

    def __init__(self) -> None:
        self.closed = False

    def setup(self, worker: Any) -> None:
        """Register the exit handler, early in the process's life.

        Exit handlers run last registered first: those registered later (by
        the modules the tasks import) run before this one, which then ends the
        process.
        """
        self.closed = False
        atexit.register(self.exit_now)

    def teardown(self, worker: Any) -> None:
        """The worker closed: the process may end without finalization."""
        self.closed = True

    def exit_now(self) -> None:
        """End the process (status 0) if its worker closed; otherwise return."""
        if not self.closed:
            return
        logging.shutdown()  # registered before this handler: it would run after it
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (AttributeError, OSError, ValueError):  # closed or replaced streams
                pass
        os._exit(0)
