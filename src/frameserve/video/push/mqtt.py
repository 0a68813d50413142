"""MQTT outputs: one connection per output (aiomqtt, an asyncio client on paho-mqtt), one
message per record or job event, at the output's qos.

The connection opens at the first message and again after it failed (the delivery's backoff
spaces the tries). Before each connection the broker's host is resolved and checked against
the destination policy of stream sources; ``mqtt://`` then connects to the checked address,
``mqtts://`` (TLS, the system's CA certificates) to the name, which the certificate needs. A
user name and password in the URL log in; the password is never shown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import uuid
from urllib.parse import unquote, urlsplit

import aiomqtt

from frameserve.errors import InvalidInput
from frameserve.video.live.policy import SourcePolicy
from frameserve.video.push.delivery import Message, PushError
from frameserve.video.push.spec import MQTT_SCHEMES, MqttPush, check_destination, mqtt_topic
from frameserve.video.push.webhook import scrub

_PAHO_LOG = logging.getLogger("frameserve.video.push.paho")


class MqttTransport:
    """Publishes one output's messages (loop-owned)."""

    def __init__(self, spec: MqttPush, policy: SourcePolicy, name: str) -> None:
        self._spec = spec
        self._policy = policy
        self._name = name
        self._topic = mqtt_topic(spec.url)
        self._client: aiomqtt.Client | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def send(self, message: Message) -> None:
        """Publish one message (acknowledged for qos 1 and 2); ``PushError`` otherwise, and
        the connection is dropped so the next try connects again."""
        client = await self._connected()
        try:
            await client.publish(
                self._topic, message.body, self._spec.qos, self._spec.retain,
                timeout=self._spec.timeout_s,
            )  # fmt: skip
        except aiomqtt.MqttError as err:
            await self.close()
            where = self._spec.public_url
            raise PushError(f"MQTT publish to {where}: {self._scrub(err)}") from None

    async def _connected(self) -> aiomqtt.Client:
        if self._client is not None:
            return self._client
        parts = urlsplit(self._spec.url)
        try:
            address = await asyncio.to_thread(check_destination, self._spec, self._policy,
                                              self._name)  # fmt: skip
        except InvalidInput as err:
            raise PushError(err.message) from None
        tls = parts.scheme.lower() == "mqtts"
        client = aiomqtt.Client(
            parts.hostname if tls else address,  # type: ignore[arg-type]
            parts.port or MQTT_SCHEMES[parts.scheme.lower()],
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            identifier=f"frameserve-{uuid.uuid4().hex[:12]}",
            timeout=self._spec.timeout_s,
            logger=_PAHO_LOG,
            tls_context=ssl.create_default_context() if tls else None,
        )
        stack = contextlib.AsyncExitStack()
        try:
            await stack.enter_async_context(client)
        except aiomqtt.MqttError as err:
            where = self._spec.public_url
            raise PushError(f"MQTT connect to {where}: {self._scrub(err)}") from None
        self._client, self._stack = client, stack
        return client

    def _scrub(self, err: BaseException) -> str:
        return scrub(str(err), self._spec.url)

    async def close(self) -> None:
        """Disconnect (when connected)."""
        stack, self._stack, self._client = self._stack, None, None
        if stack is not None:
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await asyncio.wait_for(stack.aclose(), self._spec.timeout_s)
