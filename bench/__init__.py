"""Measurement on the device: the benchmark harness, its reports and plots."""
