"""Models of string IDs (SKUs, UUIDs, ``cust-...``) end to end: training, save and load, the
served pyfunc in every scoring format, histories, similar items and batch scoring.

The string model is the checkerboard model (``tests.helpers.save_checkerboard_pyfunc``, even users
like even items) with its IDs renamed and the same embeddings, so it must give the integer model's
answers under the new names. Two of its user IDs look like integers ("42" and "0042") and one item
ID ("3"): a string model looks an ID up by its text, so 42 is "42" and never "0042".
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server

from recflow import constants as C
from recflow.model import foldin
from recflow.model.recommender import FMParams, Recommender
from recflow.serving import batch, bundle, packaging, parsing, pyfunc
from recflow.testing.models import save_pyfunc
from tests.helpers import checkerboard_data, ok, save_checkerboard_pyfunc

USERS = np.array([f"cust-{u:02d}-3f2a-4b1c-9d7e" for u in range(20)], dtype=object)
USERS[4], USERS[6] = "42", "0042"
USERS = USERS.astype(str)
ITEMS = np.array([f"SKU-{i:05d}" for i in range(20)], dtype=object)
ITEMS[3] = "3"
ITEMS = ITEMS.astype(str)
# Unknown to the model: the integer answers' IDs and their string counterparts.
UNKNOWN_USERS, UNKNOWN_ITEMS = {999: "nobody"}, {12345: "SKU-12345"}


def renamed(frame: pd.DataFrame) -> pd.DataFrame:
    """An integer model's answer with the string model's IDs."""
    users = dict(enumerate(USERS)) | UNKNOWN_USERS
    items = dict(enumerate(ITEMS)) | UNKNOWN_ITEMS
    names = {"user_id": users, "item_id": items, "similar_to": items}
    return frame.assign(**{c: frame[c].map(m).astype(str) for c, m in names.items() if c in frame})


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """The integer checkerboard model and its string twin, each direct and loaded by MLflow."""
    tmp_path = tmp_path_factory.mktemp("string_ids")
    int_direct, train = save_checkerboard_pyfunc(tmp_path / "int")
    m = int_direct.model
    model = Recommender(
        m.params, USERS[m.user_ids], ITEMS[m.item_ids], m.user_emb, m.item_emb, m.item_bias
    )
    # Item "3" given as the integer 3, as an items file read with integer-looking IDs would.
    ids = np.array(ITEMS, dtype=object)
    ids[3] = 3
    items = pd.DataFrame({"item_id": ids, "title": [f"T{i}" for i in range(20)], "genres": "G"})
    seen = train.assign(user_id=USERS[train.user_id], item_id=ITEMS[train.item_id])
    path = save_pyfunc(model, items, seen, tmp_path / "str", "pyfunc")
    return SimpleNamespace(
        int_direct=int_direct, int_loaded=mlflow.pyfunc.load_model(str(tmp_path / "int/pyfunc")),
        direct=pyfunc.RecommenderModel.from_bundle(path.parent / "bundle"),
        loaded=mlflow.pyfunc.load_model(str(path)), train=train, seen=seen,
    )  # fmt: skip


def test_training_on_string_ids_equals_training_on_integers(tmp_path: Path) -> None:
    train, _ = checkerboard_data()
    # Names that sort as the integers do: rankfm orders users and items by ID, so the same seed
    # gives the same weights in the same rows.
    users = np.array([f"u{u:02d}" for u in range(20)])
    items = np.array([f"i{i:02d}" for i in range(20)])
    named = train.assign(user_id=users[train.user_id], item_id=items[train.item_id])
    params = FMParams(factors=4, loss="bpr", epochs=2, learning_rate=0.05)
    ints = Recommender.fit(train, params, seed=1)
    strings = Recommender.fit(named, params, seed=1)
    assert strings.user_ids.tolist() == users.tolist() and strings.item_ids.dtype.kind == "U"
    np.testing.assert_array_equal(strings.user_emb, ints.user_emb)
    np.testing.assert_array_equal(strings.item_emb, ints.item_emb)

    strings.save(tmp_path / "model")
    loaded = Recommender.load(tmp_path / "model")  # np.load without pickle: unicode, not object
    assert loaded.user_ids.tolist() == users.tolist() and loaded.item_ids.dtype.kind == "U"
    np.testing.assert_array_equal(loaded.user_emb, strings.user_emb)
    mean = Recommender.average([strings, Recommender.fit(named, params, seed=2)])
    assert mean.user_ids.tolist() == users.tolist()
    with pytest.raises(ValueError, match="same users and items"):
        Recommender.average([strings, ints])


def test_positions_look_string_ids_up_by_their_text(saved) -> None:
    model = saved.direct.model
    asked = np.array(["42", 42, "0042", np.str_("42"), "nobody", 4], dtype=object)
    assert model.user_positions(asked).tolist() == [4, 4, 6, 4, -1, -1]
    assert model.item_positions([3, "3", "SKU-00002", "SKU-2"]).tolist() == [3, 3, 2, -1]
    # An integer model: the text of an integer finds it, as before string IDs.
    assert saved.int_direct.model.user_positions(np.array(["4", 4])).tolist() == [4, 4]


def test_an_integer_model_finds_an_integers_text_exactly() -> None:
    """Regression: text mixed with non-integers went through floats, so an ID past 2**53 found
    its neighbour, and "007" found 7 (the data reader keeps "007" a text ID of its own)."""
    big = 2**53
    model = Recommender(
        FMParams(factors=1), np.array([big, big + 1, 7]), np.array([1]),
        np.zeros((3, 2), np.float32), np.zeros((1, 2), np.float32), np.zeros(1, np.float32),
    )  # fmt: skip
    assert model.user_positions([str(big + 1), "X5", "007", "7", "7.0"]).tolist() == [
        1, -1, -1, 2, -1,
    ]  # fmt: skip
    assert model.user_positions(np.array(["X5", big + 1], dtype=object)).tolist() == [-1, 1]
    assert model.user_positions([str(2**64), str(-(2**63) - 1)]).tolist() == [-1, -1]


def test_answers_are_the_integer_models_renamed(saved) -> None:
    ints = pd.DataFrame({"user_id": [1, 4, 6, 999]})
    strings = pd.DataFrame({"user_id": [USERS[1], "42", "0042", "nobody"]})
    for params in ({"k": 4}, {"k": 12, "filter_seen": False}):
        expected = renamed(saved.int_loaded.predict(ints, params=params))
        got = saved.loaded.predict(strings, params=params)
        pd.testing.assert_frame_equal(got, expected, check_dtype=False)
        assert {type(v) for v in [*got.user_id, *got.item_id]} == {str}
    assert saved.direct.titles[3] == "T3"  # item "3", given to the bundle as 3, has its title

    ints = pd.DataFrame({"item_id": [2, 3, 12345]})
    strings = pd.DataFrame({"item_id": [ITEMS[2], "3", "SKU-12345"]})
    expected = renamed(saved.int_loaded.predict(ints, params={"k": 5}))
    got = saved.loaded.predict(strings, params={"k": 5})
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)


def test_a_blend_with_ease_answers_as_the_integer_models_renamed(saved) -> None:
    # The blend works on positions: the same EASE weights give the same answers by either name.
    weights = np.random.default_rng(3).standard_normal((20, 20)).astype(np.float32)
    np.fill_diagonal(weights, 0)
    blended = []
    for python_model in (saved.int_direct, saved.direct):
        m = python_model
        items = pd.DataFrame({"item_id": m.model.item_ids, "title": m.titles, "genres": m.genres})
        arrays = (m.model, items, m.seen_indptr, m.seen_indices, m.popularity)
        blended.append(pyfunc.RecommenderModel.from_arrays(*arrays, (weights, 0.5)))
    ints, strings = blended
    asked = {"user_id": [1, 4, 999]}, {"user_id": [USERS[1], "42", "nobody"]}
    expected = renamed(ints.predict(None, pd.DataFrame(asked[0]), {"k": 4}))
    got = strings.predict(None, pd.DataFrame(asked[1]), {"k": 4})
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    alone = saved.direct.predict(None, pd.DataFrame(asked[1]), {"k": 4})
    assert not np.allclose(got.score[:8], alone.score[:8])  # blended indeed


def invocations(model, body: dict) -> pd.DataFrame:
    """``body`` through MLflow's scoring server, in process: its JSON parsing and casting to the
    signature's types, then ``predict`` (what `mlflow models serve` does, less the HTTP)."""
    schema = model.metadata.get_input_schema()
    resp = scoring_server.invocations(json.dumps(body), "application/json", model, schema)
    assert resp.status == 200, resp.response
    return pd.DataFrame(json.loads(resp.response)["predictions"])


def same_answer(model, bodies: list[dict]) -> pd.DataFrame:
    answers = [invocations(model, body) for body in bodies]
    for answer in answers[1:]:
        pd.testing.assert_frame_equal(answer, answers[0])
    return answers[0]


def test_every_scoring_format_asks_by_string_id_and_42_is_42(saved) -> None:
    # 42 as a JSON number is the user "42" (not "0042"): the server casts it to the signature's
    # string type before the model sees it.
    asked = [USERS[1], 42, "0042", "nobody"]
    bodies = [
        {"dataframe_split": {"columns": ["user_id"], "data": [[u] for u in asked]}},
        {"dataframe_records": [{"user_id": u} for u in asked]},
        {"inputs": {"user_id": asked}},
        {"instances": [{"user_id": u} for u in asked]},
    ]
    out = same_answer(saved.loaded, [b | {"params": {"k": 3}} for b in bodies])
    expected = renamed(
        saved.int_direct.predict(None, pd.DataFrame({"user_id": [1, 4, 6, 999]}), {"k": 3})
    )
    assert out.user_id.tolist() == expected.user_id.tolist()
    assert out.item_id.tolist() == expected.item_id.tolist()
    assert out.score.to_numpy() == pytest.approx(expected.score.to_numpy())

    history = [ITEMS[0], ITEMS[2], "SKU-99999"]  # the last one is unknown
    out = same_answer(saved.loaded, [
        {"dataframe_records": [{"user_id": "new-user", "history": history}, {"user_id": "42"}]},
        {"dataframe_split": {"columns": ["user_id", "history"],
                             "data": [["new-user", history], ["42", []]]}},
        {"inputs": {"user_id": ["new-user", "42"], "history": [history, []]}},
    ])  # fmt: skip
    assert out.groupby("user_id").source.first().to_dict() == {"new-user": "history", "42": "model"}
    assert out.groupby("user_id").history_ignored.first().to_dict() == {"new-user": 1, "42": 0}

    out = same_answer(saved.loaded, [
        {"dataframe_records": [{"item_id": 3}, {"item_id": ITEMS[2]}]},
        {"inputs": {"item_id": ["3", ITEMS[2]]}},
        {"instances": [{"item_id": "3"}, {"item_id": ITEMS[2]}]},
    ])  # fmt: skip
    assert out.similar_to.unique().tolist() == ["3", ITEMS[2]] and set(out.source) == {"similar"}
    # An integer model asked for "4" answers for 4, as before string IDs: the server casts too.
    out = same_answer(saved.int_loaded, [
        {"dataframe_records": [{"user_id": "4"}]}, {"inputs": {"user_id": ["4"]}},
    ])  # fmt: skip
    assert out.user_id.tolist() == [4] * 10 and set(out.source) == {"model"}


def parity(items: pd.Series) -> set[int]:
    position = {name: i for i, name in enumerate(ITEMS)}
    return {position[i] % 2 for i in items}


def test_histories_of_string_item_ids_fold_in(saved) -> None:
    rows = [
        {"user_id": "new-user", "history": [ITEMS[0], ITEMS[2], ITEMS[4], "SKU-99999"]},
        # Integers in a string model's history are looked up by their text: 3 is item "3".
        {"user_id": "other", "history": [3, ITEMS[1], ITEMS[5]]},
    ]
    out = saved.direct.predict(None, pd.DataFrame.from_records(rows), {"k": 5})
    assert set(out.source) == {"history"}
    new, other = out[out.user_id == "new-user"], out[out.user_id == "other"]
    assert parity(new.item_id) == {0} and parity(other.item_id) == {1}
    assert not set(new.item_id) & set(rows[0]["history"]) and "3" not in set(other.item_id)
    assert new.history_ignored.tolist() == [1] * 5 and other.history_ignored.tolist() == [0] * 5
    # Seeded by the ID's text, not Python's per-process hash: the same answer every time.
    again = saved.loaded.predict(pd.DataFrame.from_records(rows[:1]), params={"k": 5})
    pd.testing.assert_frame_equal(again, new.reset_index(drop=True), check_dtype=False)
    assert foldin.seed_of("new-user") == 988472164391366399 and foldin.seed_of(7) == 7


def test_signature_declares_the_models_id_kind(saved, tmp_path: Path) -> None:
    def types(model) -> dict[str, str]:
        # The type of each ID column, in the inputs and in the outputs.
        signature = model.metadata.signature
        return {
            f"{side}.{spec.name}": spec.type.name
            for side, schema in (("in", signature.inputs), ("out", signature.outputs))
            for spec in schema.inputs
            if spec.name in ("user_id", "item_id", "similar_to")
        }

    columns = ("in.user_id", "in.item_id", "out.user_id", "out.item_id", "out.similar_to")
    assert types(saved.int_loaded) == dict.fromkeys(columns, "long")
    assert types(saved.loaded) == dict.fromkeys(columns, "string")
    # Users and items each have their own kind.
    m = saved.int_direct.model
    mixed = Recommender(
        m.params, m.user_ids, ITEMS[m.item_ids], m.user_emb, m.item_emb, m.item_bias
    )
    seen = saved.train.assign(item_id=ITEMS[saved.train.item_id])
    items = pd.DataFrame({"item_id": ITEMS, "title": "T", "genres": "G"})
    path = save_pyfunc(mixed, items, seen, tmp_path, "pyfunc")
    loaded = mlflow.pyfunc.load_model(str(path))
    assert types(loaded) == {
        "in.user_id": "long", "out.user_id": "long",
        "in.item_id": "string", "out.item_id": "string", "out.similar_to": "string",
    }  # fmt: skip
    asked = pd.DataFrame({"user_id": [0]})
    out, ints = (m.predict(asked, params={"k": 2}) for m in (loaded, saved.int_loaded))
    assert out.user_id.tolist() == [0, 0] and out.item_id.tolist() == ITEMS[ints.item_id].tolist()


def test_in_process_pyfunc_takes_the_declared_kind_and_bad_ids_say_so(saved) -> None:
    # MLflow's own check, before our code: a string model's pyfunc takes a column of strings.
    with pytest.raises(MlflowException, match="Incompatible input types for column user_id"):
        saved.loaded.predict(pd.DataFrame({"user_id": [42]}))
    # Our parser (what the direct model and batch scoring call) looks 42 up as "42".
    out = saved.direct.predict(None, pd.DataFrame({"user_id": [42]}), {"k": 1})
    assert out.user_id.tolist() == ["42"] and out.source.tolist() == ["model"]
    bad = [
        ({"user_id": [None]}, "'user_id' values must be IDs (strings or integers)"),
        ({"user_id": [1.5]}, "'user_id' values must be IDs (strings or integers)"),
        ({"item_id": [[1]]}, "'item_id' values must be IDs (strings or integers)"),
        ({"user_id": ["a"], "history": [[ITEMS[0], None]]}, "must hold item IDs (strings or"),
        ({"user_id": ["a"], "history": [[True]]}, "must hold item IDs (strings or integers)"),
    ]
    for columns, message in bad:
        with pytest.raises(parsing.BadRequest, match=re.escape(message)):
            saved.direct.predict(None, pd.DataFrame(columns), {})


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_batch_scoring_reads_and_writes_string_ids(saved, tmp_path: Path, suffix: str) -> None:
    users = tmp_path / f"users{suffix}"
    if suffix == ".csv":  # as written: 0042 stays "0042", not 42
        users.write_text(
            'user_id,history\n0042,\n42,""\nnew-user,"[""SKU-00000"", ""SKU-00002"", 3]"\n'
        )
    else:
        frame = pd.DataFrame({"user_id": ["0042", "42", "new-user"],
                              "history": [[], [], [ITEMS[0], ITEMS[2], "3"]]})  # fmt: skip
        frame.to_parquet(users)
    wanted = batch.users_frame(str(users), saved.loaded)
    out_path = tmp_path / f"recs{suffix}"
    assert batch.write(batch.recommend(saved.loaded, wanted, 3), out_path) == 9
    out = pd.read_csv(out_path, dtype=str) if suffix == ".csv" else pd.read_parquet(out_path)
    assert out.groupby("user_id").source.first().to_dict() == {
        "0042": "model", "42": "model", "new-user": "history",
    }  # fmt: skip
    expected = renamed(saved.int_direct.predict(None, pd.DataFrame({"user_id": [6, 4]}), {"k": 3}))
    assert out.item_id.tolist()[:6] == expected.item_id.tolist()
    assert parity(out.item_id[out.user_id == "new-user"]) == {0}


def test_batch_scoring_of_string_ids_from_integers_and_all(saved, tmp_path: Path) -> None:
    users = tmp_path / "users.parquet"
    pd.DataFrame({"user_id": [42, 42]}).to_parquet(users)  # integers: looked up by their text
    assert batch.users_frame(str(users), saved.loaded).user_id.tolist() == ["42"]
    pd.DataFrame({"user_id": ["a", None]}).to_parquet(users)
    with pytest.raises(Exception, match=r"'user_id' must hold IDs \(strings or integers\) only"):
        batch.users_frame(str(users), saved.loaded)
    everyone = batch.users_frame("all", saved.loaded)
    assert sorted(everyone.user_id) == sorted(USERS)
    out = pd.concat(list(batch.recommend(saved.loaded, everyone, 2)))
    assert set(out.user_id) == set(USERS) and set(out.source) == {"model"}


def test_a_logged_string_model_keeps_its_input_example(saved, store, tmp_path: Path) -> None:
    folder = tmp_path
    model = saved.direct.model
    items = pd.DataFrame({"item_id": ITEMS, "title": "T", "genres": "G"})
    bundle.write_bundle(folder / "bundle", model, items, saved.seen)
    with mlflow.start_run():
        info = packaging.log_model(folder / "bundle", example_users=USERS[:2].tolist())
    example = mlflow.models.Model.load(info.model_uri).load_input_example(
        mlflow.artifacts.download_artifacts(info.model_uri)
    )
    assert example.user_id.tolist() == USERS[:2].tolist()
    out = mlflow.pyfunc.load_model(info.model_uri).predict(example, params={"k": 1})
    assert out.user_id.tolist() == USERS[:2].tolist()


def test_the_pipeline_trains_and_serves_the_string_ids_of_a_file(tracking: str, tmp_path: Path):
    # Two taste groups of customers over SKUs, as a CSV of one's own: download, preprocess, one
    # trial and train_best, then the logged model and the recommend step answer by those IDs.
    rng = np.random.default_rng(0)
    users = [f"cust-{u:03d}-{rng.integers(16**6):06x}" for u in range(40)]
    rows = [
        (user, f"SKU-{i:05d}", int(rng.integers(1, 6)))
        for u, user in enumerate(users)
        for i in rng.choice(np.arange(15) + 15 * (u % 2), size=12, replace=False)
    ]
    data = tmp_path / "events.csv"
    pd.DataFrame(rows, columns=["user_id", "item_id", "rating"]).to_csv(data, index=False)
    raw = ok("download", ["--dataset", "interactions", "--data_url", str(data)])
    prep = ok("preprocess", ["--raw_run_id", raw])
    tuned = ok("hpo", ["--preprocess_run_id", prep, "--n_trials", "1", "--pruner", "none"])
    train = ok(
        "train_best", ["--preprocess_run_id", prep, "--hpo_run_id", tuned, "--ensemble", "1"]
    )
    uri = mlflow.get_run(train).data.tags[C.TAG_MODEL_URI]
    model = mlflow.pyfunc.load_model(uri)
    assert model.metadata.get_input_schema().input_dict()["user_id"].type.name == "string"

    out = invocations(model, {"inputs": {"user_id": [users[0], "nobody"]}, "params": {"k": 3}})
    assert out.user_id.tolist() == [users[0]] * 3 + ["nobody"] * 3
    assert out.source.tolist() == ["model"] * 3 + ["popular"] * 3
    assert out.item_id.str.startswith("SKU-").all()
    history = {"user_id": ["new"], "history": [["SKU-00001", "SKU-00003", "SKU-00099"]]}
    out = invocations(model, {"inputs": history})
    assert set(out.source) == {"history"} and set(out.history_ignored) == {1}
    out = invocations(model, {"dataframe_records": [{"item_id": "SKU-00001"}]})
    assert set(out.source) == {"similar"} and "SKU-00001" not in set(out.item_id)

    wanted = tmp_path / "users.csv"
    pd.DataFrame({"user_id": users[:2]}).to_csv(wanted, index=False)
    recs = tmp_path / "recs.parquet"
    ok("recommend", ["--model_uri", uri, "--users", str(wanted), "--k", "2", "--output", str(recs)])
    assert pd.read_parquet(recs).user_id.tolist() == [users[0]] * 2 + [users[1]] * 2
