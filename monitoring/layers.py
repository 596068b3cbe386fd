"""A Channels layer on a SQLite file, so the embedded default streams events across processes.

Without Redis the run command still starts several processes (the ASGI server, Celery workers,
beat). The in-memory layer would keep a worker's events inside the worker; this layer puts every
message in a small SQLite database under ``var/`` that all of them open, and receivers poll it.
Polling every ``poll_interval`` seconds is a fair price on one machine: a dashboard delta reaches
the browser within that interval, and nobody needs a server.
Messages must be JSON-serialisable (everything Ringmaster sends is).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import secrets
import sqlite3
import threading
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import BaseChannelLayer

logger = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    body TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_channel ON messages (channel, id);
CREATE TABLE IF NOT EXISTS groups (
    grp TEXT NOT NULL,
    channel TEXT NOT NULL,
    expires REAL NOT NULL,
    PRIMARY KEY (grp, channel)
);
"""


class SQLiteChannelLayer(BaseChannelLayer):
    """Channel layer whose queues and groups are rows in one SQLite file shared by processes."""

    extensions = ["groups", "flush"]

    def __init__(
        self,
        path: str,
        expiry: int = 60,
        group_expiry: int = 86400,
        capacity: int = 1000,
        channel_capacity: dict | None = None,
        poll_interval: float = 0.05,
    ) -> None:
        super().__init__(expiry=expiry, capacity=capacity)
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.path = path
        self.group_expiry = group_expiry
        self.poll_interval = poll_interval
        self._local = threading.local()
        self._schema_ready = False
        self._schema_lock = threading.Lock()

    # --- storage ------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        # One connection per thread: sqlite3 connections must not cross threads, and
        # asyncio.to_thread runs our calls on a pool of them.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=20, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        if not self._schema_ready:
            with self._schema_lock:
                conn.executescript(_SCHEMA)
                self._schema_ready = True
        return conn

    def _send(self, channel: str, body: str) -> None:
        now = time.time()
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            (queued,) = db.execute(
                "SELECT COUNT(*) FROM messages WHERE channel = ? AND expires > ?", (channel, now)
            ).fetchone()
            if queued >= self.get_capacity(channel):
                raise ChannelFull(channel)
            db.execute(
                "INSERT INTO messages (channel, body, expires) VALUES (?, ?, ?)",
                (channel, body, now + self.expiry),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _take(self, channel: str) -> str | None:
        now = time.time()
        db = self._db()
        # A cheap read first: most polls find nothing and should not take the write lock.
        row = db.execute(
            "SELECT id FROM messages WHERE channel = ? AND expires > ? ORDER BY id LIMIT 1", (channel, now)
        ).fetchone()
        if row is None:
            return None
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT id, body FROM messages WHERE channel = ? AND expires > ? ORDER BY id LIMIT 1",
                (channel, now),
            ).fetchone()
            if row is not None:
                db.execute("DELETE FROM messages WHERE id = ?", (row[0],))
            if random.random() < 0.01:  # noqa: S311 (sampling housekeeping, not security)
                db.execute("DELETE FROM messages WHERE expires <= ?", (now,))
                db.execute("DELETE FROM groups WHERE expires <= ?", (now,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return None if row is None else row[1]

    def _group_add(self, group: str, channel: str) -> None:
        self._db().execute(
            "INSERT OR REPLACE INTO groups (grp, channel, expires) VALUES (?, ?, ?)",
            (group, channel, time.time() + self.group_expiry),
        )

    def _group_discard(self, group: str, channel: str) -> None:
        self._db().execute("DELETE FROM groups WHERE grp = ? AND channel = ?", (group, channel))

    def _group_channels(self, group: str) -> list[str]:
        rows = (
            self._db()
            .execute("SELECT channel FROM groups WHERE grp = ? AND expires > ?", (group, time.time()))
            .fetchall()
        )
        return [r[0] for r in rows]

    def _flush(self) -> None:
        db = self._db()
        db.execute("DELETE FROM messages")
        db.execute("DELETE FROM groups")

    # --- the channel layer API -----------------------------------------------------

    async def send(self, channel: str, message: dict[str, Any]) -> None:
        if not isinstance(message, dict):
            raise TypeError("message is not a dict")
        self.require_valid_channel_name(channel)
        await asyncio.to_thread(self._send, channel, json.dumps(message))

    async def receive(self, channel: str) -> dict[str, Any]:
        self.require_valid_channel_name(channel)
        while True:
            body = await asyncio.to_thread(self._take, channel)
            if body is not None:
                return json.loads(body)
            await asyncio.sleep(self.poll_interval)

    async def new_channel(self, prefix: str = "specific") -> str:
        suffix = secrets.token_hex(8)  # channel names must not be guessable by another process
        return f"{prefix}.sqlite!{suffix}"

    async def group_add(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        self.require_valid_channel_name(channel)
        await asyncio.to_thread(self._group_add, group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.require_valid_group_name(group)
        await asyncio.to_thread(self._group_discard, group, channel)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        self.require_valid_group_name(group)
        body = json.dumps(message)
        for channel in await asyncio.to_thread(self._group_channels, group):
            try:
                await asyncio.to_thread(self._send, channel, body)
            except ChannelFull:
                # As channels-redis does: a full member (a stuck consumer) misses the message,
                # the rest of the group still gets it.
                logger.warning("channel %s is full; dropped a message for group %s", channel, group)

    async def flush(self) -> None:
        await asyncio.to_thread(self._flush)

    async def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
