"""A model scored against one retrained on grown data: the common test set leaves out what the
older model trained on, unknown users are folded in as served, unknown items count as misses."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from recflow.errors import UserError
from recflow.evaluation import retraining
from recflow.evaluation.accuracy import evaluate_model
from recflow.model.recommender import FMParams, Recommender
from tests.helpers import checkerboard_data, save_checkerboard_pyfunc


@pytest.fixture(scope="module")
def checkerboard_model(tmp_path_factory: pytest.TempPathFactory):
    """The checkerboard model as served (in process) and its training frame."""
    return save_checkerboard_pyfunc(tmp_path_factory.mktemp("retraining"))


def frame(pairs: list[tuple[object, object]]) -> pd.DataFrame:
    return pd.DataFrame(pairs, columns=["user_id", "item_id"])


def test_the_common_test_set_leaves_out_what_the_older_model_trained_on() -> None:
    seen = frame([(1, 10), (2, 20)])
    test = frame([(1, 11), (1, 12), (2, 21), (3, 30)])
    trained_on = frame([(1, 12), (2, 21), (2, 99)])  # two of the new test pairs
    common = retraining.common_test(seen, test, trained_on)
    assert common.n_left_out == 2
    assert common.test.values.tolist() == [[1, 11], [3, 30]]
    # What neither is scored on is still the user's: out of both models' rankings.
    assert sorted(map(tuple, common.seen.values.tolist())) == [(1, 10), (1, 12), (2, 20), (2, 21)]
    assert common.history.equals(seen)
    with pytest.raises(UserError, match="no interactions left"):
        retraining.common_test(seen, test, test)


def memorizer(train: pd.DataFrame, n_users: int, n_items: int, memory: float) -> Recommender:
    """A model whose score of (u, i) is ``memory`` if it trained on the pair, and a fixed item
    order otherwise: all it knows is what it was trained on."""
    seen = np.zeros((n_users, n_items), dtype=np.float32)
    seen[train.user_id, train.item_id] = memory
    order = -np.arange(n_items, dtype=np.float32) / n_items  # item 0 first
    return Recommender(
        FMParams(factors=n_items // 2 or 1), np.arange(n_users), np.arange(n_items),
        seen, np.eye(n_items, dtype=np.float32), order,
    )  # fmt: skip


def test_test_interactions_the_older_model_trained_on_are_excluded() -> None:
    """Leakage: the checkerboard's data split again at random, as grown data would be; the older
    model only remembers its training pairs. Scored on the new test set as it stands, the pairs
    it trained on that landed there would make it look good; left out, what it remembers buys it
    nothing: it scores as its fixed item order does."""
    train, held = checkerboard_data()
    everything = pd.concat([train, held], ignore_index=True)
    n_users, n_items = everything.user_id.max() + 1, everything.item_id.max() + 1
    rng = np.random.default_rng(0)
    label = rng.choice(3, size=len(everything), p=[0.7, 0.1, 0.2])  # the new split
    new_seen, new_test = everything[label < 2], everything[label == 2]
    old_train = everything[rng.random(len(everything)) < 0.8]  # what the champion trained on
    champion = memorizer(old_train, n_users, n_items, memory=1.0)
    order_only = memorizer(old_train, n_users, n_items, memory=0.0)

    leaky = evaluate_model(champion, new_seen, new_test, 10)["ndcg_at_10"]
    assert leaky > evaluate_model(order_only, new_seen, new_test, 10)["ndcg_at_10"] + 0.2

    common = retraining.common_test(new_seen, new_test, old_train)
    fair = retraining.score(champion, common, 10).metrics
    assert fair == retraining.score(order_only, common, 10).metrics
    assert fair["ndcg_at_10"] < leaky - 0.2
    assert common.n_left_out == len(new_test.merge(old_train)) > 0
    assert common.test.merge(old_train).empty


def test_the_holder_never_ranks_what_it_trained_on_as_served() -> None:
    """Regression: a sliding window drops old rows from the new data, and the holder, which
    trained on them, was ranked with them in: it spent its top-10 on items the served model
    filters out. As served, what it remembers of the dropped rows buys and costs it nothing."""
    train, held = checkerboard_data()
    everything = pd.concat([train, held], ignore_index=True)
    n_users, n_items = everything.user_id.max() + 1, everything.item_id.max() + 1
    rng = np.random.default_rng(1)
    dropped = rng.random(len(everything)) < 0.3  # the rows the window let go
    kept = everything[~dropped]
    label = rng.random(len(kept)) < 0.8
    new_seen, new_test = kept[label], kept[~label]
    old_train = everything[dropped]  # all it trained on is gone from the new data
    champion = memorizer(old_train, n_users, n_items, memory=1.0)
    order_only = memorizer(old_train, n_users, n_items, memory=0.0)
    common = retraining.common_test(new_seen, new_test, old_train)
    assert common.n_left_out == 0
    blind = retraining.score(champion, common, 10).metrics["ndcg_at_10"]
    served = retraining.score(champion, common, 10, trained_on=old_train).metrics
    assert served == retraining.score(order_only, common, 10, trained_on=old_train).metrics
    assert served["ndcg_at_10"] > blind + 0.1


def test_unknown_users_are_folded_in_as_the_served_model_folds_a_history(
    checkerboard_model,
) -> None:
    served, train = checkerboard_model
    model = served.model
    history = [0, 2, 4, 6]  # oldest first: an even-item user the model never saw
    asked = pd.DataFrame({"user_id": [999], "history": [history]})
    top = served.predict(None, asked, {"k": 3})["item_id"].tolist()
    seen = pd.concat(
        [train, pd.DataFrame({"user_id": 999, "item_id": history, "timestamp": range(4)})],
        ignore_index=True,
    )
    for rank, item in enumerate(top, start=1):
        common = retraining.common_test(seen, frame([(999, item)]), train)
        scored = retraining.score(model, common, 3)
        assert scored.folded_users == 1
        assert scored.metrics["mrr_at_3"] == pytest.approx(1 / rank)


def test_unknown_items_are_misses_and_overlap_counts_what_the_model_knows(
    checkerboard_model,
) -> None:
    served, train = checkerboard_model
    model = served.model
    # User 0's held-out even item, and an item (20) that appeared after the model was trained.
    _, held = checkerboard_data()
    known = held[held.user_id == 0]
    test = pd.concat([known, frame([(0, 20)])], ignore_index=True)
    common = retraining.common_test(train, test, train)
    alone = retraining.score(model, retraining.common_test(train, known, train), 20).metrics
    with_new = retraining.score(model, common, 20).metrics
    # One of two relevant items can ever be recommended: recall halves.
    assert with_new["recall_at_20"] == pytest.approx(alone["recall_at_20"] / 2)
    assert with_new["hit_rate_at_20"] == alone["hit_rate_at_20"] == 1.0
    assert retraining.overlap(model, test) == retraining.Overlap(1, 1, 2, 1)
    assert retraining.overlap(model, test).shares() == {"users": 1.0, "items": 0.5}


def test_string_ids_score_as_their_integer_originals(checkerboard_model) -> None:
    served, train = checkerboard_model
    _, held = checkerboard_data()
    newcomer = pd.DataFrame({"user_id": 999, "item_id": [0, 2, 4], "timestamp": range(3)})
    seen = pd.concat([train, newcomer], ignore_index=True)
    test = pd.concat([held, frame([(999, 8), (999, 20)])], ignore_index=True)

    def named(df: pd.DataFrame) -> pd.DataFrame:
        return df.assign(user_id="u" + df.user_id.astype(str), item_id="i" + df.item_id.astype(str))

    ints = retraining.score(served.model, retraining.common_test(seen, test, train), 10)
    common = retraining.common_test(named(seen), named(test), named(train))
    model = served.model
    renamed = Recommender(
        model.params, [f"u{u}" for u in model.user_ids], [f"i{i}" for i in model.item_ids],
        model.user_emb, model.item_emb, model.item_bias,
    )  # fmt: skip
    strings = retraining.score(renamed, common, 10)
    assert strings.folded_users == ints.folded_users == 1
    # The folded user's seed is a hash of "u999", not 999: the same ranking up to that draw.
    assert strings.metrics["hit_rate_at_10"] == pytest.approx(ints.metrics["hit_rate_at_10"])


def test_an_integer_model_scores_on_grown_data_whose_ids_became_text(checkerboard_model) -> None:
    """Regression: grown data that gained an item "X5" reads every item ID as text, and the
    merge of its test set with the integer IDs the holder trained on raised a pandas error."""
    served, train = checkerboard_model
    _, held = checkerboard_data()
    ints = retraining.score(served.model, retraining.common_test(train, held, train.iloc[:0]), 10)
    text = train.assign(item_id=train.item_id.astype(str))
    grown = pd.concat([text, frame([(0, "X5")])], ignore_index=True)
    as_text = held.assign(item_id=held.item_id.astype(str))
    common = retraining.common_test(grown, as_text, train)  # integers against text
    assert common.n_left_out == 0 and len(common.test) == len(held)
    scored = retraining.score(served.model, common, 10)
    assert scored.metrics == pytest.approx(ints.metrics)
    three = served.model.item_positions([3])[0]
    asked = np.array(["X5", "3", 3, "03", "3.0", " 3"], dtype=object)
    # Only an integer's text as the data reader writes it finds the integer: "03" is its own ID.
    assert served.model.item_positions(asked).tolist() == [-1, three, three, -1, -1, -1]
    leaked = retraining.common_test(grown, as_text, held.iloc[:5])  # integers it trained on
    assert leaked.n_left_out == 5 and len(leaked.test) == len(held) - 5
