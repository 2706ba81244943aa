"""The resumable benchmark pipeline behind `make demo`: work-dir lock and stage records (tools/run_benchmark.py)."""
