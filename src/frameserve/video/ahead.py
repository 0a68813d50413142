"""Decoding ahead of the model load (``video run``).

``video run`` starts its decode workers first thing (``video.warm``); they are ready to decode
~0.3 s later, while this process is still importing the runtime and compiling the models. What
a worker ships depends only on declared configuration: the model's ``preprocess`` block, its
batch size and instances, the pipeline's sampling and decode options, the input's header. So
``decode_ahead`` plans each input's ``WorkerSpec`` from those files as soon as they are read,
and sends it: the worker fills its ring (``worker.ring_slots``) while the models load, and the
first batch runs as soon as the model is ready instead of waiting for the first group.

``VideoRun`` plans the spec again from the loaded models and takes the worker over only when the
two are equal (``DecodeWorker(spec, warm=...)``). When they differ (a model whose batch size or
instances the runtime decides, a file changed in between), that worker is ended and the input
decodes in a fresh one: the plan from the files is an optimisation, never a source of truth.

Measured (README, video benchmark change table): 2400-frame ``faces`` runs, 24 rounds paired
with the run that sends the input after the load: 0.94 (``pan``) and 0.95 (``detail``) of the
wall, with the deeper ring; ``person-mask`` (CPU-bound) unchanged within the noise.
"""

from __future__ import annotations

import logging
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path

from frameserve.errors import FrameserveError
from frameserve.processing.transform import Preprocessor
from frameserve.serving.config import read_folder_config
from frameserve.video import plan
from frameserve.video.config import VideoPipelineConfig
from frameserve.video.decode import VideoInfo
from frameserve.video.split import second_spec
from frameserve.video.warm import WarmWorker
from frameserve.video.worker import READ_AHEAD_FRAMES, WorkerSpec, input_spec

log = logging.getLogger(__name__)


def plan_ahead(
    name: str,
    config: VideoPipelineConfig,
    inputs: list[Path],
    infos: list[VideoInfo],
    options: plan.RunOptions,
    repository: Path,
) -> list[WorkerSpec] | None:
    """Each input's worker spec as ``VideoRun`` will plan it once the models are loaded, from
    the files alone, and a second decoder's last where the run has one (``video.split``); None
    when the files do not say it (no declared pre-processing, a batch
    size or a share of frames in flight that the loaded model decides) or they are invalid
    (the load that follows reports that)."""
    if not plan.decodes_in_workers(config, options) or options.decode_threads < 1:
        return None
    try:
        model = read_folder_config(repository / config.models[0])
        sampling = plan.run_sampling(name, config, options)
    except FrameserveError:
        return None
    batch, instances = model.max_batch_size, model.instances
    if model.preprocess is None or batch is None or config.transforms:
        return None
    if instances is None and not options.inflight and len(inputs) > 1:
        return None  # the group is a share of frames in flight that the runtime sizes
    inflight = options.inflight or plan.frames_in_flight([(batch, instances or 1)], len(inputs))
    pre = Preprocessor(model.preprocess, model.preprocess.fuse)
    cores = dict(enumerate(options.decoder_cores))
    specs = []
    for n, (path, info) in enumerate(zip(inputs, infos, strict=True)):
        specs.append(
            input_spec(
                plan.input_source(path, n, config, sampling, options.decode_threads, info),
                pre,
                group=plan.group_size(batch, inflight),
                full=False,
                where=f"pipeline {name}",
                defects=config.defects,
                cores=cores.get(n, ()),
                read_ahead=READ_AHEAD_FRAMES // len(inputs),
                split=len(inputs) == 1 and plan.splits(config, options, sampling),
            )
        )
    if specs[0].split:  # the second decoder's, last (``video.split``)
        specs.append(second_spec(specs[0], options.second_cores))
    return specs


def decode_ahead(workers: list[WarmWorker], specs: list[WorkerSpec] | None) -> int:
    """Send each warm worker its input now (``specs`` from ``plan_ahead``, one per worker),
    each with a ring it decodes into until the run takes both over; how many were sent."""
    if specs is None or len(specs) != len(workers):
        return 0
    sent, second = 0, False
    for worker, spec in zip(workers, specs, strict=True):
        try:
            ring = SharedMemory(create=True, size=spec.slots * spec.slot_bytes)
        except OSError as err:  # no shared memory to spare: it waits for the run, as before
            log.warning("input %d not decoded ahead: %s", spec.stream_id, err)
            continue
        worker.begin(ring, spec)
        sent += 1
        second = second or spec.second
    log.debug("decoding %d input(s) ahead of the model load%s", sent - second,
              " (and a second decoder: video.split)" if second else "")  # fmt: skip
    return sent
