"""Tools on built engines: timing and benchmarks, per-layer profiles, detection, GPU pre-processing, numeric comparison."""
