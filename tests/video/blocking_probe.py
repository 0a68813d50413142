"""A probe that blocks inside FFmpeg, for the cancel test of ``test_job_inputs.py``.

``run_isolated`` pickles its target by name, so the spawned child imports this module. The
probe opens ``blocking.fifo`` beside the job's input with FFmpeg (the file input options), and
FFmpeg's ``open(2)`` of a FIFO that nothing writes to never returns: a stand-in for an input on a
hung network file system, which a test cannot make. (The media root itself refuses FIFOs.)
"""

from __future__ import annotations

from pathlib import Path

import av

from frameserve.video.inputs import FILE_OPTIONS

FIFO_NAME = "blocking.fifo"


def blocking_probe(path: Path) -> None:
    """Block in FFmpeg until killed."""
    av.open(str(path.parent / FIFO_NAME), container_options=dict(FILE_OPTIONS))
