"""Evaluation layer: prompt registry and (later) LLM-judge evals. Sits on top of llm.py."""
