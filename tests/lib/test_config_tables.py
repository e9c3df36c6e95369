"""The config tables: every validation rule's one-line error, the shipped files, the snapshot rule."""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from pipelines.lib.prices.tables import (
    KEY_OWNERS_SCHEMA,
    OPTIONAL_PRICE_COLUMNS,
    PRICE_COLUMNS,
    PRICES_SCHEMA,
    SNAPSHOT_SUFFIX_REGEX,
    ConfigFileError,
    load_key_owners,
    load_prices,
    read_prices,
)
from pipelines.lib.settings import ConfigError
from pipelines.simulator.catalog import CATALOG, UNPRICED_MODEL, prices_csv
from pipelines.simulator.server import QUERY_KEY_NAME
from pipelines.simulator.traffic import KEYS
from oracles.prices import base_model, priced_model

REPO = Path(__file__).resolve().parents[2]
HEADER = ",".join(PRICE_COLUMNS)
OWNERS_HEADER = "key_name,team,project,cost_center,effective_from,effective_to"

TOKEN = dict(
    model="gpt-4o",
    billing_category="token",
    input_usd_per_mtok="2.5",
    output_usd_per_mtok="10",
    cache_read_usd_per_mtok="1.25",
    cache_write_usd_per_mtok="",
    per_call_usd="",
    gateway_ratio="0.8",
    effective_from="2025-01-01",
    effective_to="",
    source="openai.com/api/pricing",
)
PER_CALL = dict(
    TOKEN,
    model="mj_imagine",
    billing_category="per_call",
    input_usd_per_mtok="",
    output_usd_per_mtok="",
    cache_read_usd_per_mtok="",
    per_call_usd="0.05",
    gateway_ratio="1",
)


def line(base: dict = TOKEN, **changes: str) -> str:
    row = dict(base, **changes)
    return ",".join(row[column] for column in PRICE_COLUMNS)


@pytest.fixture
def config(tmp_path: Path, monkeypatch) -> Path:
    """A config/ folder under a working directory, so errors read `config/prices.csv line ...`."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "config"
    folder.mkdir()
    return folder


def write(folder: Path, *lines: str, name: str = "prices.csv", header: str = HEADER) -> Path:
    path = folder / name
    path.write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return path


def error_of(loader, path: Path) -> str:
    with pytest.raises(ConfigFileError) as err:
        loader(path)
    message = str(err.value)
    assert "\n" not in message
    return message


# --- a valid file -----------------------------------------------------------------------------


def test_valid_prices_load_typed_sorted_and_with_nulls(config):
    path = write(
        config,
        line(PER_CALL),
        line(effective_from="2025-06-01", input_usd_per_mtok="2"),
        line(effective_to="2025-06-01"),
    )
    table = load_prices(path)
    assert table.schema == PRICES_SCHEMA
    rows = table.to_pylist()
    assert [(r["model"], r["effective_from"], r["effective_to"]) for r in rows] == [
        ("gpt-4o", date(2025, 1, 1), date(2025, 6, 1)),
        ("gpt-4o", date(2025, 6, 1), None),
        ("mj_imagine", date(2025, 1, 1), None),
    ]
    assert rows[0]["input_usd_per_mtok"] == Decimal("2.5") and rows[1]["input_usd_per_mtok"] == Decimal(2)
    assert rows[0]["cache_write_usd_per_mtok"] is None and rows[0]["per_call_usd"] is None
    assert rows[2]["per_call_usd"] == Decimal("0.05") and rows[2]["input_usd_per_mtok"] is None
    assert rows[2]["gateway_ratio"] == Decimal(1)
    assert all(re.fullmatch(r"[^@]+@\d{4}-\d{2}-\d{2}#[0-9a-f]{8}", r["price_version_id"]) for r in rows)
    assert rows[0]["price_version_id"].startswith("gpt-4o@2025-01-01#")


# --- the optional columns ---------------------------------------------------------------------------

FULL_HEADER = ",".join((*PRICE_COLUMNS, *OPTIONAL_PRICE_COLUMNS))
CLAUDE = dict(TOKEN, model="claude-sonnet-4", input_usd_per_mtok="3", output_usd_per_mtok="15",
              cache_read_usd_per_mtok="0.3", cache_write_usd_per_mtok="3.75", source="anthropic.com/pricing")


def full_line(base: dict = TOKEN, **changes: str) -> str:
    row = dict.fromkeys(OPTIONAL_PRICE_COLUMNS, "") | dict(base, **changes)
    return ",".join(row[column] for column in (*PRICE_COLUMNS, *OPTIONAL_PRICE_COLUMNS))


def test_optional_columns_load_and_a_file_without_them_keeps_its_ids(config):
    with_them = write(config, full_line(CLAUDE, cache_write_1h_usd_per_mtok="6", web_search_usd_per_request="0.01",
                                        web_fetch_usd_per_request="0"),
                      full_line(), full_line(PER_CALL), name="full.csv", header=FULL_HEADER)
    rows = {r["model"]: r for r in load_prices(with_them).to_pylist()}
    claude = rows["claude-sonnet-4"]
    assert (claude["cache_write_1h_usd_per_mtok"], claude["web_search_usd_per_request"],
            claude["web_fetch_usd_per_request"], claude["audio_input_usd_per_mtok"]) == (
        Decimal(6), Decimal("0.01"), Decimal(0), None)
    # the same rows in a file written before the optional columns existed: same values, same ids
    without = write(config, line(), line(PER_CALL), name="classic.csv")
    classic = {r["model"]: r for r in load_prices(without).to_pylist()}
    for model in ("gpt-4o", "mj_imagine"):
        assert classic[model] == rows[model]
    # only some optional columns, in any order
    some = write(config, ",".join([line(), "2.5"]), name="some.csv", header=HEADER + ",image_input_usd_per_mtok")
    [row] = load_prices(some).to_pylist()
    assert row["image_input_usd_per_mtok"] == Decimal("2.5") and row["cache_write_1h_usd_per_mtok"] is None
    # a price in an optional column is part of the version's content
    assert row["price_version_id"] != classic["gpt-4o"]["price_version_id"]
    assert read_prices(write(config, full_line(CLAUDE), name="a.csv", header=FULL_HEADER))[0].price_version_id != \
        read_prices(write(config, full_line(CLAUDE, web_search_usd_per_request="0.01"), name="b.csv",
                          header=FULL_HEADER))[0].price_version_id


@pytest.mark.parametrize(
    "bad, message",
    [
        (full_line(PER_CALL, cache_write_1h_usd_per_mtok="6"),
         "column cache_write_1h_usd_per_mtok: must be empty on a per_call row (got 6)"),
        (full_line(PER_CALL, web_search_usd_per_request="0.01"),
         "column web_search_usd_per_request: must be empty on a per_call row (got 0.01)"),
        (full_line(CLAUDE, web_fetch_usd_per_request="-1"), "column web_fetch_usd_per_request: -1 is negative"),
        (full_line(CLAUDE, audio_input_usd_per_mtok="1e-3"),
         "column audio_input_usd_per_mtok: '1e-3' is not a decimal number (write e.g. 2.5)"),
        (full_line(CLAUDE, image_input_usd_per_mtok="0.0000001"),
         "column image_input_usd_per_mtok: 0.0000001 has more than 6 decimal places"),
    ],
)
def test_optional_columns_follow_the_price_rules(config, bad, message):
    path = write(config, full_line(PER_CALL, model="suno_music"), bad, header=FULL_HEADER)
    assert error_of(load_prices, path) == f"config/prices.csv line 3, {message}"


def test_header_only_is_an_empty_table(config):
    table = load_prices(write(config))
    assert table.num_rows == 0 and table.schema == PRICES_SCHEMA


def test_column_order_blank_lines_bom_and_quoted_commas_are_accepted(config):
    columns = list(reversed(PRICE_COLUMNS))
    row = dict(TOKEN, source='"list, verify"')
    path = config / "prices.csv"
    path.write_text("\ufeff" + ",".join(columns) + "\n\n" + ",".join(row[c] for c in columns) + "\n,,,\n", encoding="utf-8")
    [version] = read_prices(path)
    assert version.source == "list, verify" and version.line == 3
    assert version.price_version_id == read_prices(write(config, line(source='"list, verify"')))[0].price_version_id


# --- one rule, one line -------------------------------------------------------------------------

F = "config/prices.csv line 3"


@pytest.mark.parametrize(
    "bad, message",
    [
        (line(input_usd_per_mtok="-0.5"), f"{F}, column input_usd_per_mtok: -0.5 is negative"),
        (line(output_usd_per_mtok="ten"), f"{F}, column output_usd_per_mtok: 'ten' is not a decimal number (write e.g. 2.5)"),
        (line(output_usd_per_mtok="1e-3"), f"{F}, column output_usd_per_mtok: '1e-3' is not a decimal number (write e.g. 2.5)"),
        (line(cache_read_usd_per_mtok="0.1234567"), f"{F}, column cache_read_usd_per_mtok: 0.1234567 has more than 6 decimal places"),
        (
            line(input_usd_per_mtok="1" + "0" * 40),
            f"{F}, column input_usd_per_mtok: 1{'0' * 40} is too large (at most 12 digits before the decimal point)",
        ),
        (
            line(input_usd_per_mtok="1000000000000"),
            f"{F}, column input_usd_per_mtok: 1000000000000 is too large (at most 12 digits before the decimal point)",
        ),
        (line(billing_category="tokens"), f"{F}, column billing_category: unknown billing category 'tokens' (expected token or per_call)"),
        (line(input_usd_per_mtok=""), f"{F}, column input_usd_per_mtok: required on a token row, but empty"),
        (line(output_usd_per_mtok=""), f"{F}, column output_usd_per_mtok: required on a token row, but empty"),
        (line(per_call_usd="0.05"), f"{F}, column per_call_usd: must be empty on a token row (got 0.05)"),
        (line(PER_CALL, per_call_usd=""), f"{F}, column per_call_usd: required on a per_call row, but empty"),
        (line(PER_CALL, input_usd_per_mtok="2.5"), f"{F}, column input_usd_per_mtok: must be empty on a per_call row (got 2.5)"),
        (line(PER_CALL, cache_write_usd_per_mtok="1"), f"{F}, column cache_write_usd_per_mtok: must be empty on a per_call row (got 1)"),
        (
            line(gateway_ratio=""),
            f"{F}, column gateway_ratio: required, but empty (1 = list price, 0.8 = CometAPI's default 20 % discount)",
        ),
        (line(gateway_ratio="0"), f"{F}, column gateway_ratio: 0 must be greater than 0"),
        (line(gateway_ratio="-1"), f"{F}, column gateway_ratio: -1 is negative"),
        (line(effective_from=""), f"{F}, column effective_from: required, but empty (a date in YYYY-MM-DD form)"),
        (line(effective_from="2025/01/01"), f"{F}, column effective_from: '2025/01/01' is not a date in YYYY-MM-DD form"),
        (line(effective_from="20250101"), f"{F}, column effective_from: '20250101' is not a date in YYYY-MM-DD form"),
        (line(effective_to="2025-02-30"), f"{F}, column effective_to: '2025-02-30' is not a date in YYYY-MM-DD form"),
        (
            line(effective_to="2025-01-01"),
            f"{F}, column effective_to: 2025-01-01 is not after effective_from 2025-01-01 (leave it empty while in force)",
        ),
        (line(model=""), f"{F}, column model: required, but empty"),
        (line(model=" gpt-4o"), f"{F}, column model: ' gpt-4o' has surrounding spaces"),
        (line() + ",extra", f"{F}, column #12: extra field 'extra' (the header has 11 columns)"),
        (line().rsplit(",", 1)[0], f"{F}, column source: missing (the line has 10 fields, the header 11)"),
    ],
)
def test_each_rule_fails_with_one_line_naming_file_line_and_column(config, bad, message):
    path = write(config, line(PER_CALL, model="suno_music"), bad)
    assert error_of(load_prices, path) == message


@pytest.mark.parametrize(
    "header, message",
    [
        (HEADER + ",notes", "config/prices.csv line 1, column notes: unknown column (expected " + HEADER
         + "; optional: " + ",".join(OPTIONAL_PRICE_COLUMNS) + ")"),
        (HEADER.replace(",source", ""), "config/prices.csv line 1, column source: missing from the header (expected " + HEADER + ")"),
        (HEADER + ",model", "config/prices.csv line 1, column model: appears twice in the header"),
    ],
)
def test_header_must_hold_exactly_the_columns(config, header, message):
    assert error_of(load_prices, write(config, header=header)) == message


def test_an_empty_file_asks_for_the_header(config):
    path = config / "prices.csv"
    path.write_text("")
    assert error_of(load_prices, path) == f"config/prices.csv line 1: empty file; the first line must be the header {HEADER}"


def test_a_missing_file_names_the_variable_and_the_path(config):
    for loader, variable, name in (
        (load_prices, "COMET_LEDGER_PRICES", "prices.csv"),
        (load_key_owners, "COMET_LEDGER_KEY_OWNERS", "key_owners.csv"),
    ):
        with pytest.raises(ConfigError) as err:
            loader(config / name)
        assert str(err.value) == f"{variable} points at config/{name}, which does not exist"
        assert isinstance(err.value, ValueError)


# --- version history ------------------------------------------------------------------------------


def test_overlapping_versions_name_both_lines(config):
    path = write(config, line(effective_to="2025-06-01"), line(PER_CALL), line(effective_from="2025-05-01"))
    assert error_of(load_prices, path) == (
        "config/prices.csv line 4, column effective_from: versions of gpt-4o on lines 2 and 4 overlap "
        "(2025-01-01..2025-06-01 and 2025-05-01..open)"
    )


def test_only_the_last_version_may_be_open(config):
    path = write(config, line(effective_from="2025-06-01"), line())
    assert error_of(load_prices, path) == (
        "config/prices.csv line 2, column effective_from: versions of gpt-4o on lines 3 and 2 overlap "
        "(2025-01-01..open and 2025-06-01..open)"
    )


def test_a_duplicated_row_is_an_overlap(config):
    path = write(config, line(), line())
    assert "versions of gpt-4o on lines 2 and 3 overlap (2025-01-01..open and 2025-01-01..open)" in error_of(load_prices, path)


def test_a_gap_inside_a_models_history_names_both_lines(config):
    path = write(config, line(effective_to="2025-03-01"), line(effective_from="2025-04-01"))
    assert error_of(load_prices, path) == (
        "config/prices.csv line 3, column effective_from: versions of gpt-4o on lines 2 and 3 leave a gap "
        "(2025-01-01..2025-03-01 and 2025-04-01..open): 2025-03-01..2025-04-01 has no price"
    )


def test_versions_may_be_listed_in_any_order_and_end_closed(config):
    path = write(config, line(effective_from="2025-06-01", effective_to="2026-01-01"), line(effective_to="2025-06-01"))
    assert [v.line for v in read_prices(path)] == [3, 2]


# --- price_version_id ------------------------------------------------------------------------------

CHANGES = {
    "model": "gpt-4o-2024-08-06",
    "billing_category": None,  # covered by the per-call row below
    "input_usd_per_mtok": "2.4",
    "output_usd_per_mtok": "10.000001",
    "cache_read_usd_per_mtok": "1.2",
    "cache_write_usd_per_mtok": "3.125",
    "per_call_usd": None,
    "gateway_ratio": "1",
    "effective_from": "2024-12-31",
    "effective_to": "2026-01-01",
    "source": "openai.com/api/pricing; verified 2025-11-01",
}


def version_id(config: Path, row: str) -> str:
    return read_prices(write(config, row))[0].price_version_id


@pytest.mark.parametrize("column", [c for c, v in CHANGES.items() if v is not None])
def test_price_version_id_changes_when_a_value_changes(config, column):
    assert version_id(config, line(**{column: CHANGES[column]})) != version_id(config, line())


def test_price_version_id_ignores_formatting_and_position(config):
    reference = version_id(config, line())
    same = line(input_usd_per_mtok="2.500000", output_usd_per_mtok="+10.0", gateway_ratio=" 0.80 ", source=" openai.com/api/pricing ")
    assert version_id(config, same) == reference
    assert read_prices(write(config, line(PER_CALL), line()))[0].price_version_id == reference
    assert version_id(config, line(PER_CALL)) != version_id(config, line(PER_CALL, per_call_usd="0.06"))
    assert version_id(config, line(PER_CALL)) == version_id(config, line(PER_CALL, per_call_usd="0.050"))


# --- the snapshot rule ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, base",
    [
        ("gpt-4.1-nano-2025-04-14", "gpt-4.1-nano"),
        ("claude-sonnet-4-20250514", "claude-sonnet-4"),
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("o4-mini-2025-04-16", "o4-mini"),
        ("x-2024-01-01-2024-02-02", "x-2024-01-01"),  # one suffix only
        ("gpt-4o-mini", None),
        ("o4-mini", None),
        ("glm-4.6", None),
        ("model-2025", None),
        ("deepseek-v3-0324", None),
        ("gemini-2.5-flash-preview-05-20", None),
        ("model-2025-04", None),
        ("model-202504141", None),
        ("model_20250514", None),
        ("-20250514", None),
        ("20250514", None),
    ],
)
def test_base_model_strips_one_trailing_snapshot_suffix(name, base):
    assert base_model(name) == base
    # the same pattern in DuckDB, as sql/core/requests.sql uses it
    query = "SELECT regexp_replace($name, $pattern, '')"
    stripped = duckdb.execute(query, {"name": name, "pattern": SNAPSHOT_SUFFIX_REGEX}).fetchone()[0]
    assert stripped == (base or name) or (base is None and stripped == "")  # "" matches no price row


def test_priced_model_prefers_the_exact_name():
    models = {"gpt-4o", "gpt-4o-2024-08-06", "claude-sonnet-4"}
    assert priced_model("gpt-4o-2024-08-06", models) == "gpt-4o-2024-08-06"
    assert priced_model("gpt-4o-2024-11-20", models) == "gpt-4o"
    assert priced_model("claude-sonnet-4-20250514", models) == "claude-sonnet-4"
    assert priced_model("gpt-4o-mini-2024-07-18", models) is None
    assert priced_model("glm-4.6", models) is None


# --- key owners ----------------------------------------------------------------------------------

O = "config/key_owners.csv"


def owners(config: Path, *lines: str, header: str = OWNERS_HEADER) -> Path:
    return write(config, *lines, name="key_owners.csv", header=header)


def test_key_owners_with_a_reassignment_and_a_gap(config):
    path = owners(
        config,
        "research-batch,research,batch,CC-2,2026-10-15,",
        "research-batch,team-a,,,2025-01-01,2026-10-15",
        "team-a-dev,team-a,,,2025-01-01,2025-03-01",
        "team-a-dev,team-b,app, ,2025-04-01,",
    )
    table = load_key_owners(path)
    assert table.schema == KEY_OWNERS_SCHEMA
    assert [tuple(row.values()) for row in table.to_pylist()] == [
        ("research-batch", "team-a", None, None, date(2025, 1, 1), date(2026, 10, 15)),
        ("research-batch", "research", "batch", "CC-2", date(2026, 10, 15), None),
        ("team-a-dev", "team-a", None, None, date(2025, 1, 1), date(2025, 3, 1)),
        ("team-a-dev", "team-b", "app", None, date(2025, 4, 1), None),
    ]


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            "team-a-dev,team-b,,,2025-03-01,",
            f"{O} line 3, column effective_from: owner rows of team-a-dev on lines 2 and 3 overlap "
            "(2025-01-01..2025-06-01 and 2025-03-01..open)",
        ),
        ("team-a-dev,,,,2025-07-01,", f"{O} line 3, column team: required, but empty"),
        ("team-a-dev,team-b ,,,2025-07-01,", f"{O} line 3, column team: 'team-b ' has surrounding spaces"),
        (" team-a-dev,team-b,,,2025-07-01,", f"{O} line 3, column key_name: ' team-a-dev' has surrounding spaces"),
        (",team-b,,,2025-07-01,", f"{O} line 3, column key_name: required, but empty"),
        (
            "team-a-dev,team-b,,,2025-07-01,2025-07-01",
            f"{O} line 3, column effective_to: 2025-07-01 is not after effective_from 2025-07-01 (leave it empty while in force)",
        ),
        ("team-a-dev,team-b,,,July 2025,", f"{O} line 3, column effective_from: 'July 2025' is not a date in YYYY-MM-DD form"),
    ],
)
def test_key_owner_rules(config, bad, message):
    path = owners(config, "team-a-dev,team-a,,,2025-01-01,2025-06-01", bad)
    assert error_of(load_key_owners, path) == message


def test_key_owners_header_is_checked(config):
    path = owners(config, header="key_name,team,effective_from,effective_to")
    assert error_of(load_key_owners, path) == f"{O} line 1, column project: missing from the header (expected {OWNERS_HEADER})"


# --- shipped files and the simulator's table -------------------------------------------------------


def test_shipped_prices_load_and_cover_the_simulator_except_its_unpriced_model():
    table = load_prices(REPO / "config" / "prices.csv")
    models = set(table.column("model").to_pylist())
    assert {
        "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o4-mini", "o3", "claude-sonnet-4",
        "gemini-2.5-pro", "gemini-2.5-flash", "deepseek-chat", "mj_imagine", "suno_music", "kling_video",
    } <= models
    assert UNPRICED_MODEL not in models
    for model in CATALOG.values():
        expected = None if model.model == UNPRICED_MODEL else model.model.removesuffix("-20250514")
        assert priced_model(model.model, models) == expected
        assert priced_model(model.response_model, models) == expected
    assert all(source for source in table.column("source").to_pylist())


def test_shipped_key_owners_load_with_one_reassignment():
    rows = load_key_owners(REPO / "config" / "key_owners.csv").to_pylist()
    assert {k.name for k in KEYS} | {QUERY_KEY_NAME} == {r["key_name"] for r in rows}
    history = [(r["team"], r["effective_from"], r["effective_to"]) for r in rows if r["key_name"] == "research-batch"]
    assert history == [("team-a", date(2025, 1, 1), date(2026, 10, 15)), ("research", date(2026, 10, 15), None)]


def test_config_readme_explains_every_column_and_its_example_loads(tmp_path):
    readme = (REPO / "config" / "README.md").read_text()
    for column in (*PRICE_COLUMNS, *OPTIONAL_PRICE_COLUMNS, "key_name", "team", "project", "cost_center"):
        assert f"`{column}`" in readme
    assert "verify" in readme.lower()
    example = [row for row in readme.splitlines() if row.startswith("o3,")]
    path = tmp_path / "prices.csv"
    path.write_text("\n".join([HEADER, *example]))
    assert len(read_prices(path)) == 2


@pytest.mark.parametrize("start, days", [(date(2026, 10, 1), 30), (date(2023, 6, 1), 3)])
def test_the_simulators_price_csv_loads_unchanged(tmp_path, start, days):
    path = tmp_path / "prices.csv"
    path.write_text(prices_csv(start, days))
    table = load_prices(path)
    assert table.num_rows == len(CATALOG)  # glm-4.6 left out, gpt-4o-mini has two versions
    assert UNPRICED_MODEL not in table.column("model").to_pylist()
