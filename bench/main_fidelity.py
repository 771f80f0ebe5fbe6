"""The default ``main`` on ML-1M-scale data against a full-fidelity run and a quarter-users run.

Generates the ML-1M-shaped synthetic archive (recflow.testing.archives) unless ``--zip`` is given, then
runs, one after the other, each with a fresh tracking store and data dir, as a user would:

    default   mlflow run . -e main -P data_url=<zip> -P checksum=<sha> -P n_trials=<n>
    full      the same with -P n_jobs=1 -P sample_users=all -P eval_users=all
    quarter   the same as default with -P sample_users=<a quarter of the users>

and prints for each: main's wall time, hpo's wall time, trials complete / pruned / failed
(diverged), the tuned configuration's test NDCG@10, then the ratios the targets are stated in:
default/full NDCG (>= 0.97), default wall time (<= 600 s), quarter/default NDCG (within 3%) and
quarter/default hpo time (well under 0.5). Usage::

    .venv/bin/python bench/main_fidelity.py [--n_trials 20] [--runs default,full,quarter]
        [--seeds 1492,7,42]

With several ``--seeds`` (each is main's ``seed``: the split, the user sample and the sampler),
every run is repeated per seed and the ratios are paired per seed, then summarised as mean ± sd:
one study's test NDCG@10 moves by a few percent with its seed alone, as much as the 3% target.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from recflow import constants as C
from recflow.testing.archives import synthetic_zip
from recflow.testing.runs import archive_params, mlflow_run, run, runs_by_step, seconds, store
from recflow.testing.synthetic import SHAPES, generate

QUARTER = f"sample_users={SHAPES['ml-1m'].n_users // 4}"
VARIANTS = {
    "default": [],
    "full": ["n_jobs=1", "sample_users=all", "eval_users=all"],
    "quarter": [QUARTER],
}


def run_main(
    name: str, zip_path: Path, n_trials: int, extra: list[str], parent: Path
) -> dict[str, float]:
    """One ``mlflow run . -e main`` in a fresh store (a new folder in ``parent``); its figures."""
    where = store(Path(tempfile.mkdtemp(prefix=f"{name}-", dir=parent)))
    params = [*archive_params(zip_path, "ml-1m"), f"n_trials={n_trials}", *extra]
    wall, _ = run(mlflow_run("main", params), where, "main.log")
    by_step = runs_by_step(where.uri)
    hpo, train = by_step["hpo"], by_step["train_best"]
    return {
        "main_s": wall,
        "hpo_s": seconds(hpo),
        "complete": hpo.data.metrics["n_complete"],
        "pruned": hpo.data.metrics["n_pruned"],
        "failed": hpo.data.metrics["n_fail"],
        "epochs": float(train.data.params["model.epochs"]),
        "test_ndcg": train.data.metrics[f"{C.TEST_PREFIX}ndcg_at_10"],
        "valid_ndcg": hpo.data.metrics["best_ndcg_at_10"],
    }


def ml1m_zip(parent: Path) -> Path:
    """The ML-1M-shaped synthetic archive, seeded 0, in ``parent``."""
    return synthetic_zip(generate("ml-1m", np.random.default_rng(0)), parent)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_trials", type=int, default=20)
    parser.add_argument("--zip", type=Path, help="an ML-1M-shaped zip (default: generate one)")
    parser.add_argument("--runs", default="default,full,quarter")
    parser.add_argument("--seeds", default="1492", help="comma-separated main seeds")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-fidelity-") as tmp:
        if len(seeds) > 1:
            by_seed(args, seeds, Path(tmp))
        else:
            one_seed(args, Path(tmp))


def one_seed(args: argparse.Namespace, tmp: Path) -> None:
    """Each run once, at main's default seed; the table and the ratios."""
    zip_path = args.zip or ml1m_zip(tmp)
    results = {}
    for name in args.runs.split(","):
        results[name] = run_main(name, zip_path, args.n_trials, VARIANTS[name], tmp)
        print(name, {k: round(v, 4) for k, v in results[name].items()}, flush=True)
    print("\n| run | main s | hpo s | complete / pruned / diverged | epochs | valid NDCG@10 "
          "| test NDCG@10 |\n|---|---|---|---|---|---|---|")  # fmt: skip
    for name, r in results.items():
        print(f"| {name} | {r['main_s']:.0f} | {r['hpo_s']:.0f} | {r['complete']:.0f} / "
              f"{r['pruned']:.0f} / {r['failed']:.0f} | {r['epochs']:.0f} | {r['valid_ndcg']:.4f} "
              f"| {r['test_ndcg']:.4f} |")  # fmt: skip
    d, f, q = (results.get(n) for n in ("default", "full", "quarter"))
    if d and f:
        print(
            f"default / full test NDCG@10: {d['test_ndcg'] / f['test_ndcg']:.3f} (target >= 0.97)"
        )
        print(f"default / full main wall time: {d['main_s'] / f['main_s']:.2f}")
    if d:
        print(f"default main wall time: {d['main_s']:.0f} s (target <= 600)")
    if d and q:
        print(f"quarter / default test NDCG@10: {q['test_ndcg'] / d['test_ndcg']:.3f} (within 3%)")
        print(f"quarter / default hpo time: {q['hpo_s'] / d['hpo_s']:.2f} (target well under 0.5)")


def by_seed(args: argparse.Namespace, seeds: list[int], tmp: Path) -> None:
    """Each run once per seed; per-seed ratios and their mean ± sd."""
    zip_path = args.zip or ml1m_zip(tmp)
    names = args.runs.split(",")
    results: dict[str, list[dict[str, float]]] = {n: [] for n in names}
    for seed in seeds:
        for name in names:
            r = run_main(name, zip_path, args.n_trials, [*VARIANTS[name], f"seed={seed}"], tmp)
            results[name].append(r)
            print(seed, name, {k: round(v, 4) for k, v in r.items()}, flush=True)
    print("\n| run | seed | hpo s | main s | epochs | valid NDCG@10 | test NDCG@10 |\n"
          "|---|---|---|---|---|---|---|")  # fmt: skip
    for name in names:
        for seed, r in zip(seeds, results[name], strict=True):
            print(f"| {name} | {seed} | {r['hpo_s']:.0f} | {r['main_s']:.0f} | {r['epochs']:.0f} "
                  f"| {r['valid_ndcg']:.4f} | {r['test_ndcg']:.4f} |")  # fmt: skip
    for name in names:
        t = np.array([r["test_ndcg"] for r in results[name]])
        print(f"{name}: test NDCG@10 {t.mean():.4f} ± {t.std(ddof=1):.4f} over {len(t)} seeds")
    if "default" in results and "quarter" in results:
        d, q = results["default"], results["quarter"]
        ndcg = np.array([b["test_ndcg"] / a["test_ndcg"] for a, b in zip(d, q, strict=True)])
        hpo = np.array([b["hpo_s"] / a["hpo_s"] for a, b in zip(d, q, strict=True)])
        print(
            f"quarter / default test NDCG@10 per seed: {np.round(ndcg, 3).tolist()}; "
            f"mean {ndcg.mean():.3f} ± {ndcg.std(ddof=1):.3f} (within 3%: >= 0.97)"
        )
        print(f"quarter / default hpo time: mean {hpo.mean():.2f} (target well under 0.5)")


if __name__ == "__main__":
    main()
