"""Video pipelines: decode, sample, run model pipelines on frames, track, write results."""
