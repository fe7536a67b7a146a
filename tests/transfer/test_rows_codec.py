"""The JSON-lines codec of row exports gives back every value it is given, type and all."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fastapi_tenancy.transfer.rows import decode, encode

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
column_values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dates()
    | st.times()
    | st.timedeltas()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | st.binary()
    | st.builds(uuid.UUID, st.uuids().map(str))
    | json_values.filter(lambda value: isinstance(value, dict | list))
)


@given(st.lists(column_values, max_size=6))
def test_a_row_survives_the_export_format(row: list[Any]) -> None:
    line = json.dumps([encode(value) for value in row])
    back = [decode(value) for value in json.loads(line)]
    assert back == row
    assert [type(value) for value in back] == [type(value) for value in row]
