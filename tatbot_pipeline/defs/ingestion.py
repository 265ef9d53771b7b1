"""Recordings as partitions: sensor, `stroke_recording`, `recording_validation` and their checks."""

import dagster as dg

recordings_partitions = dg.DynamicPartitionsDefinition(name="recordings")

defs = dg.Definitions()
