"""strict_json: the limits at their boundaries, the encodings json.loads reads, and its shared decoder."""
from __future__ import annotations

import concurrent.futures
import json
import math

import pytest

from chalicelib import strict_json

LIMIT = strict_json.MAX_DEPTH


def nested(depth: int, *, innermost: str = "[]") -> str:
    """Arrays and objects alternating, `depth` levels in all (the innermost one included)."""
    opening = "".join('{"k": ' if level % 2 else "[" for level in range(depth - 1))
    closing = "".join("}" if level % 2 else "]" for level in reversed(range(depth - 1)))
    return opening + innermost + closing


@pytest.mark.parametrize("innermost", ["[]", "{}", '[1, 2.5, "s", null]', '{"a": 1, "b": "x"}'])
def test_the_depth_limit_counts_arrays_and_objects_alike(innermost):
    assert strict_json.loads(nested(LIMIT, innermost=innermost)) is not None
    with pytest.raises(strict_json.Invalid, match=f"nested too deeply; the limit is {LIMIT}"):
        strict_json.loads(nested(LIMIT + 1, innermost=innermost))


def test_only_the_deepest_branch_counts_and_scalars_add_no_level():
    shallow_and_wide = json.dumps({"a": list(range(1000)), "b": [{"c": [None] * 100}] * 50})
    assert strict_json.loads(shallow_and_wide) == json.loads(shallow_and_wide)
    deep_beside_shallow = '{"shallow": [1], "deep": ' + nested(LIMIT) + "}"
    with pytest.raises(strict_json.Invalid, match="nested too deeply"):
        strict_json.loads(deep_beside_shallow)


@pytest.mark.parametrize("text, problem", [
    ("[1, [2, [NaN]]]", "NaN is not a JSON number"),
    ('{"a": {"b": [Infinity]}}', "Infinity is not a JSON number"),
    ('{"override_settings": {"x": -Infinity}}', "-Infinity is not a JSON number"),
    ('{"a": [1e400]}', "too large to be a finite number"),
    ('{"override_settings": {"eta_noise_seed_delta": 123456789012345678901}}', "has 21 digits; the limit is 20"),
    ('[-123456789012345678901]', "has 21 digits; the limit is 20"),
])
def test_numbers_out_of_bounds_are_refused_wherever_they_sit(text, problem):
    with pytest.raises(strict_json.Invalid, match=problem):
        strict_json.loads(text)


def test_twenty_digits_pass_either_sign():
    assert strict_json.loads("[99999999999999999999, -99999999999999999999]") == [10**20 - 1, -(10**20 - 1)]


@pytest.mark.parametrize("raw", [
    b'{"prompt": "caf\xc3\xa9"}', b'\xef\xbb\xbf{"prompt": "caf\xc3\xa9"}', '{"prompt": "café"}'.encode("utf-16"),
    '{"prompt": "café"}'.encode("utf-32"), bytearray(b'{"prompt": "caf\xc3\xa9"}'), '{"prompt": "café"}',
])
def test_bytes_are_read_in_every_encoding_json_loads_reads(raw):
    assert strict_json.loads(raw) == {"prompt": "café"}


@pytest.mark.parametrize("raw", ['\ufeff{"a": 1}', b'{"a": "\xff"}', b"", "", '{"a": 1', "[1, 2,]"])
def test_what_json_loads_refuses_is_refused_with_its_message(raw):
    with pytest.raises(ValueError) as by_json:
        json.loads(raw)
    with pytest.raises(strict_json.Invalid) as ours:
        strict_json.loads(raw)
    assert str(ours.value) == str(by_json.value)


def test_threads_parsing_at_once_each_get_their_own_document():
    """The decoder is shared, and its hooks run Python code mid-parse, where another thread can take over."""
    documents = [json.dumps({f"key{n}": [n, n + 0.5, {"k": -n, f"k{n}": str(n)}] * 20}) for n in range(64)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        for _ in range(5):
            assert list(pool.map(strict_json.loads, documents)) == [json.loads(text) for text in documents]


def test_non_finite_paths_are_found_at_any_depth_and_sorted():
    value = {"b": [1.0, {"c": math.inf}], "a": [[0.5, [math.nan]]], "ok": {"x": 1, "y": "nan"}}
    assert strict_json.non_finite_paths(value) == [["a", 0, 1, 0], ["b", 1, "c"]]
    assert strict_json.non_finite_paths({"a": [1.5, {"b": 2}], "s": "Infinity"}) == []


def test_leaves_are_every_value_that_is_not_a_container():
    assert sorted(map(repr, strict_json.leaves({"a": [1, {"b": None, "c": []}], "d": "x", "e": {}}))) == [
        "'x'", "1", "None"]
    assert list(strict_json.leaves(7)) == [7]
