"""Tiny random-weight models written in the real formats, and generated media: for the tests,
the demo and the benchmarks. Nothing here is needed to run real weights."""
