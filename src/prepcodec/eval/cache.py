"""SQLite result cache: one row per (image hash, codec, codec backend, level, preset, preprocessor, task).

A sweep asks for what it needs, computes only the missing rows and commits them in chunks, so an interrupted or
repeated sweep redoes nothing that finished. Values are JSON (floats round-trip exactly), so a cached record
and a freshly computed one are identical. WAL mode lets several sweeps share one file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prepcodec.data.datasets import image_hash
from prepcodec.errors import InputError, OutputError

__all__ = ["SCHEMA_VERSION", "CacheKey", "ResultCache", "image_hash"]

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class CacheKey:
    """Everything that determines one per-image, per-level result."""

    image: str  # image_hash of the uncompressed (pre-preprocessing) image
    codec: str  # codec name, or "teacher" for the task's prediction on the uncompressed image
    backend: str  # codec backend + version: a new encoder build must not reuse old bytes
    level: str  # canonical level text ("" for teacher rows)
    preset: str
    pre: str  # canonical preprocessor spec
    task: str

    def digest(self) -> str:
        raw = json.dumps([SCHEMA_VERSION, *self.__dict__.values()], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()


class ResultCache:
    """Key -> JSON value store in one SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise InputError(f"result cache {self.path} is a folder; --cache names an SQLite file")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"result cache {self.path}: cannot create its folder ({exc.strerror})") from None
        with self._guard():
            self._db = sqlite3.connect(str(self.path), timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, image TEXT, codec TEXT, backend TEXT,"
                " level TEXT, preset TEXT, pre TEXT, task TEXT, value TEXT NOT NULL)"
            )
            self._db.commit()

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """A damaged or unreadable cache file becomes one line that names it and says what to do."""
        try:
            yield
        except sqlite3.DatabaseError as exc:  # also OperationalError (unopenable, read-only, locked too long)
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                raise OutputError(f"result cache {self.path}: the disk is full; the last batch was not committed "
                                  "(the cache keeps every earlier result; a rerun resumes there once space is "
                                  "free), or give a --cache on another disk") from None
            raise InputError(f"result cache {self.path} is not usable ({exc}); move it away or delete it (it only "
                             "holds results that can be recomputed), or give another --cache") from None

    def get_many(self, keys: Iterable[CacheKey]) -> dict[CacheKey, Any]:
        """Cached values of the keys that are present."""
        keys = list(keys)
        by_digest = {k.digest(): k for k in keys}
        found: dict[CacheKey, Any] = {}
        digests = list(by_digest)
        for i in range(0, len(digests), 500):
            part = digests[i : i + 500]
            with self._guard():
                rows = self._db.execute(
                    f"SELECT key, value FROM results WHERE key IN ({','.join('?' * len(part))})", part
                ).fetchall()
            for digest, value in rows:
                found[by_digest[digest]] = json.loads(value)
        return found

    def get(self, key: CacheKey) -> Any | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: Iterable[tuple[CacheKey, Any]]) -> None:
        """Insert or replace values, in one transaction (all or nothing)."""
        rows = [(k.digest(), *k.__dict__.values(), json.dumps(v, separators=(",", ":"))) for k, v in items]
        with self._guard(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
