"""SQLite result cache: one row per (image hash, codec, codec backend, level, preset, preprocessor, task).

A sweep asks for what it needs, computes only the missing rows and commits them in chunks, so an interrupted or
repeated sweep redoes nothing that finished. Values are JSON (floats round-trip exactly), so a cached record
and a freshly computed one are identical. WAL mode lets several sweeps share one file.

A second table keeps the real bitstreams a sweep encoded (`StreamKey`). A result row is keyed by the task that
scored it; the bytes are not: they depend on the image, the codec build, the level, the preset and the
preprocessor (and, for one that reads the sweep's task or runs a network in batches, on that task and batch). The
expensive part of a sweep is making them — the encoder at the eval preset, and before it an evidence network that
runs its task model several times per image and level — so a sweep of a second task on the same pictures (NanoDet
after CenterNet, Lite1 after Lite0) decodes the stored bytes and is scored on exactly what the first task saw.
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

__all__ = ["SCHEMA_VERSION", "CacheKey", "ResultCache", "StreamKey", "image_hash"]

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


@dataclass(frozen=True)
class StreamKey:
    """Everything that determines the bytes of one (image, level) encode."""

    image: str  # image_hash of the uncompressed image
    codec: str
    backend: str  # codec backend + version
    level: str
    preset: str
    pre: str  # the preprocessor's cache spec (a network's weights hash and code revision)
    made_with: str  # what else the preprocessor's output depends on (the sweep's task, its batch); "" for nothing

    def digest(self) -> str:
        raw = json.dumps([SCHEMA_VERSION, *self.__dict__.values()], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()


class ResultCache:
    """Key -> JSON value store in one SQLite file (and StreamKey -> bitstream bytes in a second table)."""

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
            self._db.execute("CREATE TABLE IF NOT EXISTS bitstreams (key TEXT PRIMARY KEY, codec TEXT, level TEXT,"
                             " pre TEXT, data BLOB NOT NULL)")
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

    def _select(self, table: str, column: str, keys: Iterable) -> Iterator[tuple[Any, Any]]:
        """(key, stored column) for the keys of `table` that are present, queried 500 digests at a time."""
        by_digest = {k.digest(): k for k in keys}
        digests = list(by_digest)
        for i in range(0, len(digests), 500):
            part = digests[i : i + 500]
            with self._guard():
                rows = self._db.execute(
                    f"SELECT key, {column} FROM {table} WHERE key IN ({','.join('?' * len(part))})", part
                ).fetchall()
            for digest, value in rows:
                yield by_digest[digest], value

    def get_many(self, keys: Iterable[CacheKey]) -> dict[CacheKey, Any]:
        """Cached values of the keys that are present."""
        return {k: json.loads(v) for k, v in self._select("results", "value", keys)}

    def get(self, key: CacheKey) -> Any | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: Iterable[tuple[CacheKey, Any]]) -> None:
        """Insert or replace values, in one transaction (all or nothing)."""
        rows = [(k.digest(), *k.__dict__.values(), json.dumps(v, separators=(",", ":"))) for k, v in items]
        with self._guard(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO results VALUES (?,?,?,?,?,?,?,?,?)", rows)

    def get_streams(self, keys: Iterable[StreamKey]) -> dict[StreamKey, bytes]:
        """Stored bitstreams of the keys that are present."""
        return {k: bytes(v) for k, v in self._select("bitstreams", "data", keys)}

    def put_streams(self, items: Iterable[tuple[StreamKey, bytes]]) -> None:
        """Insert or replace bitstreams, in one transaction (all or nothing)."""
        rows = [(k.digest(), k.codec, k.level, k.pre, sqlite3.Binary(data)) for k, data in items]
        with self._guard(), self._db:
            self._db.executemany("INSERT OR REPLACE INTO bitstreams VALUES (?,?,?,?,?)", rows)

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResultCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
