"""Sweep orchestration: sweep files, Ray Tune trainable, Optuna search, MLflow logging.

`orchestration.sweepfile` and `orchestration.cells` are pure (no Ray, MLflow or Optuna
imports) so that the report can list sweep cells cheaply; the rest imports them lazily.
"""
