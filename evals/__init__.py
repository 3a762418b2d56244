"""Evaluation layer on top of everything else: description and reranker evals over saved
answers, run_evals.py (the CLI) and report.py (results/REPORT.md). Nothing imports it."""
