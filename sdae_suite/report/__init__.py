"""The benchmark report: read run dirs (`report.runs`), compare checkpoints across them (`report.compare`) and write
report.md / report.html / results.json / results.csv / plots (`report.render`). `tools/benchmark_report.py` is the
command line in front of it."""
