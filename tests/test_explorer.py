"""The explorer widget's Python side (no browser): the embedded JSON, the default view, error rows,
specs; the synthetic table here is shared with tests/test_explorer_browser.py."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pages.explorer import (
    ColumnSpec,
    default_choice,
    display_scale,
    embed_json,
    explorer_html,
    explorer_payload,
    format_human,
)

MIB = 1 << 20
TRANSPORTS = ("ecmp", "spray")
SIZES = (MIB, 4 * MIB, 16 * MIB)
OPS = ("all_to_all", "all_reduce")
SEEDS = (0, 1, 2)
ERROR = "DeadlockError: ranks [3] never finished </script><!--"

SPECS: dict[str, ColumnSpec] = {
    "point": ColumnSpec("id"),
    "seed": ColumnSpec("id", "", "seed"),
    "transport": ColumnSpec("parameter", "", "transport"),
    "workload.size": ColumnSpec("parameter", "B", "message size"),
    "workload.op": ColumnSpec("parameter", "", "op"),
    "algorithm": ColumnSpec("setting", "", "algorithm"),
    "completion_time_s": ColumnSpec("metric", "s", "completion time"),
    "max_link_utilization": ColumnSpec("metric", "1", "max link utilization"),
    "cross_host_bytes": ColumnSpec("metric", "B", "cross-host bytes"),
    "error": ColumnSpec("status"),
}


def synthetic_table() -> pd.DataFrame:
    """2 transports x 3 sizes x 2 ops x 3 seeds (36 good rows), then one failed row (an extra seed).

    ``algorithm`` follows ``op`` (a resolved setting); times are ~0.02..1.2 ms."""
    rows: list[dict[str, Any]] = []
    for point, (transport, size, op, seed) in enumerate(itertools.product(TRANSPORTS, SIZES, OPS, SEEDS)):
        base = size / 50e9 * (1.6 if transport == "ecmp" else 1.1) * (2.0 if op == "all_reduce" else 1.0)
        rows.append(
            {
                "point": point,
                "seed": seed,
                "transport": transport,
                "workload.size": size,
                "workload.op": op,
                "algorithm": "ring" if op == "all_reduce" else "pairwise",
                "completion_time_s": base * (1 + 0.05 * seed + 0.01 * (point % 5)),
                "max_link_utilization": 0.5 + 0.1 * seed + (0.3 if transport == "ecmp" else 0.0),
                "cross_host_bytes": 7 * size + 1000 * seed,
                "error": None,
            }
        )
    rows.append(
        {
            "point": len(rows),
            "seed": 3,
            "transport": "ecmp",
            "workload.size": 16 * MIB,
            "workload.op": "all_to_all",
            "algorithm": "pairwise",
            "completion_time_s": np.nan,
            "max_link_utilization": np.nan,
            "cross_host_bytes": 0,
            "error": ERROR,
        }
    )
    frame = pd.DataFrame(rows)
    frame["cross_host_bytes"] = frame["cross_host_bytes"].astype(np.int64)
    return frame


def decode(payload: dict[str, Any]) -> pd.DataFrame:
    """The embedded columns back as a table (what the page's JavaScript reads)."""
    out = {}
    for col in payload["columns"]:
        if "codes" in col:
            out[col["name"]] = [col["values"][c] for c in col["codes"]]
        else:
            out[col["name"]] = col["data"]
    return pd.DataFrame(out)


def embedded_payload(fragment: str) -> dict[str, Any]:
    """The data argument of the fragment's script (the first JSON object after ``})(``)."""
    start = fragment.index("})(") + 3
    obj, _ = json.JSONDecoder().raw_decode(fragment[start:])
    return obj


# ------------------------------------------------------------------------------------------ JSON


def test_embedding_round_trips_the_data() -> None:
    table = synthetic_table()
    table.loc[0, "completion_time_s"] = np.nan  # a missing metric -> null
    table.loc[1, "transport"] = "odd</script><script>alert(1)</script>"
    # numpy ints in an object column
    table["seed"] = pd.Series([np.int64(v) for v in table["seed"]], dtype=object)
    fragment = explorer_html(table, SPECS)
    payload = embedded_payload(fragment)
    assert payload == json.loads(embed_json(explorer_payload(table, SPECS)))
    back = decode(payload)
    ok = table[table["error"].isna()].reset_index(drop=True)
    for name in ("seed", "transport", "workload.size", "workload.op", "algorithm", "cross_host_bytes"):
        assert back[name].tolist() == ok[name].tolist(), name
    times = payload["columns"][[c["name"] for c in payload["columns"]].index("completion_time_s")]["data"]
    assert times[0] is None
    np.testing.assert_allclose(times[1:], ok["completion_time_s"].to_numpy()[1:], rtol=0, atol=0)
    # numpy ints are plain JSON ints; the hostile string cannot close the script.
    assert all(type(v) is int for col in ("cross_host_bytes", "seed") for v in back[col])
    assert '"values":[0,1,2]' in fragment  # the seeds, as JSON ints
    assert fragment.count("</script") == 1 and fragment.rstrip().endswith("</script>\n</div>")
    assert "<!--" not in fragment
    assert "alert(1)" in fragment  # still there, escaped in JSON, and HTML-escaped in the filter labels
    assert "odd&lt;/script&gt;" in fragment


def test_embed_json_escapes_and_refuses_nan() -> None:
    value = {"s": "</script>&\u2028", "n": [1, None, 2.5]}
    text = embed_json(value)
    assert not re.search("[<>&\u2028]", text)
    assert json.loads(text) == value
    with pytest.raises(ValueError):
        embed_json({"x": float("nan")})


def test_payload_orders_values() -> None:
    table = synthetic_table().iloc[::-1]  # numbers still ascend, strings follow the data
    payload = {c["name"]: c for c in explorer_payload(table, SPECS)["columns"]}
    assert payload["workload.size"]["values"] == list(SIZES)
    assert payload["workload.size"]["labels"] == ["1 MiB", "4 MiB", "16 MiB"]
    assert payload["workload.size"]["dunit"] == "MiB"
    assert payload["transport"]["values"] == ["spray", "ecmp"]
    assert payload["completion_time_s"]["dunit"] == "ms"
    assert payload["cross_host_bytes"]["dunit"] == "MiB"
    assert "point" not in payload and "error" not in payload


# ------------------------------------------------------------------------------------------ choices


def test_default_choice_numeric_parameter_and_transport_colour() -> None:
    choice = default_choice(SPECS, synthetic_table())
    assert choice == {
        "x": "workload.size",
        "y": "completion_time_s",
        "colour": "transport",
        "facet": "",
        "logx": "log",
        "logy": "linear",
    }


def test_default_choice_falls_back() -> None:
    table = synthetic_table()
    table = table[table["workload.size"] == MIB].drop(columns=["completion_time_s"])
    specs = {k: v for k, v in SPECS.items() if k != "completion_time_s"}
    choice = default_choice(specs, table)
    # No numeric parameter varies: the first varied one; no completion time: the first metric.
    assert choice["x"] == "transport"
    assert choice["y"] == "max_link_utilization"
    assert choice["colour"] == "workload.op"
    assert choice["logx"] == "linear"
    single = table[(table["transport"] == "ecmp") & (table["workload.op"] == "all_to_all")]
    assert default_choice(specs, single)["colour"] == ""


def test_initial_overrides_and_is_checked() -> None:
    fragment = explorer_html(synthetic_table(), SPECS, initial={"x": "transport", "facet": "workload.op"})
    assert "<option value='transport' selected>" in fragment
    colour = re.search(r"id='explorer-colour'>(.*?)</select>", fragment)
    assert colour and "value='workload.size' selected" in colour.group(1)
    with pytest.raises(ValueError, match="y='transport'"):
        explorer_html(synthetic_table(), SPECS, initial={"y": "transport"})
    with pytest.raises(ValueError, match="unknown choice"):
        explorer_html(synthetic_table(), SPECS, initial={"z": "seed"})


# ------------------------------------------------------------------------------------------ rows/specs


def test_error_rows_are_excluded() -> None:
    table = synthetic_table()
    payload = explorer_payload(table, SPECS)
    assert payload["rows"] == 36 and payload["errors"] == 1
    seeds = next(c for c in payload["columns"] if c["name"] == "seed")
    assert seeds["values"] == [0, 1, 2]  # seed 3 only failed: not offered
    assert all(len(c.get("codes", c.get("data"))) == 36 for c in payload["columns"])
    table["error"] = table["error"].fillna("")  # an empty string is no error
    assert explorer_payload(table, SPECS)["errors"] == 1


def test_every_column_needs_a_spec() -> None:
    specs = {k: v for k, v in SPECS.items() if k not in ("algorithm", "seed")}
    with pytest.raises(ValueError, match="seed, algorithm"):
        explorer_html(synthetic_table(), specs)
    with pytest.raises(ValueError, match="algorithm"):
        default_choice(specs, synthetic_table())
    with pytest.raises(ValueError, match="role"):
        ColumnSpec("measure")


def test_ids_are_prefixed() -> None:
    fragment = explorer_html(synthetic_table(), SPECS, div_id="ex2")
    ids = re.findall(r"id='([^']+)'", fragment)
    assert ids and all(i == "ex2" or i.startswith("ex2-") for i in ids)
    for part in ("x", "y", "colour", "facet", "logx", "logy", "plot", "caption", "warning", "filters"):
        assert f"ex2-{part}" in ids
    with pytest.raises(ValueError, match="div_id"):
        explorer_html(synthetic_table(), SPECS, div_id="1 bad")


# ------------------------------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("unit", "magnitude", "expected"),
    [
        ("s", 0.004, (1e3, "ms")),
        ("s", 3e-7, (1e9, "ns")),
        ("s", 12.0, (1.0, "s")),
        ("B", 3 * MIB, (1 / MIB, "MiB")),
        ("B", 2.0 * (1 << 30), (1 / (1 << 30), "GiB")),
        ("B", 100, (1.0, "B")),
        ("B/s", 50e9, (8e-9, "Gbit/s")),
        ("1", 0.9, (1.0, "")),
        ("flows", 7, (1.0, "flows")),
    ],
)
def test_display_scale(unit: str, magnitude: float, expected: tuple[float, str]) -> None:
    assert display_scale(unit, magnitude) == pytest.approx(expected)


def test_format_human() -> None:
    assert format_human("B", 16 * MIB) == "16 MiB"
    assert format_human("s", 5e-7) == "500 ns"
    assert format_human("B/s", 50e9) == "400 Gbit/s"
    assert format_human("", "ecmp") == "ecmp"
    assert format_human("B", np.int64(2048)) == "2 KiB"
    assert format_human("s", float("nan")) == "–"
    assert format_human("", True) == "True"


def test_missing_values_and_duck_typed_specs() -> None:
    class Column:  # e.g. experiments.results_schema.Column: anything with role, unit and label
        def __init__(self, role: str, unit: str = "", label: str = "") -> None:
            self.role, self.unit, self.label = role, unit, label

    table = synthetic_table()
    table["channels"] = pd.array([None] * len(table), dtype=object)  # a setting not resolved for any point
    table.loc[0, "workload.size"] = np.nan
    specs: dict[str, Any] = {**SPECS, "channels": Column("setting", "", "channels")}
    specs["transport"] = Column("parameter", "", "transport")
    payload = {c["name"]: c for c in explorer_payload(table, specs)["columns"]}
    assert payload["channels"]["values"] == [None] and payload["channels"]["labels"] == ["–"]
    size = payload["workload.size"]
    assert size["values"] == [MIB, 4 * MIB, 16 * MIB, None] and size["codes"][0] == 3
    assert size["numeric"] and "channels" in explorer_html(table, specs)
