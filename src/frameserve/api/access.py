"""Who may call what: the one access check both front ends run before a request does anything.

Each HTTP route and gRPC method belongs to a category (Triton's names plus ``jobs``, ``streams``
and ``metrics``). The check, in order: an API key (unless keys are off, the route is a health
probe, or ``/metrics`` is open), the restricted category's header (Triton's
``--http-restricted-api`` / ``--grpc-restricted-protocol``), and an admin key for the routes
that change the server for everyone (repository load/unload, shared-memory registration).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from frameserve.api.auth import (
    ApiKey,
    AuthSettings,
    Keys,
    RestrictedGroup,
    restriction_table,
)
from frameserve.errors import PermissionDenied, Restricted

GRPC_RESTRICTED_PREFIX = "triton-grpc-protocol-"


@dataclass(frozen=True)
class Rule:
    """What a route needs: its category (None: none), and whether it is open (health probes)
    or needs an admin key."""

    category: str | None
    open: bool = False
    admin: bool = False
    what: str = ""  # named in a 403 for an admin route


_M = r"/v2/models/[^/]+(?:/versions/[^/]+)?"
_HTTP_RULES: tuple[tuple[str | None, re.Pattern[str], Rule], ...] = tuple(
    (method, re.compile(pattern), rule)
    for method, pattern, rule in (
        (None, r"/v2/health/(?:live|ready)", Rule("health", open=True)),  # HEAD probes too
        (None, _M + "/ready", Rule("health")),
        (None, _M + "/infer", Rule("inference")),
        (None, r"/v1/models/[^/]+/predict", Rule("inference")),
        (None, _M + "/config", Rule("model-config")),
        (None, r"/v2/models/stats|" + _M + "/stats", Rule("statistics")),
        (None, r"/v2|" + _M, Rule("metadata")),
        ("POST", r"/v2/repository/models/[^/]+/(?:load|unload)",
         Rule("model-repository", admin=True, what="loading and unloading models")),
        (None, r"/v2/repository/.*", Rule("model-repository")),
        ("POST", r"/v2/(?:system|cuda)sharedmemory/.*register",
         Rule("shared-memory", admin=True, what="registering and unregistering shared memory")),
        (None, r"/v2/(?:system|cuda)sharedmemory/.*", Rule("shared-memory")),
        (None, r"/v2/trace(?:/.*)?", Rule("trace")),
        (None, r"/v2/logging", Rule("logging")),
        (None, r"/v1/jobs(?:/.*)?", Rule("jobs")),
        (None, r"/v1/streams(?:/.*)?", Rule("streams")),
        (None, r"/metrics", Rule("metrics")),
        # the dashboard's files hold nothing secret, and the login page must load without a key
        (None, r"/ui(?:/.*)?", Rule(None, open=True)),
        (None, r"/v1/session", Rule(None, open=True)),  # logging in: it checks the key itself
        (None, r"/v1/models/activity", Rule("statistics")),
        (None, r"/v1/pipelines", Rule("metadata")),
    )
)  # fmt: skip
_NO_CATEGORY = Rule(None)

_INFERENCE_SERVICE = "/inference.GRPCInferenceService/"
_SHM_ADMIN = Rule("shared-memory", admin=True, what="registering and unregistering shared memory")
_GRPC_RULES: dict[str, Rule] = {
    "ServerLive": Rule("health", open=True),
    "ServerReady": Rule("health", open=True),
    "ModelReady": Rule("health"),
    "ServerMetadata": Rule("metadata"),
    "ModelMetadata": Rule("metadata"),
    "ModelInfer": Rule("inference"),
    "ModelStreamInfer": Rule("inference"),
    "ModelConfig": Rule("model-config"),
    "ModelStatistics": Rule("statistics"),
    "RepositoryIndex": Rule("model-repository"),
    "RepositoryModelLoad": Rule("model-repository", admin=True, what="loading models"),
    "RepositoryModelUnload": Rule("model-repository", admin=True, what="unloading models"),
    "SystemSharedMemoryStatus": Rule("shared-memory"),
    "SystemSharedMemoryRegister": _SHM_ADMIN,
    "SystemSharedMemoryUnregister": _SHM_ADMIN,
    "CudaSharedMemoryStatus": Rule("shared-memory"),
    "CudaSharedMemoryRegister": _SHM_ADMIN,
    "CudaSharedMemoryUnregister": _SHM_ADMIN,
    "TraceSetting": Rule("trace"),
    "LogSettings": Rule("logging"),
}  # fmt: skip


def http_rule(method: str, path: str) -> Rule:
    """The rule of an HTTP request by its method and (decoded) path."""
    for want, pattern, rule in _HTTP_RULES:
        if (want is None or want == method) and pattern.fullmatch(path):
            return rule
    return _NO_CATEGORY


def grpc_rule(full_method: str) -> Rule:
    """The rule of a gRPC call by its full method name (``/package.Service/Method``)."""
    if full_method.startswith(_INFERENCE_SERVICE):
        return _GRPC_RULES.get(full_method[len(_INFERENCE_SERVICE) :], _NO_CATEGORY)
    if full_method.startswith("/grpc.health.v1.Health/"):
        return Rule("health", open=True)
    if full_method.startswith("/frameserve.v1.VideoStreams/"):
        return Rule("streams")
    return _NO_CATEGORY  # server reflection: a key, no category


class AccessPolicy:
    """The check for one protocol: keys (shared by both), its restricted groups, open metrics."""

    def __init__(
        self,
        keys: Keys | None,
        restricted: dict[str, RestrictedGroup],
        metrics_open: bool,
        header_prefix: str = "",
    ) -> None:
        self.keys = keys
        self._restricted = restricted
        self._metrics_open = metrics_open
        self._prefix = header_prefix

    @classmethod
    def for_http(cls, settings: AuthSettings, keys: Keys | None) -> AccessPolicy:
        table = restriction_table(settings.http_restricted, "--http-restricted-api")
        return cls(keys, table, settings.metrics_open)

    @classmethod
    def for_grpc(cls, settings: AuthSettings, keys: Keys | None) -> AccessPolicy:
        table = restriction_table(settings.grpc_restricted, "--grpc-restricted-protocol")
        return cls(keys, table, settings.metrics_open, GRPC_RESTRICTED_PREFIX)

    @property
    def active(self) -> bool:
        """False when there is nothing to check (no keys, no restricted groups)."""
        return self.keys is not None or bool(self._restricted)

    def check(
        self,
        rule: Rule,
        header: Callable[[str], str | None],
        session: Callable[[], ApiKey | None] | None = None,
    ) -> ApiKey | None:
        """The caller's key (None with keys off or on an open route); raises Unauthenticated,
        Restricted or PermissionDenied. ``header`` looks a header up by lower-case name;
        ``session`` (HTTP): the key behind the request's session cookie, asked only when no
        ``Authorization`` header came (a header that is sent is what counts)."""
        key = None
        open_route = rule.open or (rule.category == "metrics" and self._metrics_open)
        if self.keys is not None and not open_route:
            authorization = header("authorization")
            if not authorization and session is not None:
                key = session()
            if key is None:
                key = self.keys.authenticate(authorization)
        group = self._restricted.get(rule.category or "")
        if group is not None:
            name = self._prefix + group.header
            given = header(name) or ""
            if not _same(given, group.value):
                thing = "protocol" if self._prefix else "API"  # Triton's two wordings
                raise Restricted(f"This {thing} is restricted, expecting header '{name}'")
        if rule.admin and key is not None and not key.admin:
            raise PermissionDenied(
                f"{rule.what}: expected an admin key (NAME:SECRET:admin in --api-key-file), "
                f"got key {key.name!r}, which is not one"
            )
        return key


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())
