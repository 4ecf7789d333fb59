"""Hot reads answered from memory while a SQLite database (WAL mode) has not changed, checked on every read.

Every commit, by any connection of any process, rewrites the wal-index header at the start of the database's
`-shm` file (https://www.sqlite.org/walformat.html#the_wal_index_header: two 48-byte copies, the second written
first, with a change counter and the last frame). A reader that finds both copies equal holds a stamp of the
database's state; the same stamp at two moments means no commit happened in between. This is the check SQLite
makes itself before trusting its page cache. `UnchangedReads` keeps results under the stamp read before they
were queried, and answers from them only while the stamp read now is the same: a change made anywhere (another
server process, a CLI command on the same file) is seen by the next read, as without the cache.
"""

from __future__ import annotations

import mmap
import os
import threading
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

_HEADER = 48  # one copy of the wal-index header
# POSIX file locks belong to the process, and closing any descriptor of a file drops all of them: SQLite's own
# locks on the -shm file included. So a file is mapped at most once per process, and its descriptor closed only
# when the owner's connections are all closed (`close`).
_ATTACHED: set[str] = set()
_ATTACHING = threading.Lock()


class UnchangedReads:
    """Results of reads keyed by the caller, valid while the database's wal-index header is unchanged; at most
    `capacity` of them (past it, the oldest state's results are all dropped)."""

    def __init__(self, database: Path, capacity: int = 4096) -> None:
        self.shm = Path(f"{database}-shm")
        self.capacity = capacity
        self._map: mmap.mmap | None = None
        self._fd: int | None = None
        self._tried = False
        self._state: tuple[bytes | None, dict[Hashable, Any]] = (None, {})

    def stamp(self) -> bytes | None:
        """The database's current state as bytes, or None when it cannot be read consistently (not attached
        yet, or a commit is writing the header now): then nothing is answered from memory."""
        view = self._map
        if view is None:
            return None
        head = view[: 2 * _HEADER]
        first = head[:_HEADER]
        return first if first == head[_HEADER:] else None

    def get(self, stamp: bytes | None, key: Hashable) -> Any:
        """What was read for `key` at this same state, or None."""
        held, rows = self._state
        return rows.get(key) if stamp is not None and stamp == held else None

    def put(self, stamp: bytes | None, key: Hashable, value: Any) -> None:
        """Keep `value`, read after `stamp` was taken, for readers that find the database still at `stamp`."""
        if stamp is None:
            return
        held, rows = self._state
        if stamp != held or len(rows) >= self.capacity:
            rows = {}
            self._state = (stamp, rows)  # one assignment: readers see the old state or the new, never a mix
        rows[key] = value

    def close(self) -> None:
        """Forget everything and unmap the header: only once the owner's connections to the file are closed."""
        self._state = (None, {})
        with _ATTACHING:
            view, fd, self._map, self._fd = self._map, self._fd, None, None
            if view is not None:
                view.close()
            if fd is not None:
                os.close(fd)
                _ATTACHED.discard(str(self.shm))

    @property
    def tried(self) -> bool:
        """Whether `attach` has run (attached or not)."""
        return self._tried

    def attach(self, read: Callable[[], object]) -> None:
        """Map the header, once: `read` must run a read on a connection of the caller's that stays open until
        `close` (SQLite truncates the `-shm` file only when it opens the database with no connection open
        anywhere, so the mapping stays valid while one of ours is). Not attached if another instance of this
        process already is, or the file is not there (no WAL): then every read goes to the database."""
        with _ATTACHING:
            if self._tried:
                return
            self._tried = True
            if str(self.shm) in _ATTACHED:
                return
            read()
            try:
                fd = os.open(self.shm, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                return
            self._fd = fd  # kept open until `close`, whatever happens (see _ATTACHED)
            _ATTACHED.add(str(self.shm))
            if os.fstat(fd).st_size >= 2 * _HEADER:
                self._map = mmap.mmap(fd, 2 * _HEADER, access=mmap.ACCESS_READ)
