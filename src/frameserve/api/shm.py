"""System shared-memory regions that clients register (Triton's shared-memory extension).

A client creates a POSIX shared-memory object (``shm_open(key)``, as
``tritonclient.utils.shared_memory`` does), registers a window of it under a region name, and
then names that region in inference requests instead of sending tensor bytes. Both front ends
(HTTP on the event loop, gRPC on its own threads) share one registry, so a lock guards the table;
the reads and writes themselves go straight to the mapping.
"""

from __future__ import annotations

import mmap
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

from frameserve.errors import InvalidInput, NotFound


@dataclass(frozen=True, slots=True)
class RegionStatus:
    """A registered region as the status endpoints report it."""

    name: str
    key: str
    offset: int  # where the region starts inside the shared-memory object
    byte_size: int


@dataclass(slots=True)
class _Region:
    status: RegionStatus
    mapping: mmap.mmap  # maps the object from 0 to offset + byte_size


def _check_key(key: str) -> str:
    """The object's file name under the shm folder; InvalidInput for keys that could escape it."""
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or ".." in name or "\0" in name:
        raise InvalidInput(
            f"key: expected a shared-memory object name like '/my_region' (one optional leading "
            f"'/', no other '/', no '..'), got {key!r}"
        )
    return name


def _check_size(field: str, value: object, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise InvalidInput(f"{field}: expected an integer >= {minimum}, got {value!r}")
    return value


class SharedMemoryRegistry:
    """Registered system shared-memory regions, by name; shared by the HTTP and gRPC front ends."""

    def __init__(self, shm_dir: Path = Path("/dev/shm")) -> None:
        self._shm_dir = shm_dir  # where glibc's shm_open keeps its objects
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """Map ``byte_size`` bytes at ``offset`` of the object ``key`` read-write as ``name``."""
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"name: expected a non-empty region name, got {name!r}")
        if not isinstance(key, str):
            raise InvalidInput(f"key: expected a string, got {key!r}")
        file_name = _check_key(key)
        _check_size("offset", offset, 0)
        _check_size("byte_size", byte_size, 1)
        with self._lock:
            existing = self._regions.get(name)
            if existing is not None:
                raise InvalidInput(
                    f"shared memory region {name!r} is already registered "
                    f"(key {existing.status.key!r}); unregister it first"
                )
            mapping = self._map(self._shm_dir / file_name, key, offset + byte_size)
            self._regions[name] = _Region(RegionStatus(name, key, offset, byte_size), mapping)

    @staticmethod
    def _map(path: Path, key: str, length: int) -> mmap.mmap:
        # O_NOFOLLOW: a symlink planted in /dev/shm must not expose some other file.
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise InvalidInput(
                f"key: no shared memory object {key!r} exists (looked for {path})"
            ) from None
        except OSError as err:
            raise InvalidInput(f"key: cannot open shared memory object {key!r}: {err}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise InvalidInput(f"key: {key!r} is not a shared memory object")
            if length > info.st_size:
                raise InvalidInput(
                    f"offset + byte_size: the region must lie within the object {key!r} of "
                    f"{info.st_size} bytes, got offset + byte_size = {length}"
                )
            # The whole prefix is mapped because mmap offsets must be page-aligned.
            return mmap.mmap(fd, length, flags=mmap.MAP_SHARED)
        finally:
            os.close(fd)  # the mapping keeps its own reference to the object

    def unregister(self, name: str | None = None) -> None:
        """Forget one region, or every region when ``name`` is None; unknown names are ignored.

        A region still in use by a running request stays mapped until that request lets go of
        its views (the views keep the mapping alive), so unregistering never breaks it.
        """
        with self._lock:
            if name is None:
                regions = list(self._regions.values())
                self._regions.clear()
            else:
                region = self._regions.pop(name, None)
                regions = [region] if region is not None else []
        for region in regions:
            try:
                region.mapping.close()
            except BufferError:
                pass  # views are still exported; the mapping closes when the last one is freed

    def status(self, name: str | None = None) -> list[RegionStatus]:
        """Every registered region, or just ``name`` (NotFound when it is not registered)."""
        with self._lock:
            if name is None:
                return [r.status for r in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise NotFound(f"shared memory region {name!r} is not registered")
        return [region.status]

    def _window(self, name: str, offset: int, byte_size: int) -> tuple[mmap.mmap, int]:
        """The region's mapping and the absolute start of a checked window inside it."""
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
        return region.mapping, region.status.offset + offset

    def read(self, name: str, offset: int, byte_size: int) -> memoryview:
        """A zero-copy view of ``byte_size`` bytes at ``offset`` within region ``name``."""
        mapping, start = self._window(name, offset, byte_size)
        try:
            return memoryview(mapping)[start : start + byte_size]
        except ValueError:  # closed by a concurrent unregister
            raise InvalidInput(f"shared_memory_region: region {name!r} was unregistered") from None

    def write(self, name: str, offset: int, data: bytes | bytearray | memoryview) -> None:
        """Copy ``data`` into region ``name`` at ``offset``."""
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B":
            view = view.cast("B")
        mapping, start = self._window(name, offset, view.nbytes)
        try:
            mapping[start : start + view.nbytes] = view
        except ValueError:  # closed by a concurrent unregister
            raise InvalidInput(f"shared_memory_region: region {name!r} was unregistered") from None

    def close(self) -> None:
        """Unregister every region (server shutdown)."""
        self.unregister(None)
