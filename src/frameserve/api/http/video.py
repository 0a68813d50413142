"""Video over HTTP: durable jobs (``/v1/jobs``) and live streams (``/v1/streams``).

Jobs: ``POST /v1/jobs`` takes JSON ``{"pipeline", "input", "sample", "video_out", "params",
"push"}``
(``input`` relative to the media root) or a multipart upload (file field ``file``, the other keys as
fields) -> 201 with the job; ``GET /v1/jobs[?state=S]``, ``GET /v1/jobs/{id}``, ``DELETE
/v1/jobs/{id}`` (cancels a queued or running job, removes a finished one with its data),
``GET /v1/jobs/{id}/results`` (JSONL, followed while the job runs), ``GET
/v1/jobs/{id}/output`` (the encoded MP4), ``GET /v1/jobs/{id}/summary`` (the per-video
summary of a job that succeeded; 409 before).

Streams: ``POST /v1/streams`` with ``{"source", "pipeline", "sample", "max_fps", "max_inflight",
"push",
"loop", "params"}`` -> 201; ``GET /v1/streams[/{id}]``; ``DELETE /v1/streams/{id}``; ``GET
/v1/streams/{id}/events``: Server-Sent Events, one ``result`` event per record, ``end`` when
the stream stops, a comment every ``KEEPALIVE_S`` so proxies keep the connection.

Handlers run on the server's loop; the job queue and the stream registry are thread-safe and
their calls are short, but anything touching files runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartParser
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from frameserve.api.auth import new_owner, owner_scope
from frameserve.api.http.body import check_content_length, read_body
from frameserve.api.http.codec import parse_json_object
from frameserve.api.http.preview import PreviewRoutes
from frameserve.errors import InvalidInput, PayloadTooLarge, QueueFull, Unavailable
from frameserve.serving.config import format_validation_error

if TYPE_CHECKING:
    from frameserve.video.jobs import JobQueue
    from frameserve.video.live import LiveStreams

KEEPALIVE_S = 15.0
FOLLOW_POLL_S = 0.25  # how often a followed results file is checked for new lines
JSON_BODY_LIMIT = 64 * 1024
NDJSON = "application/x-ndjson"
_ID_CHARS = frozenset("0123456789abcdefghijklmnopqrstuvwxyz-_")

Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True)
class UploadSettings:
    folder: Path  # where uploads are written (under the state dir)
    max_bytes: int
    max_concurrent: int = 4  # uploads received at once (429 above)


class _UploadParser(MultiPartParser):
    """A multipart parser that notes the text fields sent before the file when the file part
    begins (``fields_before_file``), so they can be checked before the video is received."""

    def __init__(self, request: Request, stream: AsyncGenerator[bytes, None]) -> None:
        super().__init__(request.headers, stream, max_files=1, max_fields=8)
        self.fields_before_file: dict[str, str] | None = None

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        if self._current_part.file is not None and self.fields_before_file is None:
            self.fields_before_file = {k: v for k, v in self.items if isinstance(v, str)}


def _json(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)
    return Response(body, status_code, headers=headers, media_type="application/json")


def _check_id(kind: str, value: str) -> str:
    if not value or len(value) > 64 or not set(value.lower()) <= _ID_CHARS:
        raise InvalidInput(f"{kind} id: expected letters, digits, '-' or '_', got {value!r}")
    return value


def _validate(model: type[BaseModel], data: dict[str, Any], where: str) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise InvalidInput(format_validation_error(err, where)) from None


def _form_value(form: FormData, key: str) -> Any:
    """A text field of a multipart form, typed like its JSON counterpart."""
    value = form.get(key)
    if isinstance(value, UploadFile):
        raise InvalidInput(f"multipart field {key!r}: expected a text field, got a file")
    return _form_value_of(key, value)


def _form_value_of(key: str, value: str | None) -> Any:
    if key in ("params", "push") and value is not None:  # JSON in a text field
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as err:
            raise InvalidInput(f"multipart field {key!r}: expected JSON: {err}") from None
    if key == "video_out" and value is not None:
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "1", "0"):
            raise InvalidInput(
                f"multipart field 'video_out': expected true or false, got {value!r}"
            )
        return lowered in ("true", "1")
    return value


class VideoRoutes:
    """The ``/v1/jobs`` and ``/v1/streams`` endpoints over one job queue and stream registry."""

    def __init__(
        self,
        jobs: JobQueue,
        streams: LiveStreams,
        uploads: UploadSettings,
        ready: Callable[[], bool],
    ) -> None:
        self.jobs = jobs
        self.streams = streams
        self.uploads = uploads
        self._ready = ready
        self._receiving = 0  # uploads being received now (on the loop: no lock)
        self.preview = PreviewRoutes(streams)  # annotated previews of live streams

    def _check_ready(self) -> None:
        if not self._ready():
            raise Unavailable("server is starting or draining: video jobs and streams wait")

    async def _json_object(self, request: Request) -> dict[str, Any]:
        return parse_json_object(await read_body(request.receive, request.headers, JSON_BODY_LIMIT))

    # -- jobs -------------------------------------------------------------------------------
    async def submit_job(self, request: Request) -> Response:
        from frameserve.video.jobs import JobSpec

        self._check_ready()
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "multipart/form-data":
            fields, upload = await self._bounded_upload(request)
            try:
                spec = _validate(JobSpec, {**fields, "input": upload.name}, "job")
                record = await asyncio.to_thread(self.jobs.submit_file, spec, upload, new_owner())
            except BaseException:
                await asyncio.to_thread(shutil.rmtree, upload.parent, True)
                raise
        elif content_type in ("application/json", ""):
            spec = _validate(JobSpec, await self._json_object(request), "job")
            record = await asyncio.to_thread(self.jobs.submit, spec, new_owner())
        else:
            raise InvalidInput(
                f"Content-Type: expected application/json or multipart/form-data with a file "
                f"field 'file', got {content_type!r}"
            )
        job = record.to_json()
        return _json(job, 201, headers={"Location": f"/v1/jobs/{job['id']}"})

    async def _bounded_upload(self, request: Request) -> tuple[dict[str, Any], Path]:
        """``_receive_upload`` within ``max_concurrent`` uploads at once (429 above), after the
        checks that need no body: declared size, queue room and the state-folder quota."""
        check_content_length(request.headers, self.uploads.max_bytes + JSON_BODY_LIMIT)
        if self._receiving >= self.uploads.max_concurrent:
            raise QueueFull(
                f"uploads: {self._receiving} are being received, the limit is "
                f"{self.uploads.max_concurrent} (max_concurrent_uploads, "
                "--max-concurrent-uploads); try again when one is done"
            )
        self._receiving += 1
        try:
            await asyncio.to_thread(self.jobs.check_room)
            return await self._receive_upload(request)
        finally:
            self._receiving -= 1

    def _check_fields(self, fields: dict[str, Any]) -> None:
        """The fields sent before the file, checked before the file is received (a pipeline
        that does not exist, models not loaded, a bad sample): the job would be refused."""
        from frameserve.video.jobs import JobSpec

        if "pipeline" in fields:
            typed = {k: _form_value_of(k, v) for k, v in fields.items()}
            self.jobs.validate(_validate(JobSpec, {**typed, "input": "upload"}, "job"))

    async def _receive_upload(self, request: Request) -> tuple[dict[str, Any], Path]:
        """Parse a multipart upload within the size limit; the file lands in its own folder."""
        limit = self.uploads.max_bytes
        received = 0

        checked = False

        async def counted() -> AsyncGenerator[bytes, None]:
            nonlocal received, checked
            async for chunk in request.stream():
                received += len(chunk)
                if received > limit + JSON_BODY_LIMIT:
                    raise PayloadTooLarge(
                        f"upload: more than the limit of {limit} bytes (--max-upload-mb)"
                    )
                yield chunk
                # The parser has taken the chunk. Where the file began in it, check the fields
                # sent before it (in a worker thread: opening the pipeline's models may block)
                # before receiving more.
                if not checked and parser.fields_before_file is not None:
                    checked = True
                    await asyncio.to_thread(self._check_fields, parser.fields_before_file)

        parser = _UploadParser(request, counted())
        form = await parser.parse()
        try:
            part = form.get("file")
            if not isinstance(part, UploadFile):
                raise InvalidInput(
                    f"multipart body: expected a file field 'file', got fields {list(form.keys())}"
                )
            if part.size is not None and part.size > limit:
                raise PayloadTooLarge(
                    f"upload: file of {part.size} bytes exceeds the limit of {limit} bytes "
                    "(--max-upload-mb)"
                )
            fields = {k: _form_value(form, k) for k in form if k != "file"}
            path = await asyncio.to_thread(self._store_upload, part)
        finally:
            await form.close()
        return fields, path

    def _store_upload(self, part: UploadFile) -> Path:
        name = Path(part.filename or "upload").name or "upload"
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[-100:]
        folder = self.uploads.folder / uuid.uuid4().hex
        folder.mkdir(parents=True)
        path = folder / (safe.lstrip(".") or "upload")
        part.file.seek(0)
        with path.open("wb") as out:
            shutil.copyfileobj(part.file, out, 1 << 20)
        return path

    async def list_jobs(self, request: Request) -> Response:
        unknown = sorted(set(request.query_params) - {"state"})
        if unknown:
            raise InvalidInput(f"query: expected only 'state', got {unknown}")
        state = request.query_params.get("state")
        records = await asyncio.to_thread(self.jobs.list, state, owner_scope())
        return _json({"jobs": [r.to_json() for r in records]})

    async def get_job(self, request: Request) -> Response:
        job_id = _check_id("job", request.path_params["job"])
        record = await asyncio.to_thread(self.jobs.get, job_id, owner_scope())
        return _json(record.to_json())

    async def delete_job(self, request: Request) -> Response:
        job_id = _check_id("job", request.path_params["job"])
        record = await asyncio.to_thread(self.jobs.delete, job_id, owner_scope())
        return _json(record.to_json())

    async def job_results(self, request: Request) -> Response:
        job_id = _check_id("job", request.path_params["job"])
        raw = request.query_params.get("follow", "true").lower()
        if raw not in ("true", "false", "1", "0"):
            raise InvalidInput(f"query.follow: expected true or false, got {raw!r}")
        # NotFound first (also for another key's job)
        path = await asyncio.to_thread(self.jobs.results_path, job_id, owner_scope())
        lines = self._follow(job_id, path, raw in ("true", "1"))
        return StreamingResponse(lines, media_type=NDJSON, headers={"Cache-Control": "no-store"})

    async def _follow(self, job_id: str, path: Path, follow: bool) -> AsyncIterator[bytes]:
        """Complete lines of the results file; while the job runs, the new ones as they come."""
        offset = 0
        while True:
            record = await asyncio.to_thread(self.jobs.get, job_id)
            finished = record.state not in ("queued", "running")
            chunk = await asyncio.to_thread(_read_lines, path, offset)
            if chunk:
                offset += len(chunk)
                yield chunk
                continue
            if finished or not follow:
                return
            await asyncio.sleep(FOLLOW_POLL_S)

    async def job_summary(self, request: Request) -> Response:
        job_id = _check_id("job", request.path_params["job"])
        path = await asyncio.to_thread(self.jobs.summary_path, job_id, owner_scope())
        return Response(await asyncio.to_thread(path.read_bytes), media_type="application/json")

    async def job_output(self, request: Request) -> Response:
        job_id = _check_id("job", request.path_params["job"])
        path = await asyncio.to_thread(self.jobs.output_path, job_id, owner_scope())
        return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.mp4")

    # -- streams ----------------------------------------------------------------------------
    async def attach_stream(self, request: Request) -> Response:
        from frameserve.video.live import StreamSpec

        self._check_ready()
        spec = _validate(StreamSpec, await self._json_object(request), "stream")
        stream = await asyncio.to_thread(self.streams.attach, spec, new_owner())
        return _json(
            stream.status().to_json(), 201, headers={"Location": f"/v1/streams/{stream.id}"}
        )

    async def list_streams(self, request: Request) -> Response:
        streams = self.streams.list(owner_scope())
        return _json({"streams": [s.status().to_json() for s in streams]})

    async def get_stream(self, request: Request) -> Response:
        stream_id = _check_id("stream", request.path_params["stream"])
        return _json(self.streams.get(stream_id, owner_scope()).status().to_json())

    async def detach_stream(self, request: Request) -> Response:
        stream_id = _check_id("stream", request.path_params["stream"])
        owner = owner_scope()
        stream = self.streams.get(stream_id, owner)
        await asyncio.to_thread(self.streams.detach, stream_id, None, owner)
        return _json(stream.status().to_json())

    async def stream_events(self, request: Request) -> Response:
        stream_id = _check_id("stream", request.path_params["stream"])
        subscription = self.streams.get(stream_id, owner_scope()).subscribe()
        headers = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        return StreamingResponse(
            _sse(stream_id, subscription), media_type="text/event-stream", headers=headers
        )

    def routes(self) -> list[tuple[str, Endpoint, str]]:
        """(path, endpoint, method) rows; the app wraps them with its error mapping."""
        return [
            ("/v1/jobs", self.submit_job, "POST"),
            ("/v1/jobs", self.list_jobs, "GET"),
            ("/v1/jobs/{job}", self.get_job, "GET"),
            ("/v1/jobs/{job}", self.delete_job, "DELETE"),
            ("/v1/jobs/{job}/results", self.job_results, "GET"),
            ("/v1/jobs/{job}/output", self.job_output, "GET"),
            ("/v1/jobs/{job}/summary", self.job_summary, "GET"),
            ("/v1/streams", self.attach_stream, "POST"),
            ("/v1/streams", self.list_streams, "GET"),
            ("/v1/streams/{stream}", self.get_stream, "GET"),
            ("/v1/streams/{stream}", self.detach_stream, "DELETE"),
            ("/v1/streams/{stream}/events", self.stream_events, "GET"),
            *self.preview.routes(),
        ]


def _read_lines(path: Path, offset: int) -> bytes:
    """The complete lines of ``path`` from ``offset`` (a partial last line waits)."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read(1 << 20)
    except FileNotFoundError:
        return b""
    end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


async def _sse(stream_id: str, subscription: Any) -> AsyncIterator[bytes]:
    """Server-Sent Events from a subscription: records as ``result``, then ``end``."""
    pending: asyncio.Task[Any] | None = None
    try:
        yield b": subscribed to stream " + stream_id.encode() + b"\n\n"
        while True:
            if pending is None:
                pending = asyncio.ensure_future(subscription.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_S)
            if not done:
                yield b": keep-alive\n\n"
                continue
            task, pending = pending, None
            try:
                record = task.result()
            except StopAsyncIteration:
                yield b"event: end\ndata: " + orjson.dumps({"stream": stream_id}) + b"\n\n"
                return
            data = orjson.dumps(record.to_json(), option=orjson.OPT_SERIALIZE_NUMPY)
            yield b"event: result\ndata: " + data + b"\n\n"
    finally:
        if pending is not None:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, Exception):
                await pending
        subscription.close()
