"""Command-line tools around the engine and the node: camera bags, replay, benchmarks."""
