"""Real HTTP servers (uvicorn, gunicorn) run as processes by the tests that need several."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import httpx

from tests.support.polling import eventually

REPOSITORY = Path(__file__).resolve().parents[2]


@asynccontextmanager
async def serving(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    ready_path: str,
    log: Path,
    startup_seconds: float = 60,
    stop_seconds: float = 15,
) -> AsyncIterator[str]:
    """Run ``command`` (a server on ``port``) until the block ends; yield its base URL.

    It counts as started once ``ready_path`` answers 200. Its output goes to ``log``, which is
    printed when starting or the block fails, so the failure shows what the server said.
    """
    async with server_process(
        command,
        port=port,
        env=env,
        ready_path=ready_path,
        log=log,
        startup_seconds=startup_seconds,
        stop_seconds=stop_seconds,
    ) as (base_url, _):
        yield base_url


@asynccontextmanager
async def server_process(
    command: Sequence[str],
    *,
    port: int,
    env: Mapping[str, str],
    ready_path: str,
    log: Path,
    startup_seconds: float = 60,
    stop_seconds: float = 15,
) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """`serving`, yielding the process too, for a test that signals it itself."""
    base_url = f"http://127.0.0.1:{port}"
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            *command,
            cwd=REPOSITORY,
            env=dict(env),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            await _wait_until_ready(process, base_url + ready_path, startup_seconds)
            yield base_url, process
        except BaseException:
            print(_output(log))
            raise
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), stop_seconds)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _wait_until_ready(process: asyncio.subprocess.Process, url: str, seconds: float) -> None:
    async with httpx.AsyncClient() as client:

        async def answers() -> bool:
            if process.returncode is not None:
                raise AssertionError(f"the server exited with code {process.returncode}")
            return (await client.get(url)).status_code == 200

        await eventually(
            answers,
            within=seconds,
            every=0.1,
            what=f"the server answering {url}",
            ignoring=(httpx.TransportError,),
        )


def _output(log: Path) -> str:
    return log.read_text(errors="replace")
