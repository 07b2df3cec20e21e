"""Benchmarks and load/fault drivers (see README.md). A package so tests can reuse the driver."""
