"""An interactions file of one's own through real `mlflow run . -e main`, then again grown.

The file is a shop's, not MovieLens: ``cust-<uuid>`` customers buy ``SKU-00042`` products, listed
with a title and a category in a second file. Customers come in taste groups, each buying mostly
from its own categories; the groups are the same size and buy alike within them, so every
product sells about as often as any other and popularity has nothing to go on, while a model of
who buys what with whom does. The first ``main`` must find that (beat popularity on its test
set) and register a model that answers by those IDs, with those titles, for a known customer, a
newcomer's basket and a product. The same file grown by a tenth (new customers, new products)
runs ``main`` again in the same store: the retrained model is compared with the champion on the
test interactions neither trained on, and the alias follows the logged comparison.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from recflow import constants as C
from recflow.testing.runs import Store, mlflow_run, runs_by_step, step_states, store
from recflow.tracking.contracts import load_prepared
from recflow.tracking.promotion import COMMON_TEST_SET
from tests.helpers import Spawned, copy_tracking_folder

MODEL = "shop-recs"
ALIAS = "champion"  # register's default
GROUPS = 4  # taste groups of customers, alike in size
CATEGORIES = ["shoes", "hats", "bags", "socks", "scarves", "belts", "gloves", "watches"]
PER_CATEGORY = 12  # products per category in the first file
CUSTOMERS = 160
BASKET = 16  # purchases per customer, ...
OWN_SHARE = 0.875  # ... this share of them from the group's own categories
NEW_CUSTOMERS = 10  # the grown file's newcomers (with old customers buying the new products)
# The smallest budget that still tunes. One model, not train_best's ensemble of five at this size
# (not what these tests are about): 14 s instead of 22 s per train_best on 2 busy cores.
BUDGET = ["n_trials=2", "ensemble=1"]
COLUMNS = ["user_col=customer_id", "item_col=sku", "rating_col=quantity", "time_col=bought_at"]
# A `main` of this file took 55 s on 2 cores at load 9; the deadline allows a much slower day.
DEADLINE = 600


def group_categories(group: int) -> list[str]:
    """The categories a taste group buys from: two of its own."""
    return CATEGORIES[2 * group : 2 * group + 2]


@dataclass(frozen=True)
class Shop:
    """The interactions and the catalogue, as written to the files."""

    purchases: pd.DataFrame  # customer_id, sku, quantity, bought_at
    products: pd.DataFrame  # sku, title, category
    group_of: dict[str, int]  # customer -> taste group

    def write(self, folder: Path) -> list[str]:
        """Write both files to the same paths each time; main's parameters naming them."""
        self.purchases.to_csv(folder / "purchases.csv", index=False)
        self.products.to_csv(folder / "products.csv", index=False)
        return [f"data_url={folder / 'purchases.csv'}", f"items_url={folder / 'products.csv'}"]

    def in_group(self, skus: pd.Series, group: int) -> int:
        """How many of ``skus`` are in ``group``'s categories."""
        category = self.products.set_index("sku").category
        return int(skus.map(category).isin(group_categories(group)).sum())


def catalogue(per_category: int) -> pd.DataFrame:
    rows = [
        (f"SKU-{c * 100 + i:05d}", f"{name.title()} no. {i + 1}", name)
        for c, name in enumerate(CATEGORIES)
        for i in range(per_category)
    ]
    return pd.DataFrame(rows, columns=["sku", "title", "category"])


def customer_ids(rng: np.random.Generator, n: int) -> list[str]:
    return [f"cust-{uuid.UUID(bytes=rng.bytes(16), version=4)}" for _ in range(n)]


def baskets(
    rng: np.random.Generator, customers: list[str], groups: list[int], products: pd.DataFrame,
    month: int,
) -> list[tuple[str, str, int, str]]:  # fmt: skip
    """BASKET distinct purchases per customer, OWN_SHARE of them in their group's categories."""
    rows = []
    n_own = round(BASKET * OWN_SHARE)
    for customer, group in zip(customers, groups, strict=True):
        own = products.category.isin(group_categories(group)).to_numpy()
        picks = np.concatenate([
            rng.choice(products.sku[own].to_numpy(), n_own, replace=False),
            rng.choice(products.sku[~own].to_numpy(), BASKET - n_own, replace=False),
        ])  # fmt: skip
        day = rng.integers(1, 29)
        for hour, sku in enumerate(rng.permutation(picks)):
            when = f"2024-{month:02d}-{day:02d}T{hour:02d}:00:00Z"
            rows.append((customer, str(sku), int(rng.integers(1, 4)), when))
    return rows


def shop(seed: int = 7) -> tuple[Shop, Shop]:
    """The shop's first file and the same file grown by a tenth, rows appended: newcomers, and
    old customers buying once more, from new products among others (one per category)."""
    rng = np.random.default_rng(seed)
    products = catalogue(PER_CATEGORY)
    customers = customer_ids(rng, CUSTOMERS)
    groups = [k % GROUPS for k in range(CUSTOMERS)]
    first = baskets(rng, customers, groups, products, month=1)

    more = catalogue(PER_CATEGORY + 1)
    new = more[~more.sku.isin(products.sku)]
    newcomers = customer_ids(rng, NEW_CUSTOMERS)
    new_groups = [k % GROUPS for k in range(NEW_CUSTOMERS)]
    grown = baskets(rng, newcomers, new_groups, more, month=2)
    for k in rng.choice(CUSTOMERS, len(first) // 10 - len(grown), replace=False):
        own_new = new.sku[new.category.isin(group_categories(groups[k]))].to_numpy()
        grown.append((customers[k], str(rng.choice(own_new)), 1, "2024-03-01T12:00:00Z"))

    cols = ["customer_id", "sku", "quantity", "bought_at"]
    group_of = dict(zip(customers + newcomers, groups + new_groups, strict=True))
    return (
        Shop(pd.DataFrame(first, columns=cols), products, group_of),
        Shop(pd.DataFrame(first + grown, columns=cols), more, group_of),
    )


@dataclass(frozen=True)
class Main:
    """One `mlflow run -e main` in the store: its output, wall time, and runs."""

    output: str
    seconds: float
    states: dict[str, str]  # step -> ran | reused
    runs: dict[str, mlflow.entities.Run]  # step (and "main") -> the store's latest run of it


def run_main(where: Store, data: Shop, log: str) -> Main:
    """`mlflow run <project> -e main` on ``data``'s files, as a user runs it, with a deadline."""
    params = ["dataset=interactions", *data.write(where.folder), *COLUMNS, *BUDGET,
              f"model_name={MODEL}"]  # fmt: skip
    start = time.perf_counter()
    proc = Spawned(mlflow_run("main", params), where.folder / log, env=where.env, cwd=where.folder)
    try:
        output = proc.finish(timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        proc.kill_tree()
        pytest.fail(f"main did not finish in {DEADLINE} s:\n{proc.output()[-4000:]}")
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, output[-4000:]
    print(f"{log}: {seconds:.1f} s")
    return Main(output, seconds, step_states(output), runs_by_step(where.uri))


@dataclass(frozen=True)
class ShopStore:
    where: Store
    first: Shop
    grown: Shop
    main: Main  # the first main's


@pytest.fixture(scope="module")
def shop_store(store_templates, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopStore]:
    """A fresh store (a copy of the empty template: no migrations to wait for) after `main` on
    the shop's first file; MLflow in this process points there until the module ends."""
    template, _ = store_templates.get("empty")
    folder = tmp_path_factory.mktemp("own-data-e2e")
    copy_tracking_folder(template, folder)
    where = store(folder)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(where.uri)
    try:
        first, grown = shop()
        yield ShopStore(where, first, grown, run_main(where, first, "main-first.log"))
    finally:
        mlflow.set_tracking_uri(previous)
        store_templates.check_untouched("empty")


@pytest.fixture(scope="module")
def second_main(shop_store: ShopStore) -> Main:
    """`main` again in the same store, on the file grown by a tenth at the same path."""
    return run_main(shop_store.where, shop_store.grown, "main-grown.log")


def check_answers(out: pd.DataFrame, data: Shop, source: str, group: int) -> None:
    """Ten answers from the source named, string SKUs of the catalogue with its titles, nearly
    all from ``group``'s categories (a quarter of the catalogue: chance gives 2 or 3 in 10)."""
    assert len(out) == 10 and set(out.source) == {source}, out
    assert all(isinstance(sku, str) for sku in out.item_id), out.item_id.tolist()
    titles = data.products.set_index("sku").title
    assert out.title.tolist() == titles[out.item_id].tolist()
    assert data.in_group(out.item_id, group) >= 8, out


@pytest.mark.slow
def test_main_learns_a_shop_file_of_string_ids_and_serves_them(shop_store: ShopStore) -> None:
    data, main = shop_store.first, shop_store.main
    assert main.runs["main"].info.status == "FINISHED"
    assert main.states == dict.fromkeys(C.STEPS, "ran"), main.output[-3000:]
    metrics = main.runs["train_best"].data.metrics
    print({k: round(metrics[k], 4) for k in ("test_ndcg_at_10", "popularity_ndcg_at_10")})
    # Every product sells about as often as any other: only who buys with whom tells them apart.
    assert metrics["test_ndcg_at_10"] > metrics["popularity_ndcg_at_10"]

    client = MlflowClient(shop_store.where.uri)
    version = main.runs["register"].data.tags[C.TAG_MODEL_VERSION]
    assert str(client.get_model_version_by_alias(MODEL, ALIAS).version) == version == "1"
    model = mlflow.pyfunc.load_model(f"models:/{MODEL}@{ALIAS}")

    customer = data.purchases.customer_id.iloc[0]
    out = model.predict(pd.DataFrame({"user_id": [customer]}), params={"k": 10})
    assert out.user_id.tolist() == [customer] * 10
    check_answers(out, data, "model", data.group_of[customer])
    with tempfile.TemporaryDirectory() as tmp:
        seen = load_prepared(main.runs["preprocess"].info.run_id, Path(tmp)).seen()
    assert not set(out.item_id) & set(seen.item_id[seen.user_id == customer])  # filter_seen

    # A newcomer's basket: products of one group (2: scarves and belts), oldest first.
    basket = ["SKU-00403", "SKU-00407", "SKU-00501", "SKU-00409", "SKU-00510"]
    newcomer = customer_ids(np.random.default_rng(99), 1)[0]
    asked = pd.DataFrame({"user_id": [newcomer], "history": [basket]})
    out = model.predict(asked, params={"k": 10})
    assert out.user_id.tolist() == [newcomer] * 10 and not set(out.item_id) & set(basket)
    assert out.history_ignored.tolist() == [0] * 10
    check_answers(out, data, "history", 2)

    out = model.predict(pd.DataFrame({"item_id": ["SKU-00305"]}), params={"k": 10})  # socks
    assert out.similar_to.tolist() == ["SKU-00305"] * 10 and "SKU-00305" not in set(out.item_id)
    check_answers(out, data, "similar", 1)


@pytest.mark.slow
def test_main_on_the_grown_file_compares_with_the_champion_on_what_neither_trained_on(
    shop_store: ShopStore, second_main: Main
) -> None:
    first, second = shop_store.main, second_main
    assert second.runs["main"].info.status == "FINISHED", second.output[-3000:]
    # The file changed at the same path: everything ran again, none of it reused.
    assert second.states == dict.fromkeys(C.STEPS, "ran"), second.output[-3000:]
    register = second.runs["register"]
    assert register.info.run_id != first.runs["register"].info.run_id
    assert register.data.params["comparison.rule"] == COMMON_TEST_SET
    assert register.data.params["comparison.holder_version"] == "1"
    m = register.data.metrics
    candidate, holder = m["candidate_test_ndcg_at_10"], m[f"{ALIAS}_test_ndcg_at_10"]
    print(f"candidate {candidate:.4f}, @{ALIAS} {holder:.4f}; left out "
          f"{m['left_out_interactions']:.0f}, common {m['common_test_interactions']:.0f}")  # fmt: skip

    # Left out: exactly the new test interactions the champion trained on (the first
    # preprocess run's train+valid), counted here from the two runs' prepared data.
    with tempfile.TemporaryDirectory() as tmp:
        new = load_prepared(second.runs["preprocess"].info.run_id, Path(tmp) / "new")
        old = load_prepared(first.runs["preprocess"].info.run_id, Path(tmp) / "old")
    pairs = [C.USER_COL, C.ITEM_COL]
    trained_on = len(new.test[pairs].merge(old.seen()[pairs]))
    assert m["left_out_interactions"] == trained_on > 0
    assert m["common_test_interactions"] == len(new.test) - trained_on > 0
    assert m["test_interactions"] == len(new.test)
    # Newcomers and new products are in the new test set: the champion knows some of it only,
    # and folds the newcomers in from their history.
    new_users = set(new.test[C.USER_COL]) - set(old.seen()[C.USER_COL])
    new_items = set(new.test[C.ITEM_COL]) - set(old.seen()[C.ITEM_COL])
    assert new_users and new_items and all(isinstance(u, str) for u in new_users)
    assert 0 < m[f"{ALIAS}_user_overlap"] < 1 and 0 < m[f"{ALIAS}_item_overlap"] < 1
    assert m[f"{ALIAS}_folded_users"] >= 1

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow.artifacts.download_artifacts(
            run_id=register.info.run_id, artifact_path=C.COMPARISON_FILE, dst_path=tmp
        )
        comparison = json.loads(Path(path).read_text())
    assert comparison["rule"] == COMMON_TEST_SET
    assert comparison["candidate"]["test_ndcg_at_10"] == pytest.approx(candidate)
    assert comparison["holder"] == {"alias": ALIAS, "version": "1",
                                    "test_ndcg_at_10": pytest.approx(holder)}  # fmt: skip
    for key in ("left_out_interactions", "common_test_interactions", "test_interactions"):
        assert comparison[key] == m[key]

    # The decision follows the two scores (min_improvement 0), once the retrained model beats
    # popularity on its own test set.
    trained = second.runs["train_best"].data.metrics
    assert trained["test_ndcg_at_10"] > trained["popularity_ndcg_at_10"]
    promoted = register.data.tags[C.TAG_PROMOTED] == "true"
    assert promoted == (candidate > holder), register.data.tags[C.TAG_PROMOTION_REASON]
    assert second.runs["main"].data.tags[C.TAG_PROMOTED] == register.data.tags[C.TAG_PROMOTED]
    client = MlflowClient(shop_store.where.uri)
    assert register.data.tags[C.TAG_MODEL_VERSION] == "2"
    assert str(client.get_model_version_by_alias(MODEL, ALIAS).version) == (
        "2" if promoted else "1"
    )
    if not promoted:
        assert str(client.get_model_version_by_alias(MODEL, C.CHALLENGER_ALIAS).version) == "2"
