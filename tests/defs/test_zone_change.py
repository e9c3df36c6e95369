"""Changing COMET_LEDGER_TIMEZONE on a populated home: the lake keeps UTC days, so the next run
rebuilds every table's days from the lake in the new zone, says so in one line, and loses or doubles
nothing. A home in the older layout (reporting days in the lake) is converted once, row for row."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, date, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import dagster as dg
import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from conftest import make_settings, materialize_days
from pipelines.lib.lake import layout as lake_layout
from pipelines.simulator.catalog import prices_csv
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer
from pipelines.simulator.traffic import generate_traffic

FIRST = date(2026, 10, 5)
DAYS = 4
LAST = FIRST + timedelta(days=DAYS - 1)
SHANGHAI = "Asia/Shanghai"
BILLED = "SELECT sum(billed_cost_usd), sum(gateway_requests) FROM recon_key_daily"


def rows(settings, sql: str) -> list[tuple]:
    with duckdb.connect(str(settings.warehouse_path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return con.execute(sql).fetchall()


def totals(settings) -> dict[str, tuple]:
    """Every table's totals that a change of reporting zone must leave as they were. (Not the
    estimates: a price version starts on a reporting day, so a request near a price change may fall
    under another version once its day moves.)"""
    return {
        "requests": rows(settings, "SELECT count(*), count(DISTINCT request_id), sum(billed_cost_usd) "
                                   "FROM requests")[0],
        "recon_key_daily": rows(settings, "SELECT sum(reported_cost_usd), sum(reported_requests), "
                                          "sum(logged_requests) FROM recon_key_daily")[0],
        "cost_key_model_daily": rows(settings, "SELECT sum(allocated_cost_usd) FROM cost_key_model_daily")[0],
        "cost_model_daily": rows(settings, "SELECT sum(requests), sum(allocated_cost_usd) FROM cost_model_daily")[0],
        "cost_category_monthly": rows(settings, "SELECT sum(requests), sum(allocated_cost_usd) "
                                                "FROM cost_category_monthly")[0],
        "chargeback_monthly": rows(settings, "SELECT sum(requests), sum(reported_cost_usd) FROM chargeback_monthly")[0],
        "key_ip_daily": rows(settings, "SELECT sum(requests) FROM key_ip_daily")[0],
        "quota_daily": rows(settings, "SELECT count(*), sum(reported_cost_usd) FROM quota_daily")[0],
        "inbox_files": rows(settings, "SELECT count(*), sum(accepted), sum(duplicates) FROM inbox_files")[0],
    }


def run(settings, first: date, last: date) -> list[str]:
    """Materialise [first, last]; returns the run's log lines."""
    instance = dg.DagsterInstance.ephemeral()
    result = materialize_days(settings, first, last, instance=instance)
    return [entry.user_message for entry in instance.all_logs(result.run_id)]


@pytest.fixture
def home(tmp_path):
    traffic = generate_traffic(seed=17, start=FIRST, days=DAYS, requests_per_day=40)
    with SimulatorServer(traffic) as sim:
        prices = tmp_path / "sim-prices.csv"
        prices.write_text(prices_csv(traffic.start, traffic.days))

        def settings_in(zone: str):
            return make_settings(tmp_path / "home", sim, COMETAPI_ACCESS_TOKEN=sim.access_token,
                                 COMET_LEDGER_TIMEZONE=zone, COMET_LEDGER_PRICES=str(prices),
                                 COMET_LEDGER_START_DATE=(FIRST - timedelta(days=1)).isoformat())

        utc = settings_in("UTC")
        write_inbox(traffic, utc.inbox)
        run(utc, FIRST, LAST)
        run(utc, FIRST, LAST)  # the re-pull catches the simulator's planted restatement: the figures are final
        yield settings_in, traffic


def test_a_zone_change_rebuilds_every_day_from_the_lake_in_the_new_zone(home):
    settings_in, traffic = home
    utc = settings_in("UTC")
    before = totals(utc)
    assert before["requests"][0] > 100 and before["requests"][2] > 0
    shanghai = settings_in(SHANGHAI)
    logs = run(shanghai, FIRST, LAST)

    said = [line for line in logs if line.startswith("reporting zone changed")]
    days = rows(shanghai, "SELECT count(DISTINCT usage_date) FROM recon_key_daily")[0][0]
    assert len(said) == 1 and said[0].startswith(f"reporting zone changed from UTC to {SHANGHAI}: rebuilt ")
    rebuilt = said[0].split(": rebuilt ", 1)[1].split(" for ", 1)[0].split(", ")
    # every table keyed by reporting day, the ledger's observed prices among them
    assert {"requests", "ledger_price_days", "recon_key_daily", "cost_model_daily"} <= set(rebuilt)
    found = re.search(r" for (\S+) \.\. (\S+) \((\d+) days\) from the lake$", said[0])
    first, last = date.fromisoformat(found[1]), date.fromisoformat(found[2])
    assert int(found[3]) == (last - first).days + 1 >= days >= DAYS
    held = rows(shanghai, "SELECT min(usage_date), max(usage_date) FROM requests")[0]
    assert first <= held[0] and held[1] <= last and held[1] == LAST + timedelta(days=1)  # evenings of LAST moved on
    # every request on its Shanghai day, each once; nothing lost, nothing added
    tz = ZoneInfo(SHANGHAI)
    requests = rows(shanghai, "SELECT request_id, ts, usage_date FROM requests")
    assert all(day == ts.astimezone(tz).date() for _, ts, day in requests)
    assert any(ts.astimezone(UTC).date() != day for _, ts, day in requests)  # the days did move
    after = totals(shanghai)
    assert after == before
    # billed per reporting day: the ledger's rows of that Shanghai day, on the days the pulls cover whole
    # (Shanghai's FIRST .. LAST were landed as UTC FIRST-1 .. LAST; the evening of UTC LAST is day LAST+1,
    # only half pulled: not claimed as covered)
    with duckdb.connect() as con:
        con.execute("SET TimeZone = 'UTC'")
        ledger = dict(con.execute(
            "SELECT timezone($z, created_at)::DATE AS d, sum(billed_usd) FROM read_parquet($f) "
            "WHERE log_type IN (2, 6) GROUP BY 1", {"z": SHANGHAI, "f": str(shanghai.lake / "gateway_logs" / "*" / "*.parquet")}
        ).fetchall())
    billed = dict(rows(shanghai, "SELECT usage_date, sum(billed_cost_usd) FROM recon_key_daily GROUP BY 1"))
    assert {d: billed[d] for d in billed if FIRST <= d <= LAST} == {d: ledger[d] for d in ledger if FIRST <= d <= LAST}
    assert billed.get(LAST + timedelta(days=1)) is None and ledger[LAST + timedelta(days=1)] > 0
    # the other day-derived tables follow the new days too
    shifted = {(d, k) for d, k in rows(shanghai, "SELECT usage_date, key_name FROM key_ip_daily")}
    expected = {(r.ts.astimezone(tz).date(), r.key_name) for r in traffic.iter_requests() if r.is_request
                and r.source_ip}
    assert shifted <= expected and shifted
    inbox = rows(shanghai, "SELECT min(first_usage_date), max(last_usage_date) FROM inbox_files")[0]
    assert inbox == (min(ts.astimezone(tz).date() for _, ts, _ in requests),
                     max(ts.astimezone(tz).date() for _, ts, _ in requests))
    zones = dict(rows(shanghai, "SELECT model, reporting_zone FROM model_versions WHERE reporting_zone IS NOT NULL"))
    assert {zones[m] for m in ("requests", "recon_key_daily", "cost_model_daily", "anomalies")} == {SHANGHAI}
    # and back: the same figures again, said once more
    logs = run(settings_in("UTC"), FIRST, LAST)
    assert sum(line.startswith(f"reporting zone changed from {SHANGHAI} to UTC") for line in logs) == 1
    assert totals(utc) == before


def _as_older_layout(lake, zone: str) -> None:
    """Rewrite a lake as the older version wrote it in `zone`: reporting days in the lake."""
    tz = ZoneInfo(zone)

    def local_days(instants: pa.ChunkedArray) -> pa.Array:
        return pa.array([t.astimezone(tz).date() for t in instants.to_pylist()], pa.date32())

    for dataset, column, time_column in (("gateway_logs", "utc_date", "created_at"),
                                         ("request_logs", "utc_date", "ts")):
        tables = [pq.read_table(f, partitioning=None) for f in (lake / dataset).glob("*/*.parquet")]
        shutil.rmtree(lake / dataset)
        table = pa.concat_tables(tables)
        table = table.drop_columns([column]).append_column("usage_date", local_days(table[time_column]))
        for day in pc.unique(table["usage_date"]).to_pylist():
            folder = lake / dataset / f"usage_date={day}"
            folder.mkdir(parents=True)
            pq.write_table(table.filter(pc.equal(table["usage_date"], pa.scalar(day, pa.date32()))),
                           folder / ("ledger.parquet" if dataset == "gateway_logs" else "requests.parquet"))
    for path in (lake / "inbox_records").glob("*/*.parquet"):
        table = pq.read_table(path, partitioning=None)
        pq.write_table(table.drop_columns(["utc_date"]).append_column("usage_date", local_days(table["ts"])), path)
    for path in (lake / "inbox_manifest").glob("*/*.parquet"):
        table = pq.read_table(path, partitioning=None)
        pq.write_table(table.rename_columns([n.replace("_utc_", "_usage_") for n in table.column_names]), path)
    for path in (lake / "gateway_pulls").glob("*/*.parquet"):
        pq.write_table(pq.read_table(path, partitioning=None).drop_columns(["day_basis"]), path)
    for path in (lake / "gateway_checks").glob("*/*.parquet"):
        table = pq.read_table(path, partitioning=None)
        pq.write_table(table.rename_columns(["usage_date" if n == "utc_date" else n for n in table.column_names]),
                       path)
    (lake / lake_layout.MARKER).unlink()


def test_a_home_in_the_older_layout_is_converted_once_without_losing_a_row(home):
    settings_in, _ = home
    utc = settings_in("UTC")
    before = totals(utc)
    billed_before = rows(utc, BILLED)
    ledger_rows = sum(pq.read_metadata(f).num_rows for f in (utc.lake / "gateway_logs").glob("*/*.parquet"))
    _as_older_layout(utc.lake, SHANGHAI)
    assert not lake_layout.is_current(utc.lake)

    logs = run(utc, FIRST, LAST)
    converted = [line for line in logs if line.startswith("lake converted to UTC days")]
    assert len(converted) == 1 and f"{ledger_rows} gateway ledger row(s)" in converted[0]
    assert lake_layout.is_current(utc.lake)
    assert not [p for dataset in ("gateway_logs", "request_logs") for p in (utc.lake / dataset).glob("usage_date=*")]
    assert sum(pq.read_metadata(f).num_rows for f in (utc.lake / "gateway_logs").glob("*/*.parquet")) == ledger_rows
    after = totals(utc)
    assert after == before
    assert rows(utc, BILLED) == billed_before and billed_before[0][0] > Decimal(0)
    # a second run finds nothing to convert
    assert not [line for line in run(utc, FIRST, LAST) if line.startswith("lake converted")]
