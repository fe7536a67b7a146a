"""`SpillFile`: the local file that keeps audit records a sink could not take.

One JSON object per line, ``{"sink": "<sink name>", "record": {...}}``, ASCII only (``json``
escapes NUL bytes and lone surrogates), appended and fsync'd before the call returns, mode
``0600``. Several processes of one host may share the file: every read, append and rewrite holds
an exclusive ``flock`` on a lock file beside it (``<path>.lock``), and only briefly; a rewrite goes
to a temporary file renamed over the old one, so a crash leaves either the old or the new content.

A line leaves the file only after its sink confirmed the write, so a crash in between replays the
line once more; the database sink's insert is idempotent on the record's id, so that costs
nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi_tenancy.exceptions import ConfigurationError

if TYPE_CHECKING:
    from fastapi_tenancy.observe.audit import AuditRecord

__all__ = ["SpillFile", "decode_line", "encode_line"]

FILE_MODE = 0o600
DIRECTORY_MODE = 0o700


def encode_line(sink: str, record: AuditRecord) -> str:
    """The spill line for ``record`` owed to ``sink`` (no trailing newline)."""
    fields = asdict(record)
    fields["at"] = record.at.isoformat()
    return json.dumps({"sink": sink, "record": fields}, ensure_ascii=True, sort_keys=True)


def decode_line(line: str) -> tuple[str, AuditRecord]:
    """``(sink, record)`` of a spill line; raises ``ValueError`` or a subclass if it is corrupt."""
    from fastapi_tenancy.observe.audit import AuditRecord

    data = json.loads(line)
    fields = dict(data["record"])
    fields["at"] = datetime.fromisoformat(fields["at"])
    return str(data["sink"]), AuditRecord(**fields)


class SpillFile:
    """An append-only JSON-lines file of records owed to sinks; see the module docstring."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    def check(self) -> None:
        """Create the directory and lock file if needed; raise `ConfigurationError` if we cannot.

        Called at start, so an unwritable location fails the start rather than the first outage.
        """
        try:
            with self._locked():
                pass
        except OSError as exc:
            raise ConfigurationError(
                f"the audit spill file {str(self.path)!r} cannot be used ({exc.strerror}): set "
                "TENANCY_AUDIT_SPILL_PATH to a writable location"
            ) from exc

    def append(self, lines: Sequence[str]) -> None:
        """Append ``lines`` and fsync them before returning."""
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode("ascii")
        with self._locked():
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, FILE_MODE)
            try:
                size = os.fstat(fd).st_size
                # A crash in the middle of an append leaves a partial last line: end it, so the
                # next line is not glued to it (the partial line is then reported as corrupt).
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[str]:
        """Every line in the file, oldest first (empty if there is no file)."""
        with self._locked():
            return self._read_unlocked()

    def remove(self, done: set[str]) -> list[str]:
        """Remove the lines in ``done`` (written by now, or corrupt); return the lines left.

        Lines other processes appended since they were read stay.
        """
        with self._locked():
            lines = self._read_unlocked()
            left = [line for line in lines if line not in done]
            if len(left) == len(lines):
                return left
            temporary = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
            try:
                _write_all(fd, "".join(line + "\n" for line in left).encode("ascii"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(temporary, self.path)
            self._sync_directory()
            return left

    def _read_unlocked(self) -> list[str]:
        try:
            text = self.path.read_bytes().decode("ascii", errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.split("\n") if line.strip()]

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        created = not self.path.parent.exists()
        self.path.parent.mkdir(mode=DIRECTORY_MODE, parents=True, exist_ok=True)
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if created:
                self._sync_directory()
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _sync_directory(self) -> None:
        # The new name of a renamed or created file is durable once its directory is synced.
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
