"""Does a user sample rank configurations as the full data does? Each configuration scored on both.

Takes the hpo warm starts and ``--n`` random configurations of the packaged search space (optuna's
RandomSampler, so no sampler steers towards either fidelity's taste), and scores each as an hpo
trial would: validation NDCG@10 at its best epoch, stopping ``auto`` patience epochs after it. Once
on a seeded sample of ``--sample_users`` users (``recflow.hpo.fidelity.apply``, as
``hpo -P sample_users=N`` does) and once on all users. ML-1M-shaped synthetic data
(recflow.testing.synthetic), main's default split, seeded by ``--seed``.

Prints one row per configuration, the rank correlation of the two scores, the full-data score of
the sample's best configuration and of the best of the sample's top ``--top`` (the pick a
promotion stage would make) as ratios of the full-data best, and the parameters the top
configurations of each fidelity share. Usage::

    .venv/bin/python bench/fidelity_transfer.py [--n 40] [--sample_users 1510] [--seed 1492]
"""

from __future__ import annotations

import argparse
import contextlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import optuna
import pandas as pd

from recflow.data import preprocess
from recflow.data.preprocess import Prepared
from recflow.evaluation.accuracy import Holdout
from recflow.hpo import fidelity
from recflow.hpo.objective import auto_patience
from recflow.hpo.space import DEFAULT_SPACE, load_space, suggest, warm_starts
from recflow.model.recommender import FMParams, Recommender
from recflow.model.training import TrainingDiverged, fit_isolated
from recflow.testing.synthetic import SHAPES, generate


class _Stop(Exception):
    pass


def trial_score(
    data: Prepared, params: FMParams, seed: int, share: float = 1.0
) -> tuple[float, int]:
    """Validation NDCG@10 at the best epoch and that epoch, as hpo's early stopping finds them
    (``share``: of the whole training split, when ``data`` is a user sample); NaN and 0 when
    training diverges."""
    patience = auto_patience(len(data.train))
    curve: list[float] = []
    holdout: list[Holdout] = []

    def on_epoch(epoch: int, model: Recommender) -> None:
        if not holdout:
            holdout.append(Holdout.of(model, data.train, data.valid))
        curve.append(holdout[0].evaluate(model.scores, 10)["ndcg_at_10"])
        if len(curve) - 1 - int(np.argmax(curve)) >= patience:
            raise _Stop

    try:
        with contextlib.suppress(_Stop):
            fit_isolated(
                data.train, params, seed, on_epoch, user_features=data.user_features,
                item_features=data.item_features, data_share=share,
            )  # fmt: skip
    except TrainingDiverged:
        return float("nan"), 0
    return max(curve), int(np.argmax(curve)) + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="random configurations")
    parser.add_argument("--sample_users", type=int, default=SHAPES["ml-1m"].n_users // 4)
    parser.add_argument("--seed", type=int, default=1492, help="split, user sample, sampler")
    parser.add_argument("--top", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=2, help="configurations trained at once")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    synth = generate("ml-1m", np.random.default_rng(0))
    full, _ = preprocess.prepare(
        synth.ratings, synth.items, synth.users, preprocess.Settings(),
        np.random.default_rng(args.seed),
    )  # fmt: skip
    sample = fidelity.apply(full, fidelity.Fidelity(args.sample_users, None), args.seed)
    share = len(sample.train) / len(full.train)  # as hpo passes it to its trials
    space = load_space(DEFAULT_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(args.seed))
    starts = warm_starts(space)
    for values in starts:
        study.enqueue_trial(values)
    configs = []
    for _ in range(len(starts) + args.n):
        trial = study.ask()
        configs.append(suggest(trial, space))
        study.tell(trial, 0.0)

    def both(i: int) -> dict:
        params, seed = configs[i], args.seed + i
        (s, s_epoch), (f, f_epoch) = (
            trial_score(sample, params, seed, share),
            trial_score(full, params, seed),
        )
        row = {"config": i, **params.to_dict(), "sample": s, "sample_epoch": s_epoch,
               "full": f, "full_epoch": f_epoch}  # fmt: skip
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
        return row

    with ThreadPoolExecutor(args.jobs) as pool:
        df = pd.DataFrame(list(pool.map(both, range(len(configs)))))
    show = ["config", "factors", "max_samples", "alpha", "sigma", "learning_rate",
            "learning_schedule", "learning_exponent", "features", "sample", "sample_epoch",
            "full", "full_epoch"]  # fmt: skip
    print(f"\n{len(sample.train):,} sampled vs {len(full.train):,} training rows\n")
    print(df.sort_values("full", ascending=False)[show].round(4).to_string(index=False))
    ok = df.dropna(subset=["sample", "full"])
    best = ok["full"].max()
    by_sample = ok.sort_values("sample", ascending=False)
    top = by_sample.head(args.top)
    print(
        f"\ndiverged: {df['sample'].isna().sum()} on the sample, {df['full'].isna().sum()} on all"
    )
    print(f"Spearman rank correlation, sample vs full: {ok[['sample', 'full']].corr('spearman').iloc[0, 1]:.3f}")  # fmt: skip
    print(f"full-data NDCG@10 of the sample's best / the full-data best: "
          f"{by_sample['full'].iloc[0]:.4f} / {best:.4f} = {by_sample['full'].iloc[0] / best:.3f}")  # fmt: skip
    print(f"best full-data NDCG@10 among the sample's top {args.top} / the full-data best: "
          f"{top['full'].max():.4f} / {best:.4f} = {top['full'].max() / best:.3f}")  # fmt: skip
    for name in ("sample", "full"):
        head = ok.sort_values(name, ascending=False).head(args.top)
        print(f"top {args.top} by {name}: median alpha {head['alpha'].median():.4f}, learning rate "
              f"{head['learning_rate'].median():.3f}, sigma {head['sigma'].median():.3f}, "
              f"factors {head['factors'].median():.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
