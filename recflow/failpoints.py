"""Named places where a test kills the process on purpose, as a power cut or the OOM killer would.

``RECFLOW_KILL_AT=<name>`` makes the process SIGKILL itself when it reaches ``failpoint(name)``:
no ``finally``, no atexit, no MLflow run ended; with ``RECFLOW_KILL_GROUP=1`` its whole process
group dies (``mlflow run``, main and the step: a power cut). Unset (always, outside the fault
tests), a failpoint is one environment lookup. The names: ``download:mid-archive``,
``preprocess:mid-splits``, ``hpo:mid-trial``, ``train_best:model-logged``,
``register:before-alias``.
"""

from __future__ import annotations

import os
import signal

ENV = "RECFLOW_KILL_AT"
GROUP_ENV = "RECFLOW_KILL_GROUP"


def failpoint(name: str) -> None:
    """Die here, at once, if the environment asks for it."""
    if os.environ.get(ENV) == name:
        if os.environ.get(GROUP_ENV) == "1":
            os.killpg(0, signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
