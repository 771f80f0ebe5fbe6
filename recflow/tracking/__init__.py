"""MLflow bookkeeping: step runs and their lineage, the contracts by which one step reads what
another logged, the step cache, the tracking store, the ``main`` pipeline and the promotion policy.
"""
