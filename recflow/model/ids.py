"""User and item IDs of any kind: integers, or strings (SKUs, UUIDs, ``cust-3f2a...``).

In: the IDs of the training data (or of a saved model, or asked about). Out: the array a model
keeps (``id_array``: int64 when every ID is an integer, else NumPy unicode strings, which save to
``.npy`` without pickling) and the row of each ID asked about (``IdIndex``).

IDs keep the kind the data gave them: a model trained on integers answers with integers, one
trained on strings with strings. A string model looks any ID up by its text (42 is looked up as
"42", not "0042"); an integer model looks IDs up as integers (the text "42" finds 42, and text
that is no integer as the data reader writes one, such as "X5" or "0042", finds nothing).
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd


def id_array(values: object) -> np.ndarray:
    """``values`` as a model keeps IDs: int64 if all are integers (floats: integer IDs read with
    missing values elsewhere), else strings."""
    array = np.asarray(values)
    if array.dtype.kind in "iuf":
        return array.astype(np.int64)
    if array.dtype.kind == "U":
        return array
    if array.dtype.kind == "O" and array.size and all(_is_int(v) for v in array.tolist()):
        return array.astype(np.int64)
    return array.astype(str)


def is_string(ids: np.ndarray) -> bool:
    """Whether a model's IDs (``id_array``) are strings."""
    return ids.dtype.kind == "U"


# The text of an integer as the data reader writes one (recflow.data.interactions): "7", never
# "007", "+7" or "7.0", which the reader keeps as text IDs of their own.
_INTEGER_TEXT = re.compile(r"-?(0|[1-9][0-9]*)")


def _integer(value: object) -> int | None:
    """The int64 ID ``value`` names to an integer model: an integer, or an integer's text;
    None for anything else ("X5", "007", 7.5), which no integer model has."""
    text = isinstance(value, str) and _INTEGER_TEXT.fullmatch(value)
    if not (_is_int(value) or text):
        return None
    number = int(value)
    return number if -(2**63) <= number < 2**63 else None


def _is_int(value: object) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


class IdIndex:
    """The position of each ID in ``ids`` (an ``id_array``); -1 for IDs not in it.

    Integer IDs are looked up with a pandas Index, as models always were; string IDs with a dict,
    built here, once per model load and not on a request: pandas' string Index took 75-100 us to
    look up one ID against 15 us for an integer Index, ``positions`` 2 us (162,541 IDs; building
    it takes ~40 ms).
    """

    def __init__(self, ids: np.ndarray) -> None:
        self.strings = is_string(ids)
        if self.strings:
            self._positions = dict(zip(ids.tolist(), range(len(ids)), strict=True))
        else:
            self._index = pd.Index(ids)

    def positions(self, values: object) -> np.ndarray:
        """Positions of ``values`` (any array-like of IDs)."""
        if not self.strings:
            keys = np.asarray(values)
            if keys.dtype.kind in "iufb":
                return self._index.get_indexer(keys.astype(np.int64))
            # Text (e.g. grown data whose new IDs made the column strings), or text and integers
            # mixed: each one exactly, one at a time (a float would round IDs past 2**53).
            numbers = [_integer(v) for v in keys.ravel().tolist()]
            whole = np.fromiter((n is not None for n in numbers), bool, len(numbers))
            found = np.full(len(numbers), -1, np.intp)
            asked = np.array([n for n in numbers if n is not None], dtype=np.int64)
            found[whole] = self._index.get_indexer(asked)
            return found
        keys = np.asarray(values)
        if keys.dtype.kind != "U":
            keys = keys.astype(str)
        get = self._positions.get
        return np.fromiter((get(key, -1) for key in keys.tolist()), np.intp, keys.size)
