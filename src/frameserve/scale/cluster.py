"""Joining a Ray cluster as its coordinator: ``--ray auto`` or ``--ray host:port``.

Ray is the optional extra ``frameserve[ray]``, imported here on demand. Ray 2.60 turns token
authentication on: every driver needs ``RAY_AUTH_MODE=token`` and the cluster's token. Ray
reads both from its environment only, so ``connect`` puts what ``RaySettings`` says there
(the settings come from the CLI, which maps ``FRAMESERVE_RAY_*`` in) before ``ray.init``.
An address that does not answer fails at once with the address named, instead of Ray's own
retries.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frameserve.errors import ConfigError, Unavailable
from frameserve.extras import require

log = logging.getLogger(__name__)

NAMESPACE = "frameserve"  # the namespace of the coordinator's actors


@dataclass(frozen=True)
class RaySettings:
    """How the coordinator joins the cluster and cuts its jobs.

    ``address``: ``auto`` (a cluster started on this machine) or ``host:port`` of the head's
    GCS. ``auth_token_file``: the cluster's token (None: Ray's own, ``~/.ray/auth_token`` or
    ``RAY_AUTH_TOKEN``); ``auth``: False for a cluster started with ``RAY_AUTH_MODE=disabled``.
    ``chunk_seconds``: the least video per chunk; ``overlap``: kept frames a chunk also runs
    of the next one, for stitching track ids; ``worker_cpus``: CPUs each node's worker takes
    (0: all the node has).
    """

    address: str
    auth_token_file: Path | None = None
    auth: bool = True
    chunk_seconds: float = 10.0
    overlap: int = 3
    worker_cpus: int = 0
    connect_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if not self.address or (self.address != "auto" and ":" not in self.address):
            raise ConfigError(f"--ray: expected 'auto' or host:port, got {self.address!r}")
        if not self.chunk_seconds > 0:
            raise ConfigError(f"ray: chunk_seconds: expected > 0, got {self.chunk_seconds!r}")
        if self.overlap < 0 or self.worker_cpus < 0:
            raise ConfigError(
                f"ray: overlap and worker_cpus: expected >= 0, got {self.overlap}, "
                f"{self.worker_cpus}"
            )


def _check_reachable(address: str, timeout_s: float) -> None:
    """A TCP connect to the GCS, so a wrong address fails in seconds with its name."""
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise ConfigError(f"--ray {address}: expected host:port, the port is {port!r}") from None
    try:
        with socket.create_connection((host.strip("[]"), number), timeout=timeout_s):
            pass
    except OSError as err:
        raise Unavailable(
            f"--ray {address}: cannot reach the Ray cluster's head there ({err}); start one "
            "with 'ray start --head' or give its GCS address"
        ) from None


def _auth_environment(settings: RaySettings) -> None:
    """Ray takes its authentication from the environment only: set it from the settings."""
    if not settings.auth:
        os.environ["RAY_AUTH_MODE"] = "disabled"
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    if settings.auth_token_file is not None:
        path = settings.auth_token_file
        if not path.is_file():
            raise ConfigError(f"--ray-auth-token-file: expected a file, {path} is not one")
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
        os.environ.pop("RAY_AUTH_TOKEN", None)


def connect(settings: RaySettings) -> Any:
    """Join the cluster (``ray.init``) as a driver; returns the ``ray`` module."""
    ray = require("ray", "ray", "--ray")
    if ray.is_initialized():
        return ray
    if settings.address != "auto":
        _check_reachable(settings.address, settings.connect_timeout_s)
    _auth_environment(settings)
    try:
        ray.init(
            address=settings.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            configure_logging=False,
        )
    except (ConnectionError, RuntimeError) as err:
        hint = ""
        if settings.address != "auto":  # the head answered the TCP check: most often the token
            hint = (
                " (the head answers there: check that --ray-auth-token-file holds its token "
                "(Ray logs InvalidAuthToken otherwise) and that Ray's versions match)"
            )
        raise Unavailable(
            f"--ray {settings.address}: cannot join the cluster: {err}{hint}"
        ) from None
    nodes = alive_nodes(ray)
    log.info("ray: joined %s as coordinator, %d node(s) alive", settings.address, len(nodes))
    return ray


@dataclass(frozen=True, slots=True)
class Node:
    """A live node of the cluster and the CPUs Ray gives it (``--num-cpus``)."""

    id: str
    address: str
    cpus: int

    @property
    def name(self) -> str:
        """How logs and status name it: its address and the start of its id."""
        return f"{self.address} ({self.id[:8]})"


def alive_nodes(ray: Any) -> list[Node]:
    """Nodes that are alive and have CPUs, in a stable order."""
    out = []
    for n in ray.nodes():
        cpus = int(n.get("Resources", {}).get("CPU", 0))
        if n.get("Alive") and cpus > 0:
            out.append(Node(n["NodeID"], n.get("NodeManagerAddress", ""), cpus))
    return sorted(out, key=lambda node: node.id)


def disconnect(ray: Any) -> None:
    if ray.is_initialized():
        ray.shutdown()
