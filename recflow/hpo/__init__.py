"""Hyperparameter search with optuna; trials are nested MLflow runs.

Modules, each importing only those listed before it:
``attrs`` (names of trial attributes and tags; imports nothing of ours), ``fidelity`` (user
samples for big data, and the parser of count-or-keyword options), ``space`` (the search
space file), ``sampling`` (sampler and pruner), ``liveness`` (which workers are alive; ending
the trials of dead ones), ``objective`` (one trial: train, evaluate, log), ``storage`` (opening
storages and studies), ``workers`` (running trials until the study is complete), ``plots`` and
``tune`` (the entry point the hpo step calls).
"""
