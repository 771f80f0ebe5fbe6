"""Property tests (hypothesis): splits, metrics and the served model's request parsing hold for
any input, not only for the examples we thought of."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from recflow.constants import ITEM_COL, RATING_COL, TIMESTAMP_COL, USER_COL
from recflow.data.preprocess import SPLITS, _holdout_counts, split
from recflow.errors import UserError
from recflow.evaluation.accuracy import evaluate
from recflow.evaluation.names import METRICS
from tests.helpers import save_checkerboard_pyfunc

KEY = [USER_COL, ITEM_COL]


@st.composite
def interactions(draw: st.DrawFn) -> pd.DataFrame:
    """Up to 300 distinct (user, item) pairs of up to 15 users and 30 items, with timestamps
    that may tie."""
    pairs = draw(
        st.lists(
            st.tuples(st.integers(1, 15), st.integers(1, 30)), min_size=20, max_size=300,
            unique=True,
        )
    )  # fmt: skip
    times = draw(st.lists(st.integers(0, 50), min_size=len(pairs), max_size=len(pairs)))
    users, items = zip(*pairs, strict=True)
    return pd.DataFrame({USER_COL: users, ITEM_COL: items, RATING_COL: 5.0, TIMESTAMP_COL: times})


sizes = st.tuples(st.floats(0.05, 0.5), st.floats(0.05, 0.4)).filter(lambda s: sum(s) < 0.95)


@settings(max_examples=150, deadline=None)
@given(df=interactions(), how=st.sampled_from(SPLITS), size=sizes, seed=st.integers(0, 2**32 - 1))
def test_splits_never_leak_and_respect_the_sizes(
    df: pd.DataFrame, how: str, size: tuple[float, float], seed: int
) -> None:
    test_size, valid_size = size
    try:
        parts = split(df, how, test_size, valid_size, np.random.default_rng(seed))
    except UserError as e:
        assert "set empty" in str(e)
        reject()
    train, valid, test = parts.train, parts.valid, parts.test
    tagged = pd.concat([train.assign(part=0), valid.assign(part=1), test.assign(part=2)])
    # No interaction is in two parts, and every row is one of the input's.
    assert not tagged.duplicated(KEY).any()
    merged = tagged.merge(df, on=list(df.columns), how="left", indicator=True)
    assert (merged["_merge"] == "both").all()
    # Valid and test hold only users and items the model was trained on.
    for part in (valid, test):
        assert part[USER_COL].isin(train[USER_COL]).all()
        assert part[ITEM_COL].isin(train[ITEM_COL]).all()
    # What is in no part was dropped for that reason only.
    left_out = df.merge(tagged[KEY], on=KEY, how="left", indicator=True)
    left_out = left_out[left_out["_merge"] == "left_only"]
    unknown = ~left_out[USER_COL].isin(train[USER_COL]) | ~left_out[ITEM_COL].isin(train[ITEM_COL])
    assert unknown.all()
    held_out = len(valid) + len(test) + len(left_out)
    if how == "random":
        assert held_out == round(len(df) * test_size) + round(len(df) * valid_size)
        return
    # Per user: the requested share held out, never the user's last training interaction.
    per_user = df.groupby(USER_COL).size()
    expected = _holdout_counts(per_user.to_numpy(), test_size + valid_size)
    assert held_out == expected.sum()
    assert (train.groupby(USER_COL).size().reindex(per_user.index, fill_value=0) >= 1).all()
    most = pd.Series(_holdout_counts(per_user.to_numpy(), test_size), index=per_user.index)
    tested = test.groupby(USER_COL).size()
    assert (tested <= most[tested.index]).all()
    if how == "time":
        # Test is each user's latest, valid the ones before, train the earliest.
        latest = lambda part: part.groupby(USER_COL)[TIMESTAMP_COL].max()  # noqa: E731
        earliest = lambda part: part.groupby(USER_COL)[TIMESTAMP_COL].min()  # noqa: E731
        for before, after in ((train, valid), (valid, test), (train, test)):
            lo, hi = latest(before), earliest(after)
            common = lo.index.intersection(hi.index)
            assert (lo[common] <= hi[common]).all()


@st.composite
def holdouts(draw: st.DrawFn) -> tuple[int, int, list[set[int]], list[set[int]], np.ndarray]:
    """Users with disjoint seen and held-out item sets (each user holds out at least one) and
    random scores."""
    n_items = draw(st.integers(2, 40))
    n_users = draw(st.integers(1, 12))
    k = draw(st.integers(1, 25))
    seen, relevant = [], []
    for _ in range(n_users):
        rel = draw(st.sets(st.integers(0, n_items - 1), min_size=1, max_size=n_items))
        rest = sorted(set(range(n_items)) - rel)
        seen.append(
            set(draw(st.sets(st.sampled_from(rest), max_size=len(rest)))) if rest else set()
        )
        relevant.append(rel)
    scores = draw(
        st.lists(st.floats(-1e6, 1e6), min_size=n_users * n_items, max_size=n_users * n_items)
    )
    return n_items, k, seen, relevant, np.array(scores).reshape(n_users, n_items)


def _pairs(sets: list[set[int]]) -> tuple[np.ndarray, np.ndarray]:
    users = [u for u, s in enumerate(sets) for _ in s]
    items = [i for s in sets for i in sorted(s)]
    return np.array(users, dtype=np.int64), np.array(items, dtype=np.int64)


@settings(max_examples=300, deadline=None)
@given(case=holdouts())
def test_metrics_stay_in_0_1_and_a_perfect_ranking_scores_1(case) -> None:
    n_items, k, seen, relevant, scores = case
    args = (n_items, _pairs(seen), _pairs(relevant), k)
    anything = evaluate(lambda u: scores[u], *args)
    assert set(anything) == {f"{m}_at_{k}" for m in METRICS}
    assert all(0.0 <= v <= 1.0 for v in anything.values()), anything
    # Relevant items first (seen ones rank highest of all, but are excluded).
    perfect = np.zeros_like(scores)
    for u, (rel, s) in enumerate(zip(relevant, seen, strict=True)):
        perfect[u, sorted(rel)] = 1.0
        perfect[u, sorted(s)] = 2.0
    best = evaluate(lambda u: perfect[u], *args)
    for m in ("ndcg", "hit_rate", "mrr"):
        assert best[f"{m}_at_{k}"] == pytest.approx(1.0), (m, best)
    n_rel = np.array([len(r) for r in relevant])
    assert best[f"precision_at_{k}"] == pytest.approx(np.mean(np.minimum(n_rel, k) / k))
    assert best[f"recall_at_{k}"] == pytest.approx(np.mean(np.minimum(n_rel, k) / n_rel))


@pytest.fixture(scope="module")
def scoring_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The checkerboard model behind MLflow's scoring app (python -m recflow.serving.server)."""
    from recflow.testing.servers import fixed_cmd, served
    from recflow.testing.services import free_port

    folder = tmp_path_factory.mktemp("served")
    save_checkerboard_pyfunc(folder)
    port = free_port()
    with served(fixed_cmd(folder / "pyfunc", port, 1), port, folder / "serve.log") as (url, _, _):
        yield url


# Any JSON value, and bodies shaped like requests (the formats, params, extra fields) whose
# values are any JSON: the parser's deeper paths are reached only by nearly-right requests.
scalars = (
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20)
)  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=20,
)  # fmt: skip
user_ids = st.integers(-(2**70), 2**70) | json_values
histories = st.lists(st.integers(-5, 30), max_size=30) | json_values  # the checkerboard: 0..19
rows = st.fixed_dictionaries(
    {"user_id": user_ids}, optional={"history": histories, "x": json_values}
) | st.fixed_dictionaries({"item_id": user_ids}, optional={"user_id": user_ids})
params = st.fixed_dictionaries(
    {}, optional={"k": st.integers(-5, 2**40) | json_values, "filter_seen": json_values,
                  "half_life": st.floats(-1, 20) | json_values, "other": json_values},
)  # fmt: skip
formats = (
    st.builds(lambda r: {"dataframe_records": r}, st.lists(rows, max_size=4))
    | st.builds(lambda u: {"inputs": {"user_id": u}}, st.lists(user_ids, max_size=4))
    | st.builds(lambda u: {"instances": u}, st.lists(rows, max_size=4))
    | st.builds(
        lambda u: {"dataframe_split": {"columns": ["user_id"], "data": [[x] for x in u]}},
        st.lists(user_ids, max_size=4),
    )
)
bodies = json_values | st.builds(lambda body, p: {**body, "params": p}, formats, params) | formats


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_the_server_answers_any_json_with_predictions_or_a_4xx(scoring_url: str, body) -> None:
    resp = requests.post(
        f"{scoring_url}/invocations", data=json.dumps(body),
        headers={"Content-Type": "application/json"}, timeout=30,
    )  # fmt: skip
    assert resp.status_code == 200 or 400 <= resp.status_code < 500, (resp.status_code, resp.text)
    if resp.status_code == 200:
        assert isinstance(resp.json()["predictions"], list)
    else:
        # Every refusal is a deliberate one that says what is wrong: MLflow answers any other
        # exception of the model with a 400 too, but as "an unexpected error".
        assert "unexpected error" not in resp.json()["message"], resp.json()
