"""gunicorn settings for the app: uvicorn workers, sized from the environment.

Connection budget: every worker process has its own pool, so the central database must accept
WEB_CONCURRENCY x (TENANCY_DATABASE_POOL_SIZE + TENANCY_DATABASE_MAX_OVERFLOW) connections from
each replica (see docs/deployment.md); `fastapi-tenancy doctor --workers N` checks it.
"""

import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
# uvicorn's own gunicorn worker class moved to the uvicorn-worker package.
worker_class = "uvicorn_worker.UvicornWorker"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# Long enough for in-flight requests to finish on SIGTERM before the orchestrator kills the pod
# (30 s grace in docker-compose.yml and kubernetes/app.yaml), and longer than the app's own
# shutdown deadline (TENANCY_SHUTDOWN_TIMEOUT, default 15 s), so a worker is never killed while it
# spills audit records.
graceful_timeout = 20
timeout = 60
keepalive = 5
# The app opens its pools in the ASGI lifespan of each worker; preloading would share sockets.
preload_app = False
accesslog = "-"

# Prometheus multi-process mode (TENANCY_ENABLE_METRICS with several workers): the directory must
# be empty when the server starts, and a dead worker's live gauges must stop counting.
_metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def on_starting(server):
    if _metrics_dir:
        import shutil

        shutil.rmtree(_metrics_dir, ignore_errors=True)
        os.makedirs(_metrics_dir, exist_ok=True)


def child_exit(server, worker):
    if _metrics_dir:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
