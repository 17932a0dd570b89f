"""Scheduling model runs: which waiting requests share a run (micro-batching, ``Batcher``:
concurrent requests for one endpoint merged into few model calls) and where a run goes
(``Placement``: on the event loop when work of its size has proved shorter than a trip to a
worker thread and back, in a worker thread otherwise; the one place that chooses, for the
predict and the Open Inference Protocol services alike).

"Batch" in mlfn's module names means batch files; here it is the micro-batch of ``Limits``
(``max_batch_size``, ``max_batch_wait_ms``, ``max_concurrent_batches``)."""

from runtime.scheduling.batcher import BULK_AFTER as BULK_AFTER
from runtime.scheduling.batcher import Batcher as Batcher
from runtime.scheduling.batcher import end_if_unanswered as end_if_unanswered
from runtime.scheduling.deadlines import MAX_BUDGET_MS as MAX_BUDGET_MS
from runtime.scheduling.deadlines import Deadline as Deadline
from runtime.scheduling.deadlines import current_deadline as current_deadline
from runtime.scheduling.deadlines import within as within
from runtime.scheduling.placement import NOT_NOW as NOT_NOW
from runtime.scheduling.placement import Holder as Holder
from runtime.scheduling.placement import NotNow as NotNow
from runtime.scheduling.placement import Placement as Placement
from runtime.scheduling.placement import finished as finished
from runtime.scheduling.run_times import Busy as Busy
from runtime.scheduling.run_times import RunTimes as RunTimes
from runtime.scheduling.run_times import bulk_rest as bulk_rest
from runtime.scheduling.turns import Turns as Turns
