"""SharedMemoryRegistry against real POSIX regions made by tritonclient.utils.shared_memory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
import tritonclient.utils.shared_memory as triton_shm

from frameserve.api.shm import RegionStatus, SharedMemoryRegistry, ShmSettings
from frameserve.errors import InvalidInput, NotFound, PayloadTooLarge


@dataclass
class Region:
    key: str
    handle: object  # tritonclient's SharedMemoryRegion
    size: int


@pytest.fixture
def region() -> Iterator[Region]:
    """A 256-byte POSIX shared-memory object, created and destroyed as a client would."""
    key = f"/frameserve_test_{uuid.uuid4().hex[:12]}"
    handle = triton_shm.create_shared_memory_region("client_side", key, 256)
    try:
        yield Region(key, handle, 256)
    finally:
        triton_shm.destroy_shared_memory_region(handle)


@pytest.fixture
def registry() -> Iterator[SharedMemoryRegistry]:
    reg = SharedMemoryRegistry()
    try:
        yield reg
    finally:
        reg.close()


def test_register_read_write_and_status(region: Region, registry: SharedMemoryRegistry) -> None:
    data = np.arange(16, dtype=np.float32)
    triton_shm.set_shared_memory_region(region.handle, [data], offset=64)
    registry.register("r", region.key, 64, 128)
    assert registry.status() == [RegionStatus("r", region.key, 64, 128)]
    assert registry.status("r") == [RegionStatus("r", region.key, 64, 128)]

    view = registry.read("r", 0, 64)  # region offsets are relative to the registered window
    np.testing.assert_array_equal(np.frombuffer(view, dtype=np.float32), data)
    del view

    registry.write("r", 64, np.full(4, 7, dtype=np.int32).data)
    got = triton_shm.get_contents_as_numpy(region.handle, np.int32, [4], offset=128)
    np.testing.assert_array_equal(got, [7, 7, 7, 7])


def test_reads_are_copies_taken_at_read_time(
    region: Region, registry: SharedMemoryRegistry
) -> None:
    """A read copies (os.preadv), so a later client write does not change what was read."""
    registry.register("r", region.key, 0, 16)
    triton_shm.set_shared_memory_region(region.handle, [np.array([1, 2, 3, 4], np.int32)])
    view = np.frombuffer(registry.read("r", 0, 16), dtype=np.int32)
    triton_shm.set_shared_memory_region(region.handle, [np.array([9, 9, 9, 9], np.int32)])
    assert view.tolist() == [1, 2, 3, 4]
    assert not view.flags.writeable


def test_truncated_object_is_a_400_not_sigbus(
    region: Region, registry: SharedMemoryRegistry
) -> None:
    """A client that shrinks its object after registering it gets an error naming the sizes."""
    registry.register("r", region.key, 64, 128)
    fd = os.open(f"/dev/shm/{region.key.lstrip('/')}", os.O_RDWR)
    try:
        os.ftruncate(fd, 100)
    finally:
        os.close(fd)
    with pytest.raises(InvalidInput, match=r"region 'r' .* hold 192 bytes, .* now has 100 bytes"):
        registry.read("r", 0, 128)
    with pytest.raises(InvalidInput, match=r"region 'r' .* hold 144 bytes, .* now has 100"):
        registry.write("r", 64, b"x" * 16)
    assert os.stat(f"/dev/shm/{region.key.lstrip('/')}").st_size == 100  # refused, not grown
    assert registry.read("r", 0, 36).nbytes == 36  # what is still there reads fine


def test_a_read_is_bounded_like_a_body(region: Region) -> None:
    """Each read allocates its copy, so one read is limited as one request body is."""
    registry = SharedMemoryRegistry(settings=ShmSettings(max_read_bytes=64))
    try:
        registry.register("r", region.key, 0, 256)
        assert registry.read("r", 0, 64).nbytes == 64
        with pytest.raises(PayloadTooLarge, match=r"65 bytes from region 'r' .* 64 bytes"):
            registry.read("r", 0, 65)
    finally:
        registry.close()


def test_key_prefix_and_region_cap(region: Region) -> None:
    registry = SharedMemoryRegistry(settings=ShmSettings(key_prefix="/allowed_", max_regions=2))
    try:
        with pytest.raises(InvalidInput, match=r"starting with '/allowed_' \(--shm-key-prefix\)"):
            registry.register("r", region.key, 0, 16)
    finally:
        registry.close()
    registry = SharedMemoryRegistry(settings=ShmSettings(max_regions=2))
    try:
        registry.register("a", region.key, 0, 16)
        registry.register("b", region.key, 0, 16)
        with pytest.raises(InvalidInput, match=r"at most 2 .* \(--max-shm-regions\)"):
            registry.register("c", region.key, 0, 16)
        registry.unregister("a")
        registry.register("c", region.key, 0, 16)
    finally:
        registry.close()


def test_key_without_leading_slash(region: Region, registry: SharedMemoryRegistry) -> None:
    registry.register("r", region.key.lstrip("/"), 0, region.size)
    assert registry.status("r")[0].byte_size == region.size


def test_duplicate_name_is_refused(region: Region, registry: SharedMemoryRegistry) -> None:
    registry.register("r", region.key, 0, 16)
    with pytest.raises(InvalidInput, match=r"region 'r' is already registered"):
        registry.register("r", region.key, 16, 16)


@pytest.mark.parametrize("key", ["/a/b", "../etc/passwd", "/..", "/x..y", "", "/", "//x"])
def test_keys_that_could_escape_are_refused(key: str, registry: SharedMemoryRegistry) -> None:
    with pytest.raises(InvalidInput, match=r"^key: expected a shared-memory object name"):
        registry.register("r", key, 0, 16)


def test_missing_object(registry: SharedMemoryRegistry) -> None:
    with pytest.raises(InvalidInput, match=r"key: no shared memory object '/frameserve_nope"):
        registry.register("r", f"/frameserve_nope_{uuid.uuid4().hex}", 0, 16)


def test_region_must_lie_within_the_object(region: Region, registry: SharedMemoryRegistry) -> None:
    with pytest.raises(
        InvalidInput, match=r"object .* of 256 bytes, got offset \+ byte_size = 257"
    ):
        registry.register("r", region.key, 200, 57)
    assert registry.status() == []


@pytest.mark.parametrize(
    ("offset", "byte_size", "field"),
    [(-1, 16, "offset"), (0, 0, "byte_size"), ("0", 16, "offset"), (0, True, "byte_size")],
)
def test_bad_offsets_and_sizes(
    region: Region, registry: SharedMemoryRegistry, offset: object, byte_size: object, field: str
) -> None:
    with pytest.raises(InvalidInput, match=rf"^{field}: expected an integer"):
        registry.register("r", region.key, offset, byte_size)  # type: ignore[arg-type]


def test_out_of_range_access(region: Region, registry: SharedMemoryRegistry) -> None:
    registry.register("r", region.key, 0, 32)
    with pytest.raises(InvalidInput, match=r"within region 'r' of 32 bytes, got offset 16"):
        registry.read("r", 16, 17)
    with pytest.raises(InvalidInput, match=r"within region 'r' of 32 bytes, got offset 30"):
        registry.write("r", 30, b"abc")
    with pytest.raises(InvalidInput, match=r"no shared memory region 'other' is registered"):
        registry.read("other", 0, 1)


def test_unknown_region_status(registry: SharedMemoryRegistry) -> None:
    with pytest.raises(NotFound, match=r"region 'r' is not registered"):
        registry.status("r")


def test_unregister_one_and_all(region: Region, registry: SharedMemoryRegistry) -> None:
    for name in ("a", "b", "c"):
        registry.register(name, region.key, 0, 16)
    registry.unregister("b")
    registry.unregister("never-registered")  # as in Triton: not an error
    assert [s.name for s in registry.status()] == ["a", "c"]
    registry.unregister(None)
    assert registry.status() == []


def test_unregister_while_a_view_is_in_use(region: Region, registry: SharedMemoryRegistry) -> None:
    triton_shm.set_shared_memory_region(region.handle, [np.array([5, 6], np.int64)])
    registry.register("r", region.key, 0, 16)
    in_flight = np.frombuffer(registry.read("r", 0, 16), dtype=np.int64)
    registry.unregister("r")  # must not fail or change what a running request still reads
    assert in_flight.tolist() == [5, 6]
    with pytest.raises(InvalidInput, match="no shared memory region 'r'"):
        registry.read("r", 0, 16)
