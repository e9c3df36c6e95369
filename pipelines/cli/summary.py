"""The figures a command prints about a window of reporting days: reported spend per key, the
restatements, the client request logs, the reconciliation, and the same figures as one JSON object
(`--json`). Each figure is read once (`*_rows`, `*_figures`) and either printed as a table or put in
the JSON summary, so `--json` carries what the tables show; money in JSON is a string with 6
decimals. The queries are in sql/reports/cli/, run through `warehouse.run_query`.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from pipelines.lib.settings import Settings


def _read(settings: Settings, query: str, params: dict | None = None) -> list[tuple]:
    """The rows of `sql/reports/<query>.sql` (the summary's queries are in sql/reports/cli/)."""
    from pipelines.lib.warehouse import connect_readonly, run_query

    with connect_readonly(settings.warehouse_path) as con:
        return run_query(con, query, params).fetchall()


def quota_rows(settings: Settings, first: date, last: date) -> list[tuple[str, int, Decimal, int]]:
    """(key_name, days, reported USD, requests) per key for [first, last]."""
    return _read(settings, "cli/quota_by_key", {"first": first, "last": last})


def restatement_rows(settings: Settings, first: date, last: date) -> list[tuple]:
    """(usage_date, key_name, previous USD, new USD, pulled_at) of the window's days, latest first."""
    return _read(settings, "cli/restatements", {"first": first, "last": last})


def reconciliation_figures(settings: Settings, first: date, last: date) -> dict:
    """Key-days per status (with reported and estimated USD), the flagged key-days, the coverage."""
    window = {"first": first, "last": last}
    statuses = _read(settings, "cli/recon_statuses", window)
    flagged = _read(settings, "cli/flagged", window)
    [(coverage,)] = _read(settings, "cli/coverage", window)
    return {"statuses": statuses, "flagged": flagged, "coverage_pct": coverage or 0}


def partial_days(settings: Settings, first: date, last: date) -> list[date]:
    """Days of [first, last] the warehouse marks partial: not over when they were built (data so far)."""
    return [day for (day,) in _read(settings, "cli/partial_days", {"first": first, "last": last})]


def partial_day_line(settings: Settings, day: date) -> str:
    return (f"{day} is partial: data so far (the day is not over in {settings.timezone}; "
            "the run after it ends rebuilds it)")


def request_log_figures(settings: Settings) -> dict[str, int]:
    [row] = _read(settings, "cli/inbox_totals")
    return dict(zip(("files", "lines_read", "accepted", "rejected", "duplicates"), map(int, row)))


def window_summary(settings: Settings, first: date, last: date) -> dict:
    """The figures of [first, last] that the tables show, JSON-ready."""
    keys = quota_rows(settings, first, last)
    recon = reconciliation_figures(settings, first, last)
    return {
        "first_day": first.isoformat(),
        "last_day": last.isoformat(),
        "timezone": settings.timezone,
        "days": (last - first).days + 1,
        "partial_days": [day.isoformat() for day in partial_days(settings, first, last)],
        "key_days": sum(r[1] for r in keys),
        "reported_usd": _usd(sum((r[2] for r in keys), Decimal(0))),
        "requests": int(sum(r[3] for r in keys)),
        "keys": [{"key_name": key, "days": days, "reported_usd": _usd(cost), "requests": int(requests)}
                 for key, days, cost, requests in keys],
        "reconciliation": {
            "statuses": {status: key_days for status, key_days, _, _ in recon["statuses"]},
            "coverage_pct": f"{recon['coverage_pct']:.2f}",
            "flagged": [{"usage_date": day.isoformat(), "key_name": key, "status": status, "explanation": text}
                        for day, key, status, text in recon["flagged"]],
        },
        "restatements": [{"usage_date": day.isoformat(), "key_name": key, "previous_usd": _usd(before),
                          "new_usd": _usd(after), "pulled_at": pulled_at.isoformat()}
                         for day, key, before, after, pulled_at in restatement_rows(settings, first, last)],
    }


def print_json(summary: dict) -> None:
    import json

    print(json.dumps(summary, indent=2))


def _usd(amount: Decimal | float | None) -> str | None:
    return None if amount is None else f"{amount:.6f}"


def print_quota_table(settings: Settings, first: date, last: date) -> tuple[Decimal, int, int]:
    """Per-key reported spend and requests for [first, last]; returns (USD, requests, key-days)."""
    rows = quota_rows(settings, first, last)
    cost = sum((r[2] for r in rows), Decimal(0))
    requests = sum(r[3] for r in rows)
    key_days = sum(r[1] for r in rows)
    width = max([len("key_name"), len("total")] + [len(r[0]) for r in rows])
    print(f"reported by CometAPI, {first} .. {last} ({settings.timezone} days)")
    print(f"{'key_name':<{width}}  {'days':>4}  {'reported_usd':>14}  {'requests':>9}")
    for key, days, key_cost, key_requests in rows:
        print(f"{key:<{width}}  {days:>4}  {key_cost:>14.6f}  {key_requests:>9}")
    print(f"{'total':<{width}}  {key_days:>4}  {cost:>14.6f}  {requests:>9}")
    for day in partial_days(settings, first, last):
        print(partial_day_line(settings, day))
    return cost, requests, key_days


def print_restatements(settings: Settings, first: date, last: date) -> None:
    for day, key, before, after, _ in restatement_rows(settings, first, last)[:5]:
        print(f"restated: {day} {key}: {before} -> {after} USD")


def print_request_log_summary(settings: Settings) -> None:
    f = request_log_figures(settings)
    print(f"client request logs: {f['files']} files, {f['lines_read']} lines read = {f['accepted']} accepted + "
          f"{f['rejected']} rejected + {f['duplicates']} duplicates")


def print_reconciliation(settings: Settings, first: date, last: date) -> None:
    recon = reconciliation_figures(settings, first, last)
    print("reconciliation per key-day (status: key-days, reported USD, estimated USD)")
    for status, key_days, reported, estimated in recon["statuses"]:
        print(f"  {status:<17} {key_days:>4}  {reported:>12.6f}  {estimated:>12.6f}")
    print(f"  coverage: {recon['coverage_pct']:.2f} % of reported spend explained by priced, logged requests")
    for day, key, status, explanation in recon["flagged"]:
        print(f"  {day} {key} {status}: {explanation}")
