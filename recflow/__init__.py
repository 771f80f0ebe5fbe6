"""recflow: the logic of an MLflow Projects pipeline for recommenders, by concern.

``data`` (datasets, downloads, preprocessing), ``model`` (the rankfm recommender and its
training), ``evaluation`` (metrics, baselines, reports), ``hpo`` (optuna tuning), ``tracking``
(MLflow runs, contracts between steps, the step cache, ``main``'s pipeline, promotion) and
``serving`` (the pyfunc model, batch scoring, the server), over the leaves ``constants`` and
``errors`` and the infrastructure ``disk``, ``processes`` and ``failpoints``; ``testing`` holds
support code for the tests and benchmarks. The ``steps/`` scripts are thin click commands over
these. The import rules are import-linter contracts in ``pyproject.toml``.
"""

__version__ = "0.1.0"
