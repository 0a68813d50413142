"""Real ``frameserve serve`` processes for tests, on free loopback ports.

Every server is stopped with SIGTERM (and killed by PID if it does not exit) by whoever
started it: ``ServerLauncher.stop_all``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

BIND_TRIES = 3
# what the server logs when a port it was given is taken: uvicorn's EADDRINUSE, our gRPC error
PORT_TAKEN = ("address already in use", "is the port in use?")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class RunningServer:
    proc: subprocess.Popen[bytes]
    http_port: int
    grpc_port: int
    repository: Path
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout: float = 90.0) -> None:
        self._wait_for("/v2/health/ready", timeout)

    def wait_live(self, timeout: float = 90.0) -> None:
        self._wait_for("/v2/health/live", timeout)

    def _wait_for(self, path: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            with contextlib.suppress(OSError):
                if self.get(path)[0] == 200:
                    return
            time.sleep(0.1)
        raise TimeoutError(f"{path} not 200 after {timeout}s:\n{self.log()}")

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, wait, and return the exit code (kill by PID after ``timeout``)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)


class ServerLauncher:
    """Starts servers with logs in ``folder``; ``stop_all`` ends every one it started."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.started: list[RunningServer] = []

    def start(
        self,
        repository: Path,
        *args: str,
        wait: bool = True,
        command: tuple[str, ...] = (sys.executable, "-m", "frameserve.cli.main", "serve"),
        env: dict[str, str] | None = None,
    ) -> RunningServer:
        """``command`` (this interpreter's frameserve by default) with the repository, loopback
        host and two free ports, then ``args``. A port is free when ``free_port`` looks and may
        be taken before the server binds it (an outgoing connection's ephemeral port): a server
        that exits saying so is started again on new ports, at most ``BIND_TRIES`` times."""
        for attempt in range(1, BIND_TRIES + 1):
            server = self._spawn(repository, args, command, env)
            if not wait:
                return server
            try:
                server.wait_ready()
            except RuntimeError:
                if attempt < BIND_TRIES and any(m in server.log() for m in PORT_TAKEN):
                    continue
                raise
            return server
        raise AssertionError("unreachable")

    def _spawn(
        self,
        repository: Path,
        args: tuple[str, ...],
        command: tuple[str, ...],
        env: dict[str, str] | None,
    ) -> RunningServer:
        http_port, grpc_port = free_port(), free_port()
        log_path = self.folder / f"server-{len(self.started)}.log"
        cmd = [
            *command,
            "--repository", str(repository), "--host", "127.0.0.1",
            "--http-port", str(http_port), "--grpc-port", str(grpc_port), *args,
        ]  # fmt: skip
        with log_path.open("wb") as log:
            # The server's folder is its working directory, so its default ./media and
            # ./state land there, never in the checkout.
            proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=os.environ.copy() if env is None else env,
                cwd=self.folder,
            )
        server = RunningServer(proc, http_port, grpc_port, repository, log_path)
        self.started.append(server)
        return server

    def stop_all(self) -> None:
        for server in self.started:
            server.terminate()
