"""logship benchmarks: run them with scripts/bench."""
