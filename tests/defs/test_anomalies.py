"""Anomaly detection: the simulator's planted realities appear as findings with their evidence, spikes
follow the documented method exactly, rebuilds are identical, and synthetic key-days and balance
snapshots exercise new keys, zero days, top-ups, unexplained jumps and runway severity."""

from __future__ import annotations

import statistics
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from conftest import SIM_DAYS, SIM_START, make_settings, materialize_days, table_rows
from pipelines.lib.reconciliation.anomalies import AnomalyRules, counts, detect
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.lib.warehouse import model_path, publish, scratch

LAST = SIM_START + timedelta(days=SIM_DAYS - 1)
DETECTED_AT = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)
REPO_OWNERS = str(Path(__file__).resolve().parents[2] / "config" / "key_owners.csv")
COLUMNS = ("finding_id, detected_at, usage_date, is_partial_day, key_name, kind, severity, detail, amount_usd, "
           "evidence, action")


@pytest.fixture(scope="module")
def detected(tmp_path_factory, traffic):
    """One simulated month built like test_reconciliation's, then anomalies detected (shared, read-only)."""
    home = tmp_path_factory.mktemp("anomalies")
    prices = home / "sim-prices.csv"
    prices.write_text(prices_csv(SIM_START, SIM_DAYS))
    with SimulatorServer(traffic) as sim:
        settings = make_settings(home / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_PRICES=str(prices), COMET_LEDGER_KEY_OWNERS=REPO_OWNERS,
                                 COMET_LEDGER_PRICE_SOURCES="config")  # glm-4.6: the model the table forgot
        write_inbox(traffic, settings.inbox)
        materialize_days(settings, SIM_START, LAST)
        materialize_days(settings, LAST - timedelta(days=3), LAST)  # the daily re-pull catches the restatement
    with publish(settings.warehouse_path) as con:
        found = detect(con, SIM_START, LAST, DETECTED_AT, timezone=settings.timezone)
    assert found == table_rows(settings, "SELECT count(*) FROM anomalies")[0][0] > 0
    return settings


def findings(settings, kind: str) -> list[tuple]:
    return table_rows(settings, "SELECT usage_date, key_name, severity, amount_usd, detail, evidence, action "
                                "FROM anomalies WHERE kind = $kind ORDER BY ALL", {"kind": kind})


def test_planted_unlogged_traffic_is_a_critical_finding_with_its_ips_and_ids(detected, traffic):
    leak = traffic.planted["missing_logs"]
    [(day, key, severity, usd, detail, evidence, action)] = findings(detected, "unlogged_gateway_requests")
    assert (day, key, severity) == (leak["date"], leak["key"], "critical")
    assert usd == pytest.approx(float(leak["usd"]), abs=1e-9)
    assert f"CometAPI billed 7 requests (${leak['usd']}) on key {leak['key']}" in detail
    assert "198.51.100.66" in detail and evidence.startswith("ips=198.51.100.66;")
    assert all(request_id in evidence for request_id in leak["request_ids"])
    assert action == ("Check the request log for these IPs; if they are not yours, disable and rotate the key in "
                      "the CometAPI console.")


def test_the_leak_ip_is_the_only_new_source_ip(detected, traffic):
    leak = traffic.planted["missing_logs"]
    [(day, key, severity, usd, detail, evidence, action)] = findings(detected, "new_source_ip")
    assert (day, key, severity) == (leak["date"], leak["key"], "critical")  # none of its requests is logged
    assert evidence.startswith(f"ip={leak['source_ip']};")
    assert "7 requests" in detail and "none of them in your client logs" in detail
    assert usd == pytest.approx(float(leak["usd"]), abs=1e-9)
    assert "disable and rotate the key" in action


def test_restatement_and_unpriced_model_appear(detected, traffic):
    restated = traffic.planted["restatement"]
    [(day, key, severity, delta, detail, evidence, _)] = findings(detected, "restatement")
    assert (day, key, severity) == (restated["date"], restated["key"], "warning")
    assert delta == pytest.approx(0.175)
    assert "from $0.640000" in detail and "to $0.815000" in detail and "+$0.175000" in detail
    assert evidence.startswith("pull_id=")

    unpriced = traffic.planted["unpriced_model"]
    rows = findings(detected, "unpriced_model")
    assert [(d, k) for d, k, *_ in rows] == [(d, unpriced["key"]) for d in unpriced["dates"]]
    billed = dict(table_rows(detected, "SELECT usage_date, sum(billed_cost_usd)::DOUBLE FROM requests "
                                       "WHERE model = 'glm-4.6' GROUP BY ALL"))
    for day, _, severity, usd, detail, evidence, action in rows:
        assert severity == "warning" and usd == pytest.approx(billed[day])
        assert "of model glm-4.6" in detail and evidence.startswith("model=glm-4.6; keys=research-batch;")
        assert "Add a price row for glm-4.6" in action


def expected_spikes(traffic, rules: AnomalyRules) -> set[tuple[date, str]]:
    """The documented method computed independently from what the simulator's query service reports."""
    reported = {k: float(v[0]) for k, v in traffic.reported_daily(restated=True).items()}
    spikes = set()
    for key in {k for _, k in reported}:
        first = min(d for d, k in reported if k == key)
        for offset in range(SIM_DAYS):
            day = SIM_START + timedelta(days=offset)
            history = [reported.get((day - timedelta(days=back), key), 0.0)
                       for back in range(1, rules.baseline_days + 1) if day - timedelta(days=back) >= first]
            if (day, key) not in reported or len(history) < rules.min_history_days:
                continue
            median = statistics.median(history)
            mad = statistics.median(abs(x - median) for x in history)
            threshold = max(rules.spike_ratio * median, median + rules.spike_mads * 1.4826 * mad,
                            median + rules.spike_min_usd)
            if reported[(day, key)] > threshold:
                spikes.add((day, key))
    return spikes


def test_spend_spikes_are_exactly_what_the_method_finds_in_the_simulated_month(detected, traffic):
    """The clean simulator days have one genuine spike by the documented rule: media-tasks (per-call video,
    music and image tasks, lumpy by nature) drew $1.48 of tasks on 2026-10-20 against a 14-day median of
    $0.34 (MAD $0.16): 4.4x, +$1.14, above 3x, median + 3.5 robust sigmas ($1.17) and median + $1 ($1.34).
    No other key-day of the month, planted ones included, crosses all three thresholds."""
    rows = findings(detected, "spend_spike")
    spikes = {(d, k) for d, k, *_ in rows}
    assert spikes == expected_spikes(traffic, AnomalyRules()) == {(date(2026, 10, 20), "media-tasks")}
    [(_, _, severity, excess, detail, evidence, _)] = rows
    assert severity == "warning" and excess == pytest.approx(1.14)
    assert "spent $1.480000 on 2026-10-20, 4.4 times its baseline of $0.340000" in detail
    assert "baseline_days=2026-10-06..2026-10-19" in evidence


def test_only_the_expected_kinds_appear_and_balance_pairs_wait_for_daily_figures(detected):
    by_kind = {}
    for (kind, _), n in counts_all(detected).items():
        by_kind[kind] = by_kind.get(kind, 0) + n
    # the simulator's snapshots are taken today, long after the month's daily figures: the pair is not
    # judged (no balance_jump), nothing was topped up, and the runway uses the last reported week
    assert set(by_kind) == {"unlogged_gateway_requests", "new_source_ip", "restatement", "unpriced_model",
                            "spend_spike", "runway"}
    [(_, key, severity, balance, detail, evidence, _)] = findings(detected, "runway")
    assert key is None and severity == "info"
    assert balance == pytest.approx(table_rows(detected, "SELECT balance_usd::DOUBLE FROM balance_snapshots "
                                                         "ORDER BY fetched_at DESC LIMIT 1")[0][0])
    assert "burn_days=2026-10-24..2026-10-30" in evidence and "average daily spend" in detail


def counts_all(settings) -> dict[tuple[str, str], int]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        return counts(con, date(2000, 1, 1), date(2100, 1, 1))


def test_rebuilding_gives_identical_rows(detected):
    query = f"SELECT {COLUMNS} FROM anomalies ORDER BY finding_id"
    before = table_rows(detected, query)
    with scratch(detected.warehouse_path) as con:
        detect(con, SIM_START, LAST, DETECTED_AT)
        assert con.execute(query).fetchall() == before
        detect(con, date(2026, 10, 20), LAST, DETECTED_AT)  # a partial window, on top of the whole month
        assert con.execute(query).fetchall() == before
        later = DETECTED_AT + timedelta(days=1)
        detect(con, SIM_START, LAST, later)  # a later build: same findings, same ids, new time
        after = con.execute(query).fetchall()
        assert [r[:1] + r[2:] for r in after] == [r[:1] + r[2:] for r in before]
        assert {r[1] for r in after} == {later}


def test_every_column_has_a_comment_and_severities_are_bounded(detected):
    [(table_comment,)] = table_rows(detected, "SELECT comment FROM duckdb_tables() WHERE table_name = 'anomalies'")
    columns = table_rows(detected, "SELECT column_name, comment FROM duckdb_columns() WHERE table_name = 'anomalies'")
    assert table_comment and [c for c, comment in columns if not comment] == []
    assert {c for c, _ in columns} == {c.strip() for c in COLUMNS.split(",")}
    assert {s for _, s in counts_all(detected)} <= {"info", "warning", "critical"}


# --- synthetic warehouses -----------------------------------------------------------------------

D = date(2026, 3, 1)  # day 1 of the synthetic data


def day(n: int) -> date:
    return D + timedelta(days=n - 1)


def fresh_warehouse(con: duckdb.DuckDBPyConnection) -> None:
    """The input tables with their real schemas, empty."""
    for model in ("quota_daily", "quota_restatements", "recon_key_daily", "requests", "key_ip_daily"):
        for statement in con.extract_statements(model_path(model).read_text()):
            if statement.type == duckdb.StatementType.CREATE:
                con.execute(statement)
    con.execute("CREATE TABLE requests AS FROM requests_window")  # (in a warehouse: a view over its day files)
    con.execute("CREATE TABLE balance_snapshots (fetched_at TIMESTAMPTZ, username VARCHAR, balance_usd DECIMAL(18, 6), "
                "total_used_usd DECIMAL(18, 6), request_count BIGINT, snapshot_id VARCHAR)")


def add_daily(con, key: str, costs: dict[int, float]) -> None:
    for n, cost in costs.items():
        con.execute("INSERT INTO quota_daily VALUES ($d, $k, $c, 10, TIMESTAMPTZ '2026-06-01 00:00:00+00', 'p1')",
                    {"d": day(n), "k": key, "c": Decimal(str(cost))})


def add_snapshot(con, when: datetime, balance: float, used: float) -> None:
    con.execute("INSERT INTO balance_snapshots VALUES ($t, 'acct', $b, $u, 0, $id)",
                {"t": when, "b": Decimal(str(balance)), "u": Decimal(str(used)), "id": when.strftime("s%Y%m%dT%H%M")})


def rows_of(con, kind: str) -> list[tuple]:
    return con.execute("SELECT usage_date, key_name, severity, amount_usd, detail, evidence FROM anomalies "
                       "WHERE kind = $kind ORDER BY ALL", {"kind": kind}).fetchall()


def at(n: int, hour: int = 12) -> datetime:
    return datetime.combine(day(n), datetime.min.time(), tzinfo=UTC) + timedelta(hours=hour)


def test_spend_spike_needs_history_survives_zeros_and_catches_a_real_spike(tmp_path):
    with publish(tmp_path / "warehouse.duckdb") as con:
        fresh_warehouse(con)
        assert detect(con, day(1), day(21), DETECTED_AT) == 0  # empty tables: nothing, no error
        add_daily(con, "steady", {n: 2.0 for n in range(1, 21)} | {21: 9.0})  # 4.5x its $2 median: a spike
        add_daily(con, "noisy", {n: 1.0 if n % 2 else 3.0 for n in range(1, 21)} | {21: 6.9})  # 3.45x, but MAD guard
        add_daily(con, "fresh", {15: 1.0, 16: 1.0, 18: 50.0})  # a new key: 3 days of history, no verdict
        add_daily(con, "idle", {n: 0.0 for n in range(1, 22)})  # reported rows of zero: no crash, no finding
        add_daily(con, "sparse", {1: 0.5, 12: 0.8, 20: 5.0})  # median and MAD 0: > $1 is a spike, $0.80 is not
        detect(con, day(8), day(21), DETECTED_AT)
        spikes = rows_of(con, "spend_spike")
    assert [(d, k) for d, k, *_ in spikes] == [(day(20), "sparse"), (day(21), "steady")]
    sparse, steady = spikes
    assert steady[3] == pytest.approx(7.0) and "4.5 times its baseline of $2.000000" in steady[4]
    assert "14 previous days, 0 of them without spend" in steady[4]
    assert sparse[3] == pytest.approx(5.0) and "against its baseline of $0.000000" in sparse[4]
    assert "14 previous days, 13 of them without spend" in sparse[4]


def test_balance_pairs_flag_top_ups_and_unexplained_jumps(tmp_path):
    with publish(tmp_path / "warehouse.duckdb") as con:
        fresh_warehouse(con)
        add_daily(con, "k", {n: 8.0 for n in range(1, 21)})
        add_snapshot(con, at(10), balance=100, used=50)
        add_snapshot(con, at(12), balance=184, used=66)   # spent 16 (days 10..12 explain 8..24), +100 credit
        add_snapshot(con, at(14), balance=143, used=107)  # spent 41: at most 24 explained, 17 unexplained
        add_snapshot(con, at(16), balance=107, used=123)  # spent 16 but the balance fell 36: 20 removed
        add_snapshot(con, at(21), balance=7, used=223)    # day 21 not reported yet: not judged
        detect(con, day(1), day(21), DETECTED_AT)
        top_ups, jumps = rows_of(con, "top_up"), rows_of(con, "balance_jump")
    assert [(d, k, s, a) for d, k, s, a, *_ in top_ups] == [(day(12), None, "info", pytest.approx(100.0))]
    assert "topped up by $100.000000" in top_ups[0][4]
    assert [(d, s, a) for d, _, s, a, *_ in jumps] == [(day(14), "warning", pytest.approx(17.0)),
                                                       (day(16), "warning", pytest.approx(20.0))]
    assert "rose by $41.000000" in jumps[0][4] and "at most $24.000000" in jumps[0][4]
    assert "check=spend_above_daily" in jumps[0][5]
    assert "credit was removed" in jumps[1][4] and "check=credit_removed" in jumps[1][5]


def test_a_late_restatement_explains_a_jump_between_snapshots(tmp_path):
    with publish(tmp_path / "warehouse.duckdb") as con:
        fresh_warehouse(con)
        add_daily(con, "k", {n: 8.0 for n in range(1, 21)})
        add_snapshot(con, at(10), balance=100, used=50)
        add_snapshot(con, at(11), balance=80, used=70)  # day 10..11 explain 16; +4 restated day 3, pulled day 11
        con.execute("INSERT INTO quota_restatements VALUES ($d, 'k', 4, 8, 4, 1, 1, $p0, $p1, 'p2')",
                    {"d": day(3), "p0": at(4), "p1": at(11, 6)})
        detect(con, day(1), day(21), DETECTED_AT)
        assert rows_of(con, "balance_jump") == []
        assert [r[:3] for r in rows_of(con, "restatement")] == [(day(3), "k", "warning")]


@pytest.mark.parametrize(("balance", "daily", "severity", "words"), [
    (40.0, 8.0, "critical", "lasts about 5.0 days"),
    (160.0, 8.0, "warning", "lasts about 20.0 days"),
    (400.0, 8.0, "info", "lasts about 50.0 days"),
    (400.0, 0.0, "info", "is not being used up"),
    (0.0, 8.0, "critical", "has run out of credit"),
])
def test_runway_severity_follows_days_left(tmp_path, balance, daily, severity, words):
    with publish(tmp_path / "warehouse.duckdb") as con:
        fresh_warehouse(con)
        add_daily(con, "k", {n: 2.0 for n in range(1, 13)} | {n: daily for n in range(13, 21)})
        add_snapshot(con, at(5), balance=900, used=0)
        add_snapshot(con, at(21, 2), balance=balance, used=0)  # 02:00 UTC is still day 20 in New York
        detect(con, day(1), day(21), DETECTED_AT, timezone="America/New_York")
        [(usage_date, key, got, amount, detail, evidence)] = rows_of(con, "runway")
    assert (usage_date, key, got, amount) == (day(20), None, severity, pytest.approx(balance))
    assert words in detail
    if balance and daily:
        assert "burn_days=2026-03-13..2026-03-19" in evidence  # the 7 days before the snapshot's day


def test_detect_refuses_a_naive_time_and_missing_tables(tmp_path):
    with publish(tmp_path / "warehouse.duckdb") as con:
        with pytest.raises(ValueError, match="timezone-aware"):
            detect(con, day(1), day(2), datetime(2026, 1, 1))
        with pytest.raises(LookupError, match="quota_daily, quota_restatements"):
            detect(con, day(1), day(2), DETECTED_AT)
