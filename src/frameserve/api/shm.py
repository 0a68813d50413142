"""System shared-memory regions that clients register (Triton's shared-memory extension).

A client creates a POSIX shared-memory object (``shm_open(key)``, as
``tritonclient.utils.shared_memory`` does), registers a window of it under a region name, and
then names that region in inference requests instead of sending tensor bytes. Both front ends
share one registry, so a lock guards the table.

The server keeps an open file descriptor per region, never a mapping. A client can truncate
its object at any time; a mapped page past the new end raises SIGBUS, which kills the process,
and checking the size first does not help (the truncation can land between the check and the
copy). ``os.preadv`` into a fresh buffer cannot fault: a short read is answered 400 naming the
region and the sizes. The cost is one copy: reading a 4.9 MB input takes 0.3-1.7 ms (quiet to
loaded 2-core machine, ``benchmarks/shm/read.py``) instead of a zero-copy view; copying out of
a mapping after an ``fstat`` takes about half that but is exactly the race above. Writes use
``os.pwrite`` after the same size check: a shrunk object is refused (a truncation racing the
write can at worst let it grow the object back; it never faults).
"""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from frameserve.errors import InvalidInput, NotFound, PayloadTooLarge

DEFAULT_MAX_REGIONS = 1024


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """A registered region as the status endpoints report it."""

    name: str
    key: str
    offset: int  # where the region starts inside the shared-memory object
    byte_size: int


@dataclass(frozen=True, slots=True)
class ShmSettings:
    """Which objects may be registered, and how many at once."""

    key_prefix: str = ""  # only keys (without their leading '/') starting with it; "" = any
    max_regions: int = DEFAULT_MAX_REGIONS
    max_read_bytes: int = 256 * 2**20  # one read, like one body (--max-request-mb)


@dataclass(slots=True)
class _Region:
    status: RegionStatus
    fd: int  # the object, opened read-write; closed on unregister under ``lock``
    lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False


def _check_key(key: str) -> str:
    """The object's file name under the shm folder; InvalidInput for keys that could escape it."""
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or ".." in name or "\0" in name:
        raise InvalidInput(
            f"key: expected a shared-memory object name like '/my_region' (one optional leading "
            f"'/', no other '/', no '..'), got {key!r}"
        )
    return name


def _check_size(field_name: str, value: object, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise InvalidInput(f"{field_name}: expected an integer >= {minimum}, got {value!r}")
    return value


def _open_object(path: Path, key: str, length: int) -> int:
    """A read-write descriptor of the object ``key``, which must hold ``length`` bytes."""
    # O_NOFOLLOW: a symlink planted in /dev/shm must not expose some other file.
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise InvalidInput(f"key: no shared memory object {key!r} exists") from None
    except OSError as err:
        raise InvalidInput(
            f"key: cannot open shared memory object {key!r}: {err.strerror}"
        ) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"key: {key!r} is not a shared memory object")
        if length > info.st_size:
            raise InvalidInput(
                f"offset + byte_size: the region must lie within the object {key!r} of "
                f"{info.st_size} bytes, got offset + byte_size = {length}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


class SharedMemoryRegistry:
    """Registered system shared-memory regions, by name; shared by the HTTP and gRPC front ends."""

    def __init__(
        self, shm_dir: Path = Path("/dev/shm"), settings: ShmSettings | None = None
    ) -> None:
        self._shm_dir = shm_dir  # where glibc's shm_open keeps its objects
        self._settings = settings or ShmSettings()
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Open the object ``key`` for the window of ``byte_size`` bytes at ``offset`` as
        ``name``."""
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"name: expected a non-empty region name, got {name!r}")
        if not isinstance(key, str):
            raise InvalidInput(f"key: expected a string, got {key!r}")
        file_name = _check_key(key)
        prefix = self._settings.key_prefix.lstrip("/")
        if not file_name.startswith(prefix):
            raise InvalidInput(
                f"key: expected a shared memory object name starting with {'/' + prefix!r} "
                f"(--shm-key-prefix), got {key!r}"
            )
        _check_size("offset", offset, 0)
        _check_size("byte_size", byte_size, 1)
        with self._lock:
            existing = self._regions.get(name)
            if existing is not None:
                raise InvalidInput(
                    f"shared memory region {name!r} is already registered "
                    f"(key {existing.status.key!r}); unregister it first"
                )
            if len(self._regions) >= self._settings.max_regions:
                raise InvalidInput(
                    f"name: at most {self._settings.max_regions} shared memory regions may be "
                    f"registered at once (--max-shm-regions); unregister one first"
                )
            fd = _open_object(self._shm_dir / file_name, key, offset + byte_size)
            self._regions[name] = _Region(RegionStatus(name, key, offset, byte_size), fd)

    def unregister(self, name: str | None = None) -> None:
        """Forget one region, or every region when ``name`` is None; unknown names are ignored."""
        with self._lock:
            if name is None:
                regions = list(self._regions.values())
                self._regions.clear()
            else:
                region = self._regions.pop(name, None)
                regions = [region] if region is not None else []
        for region in regions:
            with region.lock:  # a read in progress keeps the descriptor until it is done
                region.closed = True
                os.close(region.fd)

    def status(self, name: str | None = None) -> list[RegionStatus]:
        """Every registered region, or just ``name`` (NotFound when it is not registered)."""
        with self._lock:
            if name is None:
                return [r.status for r in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise NotFound(f"shared memory region {name!r} is not registered")
        return [region.status]

    def _window(self, name: str, offset: int, byte_size: int) -> tuple[_Region, int]:
        """The region and the absolute start of a checked window inside its object."""
        with self._lock:
            region = self._regions.get(name)
        if region is None:
            raise InvalidInput(
                f"shared_memory_region: no shared memory region {name!r} is registered"
            )
        size = region.status.byte_size
        if offset < 0 or byte_size < 0 or offset + byte_size > size:
            raise InvalidInput(
                f"shared_memory_offset + shared_memory_byte_size: expected a window within region "
                f"{name!r} of {size} bytes, got offset {offset} + byte size {byte_size}"
            )
        return region, region.status.offset + offset

    @staticmethod
    def _check_object(region: _Region, end: int) -> None:
        """InvalidInput unless the region is open and its object still reaches ``end``."""
        name = region.status.name
        if region.closed:
            raise InvalidInput(f"shared_memory_region: region {name!r} was unregistered")
        actual = os.fstat(region.fd).st_size
        if actual < end:
            raise InvalidInput(_shrunk(region.status, end, actual))

    def read(self, name: str, offset: int, byte_size: int) -> memoryview:
        """A read-only copy of ``byte_size`` bytes at ``offset`` within region ``name``."""
        region, start = self._window(name, offset, byte_size)
        if byte_size > self._settings.max_read_bytes:  # each read allocates its copy
            raise PayloadTooLarge(
                f"shared_memory_byte_size: {byte_size} bytes from region {name!r} exceeds the "
                f"limit of {self._settings.max_read_bytes} bytes (--max-request-mb)"
            )
        buffer = np.empty(byte_size, dtype=np.uint8)
        with region.lock:
            self._check_object(region, start + byte_size)
            got = os.preadv(region.fd, [buffer.data], start) if byte_size else 0
        if got != byte_size:  # truncated between the size check and the read
            raise InvalidInput(_shrunk(region.status, start + byte_size, start + got))
        buffer.flags.writeable = False  # inputs are read-only below the front end
        return buffer.data

    def write(self, name: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into region ``name`` at ``offset``."""
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        region, start = self._window(name, offset, view.nbytes)
        with region.lock:
            self._check_object(region, start + view.nbytes)
            done = 0
            while done < view.nbytes:  # pwrite may write less than asked
                done += os.pwrite(region.fd, view[done:], start + done)

    def close(self) -> None:
        """Unregister every region (server shutdown)."""
        self.unregister(None)


def _shrunk(status: RegionStatus, needed: int, actual: int) -> str:
    return (
        f"shared_memory_region: region {status.name!r} (key {status.key!r}) needs its object to "
        f"hold {needed} bytes, but the object now has {actual} bytes (truncated after "
        f"registration)"
    )
