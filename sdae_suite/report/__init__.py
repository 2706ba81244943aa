"""The benchmark report: read run dirs (`sdae_suite.report.runs`), compare checkpoints across them
(`sdae_suite.report.compare`) and write report.md / report.html / results.json / results.csv / plots
(`sdae_suite.report.render`). `tools/benchmark_report.py` is the command line in front of it."""
