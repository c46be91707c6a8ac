"""``RunControl``: how a host that drives many runs (the run queue's coordinator) steers one of them.

A plain ``run()`` reserves, renews and releases its instance's lease itself and mints its own run id. A hosted
run does none of that: the host took the lease (atomically with claiming the run from its queue), renews the
leases of all its runs in one batch, releases it when it records the run's result, and names the run. The
host also needs to stop a run at a barrier, for a cancellation or to hand it to another host when it shuts
down. Timeline of that stop:

- superstep 4 delivers; meanwhile the host sets ``stop`` (a cancel notice, or SIGTERM);
- superstep 4 commits: its checkpoint, outputs and events are stored, as in any run;
- before superstep 5 starts, the runner raises ``stop``: the instance is at the barrier of superstep 4 with
  superstep 5's deliveries queued, which is exactly the state another host (or ``run()``) continues.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import RunCancelledError
from .store import Lease


@dataclass(slots=True)
class RunControl:
    """A hosted run's id and lease, and the host's stop request.

    ``resume``: the run continues what an earlier attempt of it left queued (its coordinator died or handed
    it back); when that attempt already committed the last superstep, the run ends at once instead of
    refusing with "nothing to run".
    """

    run_id: str
    lease: Lease
    resume: bool = False
    #: set by the host; raised at the next barrier (after the commit), never in the middle of a superstep
    stop: RunCancelledError | None = None
    #: the W3C ``traceparent`` of the span that submitted the run: its ``barrierflow.run`` span links to it
    submitted_by: str | None = None
