"""What SQLite itself has allocated in this process: its page caches (the reader's and the
checkpointer's connections; the writer's lives in its own process), statements and
schemas. The figure an operator needs to tell SQLite's share of the resident memory from
the runtime's (the memory budget does not count it; `CREDITD_SQLITE_CACHE_MB` bounds it).

Read with `sqlite3_status64(SQLITE_STATUS_MEMORY_USED)` through ctypes, from the library
the `sqlite3` module is linked with: loading a library that is loaded already hands back
the same copy. Where that is not possible (SQLite built into the interpreter, no shared
library found, memory statistics compiled out) the figure is None, not a guess.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sqlite3
from collections.abc import Callable

__all__ = ["sqlite_memory_bytes"]

_SQLITE_STATUS_MEMORY_USED = 0


@functools.lru_cache(maxsize=1)
def _reader() -> Callable[[], int] | None:
    name = ctypes.util.find_library("sqlite3")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        status = lib.sqlite3_status64
        version = lib.sqlite3_libversion_number
    except (OSError, AttributeError):
        return None
    version.restype = ctypes.c_int
    major, minor, patch = sqlite3.sqlite_version_info
    if version() != major * 1_000_000 + minor * 1_000 + patch:
        return None  # another copy than the module's: its figures would not be ours
    status.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_int64),
                       ctypes.POINTER(ctypes.c_int64), ctypes.c_int]
    status.restype = ctypes.c_int

    def read() -> int:
        current, highest = ctypes.c_int64(), ctypes.c_int64()
        if status(_SQLITE_STATUS_MEMORY_USED, ctypes.byref(current), ctypes.byref(highest),
                  0) != 0:
            return -1
        return current.value

    return read


def sqlite_memory_bytes() -> int | None:
    """Bytes SQLite holds in this process now, or None where it cannot be read."""
    read = _reader()
    if read is None:
        return None
    value = read()
    return value if value > 0 else None  # 0: statistics compiled out (or nothing open)
