"""A server process with a job queue, for the crash test of ``test_jobs.py``: it loads the zoo
``faces`` model, submits one job with a checkpoint at every keyframe, prints ``job <id>`` and
then waits to be killed (``SIGKILL``). It exits by itself (status 3) only if nobody kills it.

    python jobs_worker.py REPOSITORY STATE_DIR MEDIA_ROOT INPUT [--video-out] [--sample S]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from frameserve.serving.local import LocalServer
from frameserve.serving.server import ServerSettings
from frameserve.video.jobs import JobQueue, JobSettings, JobSpec

WAIT_S = 120.0  # a test that forgot to kill this process must not leave it behind for long


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("repository", type=Path)
    p.add_argument("state_dir", type=Path)
    p.add_argument("media_root", type=Path)
    p.add_argument("input")
    p.add_argument("--video-out", action="store_true")
    p.add_argument("--sample")
    args = p.parse_args()
    settings = ServerSettings(
        repository=args.repository, model_control_mode="explicit", load_models=("faces",)
    )
    with LocalServer(settings) as local:
        jobs = JobQueue(
            local,
            JobSettings(
                state_dir=args.state_dir, media_root=args.media_root, checkpoint_interval_s=0
            ),
        )
        jobs.start()
        spec = JobSpec(
            pipeline="faces", input=args.input, sample=args.sample, video_out=args.video_out
        )
        record = jobs.submit(spec)
        print(f"job {record.id}", flush=True)  # noqa: T201
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            time.sleep(0.05)
        jobs.close(5.0)
    return 3


if __name__ == "__main__":
    sys.exit(main())
