"""The served model's latency for a known user: string IDs beside integer IDs, same model size.

Setup (not timed): a random model of ``--shape``'s size (``recflow.testing.models.random_model``)
saved as our pyfunc twice, once with its integer IDs and once with the same embeddings under
string IDs (users ``cust-<32 hex digits>``, items ``SKU-<8 digits>``), and both loaded with
``mlflow.pyfunc.load_model``. Measured, alternating between the two models request by request so
both see the same machine: one known user per call, k=10,

    pyfunc       PyFuncModel.predict(DataFrame)  (MLflow's schema check, then ours)
    invocations  MLflow's scoring server on {"inputs": {"user_id": [u]}}, in process: its JSON
                 parsing and casting, predict and the JSON answer (`mlflow models serve` less HTTP)

and the p50 / p99 of each side and the string/integer ratio of the p50s (target: <= 1.2).
Usage::

    .venv/bin/python bench/string_ids.py [--shape ml-1m] [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.pyfunc import scoring_server

from recflow.constants import ITEM_COL, USER_COL
from recflow.model.recommender import Recommender
from recflow.testing.models import random_model, save_served
from recflow.testing.synthetic import SHAPES


def string_twin(model: Recommender, seen: pd.DataFrame) -> tuple[Recommender, pd.DataFrame]:
    """``model`` and its seen table with string IDs in place of its integer ones."""
    rng = np.random.default_rng(1)
    users = np.array([f"cust-{x:032x}" for x in rng.integers(0, 2**63, len(model.user_ids))])
    items = np.array([f"SKU-{i:08d}" for i in model.item_ids])
    twin = Recommender(model.params, users, items, model.user_emb, model.item_emb, model.item_bias)
    named = seen.assign(
        **{
            USER_COL: users[model.user_positions(seen[USER_COL].to_numpy())],
            ITEM_COL: items[model.item_positions(seen[ITEM_COL].to_numpy())],
        }
    )
    return twin, named


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="ml-1m", choices=sorted(SHAPES))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--seen", type=int, default=1_000_000, help="seen pairs at most")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-string-ids-") as scratch:
        compare(args, Path(scratch))


def compare(args: argparse.Namespace, tmp: Path) -> None:
    """Save both models in ``tmp`` and time both paths; print the table."""
    model, seen = random_model(np.random.default_rng(25), 32, SHAPES[args.shape], args.seen)
    twin, twin_seen = string_twin(model, seen)
    loaded = {
        "integer": mlflow.pyfunc.load_model(str(save_served(model, seen, tmp / "int"))),
        "string": mlflow.pyfunc.load_model(str(save_served(twin, twin_seen, tmp / "str"))),
    }
    picks = np.random.default_rng(0).integers(0, len(model.user_ids), args.requests + 50)
    ids = {"integer": model.user_ids[picks].tolist(), "string": twin.user_ids[picks].tolist()}
    schemas = {kind: m.metadata.get_input_schema() for kind, m in loaded.items()}

    def pyfunc(kind: str, user: object) -> None:
        loaded[kind].predict(pd.DataFrame({USER_COL: [user]}), params={"k": 10})

    def invocations(kind: str, user: object) -> None:
        body = json.dumps({"inputs": {USER_COL: [user]}, "params": {"k": 10}})
        resp = scoring_server.invocations(body, "application/json", loaded[kind], schemas[kind])
        assert resp.status == 200, resp.response

    print(
        f"{args.shape}-sized model ({len(model.user_ids)} users x {len(model.item_ids)} items x "
        f"{model.user_emb.shape[1]} dims, {len(seen)} seen pairs), one known user per call, "
        f"k=10, {args.requests} calls per side, alternating:\n"
    )
    print("| path | integer p50 ms | string p50 ms | ratio | integer p99 ms | string p99 ms |")
    print("|---|---|---|---|---|---|")
    for name, call in (("pyfunc", pyfunc), ("invocations", invocations)):
        ms = measure(call, ids)
        p50 = {kind: np.percentile(v, 50) for kind, v in ms.items()}
        p99 = {kind: np.percentile(v, 99) for kind, v in ms.items()}
        print(
            f"| {name} | {p50['integer']:.3f} | {p50['string']:.3f} | "
            f"{p50['string'] / p50['integer']:.2f} | {p99['integer']:.3f} | {p99['string']:.3f} |"
        )


def measure(call: Callable[[str, object], None], ids: dict[str, list]) -> dict[str, np.ndarray]:
    """Milliseconds of each call, the two kinds alternating; the first 50 of each are warm-ups."""
    out: dict[str, list[float]] = {kind: [] for kind in ids}
    for i in range(len(ids["integer"])):
        for kind in ids if i % 2 else reversed(list(ids)):  # who goes first alternates too
            start = time.perf_counter()
            call(kind, ids[kind][i])
            out[kind].append(time.perf_counter() - start)
    return {kind: np.array(v[50:]) * 1000 for kind, v in out.items()}


if __name__ == "__main__":
    main()
