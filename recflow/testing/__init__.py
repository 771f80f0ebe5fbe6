"""Support code for the project's tests and benchmarks; the pipeline never imports it.

It builds data and throwaway infrastructure: synthetic MovieLens-shaped ratings with real taste
signal (``synthetic``, ``sampling``) and archives in the official layouts (``archives``), random
or trained models of a given shape and the served pyfunc folder (``models``), PostgreSQL, an
MLflow tracking server, a git daemon and network namespaces on loopback (``services``), model
servers and the load and abuse they get (``servers``, ``load``), `mlflow run` commands in scratch
stores (``runs``) and the new-users protocol (``newusers``). It sits on top of the package's
layers (import-linter's ``(testing)``): it may import any ``recflow`` module, and nothing in
``recflow`` imports it.
"""
