"""``python -m tests.faults.soak``: run the fault soak and print its report.

Example (the run published in docs/failures.md)::

    python -m tests.faults.soak --requests 1000000 --tenants 20 \\
        --strategies row,schema,database --seed 20261202 --report soak.json

It needs PostgreSQL at ``TENANCY_TEST_POSTGRES_URL`` and ``redis-server`` on the PATH. The exit
status is 0 when every invariant held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from tests.faults.soak.driver import (
    STRATEGIES,
    SoakReport,
    SoakSettings,
    iter_strategies,
    run_soak,
)


def _pair(value: str) -> tuple[float, float]:
    low, _, high = value.partition(",")
    return float(low), float(high or low)


async def _run(settings: SoakSettings) -> SoakReport:
    # SIGTERM (``timeout``, a CI runner) cancels the run like Ctrl-C does, so the clean-up
    # still stops the servers and drops the databases.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_soak(settings)


def main() -> int:
    defaults = SoakSettings()
    parser = argparse.ArgumentParser(prog="python -m tests.faults.soak", description=__doc__)
    parser.add_argument("--requests", type=int, default=defaults.requests)
    parser.add_argument("--tenants", type=int, default=defaults.tenants, help="per strategy")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--processes", type=int, default=defaults.processes, help="per strategy")
    parser.add_argument("--concurrency", type=int, default=defaults.concurrency)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--seconds", type=float, default=defaults.seconds, help="stop the traffic after this long"
    )
    parser.add_argument(
        "--fault-gap",
        type=_pair,
        default=defaults.fault_gap,
        metavar="MIN,MAX",
        help="seconds between faults",
    )
    parser.add_argument(
        "--fault-hold",
        type=_pair,
        default=defaults.fault_hold,
        metavar="MIN,MAX",
        help="seconds each fault lasts",
    )
    parser.add_argument("--report", type=Path, help="also write the report as JSON here")
    parser.add_argument("--work-dir", type=Path, help="keep the server logs and events here")
    args = parser.parse_args()
    settings = SoakSettings(
        requests=args.requests,
        tenants=args.tenants,
        strategies=tuple(iter_strategies(args.strategies)),
        processes=args.processes,
        concurrency=args.concurrency,
        seed=args.seed,
        seconds=args.seconds,
        fault_gap=args.fault_gap,
        fault_hold=args.fault_hold,
        work_dir=args.work_dir,
    )
    report = asyncio.run(_run(settings))
    print(report.render())
    if args.report is not None:
        args.report.write_text(report.to_json())
    return 0 if all(report.invariants().values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
