"""Team scale on loopback: an MLflow server on PostgreSQL, distributed HPO, runs from a git URL.

Everything runs as separate processes, the way a team runs it: PostgreSQL and ``mlflow server``
(proxied artifacts) started by the fixtures (``conftest.py``), ``mlflow run`` clients that know
only the server's URL and ``PGPASSWORD``, and a ``git daemon`` serving the repository. One file
per concern, so that the test workers share them out.
"""
