"""The step cache: which finished run of a step can stand in for running it again.

In: a step name, its parameters (MLproject defaults filled in) and the code version. Out: the
newest FINISHED run with exactly those parameters and code, or None.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from pathlib import Path

import yaml
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from recflow.constants import TAG_CODE_VERSION, TAG_STEP

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# What a step's result depends on: the code, packaged data such as the default search space,
# and the environment spec and pins (not docs or tests).
CODE_GLOBS = (
    "recflow/**/*.py", "recflow/**/*.yaml", "steps/**/*.py",
    "MLproject", "conda.yaml", "pyproject.toml",
)  # fmt: skip


def code_version(root: Path = PROJECT_ROOT) -> str:
    """A hash of the project's source files; works without git (e.g. an exported tarball)."""
    h = hashlib.sha256()
    files = sorted({p for g in CODE_GLOBS for p in root.glob(g) if p.is_file()})
    for p in files:
        h.update(p.relative_to(root).as_posix().encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def entry_point_defaults(root: Path = PROJECT_ROOT) -> dict[str, dict[str, str]]:
    """Each entry point's declared parameters with their MLproject defaults, as strings."""
    spec = yaml.safe_load((root / "MLproject").read_text())
    out = {}
    for name, ep in spec["entry_points"].items():
        params = ep.get("parameters", {})
        out[name] = {
            k: "" if not isinstance(v, dict) or v.get("default") is None else str(v["default"])
            for k, v in params.items()
        }
    return out


def find_reusable_run(
    experiment_id: str, step: str, params: Mapping[str, str], version: str
) -> Run | None:
    """The newest FINISHED run of ``step`` with exactly these params (as strings) and code."""
    runs = MlflowClient().search_runs(
        [experiment_id],
        filter_string=(
            f"tags.`{TAG_STEP}` = '{step}' and tags.`{TAG_CODE_VERSION}` = '{version}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=200,
    )
    for run in runs:
        stored = run.data.params
        if all(k in stored and unquote(stored[k]) == unquote(v) for k, v in params.items()):
            return run
    return None


def unquote(value: str) -> str:
    """A parameter as given: `mlflow run` stores string parameters shell-quoted ("''" for "")."""
    try:
        parts = shlex.split(value)
    except ValueError:
        return value
    return parts[0] if len(parts) == 1 else value if parts else ""
