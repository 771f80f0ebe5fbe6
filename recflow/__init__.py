"""recflow: MovieLens recommender pipeline logic (data, splits, model, metrics, MLflow glue).

The ``steps/`` scripts are thin click wrappers around these modules.
"""

__version__ = "0.1.0"
