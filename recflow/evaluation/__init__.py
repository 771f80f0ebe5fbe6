"""Evaluation: metric names, the top-k helper, accuracy over a holdout, beyond-accuracy figures,
the baselines the model is compared with, train_best's test report and its figures.

Pure functions over arrays and frames; nothing here imports MLflow.
"""
