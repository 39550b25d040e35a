"""Running instances and writing what they found.

- :mod:`genbab.runner.results`: VNN-COMP result files and JSON reports.
- :mod:`genbab.runner.execute`: calling verify in-process or in a worker process.
- :mod:`genbab.runner.instances`: ``instances.csv`` batches with resume.
"""

from genbab.runner.execute import InProcessExecutor, WorkerExecutor, call_verify
from genbab.runner.instances import (
    BatchSummary,
    Instance,
    InstancesError,
    Record,
    read_instances,
    run_batch,
)
from genbab.runner.results import (
    build_report,
    checked_result,
    read_result_file,
    write_report_json,
    write_result_file,
)

__all__ = [
    "BatchSummary",
    "InProcessExecutor",
    "Instance",
    "InstancesError",
    "Record",
    "WorkerExecutor",
    "build_report",
    "call_verify",
    "checked_result",
    "read_instances",
    "read_result_file",
    "run_batch",
    "write_report_json",
    "write_result_file",
]
