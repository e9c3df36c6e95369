"""The largest-remainder rule (sql/macros/largest_remainder.sql), which cost_key_model_daily and the FOCUS
export's restated days both call: parts add up to the amount exactly, in micro-dollars."""

from __future__ import annotations

import duckdb

from pipelines.lib.warehouse import define_macros


def spread(rows: list[tuple]) -> dict[tuple, int | None]:
    with duckdb.connect() as con:
        define_macros(con)
        con.execute("CREATE TEMP TABLE parts (usage_date DATE, key_name VARCHAR, model VARCHAR, share DOUBLE, "
                    "micros HUGEINT)")
        con.executemany("INSERT INTO parts VALUES (?, ?, ?, ?, ?)", rows)
        return {(str(d), k, m): (None if a is None else int(a)) for d, k, m, a in con.execute(
            "SELECT usage_date, key_name, model, allocated_micros FROM largest_remainder_micros(parts)").fetchall()}


def test_thirds_add_up_and_the_leftover_goes_to_the_first_model_by_name():
    got = spread([("2026-11-01", "k", m, 1 / 3, 100) for m in ("c", "a", "b")])
    assert got == {("2026-11-01", "k", "a"): 34, ("2026-11-01", "k", "b"): 33, ("2026-11-01", "k", "c"): 33}


def test_a_negative_amount_is_spread_with_its_sign_and_a_model_without_share_gets_nothing():
    got = spread([("2026-11-01", "k", "a", 0.5, -7), ("2026-11-01", "k", "b", 0.5, -7),
                  ("2026-11-01", "k", "z", 0.0, -7)])
    assert sorted(got.values()) == [-4, -3, 0]
    assert got[("2026-11-01", "k", "z")] == 0


def test_the_largest_fraction_wins_the_leftover_and_key_days_are_separate():
    got = spread([("2026-11-01", "k", "a", 0.16, 10), ("2026-11-01", "k", "b", 0.84, 10),
                  ("2026-11-01", "j", "a", 1.0, 3), ("2026-11-02", "k", "a", 1.0, 5)])
    # 1.6 -> 1, 8.4 -> 8: the one micro-dollar left goes to a (fraction .6 > .4)
    assert got == {("2026-11-01", "k", "a"): 2, ("2026-11-01", "k", "b"): 8, ("2026-11-01", "j", "a"): 3,
                   ("2026-11-02", "k", "a"): 5}


def test_nothing_to_spread_is_null_not_zero():
    assert spread([("2026-11-01", "k", "a", 1.0, None)]) == {("2026-11-01", "k", "a"): None}
