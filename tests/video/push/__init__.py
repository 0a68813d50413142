"""Tests for frameserve.video.push: webhook and MQTT outputs against real receivers."""
