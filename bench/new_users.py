"""Users the model never saw, recommended from their history at request time (real ML-100K).

Protocol, per seed: hold out 10 % of the users entirely; train on everyone else (rankfm's
published configuration, the library default). Each held-out user's interactions, by time, are
split in half: the first half is the history, the second half what we try to predict (top-10
over items not in the history). Compared on the same users and the same second halves:

    fold-in      the served model (RecommenderModel.predict) given the history per request
    fold-in, all alike   the same with ``half_life=0``: every history item weighs the same
    popularity   the most popular training items not in the history
    retrained    a model trained with the held-out users' first halves as well (they are then
                 known users, the history their seen items)

Prints NDCG@10 and P@10 for each as mean ± sd over the seeds and the ratios the targets are
stated in (fold-in >= 1.5x popularity, >= 0.85x retrained). Usage::

    .venv/bin/python bench/new_users.py [--seeds 1492 7 42]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from recflow.constants import ITEM_COL, TIMESTAMP_COL, USER_COL  # noqa: E402
from recflow.data.datasets import get_spec, parse_items, parse_ratings  # noqa: E402
from recflow.evaluation.accuracy import ranking_metrics  # noqa: E402
from recflow.model.recommender import FMParams, Recommender  # noqa: E402
from recflow.serving import bundle, pyfunc  # noqa: E402

ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
K = 10
HELD_OUT = 0.10


def split(ratings: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(training rows of the other users, held-out users' first halves, their second halves)."""
    rng = np.random.default_rng(seed)
    users = ratings[USER_COL].unique()
    held = rng.choice(users, size=round(HELD_OUT * users.size), replace=False)
    out = ratings[ratings[USER_COL].isin(held)].sort_values(
        [USER_COL, TIMESTAMP_COL, ITEM_COL], kind="stable"
    )
    position = out.groupby(USER_COL).cumcount()
    size = out.groupby(USER_COL)[ITEM_COL].transform("size")
    first = position < size // 2
    return ratings[~ratings[USER_COL].isin(held)], out[first], out[~first]


def scores_of(recs: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Mean NDCG@K and P@K of (user_id, rank, item_id) rows against the truth rows."""
    relevant = truth.groupby(USER_COL)[ITEM_COL].apply(set)
    users = relevant.index.to_numpy()
    hits = np.zeros((users.size, K), dtype=bool)
    row_of = {u: i for i, u in enumerate(users)}
    for user, rank, item in recs[[USER_COL, "rank", ITEM_COL]].itertuples(index=False):
        if user in row_of and rank <= K:
            hits[row_of[user], rank - 1] = item in relevant[user]
    n_relevant = relevant.map(len).to_numpy()
    m = ranking_metrics(hits, n_relevant)
    return {"ndcg": float(m["ndcg"].mean()), "precision": float(m["precision"].mean())}


def served(model: Recommender, items: pd.DataFrame, seen: pd.DataFrame, folder: Path):
    """The served pyfunc model of ``model``, loaded as the scoring server loads it."""
    bundle.write_bundle(folder, model, items, seen)
    python_model = pyfunc.RecommenderModel.from_bundle(folder)
    python_model.max_users = None
    return python_model


def one_seed(ratings: pd.DataFrame, items: pd.DataFrame, seed: int) -> dict[str, dict]:
    """Each recommender's NDCG@K and P@K on one seed's held-out users."""
    train, first, second = split(ratings, seed)
    with tempfile.TemporaryDirectory(prefix="bench-new-users-") as tmp:
        return _compare(train, first, second, items, seed, Path(tmp))


def _compare(
    train: pd.DataFrame, first: pd.DataFrame, second: pd.DataFrame, items: pd.DataFrame,
    seed: int, folder: Path,
) -> dict[str, dict]:  # fmt: skip
    params = FMParams()
    model = served(Recommender.fit(train, params, seed), items, train, folder / "a")
    histories = first.groupby(USER_COL)[ITEM_COL].apply(list)
    request = pd.DataFrame({USER_COL: histories.index, "history": histories.to_numpy()})
    start = time.perf_counter()
    folded = model.predict(None, request, {"k": K})
    per_user_ms = (time.perf_counter() - start) / len(request) * 1000
    assert (folded["source"] == "history").all()
    alike = model.predict(None, request, {"k": K, "half_life": 0})

    counts = train[ITEM_COL].value_counts()
    popular = []
    for user, history in histories.items():
        top = [i for i in counts.index[: K + len(history)] if i not in set(history)][:K]
        popular += [(user, r + 1, i) for r, i in enumerate(top)]
    popular = pd.DataFrame(popular, columns=[USER_COL, "rank", ITEM_COL])

    both = pd.concat([train, first])
    again = served(Recommender.fit(both, params, seed), items, both, folder / "b")
    retrained = again.predict(None, pd.DataFrame({USER_COL: histories.index}), {"k": K})
    assert (retrained["source"] == "model").all()
    return {
        "fold-in": scores_of(folded, second) | {"ms": per_user_ms},
        "fold-in, all alike": scores_of(alike, second),
        "popularity": scores_of(popular, second),
        "retrained": scores_of(retrained, second),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1492, 7, 42])
    args = parser.parse_args()
    if not ML100K.is_dir():
        raise SystemExit(f"needs the real ML-100K files in {ML100K}")
    spec = get_spec("ml-100k")
    ratings, items = parse_ratings(spec, ML100K), parse_items(spec, ML100K)
    results = [one_seed(ratings, items, seed) for seed in args.seeds]
    for seed, r in zip(args.seeds, results, strict=True):
        print(seed, {name: {m: round(v, 4) for m, v in f.items()} for name, f in r.items()})
    print(f"\nReal ML-100K, {HELD_OUT:.0%} of users held out, half of each one's history "
          f"(by time) given at request time; mean ± sd over seeds {args.seeds}:\n")  # fmt: skip
    print("| recommender | NDCG@10 | P@10 |\n|---|---|---|")
    for name in ("fold-in", "fold-in, all alike", "popularity", "retrained"):
        nd = np.array([r[name]["ndcg"] for r in results])
        pr = np.array([r[name]["precision"] for r in results])
        print(f"| {name} | {nd.mean():.4f} ± {nd.std(ddof=1):.4f} "
              f"| {pr.mean():.4f} ± {pr.std(ddof=1):.4f} |")  # fmt: skip
    for metric in ("ndcg", "precision"):
        fold = np.mean([r["fold-in"][metric] for r in results])
        pop = np.mean([r["popularity"][metric] for r in results])
        re = np.mean([r["retrained"][metric] for r in results])
        alike = np.mean([r["fold-in, all alike"][metric] for r in results])
        print(f"{metric}@10: fold-in / popularity {fold / pop:.2f} (target >= 1.5); "
              f"fold-in / retrained {fold / re:.2f} (target >= 0.85); all alike / popularity "
              f"{alike / pop:.2f}")  # fmt: skip
    ms = np.mean([r["fold-in"]["ms"] for r in results])
    print(f"fold-in in process: {ms:.1f} ms per user (histories of ~50 items on average)")


if __name__ == "__main__":
    main()
