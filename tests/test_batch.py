"""recflow.serving.batch's streamed writer: batches land in one file, and a failure leaves nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from recflow.serving import batch


def _parts(n: int, fail_after: int | None = None) -> Iterator[pd.DataFrame]:
    for i in range(n):
        if fail_after is not None and i == fail_after:
            raise RuntimeError("scoring failed mid-way")
        # The second batch has no titles at all: it must still take the first batch's schema.
        title = [f"t{i}"] if i != 1 else [None]
        yield pd.DataFrame({"user_id": [i], "rank": [1], "title": title, "score": [0.5]})


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_batches_are_written_in_order_into_one_file(tmp_path: Path, suffix: str) -> None:
    out = tmp_path / f"recs{suffix}"
    assert batch.write(_parts(3), out) == 3
    frame = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert frame["user_id"].tolist() == [0, 1, 2]
    assert list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_failure_mid_stream_leaves_no_output_and_no_staged_file(
    tmp_path: Path, suffix: str
) -> None:
    out = tmp_path / f"recs{suffix}"
    with pytest.raises(RuntimeError):
        batch.write(_parts(3, fail_after=2), out)
    assert list(tmp_path.iterdir()) == []


def test_no_users_gives_an_empty_file_with_the_served_columns(tmp_path: Path) -> None:
    out = tmp_path / "recs.parquet"
    assert batch.write(iter([]), out) == 0
    assert list(pd.read_parquet(out).columns) == batch.OUTPUT_COLS
