"""Real push targets for tests: an HTTP receiver (``http.server`` in a thread), a Mosquitto
broker (Debian's ``/usr/sbin/mosquitto``, started on a free loopback port and stopped by its
PID) and an MQTT subscriber (paho-mqtt's own network thread).

Each records what it got, so tests assert on bodies, headers and counts, never on times.
"""

from __future__ import annotations

import contextlib
import getpass
import hashlib
import hmac
import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

MOSQUITTO = "/usr/sbin/mosquitto"
NO_MOSQUITTO = f"{MOSQUITTO} is not installed (Debian package mosquitto; `make test` installs it)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    return free_port()


def wait_for(check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    """Poll ``check`` until it returns something true (a hang detector, not a speed check)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not reached after {timeout}s")


def verify(secret: str, headers: dict[str, str], body: bytes, max_age_s: float = 300) -> bool:
    """A receiver's check of a signed body, as docs/push.md shows it."""
    timestamp = headers["X-Frameserve-Timestamp"]
    if abs(time.time() - int(timestamp)) > max_age_s:
        return False  # too old: a replay
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), headers["X-Frameserve-Signature"])


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 recording every POST; answers ``status`` (200)."""

    status: int = 200
    posts: list[Post] = field(default_factory=list)
    port: int = 0
    _server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                receiver.posts.append(Post(self.path, dict(self.headers), body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def events(self, name: str) -> list[Post]:
        return [p for p in list(self.posts) if p.headers.get("X-Frameserve-Event") == name]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class Broker:
    """Mosquitto on 127.0.0.1 on a free port (anonymous, no persistence), ended by PID."""

    def __init__(self, folder: Path, tls: tuple[Path, Path] | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.tls = tls  # (certificate, key): an mqtts listener
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Broker:
        config = self.folder / "mosquitto.conf"
        tls = f"certfile {self.tls[0]}\nkeyfile {self.tls[1]}\n" if self.tls else ""
        # as this user (run as root, mosquitto would switch to its own user, which cannot read
        # the test's files)
        config.write_text(
            f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n{tls}"
            "allow_anonymous true\npersistence false\nlog_dest stderr\n"
        )
        log = (self.folder / "mosquitto.log").open("ab")
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(config)], stdout=log, stderr=log)
        log.close()

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: {(self.folder / 'mosquitto.log').read_text()}"
                )
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 1),
            ):
                return True
            return False

        wait_for(listening, "mosquitto listening", 30)
        return self

    def url(self, topic: str) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}/{topic}"

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Subscriber:
    """A paho-mqtt client subscribed to ``topic``, keeping every payload."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._subscribed = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda _c, _u, message: self.messages.append(message)
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_connect = lambda client, *_args: client.subscribe(topic, qos=2)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._subscribed.wait(30):
            raise TimeoutError(f"MQTT subscription to {topic} not acknowledged")

    def payloads(self) -> list[Any]:
        return [json.loads(m.payload) for m in list(self.messages)]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by itself (its own CA) and its key (``openssl``)."""
    cert, key = folder / "broker.pem", folder / "broker.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def have_mosquitto() -> bool:
    return shutil.which(MOSQUITTO) is not None or Path(MOSQUITTO).is_file()


@contextlib.contextmanager
def broker(folder: Path, tls: tuple[Path, Path] | None = None) -> Iterator[Broker]:
    running = Broker(folder, tls).start()
    try:
        yield running
    finally:
        running.stop()
