"""Serving: request parsing, the pyfunc model that answers users, histories and similar items,
the bundle it loads, its MLflow packaging, batch scoring and the multi-worker server.

Serving does not import training or tuning: a served model needs MLflow, NumPy and pandas only.
``recflow.serving.RecommenderModel`` stays importable here because registered models pickle
that class path.
"""


def __getattr__(name: str) -> object:
    # Lazy, so that importing a sibling (requests, bundle) does not import MLflow's pyfunc.
    if name == "RecommenderModel":
        from recflow.serving.pyfunc import RecommenderModel

        return RecommenderModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
