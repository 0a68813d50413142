"""Live streams placed on the nodes of a Ray cluster, re-placed when a node dies.

``RayStreams`` places each stream on the node with the fewest streams per CPU (hard affinity
on that node's ``StreamHost``), polls every host a few times a second for its streams'
records and status (one Ray call per host and poll, records in batches), hands the records to
``on_records`` (the coordinator's subscribers) and keeps each stream's latest status. When a
host dies (its node killed or gone from the cluster), its streams are attached again on the
other nodes: they reconnect to their source, and their placement says where they run now,
where they ran and why they moved.

Threads: ``attach``/``detach``/``status`` from any thread (under the lock); one poller thread
(``ray-streams``) owns the Ray calls of the polls and the re-placements.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frameserve.errors import FrameserveError, NotFound, Unavailable
from frameserve.scale.cluster import Node, alive_nodes
from frameserve.scale.stream_host import StreamHost
from frameserve.video.live import LiveSettings, StreamSpec
from frameserve.video.live.records import LiveRecord, StreamStatus

log = logging.getLogger(__name__)

POLL_S = 0.2  # how often records come back from the hosts
ATTACH_TIMEOUT_S = 120.0  # a host's start (its models loaded) and the stream's checks

RecordSink = Callable[[str, list[LiveRecord]], None]


@dataclass
class PlacedStream:
    """A stream as the coordinator knows it: where it runs and its latest status there."""

    id: str
    spec: StreamSpec
    owner: str
    node: Node
    remote_id: str
    moves: list[str] = field(default_factory=list)  # "from NODE: why", oldest first
    status: StreamStatus | None = None
    records: int = 0  # records received so far, every placement together

    def placement(self) -> dict[str, Any]:
        """What the stream's status adds: the node now, and its moves."""
        return {"node": self.node.name, "moved": len(self.moves), "moves": list(self.moves)}


@dataclass
class _Host:
    node: Node
    actor: Any
    attempt: int


class RayStreams:
    """See the module docstring."""

    def __init__(
        self,
        ray: Any,
        repository: Path,
        settings: LiveSettings,
        on_records: RecordSink | None = None,
        model_cache_dir: Path | None = None,
    ) -> None:
        """``settings``: what every host's streams get (the media root, resolved here, must
        be at the same path on every node)."""
        self.ray = ray
        self.repository = repository.resolve()
        self.settings = dataclasses.replace(settings, media_root=settings.media_root.resolve())
        self.model_cache_dir = model_cache_dir
        self.on_records = on_records
        self._remote = ray.remote(StreamHost)
        self._lock = threading.Lock()  # the dicts below, held briefly
        self._placing = threading.Lock()  # one placement at a time (a host may load models)
        self._streams: dict[str, PlacedStream] = {}
        self._hosts: dict[str, _Host] = {}
        self._attempts: dict[str, int] = {}
        self._unusable: dict[str, str] = {}
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="ray-streams", daemon=True)
        self._poller.start()

    # -- any thread -------------------------------------------------------------------------
    def attach(self, spec: StreamSpec, owner: str = "") -> PlacedStream:
        """Place a stream on the least loaded node and start it there."""
        stream_id = uuid.uuid4().hex[:12]
        with self._placing:
            node, remote_id = self._place(spec, owner, exclude=set())
        placed = PlacedStream(stream_id, spec, owner, node, remote_id)
        with self._lock:
            self._streams[stream_id] = placed
        log.info("live stream %s: placed on node %s", stream_id, node.name)
        return placed

    def get(self, stream_id: str) -> PlacedStream:
        with self._lock:
            placed = self._streams.get(stream_id)
        if placed is None:
            raise NotFound(f"live stream {stream_id!r}: no such stream")
        return placed

    def status(self, stream_id: str) -> dict[str, Any]:
        """The host's status of the stream with its placement (``connecting`` until the
        first poll after a (re-)placement)."""
        placed = self.get(stream_id)
        body: dict[str, Any] = {"id": stream_id, "state": "connecting"}
        if placed.status is not None:
            body = placed.status.to_json()
        body["id"] = stream_id
        body["placement"] = placed.placement()
        return body

    def detach(self, stream_id: str) -> None:
        with self._lock:
            placed = self._streams.pop(stream_id, None)
            host = self._hosts.get(placed.node.id) if placed is not None else None
        if placed is None:
            raise NotFound(f"live stream {stream_id!r}: no such stream")
        if host is not None:
            try:
                self.ray.get(host.actor.detach.remote(placed.remote_id), timeout=30)
            except self.ray.exceptions.RayError:
                log.info("live stream %s: its host is gone already", stream_id)

    def close(self) -> None:
        self._stop.set()
        self._poller.join(10.0)
        with self._lock:
            hosts, self._hosts = list(self._hosts.values()), {}
            self._streams.clear()
        for host in hosts:
            self._kill(host)

    # -- placement (under ``_placing``) -----------------------------------------------------
    def _place(self, spec: StreamSpec, owner: str, exclude: set[str]) -> tuple[Node, str]:
        """Start the stream on the least loaded usable node; a node whose host cannot start
        is left out (with its reason) and the next one tried."""
        while True:
            nodes = alive_nodes(self.ray)
            with self._lock:
                node = self._least_loaded(nodes, exclude)
                host = self._host(node)
            try:
                ref = host.actor.attach.remote(spec.model_dump(), owner)
                return node, str(self.ray.get(ref, timeout=ATTACH_TIMEOUT_S))
            except self.ray.exceptions.RayTaskError as err:  # the stream's own error (a 400)
                cause = getattr(err, "cause", None)
                if isinstance(cause, FrameserveError):
                    raise cause from None
                raise Unavailable(f"live stream: node {node.name}: {_first_line(err)}") from None
            except self.ray.exceptions.RayError as err:  # the host died, or never started
                with self._lock:
                    self._unusable[node.id] = _first_line(err)
                    self._hosts.pop(node.id, None)
                log.warning("live streams: node %s cannot host streams (%s)", node.name,
                            _first_line(err))  # fmt: skip

    def _least_loaded(self, alive: list[Node], exclude: set[str]) -> Node:
        nodes = [n for n in alive if n.id not in exclude and n.id not in self._unusable]
        if not nodes:
            why = "; ".join(f"{n[:8]}: {r}" for n, r in self._unusable.items())
            raise Unavailable(
                "live streams: no node can take a stream" + (f" ({why})" if why else "")
            )
        load = {n.id: 0 for n in nodes}
        for placed in self._streams.values():
            if placed.node.id in load:
                load[placed.node.id] += 1
        return min(nodes, key=lambda n: (load[n.id] / n.cpus, n.id))

    def _host(self, node: Node) -> _Host:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        host = self._hosts.get(node.id)
        if host is None:
            attempt = self._attempts[node.id] = self._attempts.get(node.id, 0) + 1
            actor = self._remote.options(
                name=f"streams-{node.id[:8]}-a{attempt}",
                num_cpus=0,
                max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.id, soft=False),
            ).remote(self.repository, self.settings, node.cpus, self.model_cache_dir)
            host = self._hosts[node.id] = _Host(node, actor, attempt)
        return host

    # -- the poller thread ------------------------------------------------------------------
    def _poll_loop(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self._poll_once()
            except Exception:  # noqa: BLE001 - the poller must outlive one bad round
                log.exception("live streams: a poll failed")

    def _poll_once(self) -> None:
        with self._lock:
            hosts = [h for h in self._hosts.values()
                     if any(s.node.id == h.node.id for s in self._streams.values())]  # fmt: skip
        alive = {n.id for n in alive_nodes(self.ray)} if hosts else set()
        refs = {h.actor.poll.remote(): h for h in hosts if h.node.id in alive}
        for host in hosts:
            if host.node.id not in alive:
                self._replace(host, "its node left the cluster")
        ready, _ = (
            self.ray.wait(list(refs), num_returns=len(refs), timeout=2.0) if refs else ([], [])
        )
        for ref in ready:
            host = refs[ref]
            try:
                answer = self.ray.get(ref)
            except self.ray.exceptions.RayTaskError as err:  # the host is alive: next round
                log.warning("live streams: polling node %s failed: %s", host.node.name,
                            _first_line(err))  # fmt: skip
                continue
            except self.ray.exceptions.RayError as err:
                self._replace(host, _first_line(err))
                continue
            self._deliver(host, answer)

    def _deliver(
        self, host: _Host, answer: dict[str, tuple[list[LiveRecord], StreamStatus]]
    ) -> None:
        with self._lock:
            by_remote = {
                s.remote_id: s for s in self._streams.values() if s.node.id == host.node.id
            }
        for remote_id, (records, status) in answer.items():
            placed = by_remote.get(remote_id)
            if placed is None:
                continue
            placed.status = status
            placed.records += len(records)
            if records and self.on_records is not None:
                self.on_records(placed.id, records)

    def _replace(self, host: _Host, why: str) -> None:
        """The host is gone: its streams start again on the other nodes."""
        with self._lock:
            if self._hosts.get(host.node.id) is host:
                del self._hosts[host.node.id]
            moving = [s for s in self._streams.values() if s.node.id == host.node.id]
        self._kill(host)
        for placed in moving:
            try:
                with self._placing:
                    node, remote_id = self._place(placed.spec, placed.owner, {host.node.id})
            except Unavailable as err:
                with self._lock:
                    placed.moves.append(f"from {host.node.name}: {why}; nowhere to go: {err}")
                continue
            with self._lock:
                placed.moves.append(f"from {host.node.name}: {why}")
                placed.node, placed.remote_id, placed.status = node, remote_id, None
            log.warning("live stream %s: moved from node %s to %s (%s)", placed.id,
                        host.node.name, node.name, why)  # fmt: skip

    def _kill(self, host: _Host) -> None:
        try:
            self.ray.kill(host.actor, no_restart=True)
        except Exception:  # noqa: BLE001 - the actor of a dead node may be gone already
            log.debug("killing a stream host failed", exc_info=True)


def _first_line(err: BaseException) -> str:
    for line in reversed(str(err).splitlines()):
        if "Error:" in line:
            return line.strip()
    return type(err).__name__
