"""``frameserve video run``: inputs -> decode -> model stage -> track -> sinks, concurrently.

Threads and what they own (2 cores: everything is sized from one core budget):

- one ``ffmpeg`` thread per input: demux + FFmpeg decode (and FFmpeg's own codec threads,
  half the budget shared by the inputs), a few frames ahead (``video.decode.read_ahead``);
- one decoder thread per input: pre-processing at model size (YUV planes), groups;
- the server's event-loop thread: inference through each model's ``Scheduler``; frames of
  every input batch together there (pipelines with crop steps also use its processing pool);
- one sink thread per input: waits for its frames' results in order, decodes them into task
  results, tracks, writes sinks.

Each input's frames travel through its own ``FramePump`` (lossless: the decoder waits for
room, a failed frame stops the run), which keeps the frames in order and bounds what is in
flight. One stop event ends everything: the first error in any thread (or Ctrl-C) sets it,
every loop checks it while blocked, pending frames are cancelled, files are closed with what
was written, and ``run`` raises that first error.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from frameserve.errors import FrameserveError, InvalidInput, VideoError
from frameserve.processing.detectors import DETECTION_TASKS
from frameserve.processing.results import Detections, Moderation
from frameserve.serving.local import ServerHandle
from frameserve.serving.types import Admission
from frameserve.video.balance import SamplingBalance
from frameserve.video.config import VideoPipelineConfig
from frameserve.video.decode import (
    VideoInfo,
    VideoSource,
    default_decode_threads,
    probe,
    read_ahead,
)
from frameserve.video.defects import with_defects
from frameserve.video.frames import Frame
from frameserve.video.plan import (
    RunOptions,
    decodes_in_workers,
    frames_in_flight,
    group_size,
    input_source,
    run_sampling,
    splits,
)
from frameserve.video.prepare import Group, normalized
from frameserve.video.process import POLL_S, FrameOutput, open_processor
from frameserve.video.profile import StageProfile
from frameserve.video.pump import FramePump
from frameserve.video.scaler import full_rgb
from frameserve.video.script_streams import ScriptStreams, add_script_stages, stage_counters
from frameserve.video.split import SecondDecoder, second_spec
from frameserve.video.streams import RunSummary, StreamPlan, StreamRun, StreamStart, plan_outputs
from frameserve.video.summary import summarize_file, write_summary
from frameserve.video.track import Tracker, TrackerSettings
from frameserve.video.warm import WarmWorker
from frameserve.video.worker import (
    READ_AHEAD_FRAMES,
    DecodeWorker,
    WorkerSpec,
    input_spec,
    run_isolated,
)

log = logging.getLogger(__name__)

FrameHook = Callable[[StreamRun, Frame], None]  # runs in the sink thread, before the write


class VideoRun:
    """One run of a video pipeline over one or more inputs, in this process.

    ``video run`` gives inputs and options only. A job also gives: ``admission`` (how its
    frames enter the schedulers: the background level), ``plans`` (its own files, the
    checkpoint to start from, a segment encoder), ``on_frame`` (called in the sink thread
    before each frame is written: where a job checkpoints), ``stop`` (its cancel event) and
    ``thread_prefix`` (its threads' names say whose they are). ``isolate``: decode and
    pre-process each input in a worker process (``video.worker``), so a crash in FFmpeg ends
    the run with ``WorkerDied`` instead of ending this process. ``video run`` gives the inputs'
    ``infos`` (it probed them) and ``warm`` workers (``video.warm``, one per input): the inputs
    of a single-model pipeline without whole frames to keep (``--video-out``) decode in them,
    off this process's GIL; otherwise they are ended and the inputs decode here.
    A run stopped through ``stop`` returns normally: ``StreamRun.finished`` says whether
    every frame was written.
    """

    def __init__(
        self,
        server: ServerHandle,
        name: str,
        config: VideoPipelineConfig,
        inputs: list[Path],
        options: RunOptions,
        *,
        admission: Admission | None = None,
        plans: list[StreamPlan] | None = None,
        on_frame: FrameHook | None = None,
        stop: threading.Event | None = None,
        thread_prefix: str = "",
        isolate: bool = False,
        infos: list[VideoInfo] | None = None,
        warm: list[WarmWorker] | None = None,
    ) -> None:
        if not inputs:
            raise InvalidInput("video run: expected at least one input file")
        if plans is not None and len(plans) != len(inputs):
            raise InvalidInput(f"video run: expected one plan per input, got {len(plans)}")
        self.local = server
        self.name = name
        self.config = config
        self.options = options
        self.sampling = run_sampling(name, config, options)
        if config.transforms and self.sampling.mode != "all":
            does = "makes new frames" if config.interpolates else "filters every frame"
            raise InvalidInput(f"--sample: pipeline {name} {does}, needs all frames")
        self.processor = open_processor(server, name, config, admission)
        warm = list(warm or [])
        # a second decoder's warm worker comes last (``video.split``)
        second_warm = warm.pop() if options.second_cores and len(warm) == len(inputs) + 1 else None
        self._warm = self._take_warm(warm, len(inputs))  # stream id -> its worker
        # ``video run``'s warm workers decode ahead of the models (``video.ahead``) into rings
        # with room for it; isolated jobs keep the smallest ring (a server runs many)
        self._ahead = bool(self._warm)
        self._check_sinks()
        plans = plans or [StreamPlan(o) for o in plan_outputs(inputs, options, config)]
        pairs = enumerate(zip(inputs, plans, strict=True))
        self.isolate = isolate
        # thread names: <prefix>ffmpeg-<n>, <prefix>decode-<n>, <prefix>sink-<n>
        self._prefix = thread_prefix
        self.stop = stop or threading.Event()  # before the probes: a cancel ends them too
        # FFmpeg threads per input, the same for every input
        self._decode_threads = options.decode_threads or default_decode_threads(
            server.server.budget.cores, len(inputs), config.filters is not None
        )
        # stream id -> the cores its warm worker binds itself to
        self._decoder_cores = dict(enumerate(options.decoder_cores)) if self._warm else {}
        # probes every input now: a file that is not a video fails before any work
        known: list[VideoInfo | None] = list(infos) if infos else [None] * len(inputs)
        self.sources = [
            self._source(path, i, plan.start, info)
            for (i, (path, plan)), info in zip(pairs, known, strict=True)
        ]
        self.profile = StageProfile()
        self._on_frame = on_frame
        self._errors: list[tuple[str, BaseException]] = []
        self._lock = threading.Lock()
        self._done = 0
        self._inflight = options.inflight or self._default_inflight(len(inputs))
        options.out.mkdir(parents=True, exist_ok=True)
        self.streams = [self._stream(s, plan) for s, plan in zip(self.sources, plans, strict=True)]
        self._split = self._splits(second_warm)  # the input's workers' specs say it
        self._second = self._second_decoder(second_warm)

    def _take_warm(self, warm: list[WarmWorker], inputs: int) -> dict[int, WarmWorker]:
        """The warm workers this run decodes in; the others are ended now."""
        usable = (
            len(warm) == inputs
            and self.processor.single is not None
            and decodes_in_workers(self.config, self.options)
        )
        if usable:
            return dict(enumerate(warm))
        for worker in warm:
            worker.close()
        return {}

    def _splits(self, warm: WarmWorker | None) -> bool:
        """Whether the one input has a second decoder (``video.split``): the run asked for one,
        its warm worker came, and it gives the same results."""
        return (
            warm is not None
            and len(self.streams) == 1
            and 0 in self._warm
            and splits(self.config, self.options, self.sampling)
            and not self.streams[0].append
        )

    def _second_decoder(self, warm: WarmWorker | None) -> SecondDecoder | None:
        """The second decoder where ``_split``; its warm worker is ended otherwise."""
        if not self._split or warm is None:
            if warm is not None:
                warm.close()
            return None
        st = self.streams[0]
        spec = second_spec(self._worker_spec(st), self.options.second_cores)

        def pump(frames: int) -> FramePump:
            return FramePump(self.local, self.processor, frames + 1, self.stop, group=st.pump.group)

        try:
            name = f"{self._prefix}second-decoder-0"
            return SecondDecoder(
                spec, name, warm, pump, lambda to, group: self._send_group(to, group, spec)
            )
        except OSError as err:  # no shared memory or process to spare: one decoder, as before
            log.warning("no second decoder (%s): the input decodes in one worker", err)
            warm.close()
            return None

    def _source(
        self, path: Path, stream_id: int, start: StreamStart | None, info: VideoInfo | None
    ) -> VideoSource:
        if info is None and self.isolate:  # FFmpeg reads the header in a child too
            name, doing = f"{self._prefix}probe-{stream_id}", f"reading the header of {path}"
            info = run_isolated(probe, path, name=name, doing=doing, stop=self.stop)
        return input_source(
            path, stream_id, self.config, self.sampling, self._decode_threads, info, start
        )

    def _stream(self, source: VideoSource, plan: StreamPlan) -> StreamRun:
        return StreamRun(
            source=source,
            outputs=plan.outputs,
            config=self.config,
            threads=self.local.server.budget.cores,
            tracker=self._tracker(source),
            pump=FramePump(
                self.local,
                self.processor,
                self._inflight,
                self.stop,
                keep_images=self.options.video_out,
                group=self._group(),
            ),
            written=plan.start.written if plan.start is not None else 0,
            encoder=plan.encoder,
            append=plan.start is not None,
        )

    def _check_sinks(self) -> None:
        task = self.processor.task
        if self.options.mask_track and task != "segmentation":
            raise InvalidInput(
                f"--mask-track: pipeline {self.name} yields {task}, not masks "
                "(use a segmentation pipeline such as person-mask)"
            )

    def _tracker(self, source: VideoSource) -> Tracker | None:
        spec = self.config.track
        if spec is None or self.processor.task not in DETECTION_TASKS:
            return None
        rate = float(source.info.rate) if source.info.rate else 30.0
        settings = TrackerSettings(spec.lost_seconds, spec.min_iou)
        # scipy.optimize comes only with the first crowd of boxes competing for tracks, if ever
        return Tracker(settings, frame_rate=rate, import_now=False)

    def _default_inflight(self, streams: int) -> int:
        """Enough frames in flight to fill every model's batches, shared by the inputs."""
        models = [(mv.max_batch_size, mv.instances) for mv in self.processor.versions.values()]
        return frames_in_flight(models, streams)

    def _group(self) -> int:
        """Frames per request (``pump.group_size``): one for a chain of models."""
        mv = self.processor.single
        return group_size(mv.max_batch_size, self._inflight) if mv is not None else 1

    @property
    def frames_done(self) -> int:
        return self._done

    def expected_frames(self) -> int:
        """Frames the run will write (0 when a header does not say)."""
        counts = [s.expected_frames() for s in self.sources]
        if any(c == 0 for c in counts):
            return 0
        return sum(2 * c - 1 if self.config.interpolates else c for c in counts)

    def run(self, progress: Callable[[int], None] | None = None) -> RunSummary:
        """Process every input; raise the first error of any stage after all threads ended."""
        before, script_before = self._model_counters(), stage_counters(self.processor)
        started = time.perf_counter()
        scripts = ScriptStreams(
            self.local, self.processor, self.options.params, self.options.profiling
        )
        threads = []
        try:
            for st in self.streams:  # script models get each input's params before its frames
                scripts.open(st.source.stream_id)
            for st in self.streams:
                n = st.source.stream_id
                threads.append(self._thread(f"{self._prefix}decode-{n}", self._decode, st))
                threads.append(self._thread(f"{self._prefix}sink-{n}", self._sink, st))
            if self._second is not None:
                second = self._second
                name = f"{self._prefix}second-decode-0"
                threads.append(self._thread(name, lambda st: second.run(self.stop), st))
            try:
                self._wait(threads, progress)
            except KeyboardInterrupt:
                self._fail("run", VideoError("interrupted (Ctrl-C): stopped every stage"))
                self._wait(threads, None)
        finally:
            scripts.close_all()
            if self._second is not None:
                self._second.close()
                self._count_second(self.streams[0], self._second)
        wall = time.perf_counter() - started
        batches = self._account(before)
        add_script_stages(self.profile, script_before, self.processor)
        if self._errors:
            where, err = self._errors[0]
            if isinstance(err, FrameserveError):
                raise type(err)(f"{where}: {err.message}") from err
            raise VideoError(f"{where}: {type(err).__name__}: {err}") from err
        return RunSummary(
            self.name,
            [
                st.summary(st.resize or self.processor.resize_where(st.source.stream_id))
                for st in self.streams
            ],  # fmt: skip
            wall,
            self._done,
            self.profile,
            batches,
            self.local.server.budget.cpus,
        )

    def _thread(self, name: str, target: Callable[[StreamRun], None], st: StreamRun) -> Any:
        # The thread keeps the caller's log context (a job's id), which threads do not inherit.
        run_in = contextvars.copy_context().run
        t = threading.Thread(target=run_in, args=(self._guard, target, st), name=name, daemon=True)
        t.start()
        return t

    def _wait(
        self, threads: list[threading.Thread], progress: Callable[[int], None] | None
    ) -> None:
        reported = 0
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(POLL_S / len(threads))
            if progress is not None and self._done != reported:
                progress(self._done - reported)
                reported = self._done
        if progress is not None and self._done != reported:
            progress(self._done - reported)

    def _guard(self, target: Callable[[StreamRun], None], st: StreamRun) -> None:
        try:
            target(st)
        except BaseException as err:  # noqa: BLE001 - any failure must stop the whole run
            self._fail(str(st.source.path), err)
        finally:
            if target == self._sink:  # the sink thread owns the stream's files
                st.close()

    def _fail(self, where: str, err: BaseException) -> None:
        with self._lock:
            first = not self._errors
            self._errors.append((where, err))
        if first:
            if not isinstance(err, FrameserveError):
                log.error("%s failed", where, exc_info=err)
            self.stop.set()

    # -- decoder thread ---------------------------------------------------------------------
    def _decode(self, st: StreamRun) -> None:
        if self.isolate or st.source.stream_id in self._warm:
            self._decode_in_worker(st)
            return
        previous: Frame | None = None
        name = f"{self._prefix}ffmpeg-{st.source.stream_id}"
        frames = read_ahead(st.source.frames(self.stop), self.stop, name)
        for frame in with_defects(frames, self.config.defects, st.source.stats):
            previous = self._frame_in(st, frame, previous)
        st.pump.end()

    def _frame_in(self, st: StreamRun, frame: Frame, previous: Frame | None) -> Frame | None:
        """Send one decoded frame on; returns the frame a transformation pairs with the next."""
        if not self.config.interpolates:
            st.pump.submit(frame)
            return None
        # Spare-frame scheme: the time base halves, originals keep their instants
        # (2 * pts), a placeholder sits halfway between two neighbours (pts_a + pts_b).
        full_rgb(frame)
        tb = frame.time_base / 2
        if previous is not None:
            spare = Frame(
                frame.stream, previous.index, previous.pts + frame.pts, tb, None,
                previous=previous.image, next=frame.image,
            )  # fmt: skip
            st.pump.submit(spare)
        # A resumed run starts at an original (``seek``), never at the spare before it.
        original = Frame(frame.stream, frame.index, 2 * frame.pts, tb, frame.image)
        original.seek = frame.seek
        st.pump.submit(original)
        return frame

    def _decode_in_worker(self, st: StreamRun) -> None:
        """Decoding and pre-processing in a child process (``video.worker``); its groups go
        to the pump as they come, whole frames through ``_frame_in``."""
        n = st.source.stream_id
        name, warm = f"{self._prefix}decode-worker-{n}", self._warm.pop(n, None)
        worker = DecodeWorker(self._worker_spec(st), name, warm=warm)
        cores = self.local.server.budget.cores  # the decoders' cores already set aside
        balance = SamplingBalance(cores) if worker.spec.rows else None
        previous: Frame | None = None
        if self._second is not None:
            self._second.attach(worker)
        try:
            for group in worker.groups(self.stop):
                if group.tensor is None:
                    for p in group.frames:
                        previous = self._frame_in(st, p.frame, previous)
                    continue
                self._send_group(st.pump, group, worker.spec)
                mv = self.processor.single
                if balance and mv and (rows := balance.observe(mv.stats)) is not None:
                    worker.ask_for_rows(rows)
        finally:
            if self._second is not None:  # it ended or failed: no more pieces
                self._second.first_ended(worker.stats.cores)
            worker.close()
            s, w = st.source.stats, worker.stats
            s.decoded, s.kept, s.corrupt, s.seconds = w.decoded, w.kept, w.corrupt, w.seconds
            st.resize, st.decoder_cores, st.sampled_by_server = w.resize, w.cores, w.rows
        if not self.stop.is_set():  # after ``first_ended``: the sink then sees every piece
            st.pump.end()

    def _send_group(self, pump: FramePump, group: Group, spec: WorkerSpec) -> None:
        """One of a worker's groups to the model, through ``pump``: normalised, for the
        model version it was prepared for."""
        mv = self.processor.single
        pre = mv.processing.preprocess if mv and mv.processing else None
        if mv is None or pre is None or pre.spec != spec.preprocess:
            raise VideoError(
                f"pipeline {self.name}: the model's pre-processing changed while the "
                "input was decoded for the old one"
            )
        for p in group.frames:
            p.version = mv
        pump.send(normalized(group, pre))

    def _count_second(self, st: StreamRun, second: SecondDecoder) -> None:
        """The second decoder's counters into the input's."""
        s, w = st.source.stats, second.stats
        s.decoded, s.kept, s.corrupt = s.decoded + w.decoded, s.kept + w.kept, s.corrupt + w.corrupt
        s.seconds += w.seconds
        st.second_decoder_frames = second.frames

    def _worker_spec(self, st: StreamRun) -> WorkerSpec:
        mv = self.processor.single
        pre = mv.processing.preprocess if mv is not None and mv.processing else None
        n = st.source.stream_id
        return input_spec(
            st.source,
            pre,
            group=st.pump.group if pre is not None else 1,
            full=self.options.video_out or pre is None,
            where=f"pipeline {self.name}",
            defects=self.config.defects,
            cores=self._decoder_cores.get(n, ()),
            read_ahead=READ_AHEAD_FRAMES // len(self.sources) if self._ahead else 0,
            split=self._split,
        )

    # -- sink thread ------------------------------------------------------------------------
    def _sink(self, st: StreamRun) -> None:
        """The input's frames in order: its pump's, then each of its second decoder's pieces'."""
        pumps = iter([st.pump])
        while (pump := next(pumps, None)) is not None:
            for done in pump.results():
                assert done.output is not None  # a lossless pump raises a frame's error
                self._write(st, done.frame, done.output)
            if not pump.ended:
                return
            if pump is st.pump and self._second is not None:
                pumps = iter(self._second.pumps())
        st.finish()
        self._summarize(st)

    def _summarize(self, st: StreamRun) -> None:
        """``summary.json`` from the whole results file: lines of a resumed run included."""
        spec, path = self.config.summary_spec(), st.outputs.summary
        if spec is None or path is None:
            return
        started = time.perf_counter()
        write_summary(path, summarize_file(st.outputs.jsonl, spec, self.name))
        self.profile.add("sink", time.perf_counter() - started)

    def _write(self, st: StreamRun, frame: Frame, output: FrameOutput) -> None:
        for step, seconds in output.timings.seconds.items():
            if step in ("preprocess", "postprocess"):
                self.profile.add(step, seconds)
        if self._on_frame is not None:
            self._on_frame(st, frame)
        started, encoded = time.perf_counter(), st.encode_seconds
        result = output.result
        if st.tracker is not None and isinstance(result, Detections):
            result = st.tracker.update(result, float(frame.seconds))
        elif st.tracker is not None and isinstance(result, Moderation):
            tracked = st.tracker.update(result.detections, float(frame.seconds))
            result = Moderation(tracked, result.verdict)
        st.write(frame, result, output.image)
        encode = st.encode_seconds - encoded  # counted under "encode" at the end
        self.profile.add("sink", time.perf_counter() - started - encode)
        with self._lock:
            self._done += 1

    # -- accounting -------------------------------------------------------------------------
    def _model_counters(self) -> dict[str, tuple[int, int, int, int]]:
        out = {}
        for model, mv in self.processor.versions.items():
            s = mv.stats
            infer = sum(b.compute_infer.ns for b in s.batches.values())
            out[model] = (s.queue.ns, infer, s.inference_count, s.execution_count)
        return out

    def _account(self, before: dict[str, tuple[int, int, int, int]]) -> dict[str, float]:
        """Queue wait and inference from the schedulers; decode and encode from the streams."""
        batches = {}
        for model, (q0, i0, n0, e0) in before.items():
            q1, i1, n1, e1 = self._model_counters()[model]
            self.profile.add("queue wait", (q1 - q0) / 1e9)
            self.profile.add("inference", (i1 - i0) / 1e9)
            if e1 > e0:
                batches[model] = (n1 - n0) / (e1 - e0)
        for st in self.streams:
            self.profile.add("decode", st.source.stats.seconds)
            self.profile.add("encode", st.encode_seconds)
        return batches
