"""Gunicorn settings for prometheus-client's multi-process mode, as docs/observability.md shows."""

from __future__ import annotations

from typing import Any

from prometheus_client import multiprocess


def child_exit(_server: Any, worker: Any) -> None:
    # A dead worker's live gauges (pool usage, cached engines) must stop counting.
    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
