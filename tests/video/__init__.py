"""Tests for frameserve.video: decoding, pipelines, overlays and mask tracks."""
