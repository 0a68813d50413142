"""What a client asks to be pushed: the ``push`` field of a job (``JobSpec``) and of a live
stream (``StreamSpec``), a list of webhook and MQTT outputs told apart by ``type``.

The list is parsed here once, item by item, so a mistake answers 400 naming the item and field
as the client wrote them (``push[1].qos: expected 0, 1 or 2, got 3``) rather than pydantic's
location path. Where an output may connect is the destination policy of stream sources
(``video.live.policy``): ``check_destinations`` runs it at submit and attach, and the delivery
runs it again before every connection (``video.push.webhook``, ``video.push.mqtt``).

Secrets (a webhook's ``secret``, a password in the URL) are kept in the spec, since a job that
resumes after a restart needs them, and never shown: ``public_url`` redacts the password and
status and logs never carry the secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError

from frameserve.errors import InvalidInput

if TYPE_CHECKING:
    from frameserve.video.live.policy import SourcePolicy

MAX_PUSH = 8  # push outputs of one job or stream
JOB_EVENTS = ("job.finished", "job.failed", "job.cancelled", "job.progress")
WEBHOOK_SCHEMES = ("http", "https")
MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}


def redact(url: str) -> str:
    """``url`` without its password (``video.live.policy.redact``; imported here, since the
    live package imports this module as it starts)."""
    from frameserve.video.live.policy import redact as redact_url

    return redact_url(url)


JobEvent = Literal["job.finished", "job.failed", "job.cancelled", "job.progress"]


class _Output(BaseModel):
    """What every push output has: its queue and how hard it retries."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 1000
    """Messages (records, or job events) waiting to be sent; the oldest is dropped beyond."""
    max_attempts: Annotated[int, Field(ge=1, le=10)] = 5
    """Tries of one message (backoff with jitter between); it counts as failed after them."""
    timeout_s: Annotated[float, Field(gt=0, le=60)] = 10.0
    """At most this long for one try (connect and send)."""
    events: tuple[JobEvent, ...] = ("job.finished", "job.failed")
    """Jobs only: which events are sent (job.progress at most every progress_interval_s)."""
    progress_interval_s: Annotated[float, Field(ge=0.5, le=3600)] = 5.0
    """Jobs only: the least time between two job.progress events."""

    url: Annotated[str, Field(min_length=1, max_length=4096, repr=False)]
    """Where to push (see the subclasses for the schemes); a password in it is never shown."""

    @property
    def public_url(self) -> str:
        """The URL without its password, for status, metrics and logs."""
        return redact(self.url)


class WebhookPush(_Output):
    """``{"type": "webhook", "url": "https://...", "secret": ...}``: HTTP POSTs of JSON."""

    type: Literal["webhook"]
    secret: Annotated[str | None, Field(min_length=1, max_length=1024, repr=False)] = None
    """Signs every body: ``X-Frameserve-Signature: sha256=HMAC(secret, timestamp + "." +
    body)`` with the timestamp in ``X-Frameserve-Timestamp`` (see docs/push.md)."""
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 50
    """Streams only: at most this many records in one POST."""
    batch_ms: Annotated[int, Field(ge=0, le=60_000)] = 1000
    """Streams only: a POST waits at most this long for its batch to fill."""


class MqttPush(_Output):
    """``{"type": "mqtt", "url": "mqtt://host:port/topic", "qos": 1}``: one message per
    record (streams) or per event (jobs)."""

    type: Literal["mqtt"]
    qos: Literal[0, 1, 2] = 0
    retain: bool = False


PushSpec = Annotated[WebhookPush | MqttPush, Field(discriminator="type")]
_ADAPTER: TypeAdapter[WebhookPush | MqttPush] = TypeAdapter(PushSpec)


def parse_push(value: Any) -> tuple[WebhookPush | MqttPush, ...]:
    """The ``push`` field: a list of at most ``MAX_PUSH`` outputs; ``InvalidInput`` names the
    item and the field (``push[i].url``), what was expected and what was given."""
    if value is None:
        return ()
    if isinstance(value, tuple) and all(isinstance(v, WebhookPush | MqttPush) for v in value):
        return value
    if not isinstance(value, list | tuple):
        raise InvalidInput(f"push: expected a list of push outputs, got {type(value).__name__}")
    if len(value) > MAX_PUSH:
        raise InvalidInput(f"push: expected at most {MAX_PUSH} push outputs, got {len(value)}")
    specs = []
    for i, item in enumerate(value):
        if isinstance(item, WebhookPush | MqttPush):
            specs.append(item)
            continue
        if not isinstance(item, dict) or item.get("type") not in ("webhook", "mqtt"):
            got = item.get("type") if isinstance(item, dict) else type(item).__name__
            raise InvalidInput(f"push[{i}].type: expected 'webhook' or 'mqtt', got {got!r}")
        try:
            spec = _ADAPTER.validate_python(item)
        except ValidationError as err:
            raise InvalidInput(_describe(err, i)) from None
        check_url(spec, f"push[{i}].url")
        specs.append(spec)
    return tuple(specs)


def _describe(err: ValidationError, index: int) -> str:
    lines = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"] if p not in ("webhook", "mqtt")]
        field = ".".join(loc)
        got = e.get("input")
        if loc and loc[0] in ("secret", "url"):
            got = "***" if loc[0] == "secret" else redact(str(got))
        lines.append(f"push[{index}]{'.' + field if field else ''}: {e['msg']} (got {got!r})")
    return "; ".join(lines)


PushList = Annotated[tuple[PushSpec, ...], BeforeValidator(parse_push), Field(max_length=MAX_PUSH)]


def check_url(spec: WebhookPush | MqttPush, where: str) -> None:
    """The URL's scheme, host and (MQTT) topic; ``InvalidInput`` names ``where``."""
    shown = spec.public_url
    if any(c.isspace() or ord(c) < 32 for c in spec.url):
        raise InvalidInput(f"{where}: expected a URL without spaces, got {shown!r}")
    try:
        parts = urlsplit(spec.url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as err:
        raise InvalidInput(f"{where}: expected a URL, got {shown!r}: {err}") from None
    schemes = WEBHOOK_SCHEMES if isinstance(spec, WebhookPush) else tuple(MQTT_SCHEMES)
    if parts.scheme.lower() not in schemes:
        raise InvalidInput(
            f"{where}: expected a {spec.type} URL with scheme {' or '.join(schemes)}, got {shown!r}"
        )
    if not parts.hostname:
        raise InvalidInput(f"{where}: expected {parts.scheme}://host[:port]/..., got {shown!r}")
    if isinstance(spec, MqttPush):
        topic = mqtt_topic(spec.url)
        wildcard = "+" in topic or "#" in spec.url or "?" in spec.url
        if not topic or wildcard or "\0" in topic:
            raise InvalidInput(
                f"{where}: expected mqtt://host[:port]/topic with a topic to publish to (no "
                f"wildcards + or #, no query), got {shown!r}"
            )


def mqtt_topic(url: str) -> str:
    """The topic of an MQTT URL: its path without the first slash, percent-decoded."""
    return unquote(urlsplit(url).path[1:])


def check_destinations(specs: tuple[WebhookPush | MqttPush, ...], policy: SourcePolicy) -> None:
    """Every output's host against the destination policy, at submit or attach; the
    ``InvalidInput`` names ``push[i].url``. It runs again before every connection."""
    for i, spec in enumerate(specs):
        check_destination(spec, policy, f"push[{i}].url")


def check_destination(spec: WebhookPush | MqttPush, policy: SourcePolicy, where: str) -> str:
    """Resolve and check the output's host (blocking: the resolver); the checked address."""
    try:
        return policy.check(spec.url).address
    except InvalidInput as err:
        message = err.message.removeprefix("source: ").replace("source policy", "destination "
                                                                "policy")  # fmt: skip
        raise InvalidInput(f"{where}: {message}") from None


_JOB_ONLY = ("events", "progress_interval_s")
_STREAM_ONLY = ("batch_size", "batch_ms")


def check_stream_push(specs: tuple[WebhookPush | MqttPush, ...]) -> None:
    """A stream pushes records: ``InvalidInput`` for the fields only jobs have."""
    _refuse_fields(specs, _JOB_ONLY, "only jobs send events; a stream pushes its records")


def check_job_push(specs: tuple[WebhookPush | MqttPush, ...]) -> None:
    """A job pushes events: ``InvalidInput`` for the fields only streams have."""
    _refuse_fields(specs, _STREAM_ONLY, "only streams batch records; a job sends events")


def _refuse_fields(specs: tuple[WebhookPush | MqttPush, ...], names: tuple[str, ...],
                   why: str) -> None:  # fmt: skip
    for i, spec in enumerate(specs):
        for name in names:
            if name in spec.model_fields_set:
                raise InvalidInput(f"push[{i}].{name}: {why}; remove the field")
