"""The key file, the access check and the route categories, in process (the real-server tests
are in tests/functional/test_api_keys.py)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from frameserve.api.access import AccessPolicy, grpc_rule, http_rule
from frameserve.api.auth import (
    AuthSettings,
    KeyRing,
    Keys,
    caller,
    new_owner,
    owner_scope,
    parse_restricted,
)
from frameserve.api.http.metrics import create_metrics_app
from frameserve.errors import ConfigError, PermissionDenied, Restricted, Unauthenticated

ALICE = "alice-secret-0123456789"
ROOT = "root-secret-abcdefghijklmn"


def _ring(tmp_path: Path, text: str) -> KeyRing:
    path = tmp_path / "keys.txt"
    path.write_text(text)
    return KeyRing.read(path)


def test_a_key_file_with_comments_blank_lines_and_an_admin(tmp_path: Path) -> None:
    ring = _ring(tmp_path, f"# keys\n\nalice:{ALICE}\n  root:{ROOT}:admin  \n")
    assert [(k.name, k.admin) for k in ring.keys] == [("alice", False), ("root", True)]
    assert ring.match(ROOT) is ring.keys[1]
    assert ring.match(ALICE + "x") is None and ring.match("") is None
    assert ALICE not in repr(ring)  # secrets stay out of reprs, hence out of logs


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"alice {ALICE}\n", "line 1: expected NAME:SECRET or NAME:SECRET:admin"),
        (f"# c\nalice:{ALICE}:root\n", "line 2: expected NAME:SECRET or NAME:SECRET:admin"),
        (f"al ice:{ALICE}\n", "line 1: key name: expected 1-64 letters"),
        ("alice:short\n", "line 1: key 'alice': expected a secret of at least 16"),
        (f"alice:{ALICE}\nalice:{ROOT}\n", "line 2: key name 'alice' already used on line 1"),
        (f"alice:{ALICE}\nbob:{ALICE}\n", "line 2: key 'bob' has the same secret as line 1"),
        ("# nothing\n", "expected at least one key, found none"),
    ],
)
def test_a_bad_key_file_names_the_line_never_the_secret(
    tmp_path: Path, text: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        _ring(tmp_path, text)
    assert expected in err.value.message
    assert ALICE not in err.value.message and ROOT not in err.value.message
    assert str(tmp_path / "keys.txt") in err.value.message


def test_a_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        KeyRing.read(tmp_path / "nope.txt")


def test_reload_keeps_the_old_keys_when_the_new_file_is_bad(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(f"alice:{ALICE}\n")
    keys = Keys(path)
    path.write_text(f"alice {ALICE}\n")
    with caplog.at_level(logging.ERROR):
        assert not keys.reload()
    assert keys.authenticate(f"Bearer {ALICE}").name == "alice"
    assert "line 1" in caplog.text and ALICE not in caplog.text
    path.write_text(f"root:{ROOT}:admin\n")
    assert keys.reload()
    with pytest.raises(Unauthenticated):
        keys.authenticate(f"Bearer {ALICE}")
    assert keys.authenticate(f"bearer   {ROOT} ").admin


@pytest.mark.parametrize(
    "value", [None, "", "Bearer", "Bearer ", f"Basic {ALICE}", ALICE, "Bearer nope"]
)
def test_authenticate_refuses_what_is_not_a_valid_bearer_key(tmp_path: Path, value: str) -> None:
    path = tmp_path / "keys.txt"
    path.write_text(f"alice:{ALICE}\n")
    with pytest.raises(Unauthenticated) as err:
        Keys(path).authenticate(value)
    assert ALICE not in err.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("inference", "expected CATEGORY[,CATEGORY...]:HEADER=VALUE"),
        ("inference:key", "expected CATEGORY[,CATEGORY...]:HEADER=VALUE"),
        ("inference:key=", "expected CATEGORY[,CATEGORY...]:HEADER=VALUE"),
        ("inference,bogus:k=v", "got ['bogus']"),
        ("inference:bad key=v", "header: expected letters"),
    ],
)
def test_a_malformed_restricted_group_is_refused(text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_restricted(text, "--http-restricted-api")
    assert expected in err.value.message and "--http-restricted-api" in err.value.message


def test_a_category_in_two_groups_is_refused() -> None:
    groups = (parse_restricted("inference:a=1", "f"), parse_restricted("jobs,inference:b=2", "f"))
    with pytest.raises(ConfigError, match="'inference' is in two groups"):
        AuthSettings(http_restricted=groups)


@pytest.mark.parametrize(
    ("method", "path", "category", "admin"),
    [
        ("GET", "/v2/health/live", "health", False),
        ("GET", "/v2/models/m/versions/2/ready", "health", False),
        ("POST", "/v2/models/m/infer", "inference", False),
        ("POST", "/v1/models/m/predict", "inference", False),
        ("GET", "/v2", "metadata", False),
        ("GET", "/v2/models/m", "metadata", False),
        ("GET", "/v2/models/m/config", "model-config", False),
        ("GET", "/v2/models/stats", "statistics", False),
        ("POST", "/v2/repository/index", "model-repository", False),
        ("POST", "/v2/repository/models/m/load", "model-repository", True),
        ("POST", "/v2/systemsharedmemory/region/r/register", "shared-memory", True),
        ("POST", "/v2/systemsharedmemory/unregister", "shared-memory", True),
        ("GET", "/v2/systemsharedmemory/status", "shared-memory", False),
        ("DELETE", "/v1/jobs/abc", "jobs", False),
        ("GET", "/v1/streams/abc/events", "streams", False),
        ("GET", "/metrics", "metrics", False),
        ("GET", "/docs", None, False),
    ],
)
def test_http_routes_map_to_triton_categories(
    method: str, path: str, category: str | None, admin: bool
) -> None:
    rule = http_rule(method, path)
    assert (rule.category, rule.admin) == (category, admin)
    assert rule.open == (path in ("/v2/health/live", "/v2/health/ready"))


def test_grpc_methods_map_to_triton_categories() -> None:
    service = "/inference.GRPCInferenceService/"
    assert grpc_rule(service + "ServerLive").open
    assert not grpc_rule(service + "ModelReady").open
    assert grpc_rule(service + "ModelStreamInfer").category == "inference"
    assert grpc_rule(service + "RepositoryModelUnload").admin
    assert grpc_rule(service + "SystemSharedMemoryRegister").admin
    assert grpc_rule("/grpc.health.v1.Health/Watch").open
    assert grpc_rule("/frameserve.v1.VideoStreams/Subscribe").category == "streams"


def _policy(tmp_path: Path, settings: AuthSettings, keyed: bool = True) -> AccessPolicy:
    path = tmp_path / "keys.txt"
    path.write_text(f"alice:{ALICE}\nroot:{ROOT}:admin\n")
    return AccessPolicy.for_http(settings, Keys(path) if keyed else None)


def test_the_check_keys_restrictions_and_admin(tmp_path: Path) -> None:
    group = parse_restricted("inference,health:X-Infer=yes", "--http-restricted-api")
    policy = _policy(tmp_path, AuthSettings(http_restricted=(group,)))
    alice = {"authorization": f"Bearer {ALICE}"}
    infer = http_rule("POST", "/v2/models/m/infer")
    with pytest.raises(Unauthenticated):
        policy.check(infer, {}.get)
    with pytest.raises(Restricted, match="expecting header 'x-infer'"):
        policy.check(infer, alice.get)
    key = policy.check(infer, {**alice, "x-infer": "yes"}.get)
    assert key is not None and key.name == "alice"
    live = http_rule("GET", "/v2/health/live")  # open to keys, still restricted
    with pytest.raises(Restricted):
        policy.check(live, {}.get)
    assert policy.check(live, {"x-infer": "yes"}.get) is None
    load = http_rule("POST", "/v2/repository/models/m/load")
    with pytest.raises(PermissionDenied, match="expected an admin key") as err:
        policy.check(load, alice.get)
    assert not isinstance(err.value, Restricted)
    root = policy.check(load, {"authorization": f"Bearer {ROOT}"}.get)
    assert root is not None and root.admin


def test_keys_off_checks_nothing_and_owners_are_empty(tmp_path: Path) -> None:
    policy = _policy(tmp_path, AuthSettings(), keyed=False)
    assert not policy.active
    load = http_rule("POST", "/v2/repository/models/m/load")
    assert policy.check(load, {}.get) is None
    assert (new_owner(), owner_scope()) == ("", None)


def test_owner_scope_of_a_key_and_an_admin(tmp_path: Path) -> None:
    ring = _ring(tmp_path, f"alice:{ALICE}\nroot:{ROOT}:admin\n")
    token = caller.set(ring.keys[0])
    try:
        assert (new_owner(), owner_scope()) == ("alice", "alice")
        caller.set(ring.keys[1])
        assert (new_owner(), owner_scope()) == ("root", None)
    finally:
        caller.reset(token)


async def _get(app, path: str, headers: dict[str, str]) -> tuple[int, dict[bytes, bytes]]:  # type: ignore[no-untyped-def]
    """One GET through an ASGI app; the status and headers of its answer."""
    sent: list[dict] = []  # type: ignore[type-arg]
    scope = {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(),
        "query_string": b"", "root_path": "", "scheme": "http", "http_version": "1.1",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "server": ("127.0.0.1", 8002), "client": ("127.0.0.1", 1),
    }  # fmt: skip

    async def receive() -> dict:  # type: ignore[type-arg]
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:  # type: ignore[type-arg]
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    return start["status"], dict(start["headers"])


def test_the_metrics_port_needs_a_key_unless_metrics_are_open(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    closed = create_metrics_app(registry, _policy(tmp_path, AuthSettings()))
    status, headers = asyncio.run(_get(closed, "/metrics", {}))
    assert status == 401 and headers[b"www-authenticate"] == b"Bearer"
    assert asyncio.run(_get(closed, "/metrics", {"Authorization": f"Bearer {ALICE}"}))[0] == 200
    opened = create_metrics_app(registry, _policy(tmp_path, AuthSettings(metrics_open=True)))
    assert asyncio.run(_get(opened, "/metrics", {}))[0] == 200
