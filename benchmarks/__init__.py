"""Benchmarks of chatpush against baselines measured in the same run (docs/PERFORMANCE.md)."""
