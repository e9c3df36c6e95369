"""Price versions from dated observations (sql/macros/price_runs.sql), which prices.sql calls for the
ledger's ratios and for the catalog's snapshots: a run of equal numbers is one version, a change starts
the next, and numbers seen again after another set are a version of their own."""

from __future__ import annotations

import hashlib
from datetime import date

import duckdb

from pipelines.lib.warehouse import define_macros

D = [date(2026, 11, day) for day in range(1, 8)]


def versions(rows: list[tuple]) -> list[tuple]:
    with duckdb.connect() as con:
        define_macros(con)
        con.execute("CREATE TEMP TABLE seen (model VARCHAR, seen_date DATE, price_key VARCHAR, price DOUBLE)")
        con.executemany("INSERT INTO seen VALUES (?, ?, ?, ?)", rows)
        return con.execute(
            "SELECT model, first_seen_date, last_seen_date, effective_to, price_key, price, price_version_id "
            "FROM price_runs(seen, 'ledger') ORDER BY model, first_seen_date").fetchall()


def version_id(model: str, first: date, key: str) -> str:
    return f"{model}@{first}#{hashlib.md5(f'ledger|{key}'.encode()).hexdigest()[:8]}"


def test_a_run_of_equal_numbers_is_one_version_and_numbers_seen_again_start_another():
    rows = [("m", D[0], "a", 1.0), ("m", D[1], "a", 1.0), ("m", D[2], "b", 2.0), ("m", D[4], "a", 1.0),
            ("m", D[6], "a", 1.0), ("n", D[3], "b", 2.0)]
    assert versions(rows) == [
        ("m", D[0], D[1], D[2], "a", 1.0, version_id("m", D[0], "a")),
        ("m", D[2], D[2], D[4], "b", 2.0, version_id("m", D[2], "b")),
        ("m", D[4], D[6], None, "a", 1.0, version_id("m", D[4], "a")),  # a gap of days does not end a run
        ("n", D[3], D[3], None, "b", 2.0, version_id("n", D[3], "b")),  # each model on its own
    ]
