"""A Ray cluster of N nodes on this machine, and a distributed job or streams over it; run
inside a private network namespace (Ray binds wildcard addresses): ``unshare -n`` then
``ip link set lo up`` (``tests/scale/test_ray_jobs.py`` and ``benchmarks/ray/run.py`` do).

Each node is ``ray start --block`` with ``--num-cpus 1``, pinned with ``taskset`` to a core of
its own, ``--node-ip-address=127.0.0.1``, token authentication with a token file this script
writes (and removes), health checks every 500 ms so a dead node is seen in about 3 s; Ray's
temp dir is a short folder under the system's (its socket paths must fit in 107 bytes),
removed at the end with ``--tmp``'s logs kept. Every process ended is one this script
started, by PID.

Scenarios: a job through the ``Coordinator`` (default; ``--kill-at F`` SIGKILLs the last
node's raylet once F of the chunks are committed; ``--video-out``); ``--serve``: the job through
``frameserve serve --ray``, the server SIGKILLed at F and started again (``--hide-repository``:
the last node does not see the repository); ``--streams``: two live streams through ``serve
--ray``, the last node's raylet killed once both run. Each starts once every node is alive
in the cluster. Results go to ``--out``; what happened is printed as JSON on the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import psutil

PORT = 6390
HTTP_PORT = 18000


def _env(tmp: Path, token: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(tmp / "home"),
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        RAY_health_check_period_ms="500",
        RAY_health_check_failure_threshold="3",
        RAY_USAGE_STATS_ENABLED="0",
    )
    env.pop("RAY_AUTH_TOKEN", None)
    return env


def start_nodes(
    n: int, tmp: Path, token: Path, cores: list[int], ray_tmp: Path, hide: Path | None = None
) -> list[subprocess.Popen[bytes]]:
    """``ray_tmp``: Ray's temp dir, short (its socket paths must fit in 107 bytes); ``hide``:
    a folder the last node does not see (a tmpfs over it, in a mount namespace of its own)."""
    ray = str(Path(sys.executable).with_name("ray"))
    env = _env(tmp, token)
    (tmp / "home").mkdir(parents=True, exist_ok=True)
    os.environ.update({k: v for k, v in env.items() if k.startswith("RAY")})
    nodes = []
    for i in range(n):
        args = ["taskset", "-c", str(cores[i % len(cores)]), ray, "start", "--block",
                "--num-cpus", "1", "--node-ip-address=127.0.0.1",
                "--disable-usage-stats"]  # fmt: skip
        if i == 0:
            args += ["--head", f"--port={PORT}", f"--temp-dir={ray_tmp}",
                     "--include-dashboard=false"]  # fmt: skip
        else:
            args += [f"--address=127.0.0.1:{PORT}"]
        if hide is not None and i == n - 1:
            shell = f"mount -t tmpfs tmpfs {hide} && exec {' '.join(args)}"
            args = ["unshare", "-m", "--propagation", "private", "bash", "-c", shell]
        log = (tmp / f"node{i}.log").open("wb")
        nodes.append(
            subprocess.Popen(args, env=env, stdout=log, stderr=log, start_new_session=True)
        )
        if i == 0:
            _wait_port(PORT, 60.0, nodes[0])
    return nodes


def _wait_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the head exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1.0):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the head did not listen on {port} in {timeout_s} s")


def descendants(procs: list[subprocess.Popen[bytes]]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            out.append(psutil.Process(p.pid))
            out.extend(psutil.Process(p.pid).children(recursive=True))
        except psutil.NoSuchProcess:
            continue
    return out


def raylet_of(node: subprocess.Popen[bytes]) -> psutil.Process:
    for child in psutil.Process(node.pid).children(recursive=True):
        if child.name() == "raylet":
            return child
    raise RuntimeError(f"no raylet under the node started as PID {node.pid}")


def wait_for_nodes(args: argparse.Namespace, timeout_s: float = 60.0) -> None:
    """Join the cluster and wait until all ``--nodes`` are alive in it: a node joins seconds
    after the head, and a scenario started before would place everything on the head."""
    from frameserve.scale.cluster import RaySettings, alive_nodes, connect

    ray = connect(RaySettings(f"127.0.0.1:{PORT}", Path(args.token)))
    deadline = time.monotonic() + timeout_s
    while len(alive := alive_nodes(ray)) < args.nodes:
        if time.monotonic() > deadline:
            raise RuntimeError(f"expected {args.nodes} nodes alive within {timeout_s} s; "
                               f"alive: {[n.name for n in alive]}")  # fmt: skip
        time.sleep(0.2)


def stop_nodes(nodes: list[subprocess.Popen[bytes]]) -> None:
    """End every process the nodes started (by PID), then the nodes themselves."""
    procs = descendants(nodes)
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    for node in nodes:
        node.wait(10)


def run_job(args: argparse.Namespace, nodes: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    from frameserve.scale.cluster import RaySettings, connect
    from frameserve.scale.coordinator import Coordinator
    from frameserve.scale.store import ChunkStore
    from frameserve.scale.worker import WorkerSetup
    from frameserve.video.config import load_video_pipeline

    settings = RaySettings(f"127.0.0.1:{PORT}", Path(args.token), chunk_seconds=args.chunk_s)
    ray = connect(settings)  # joined already by wait_for_nodes
    name, config = load_video_pipeline(args.pipeline, Path(args.repository))
    setup = WorkerSetup("testjob", name, config, Path(args.repository), args.sample, 1)
    store = ChunkStore(Path(args.tmp) / "chunks.db")
    segments = Path(args.tmp) / "segments" if args.video_out else None
    coord = Coordinator(
        ray, settings, store, setup, Path(args.input), Path(args.tmp) / "pieces",
        segments=segments,
    )  # fmt: skip
    started = time.monotonic()
    plan = coord.prepare()
    killed: dict[str, float] = {}
    if args.kill_at:
        watcher = threading.Thread(target=_killer, args=(coord, nodes[-1], args.kill_at, killed))
        watcher.daemon = True
        watcher.start()
    cpu0 = time.process_time()
    coord.run()
    ended = time.monotonic()
    run_s = ended - started
    ready = coord.stats.ready_at[: args.nodes]
    lines = coord.merge(Path(args.out))
    if segments is not None:
        from frameserve.video.jobs.segments import join_segments

        join_segments(coord.segment_files(), Path(args.input), Path(args.out + ".mp4"))
    cli = _video_run_cli(args) if args.cli else None
    return {
        "cli": cli,
        "chunks": len(plan.chunks),
        "lines": lines,
        "wall_s": run_s,
        "processing_s": ended - max(ready) if ready else run_s,
        "coordinator_cpu_s": time.process_time() - cpu0,
        "workers_lost": coord.stats.workers_lost,
        "lost_at_s": [t - started for t in coord.stats.recovered_at],
        "killed_at_s": killed.get("at", 0) - started if killed else None,
        "duplicates": coord.stats.duplicates,
        "nodes_by_chunk": _nodes(store),
        "chunk_worker_s": [
            r[0]
            for r in store._db.execute("SELECT seconds FROM ray_chunks ORDER BY number").fetchall()
        ],
        "frames": plan.kept,
        "ray_memory": _memory(nodes),
    }


def _video_run_cli(args: argparse.Namespace) -> dict[str, Any]:
    """``frameserve video run --ray`` on the same cluster (what is left of it)."""
    from frameserve.cli.main import main

    out = Path(args.tmp) / "cli"
    code = main(["video", "run", args.input, "--pipeline", args.pipeline, "--repository",
                 args.repository, "--out", str(out), "--ray", f"127.0.0.1:{PORT}",
                 "--ray-auth-token-file", args.token,
                 "--ray-chunk-seconds", str(args.chunk_s)])  # fmt: skip
    return {"rc": code, "jsonl": str(out / f"{Path(args.input).stem}.jsonl")}


def _killer(coord: Any, node: subprocess.Popen[bytes], at: float, out: dict[str, float]) -> None:
    while True:
        _, chunks = coord.progress()
        if chunks.total and chunks.done >= at * chunks.total:
            break
        time.sleep(0.05)
    raylet_of(node).kill()
    out["at"] = time.monotonic()


def _nodes(store: Any) -> list[str]:
    rows = store._db.execute("SELECT node FROM ray_chunks ORDER BY number").fetchall()
    return [r[0] for r in rows]


def _memory(nodes: list[subprocess.Popen[bytes]]) -> list[int]:
    """Resident bytes of each node's Ray processes (workers included)."""
    out = []
    for node in nodes:
        total = 0
        for p in descendants([node]):
            try:
                total += p.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        out.append(total)
    return out


def serve_job(args: argparse.Namespace, nodes: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    """``frameserve serve --ray`` takes a job; the server is killed (SIGKILL) at ``--kill-at``
    of the chunks and started again: the job resumes from its committed chunks."""
    tmp, clip = Path(args.tmp), Path(args.input)
    media = tmp / "media"
    media.mkdir(exist_ok=True)
    shutil.copyfile(clip, media / clip.name)  # the media root refuses links out of it
    server = _start_server(args, tmp, 0)
    seen: list[dict[str, int]] = []
    try:
        body = {"pipeline": args.pipeline, "input": clip.name, "video_out": args.video_out}
        job = _http("POST", "/v1/jobs", body)
        record = _poll(job["id"], seen, lambda r: _chunks_done(r) >= args.kill_at)
        server.kill()
        server.wait(30)
        server = _start_server(args, tmp, 1)
        record = _poll(job["id"], seen, lambda r: r["state"] in ("succeeded", "failed"))
        results = _http_bytes(f"/v1/jobs/{job['id']}/results")
        if args.video_out:
            Path(args.out + ".mp4").write_bytes(_http_bytes(f"/v1/jobs/{job['id']}/output"))
    finally:
        server.kill()
        server.wait(30)
    Path(args.out).write_bytes(results)
    logs = "".join((tmp / f"server{i}.log").read_text() for i in range(2))
    return {"job": record, "chunks_seen": seen, "log": logs[-20000:]}


def serve_streams(args: argparse.Namespace, nodes: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    """``frameserve serve --ray``: two streams over HTTP, the last node's raylet killed once
    both run; both must run again, and a subscriber (SSE) must get records after the move."""
    tmp, clip = Path(args.tmp), Path(args.input)
    (tmp / "media").mkdir(exist_ok=True)
    shutil.copyfile(clip, tmp / "media" / clip.name)
    server = _start_server(args, tmp, 0)
    hook = _Receiver()
    try:
        body: dict[str, Any] = {"source": clip.name, "pipeline": args.pipeline, "loop": True}
        ids = [_http("POST", "/v1/streams", body)["id"]]
        body["push"] = [{"type": "webhook", "url": hook.url, "batch_ms": 200}]
        ids.append(_http("POST", "/v1/streams", body)["id"])  # its records pushed from here

        def statuses() -> list[dict[str, Any]]:
            return [_http("GET", f"/v1/streams/{i}") for i in ids]

        _wait(lambda: all(s["frames_out"] > 0 for s in statuses()), 90, "both streams run")
        before = statuses()
        if len({s["placement"]["node"] for s in before}) < 2:
            raise RuntimeError(f"expected the streams placed on two nodes: {json.dumps(before)}")
        killed = time.monotonic()
        raylet_of(nodes[-1]).kill()
        counts = {s["id"]: s["frames_out"] for s in before}

        def both_run() -> bool:  # the moved one delivers again, the other one goes on
            now = statuses()
            moved = [s for s in now if s["placement"]["moved"]]
            stayed = [s for s in now if not s["placement"]["moved"]]
            return (
                bool(moved)
                and all(s["state"] == "running" and s["frames_out"] > 0 for s in moved)
                and all(s["frames_out"] > counts[s["id"]] + 24 for s in stayed)
            )

        def seen() -> str:  # the statuses, and the server's log since the kill
            log = (tmp / "server0.log").read_text(errors="replace")
            return f"{json.dumps(statuses())}\nserver log (tail):\n{log[-4000:]}"

        _wait(both_run, 60, "both streams to run again, one moved", seen)
        again_s = time.monotonic() - killed
        moved = next(s for s in statuses() if s["placement"]["moved"])
        event = _first_event(moved["id"])
        _wait(lambda: _http("GET", f"/v1/streams/{ids[1]}")["push"][0]["sent"] > 0, 30,
              "the webhook output to deliver")  # fmt: skip
        pushed = _http("GET", f"/v1/streams/{ids[1]}")["push"]
        preview = _http_error(f"/v1/streams/{ids[0]}/preview.jpg")
    finally:
        server.kill()
        server.wait(30)
        hook.close()
    return {"before": before, "moved": moved, "again_s": again_s, "event": event,
            "pushed": pushed, "received": hook.bodies[:3], "pushed_to": ids[1],
            "preview": preview}  # fmt: skip


class _Receiver:
    """A webhook receiver on this namespace's loopback: the bodies it was sent."""

    def __init__(self) -> None:
        import http.server

        bodies: list[Any] = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                length = int(self.headers.get("Content-Length", "0"))
                bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.bodies = bodies
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _http_error(path: str) -> dict[str, Any]:
    """The status and message of a request expected to fail."""
    try:
        _http_bytes(path)
    except urllib.error.HTTPError as err:
        return {"status": err.code, "body": err.read().decode()}
    raise RuntimeError(f"GET {path}: expected an error")


def _first_event(stream_id: str) -> dict[str, Any]:
    """The first record a new SSE subscriber of the stream gets."""
    url = f"http://127.0.0.1:{HTTP_PORT}/v1/streams/{stream_id}/events"
    with urllib.request.urlopen(url, timeout=30) as response:
        for raw in response:
            line = raw.decode().strip()
            if line.startswith("data:"):
                return dict(json.loads(line[5:]))
    raise RuntimeError(f"stream {stream_id}: the events ended without a record")


def _wait(check: Any, timeout_s: float, what: str, seen: Any = None) -> None:
    """Poll ``check`` until it holds; past ``timeout_s`` fail, saying what ``seen`` (when
    given) shows of the state last seen."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            detail = f"; last seen: {seen()}" if seen is not None else ""
            raise RuntimeError(f"expected {what} within {timeout_s} s{detail}")
        time.sleep(0.1)


def _chunks_done(record: dict[str, Any]) -> float:
    chunks = record["progress"].get("chunks")
    return chunks["done"] / chunks["total"] if chunks and chunks["total"] else 0.0


def _start_server(args: argparse.Namespace, tmp: Path, n: int) -> subprocess.Popen[bytes]:
    exe = str(Path(sys.executable).with_name("frameserve"))
    command = [exe, "serve", "--repository", args.repository, "--ray", f"127.0.0.1:{PORT}",
               "--ray-auth-token-file", args.token, "--ray-chunk-seconds", str(args.chunk_s),
               "--media-root", str(tmp / "media"), "--state-dir", str(tmp / "state"),
               "--http-port", str(HTTP_PORT), "--grpc-port", str(HTTP_PORT + 1),
               "--allow-network", "127.0.0.1/32",  # the stream test's webhook receiver
               "--log-format", "text"]  # fmt: skip
    log = (tmp / f"server{n}.log").open("wb")
    server = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            _http_bytes("/v2/health/ready")
            return server
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("the server did not get ready in 90 s")


def _poll(job_id: str, seen: list[dict[str, int]], until: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline:
        record = _http("GET", f"/v1/jobs/{job_id}")
        if "chunks" in record["progress"]:
            seen.append(record["progress"]["chunks"])
        if until(record):
            return record
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id}: still {record['state']} after 150 s")


def _http(method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{HTTP_PORT}{path}", data, method=method)
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:  # the server's message says why
        raise RuntimeError(f"{method} {path}: {err.code} {err.read().decode()}") from None


def _http_bytes(path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{HTTP_PORT}{path}", timeout=30) as response:
        return bytes(response.read())


def main() -> int:
    p = argparse.ArgumentParser()
    for flag in ("--tmp", "--input", "--repository", "--out", "--pipeline"):
        p.add_argument(flag, required=True)
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--sample", default="all")
    p.add_argument("--chunk-s", type=float, default=6.0)
    p.add_argument("--kill-at", type=float, default=0.0)
    p.add_argument("--video-out", action="store_true", help="also encode OUT.mp4")
    p.add_argument("--cli", action="store_true", help="then the same job by video run --ray")
    p.add_argument("--streams", action="store_true",
                   help="two live streams through serve --ray, a node killed")  # fmt: skip
    p.add_argument("--serve", action="store_true", help="the job through frameserve serve --ray")
    p.add_argument("--hide-repository", action="store_true",
                   help="the last node does not see the repository's folder")  # fmt: skip
    args = p.parse_args()
    tmp = Path(args.tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    token = tmp / "auth_token"
    token.write_text(secrets.token_hex(32))
    args.token = str(token)
    cores = sorted(os.sched_getaffinity(0))
    ray_tmp = Path(tempfile.mkdtemp(prefix="fsray-"))
    hide = Path(args.repository).parent if args.hide_repository else None
    nodes = start_nodes(args.nodes, tmp, token, cores, ray_tmp, hide)
    try:
        wait_for_nodes(args)
        if args.streams:
            report = serve_streams(args, nodes)
        else:
            report = serve_job(args, nodes) if args.serve else run_job(args, nodes)
    finally:
        import ray

        ray.shutdown()
        stop_nodes(nodes)
        token.unlink(missing_ok=True)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    print(json.dumps(report))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
