"""What the pack says, section by section, from the month's figures."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from pipelines.lib.review_pack.document import (
    NA, Bullets, Document, Image, Paragraph, Section, Table, count, day, dollars, instant, pct, share, text, usd,
)
from pipelines.lib.review_pack.figures import MonthFigures, Row
from pipelines.lib.review_pack.period import day_ranges

STATUS_MEANING = {
    "matched": "estimate equals the report to unit rounding ($0.000001 per reported request)",
    "within_tolerance": "difference within tolerance (default: the larger of $0.01 and 1 % of reported)",
    "over_reported": "CometAPI reported more than your logs explain, beyond tolerance",
    "under_reported": "CometAPI reported less than your logs explain, beyond tolerance",
    "missing_logs": "CometAPI reported spend and your logs hold nothing for the key-day",
    "missing_report": "your logs hold requests and CometAPI reported nothing for the key-day",
    "unpriced": "requests of a model without a price keep the estimate from covering the report",
}
ANOMALY_LABELS = {"usage_date": "day", "key_name": "key", "amount_usd": "amount (USD)", "action": "what to do"}


@dataclass(frozen=True)
class PackFiles:
    export_csv: str
    export_parquet: str
    recon_csv: str
    anomalies_csv: str
    sample: str
    spend_chart: str
    variance_chart: str
    sample_count: int
    sample_shapes: tuple[str, ...]
    sample_unavailable: int
    sample_per_shape: int


def compose(figures: MonthFigures, files: PackFiles, *, partial: bool = False) -> Document:
    """The document; `partial`: the month was not over when the pack was built, and it says so."""
    period = figures.period
    intro = [Paragraph(
        f"CometAPI spend for {period.month}, reconciled by Comet Ledger: reporting days "
        f"{day(period.first_day)}..{day(period.last_day)} in {period.timezone}. Every figure comes from the "
        "warehouse (`warehouse.duckdb`); money is USD with 6 decimals, and n/a marks a figure nobody knows.")]
    if partial:
        intro.append(Paragraph(
            f"Partial month: this pack was built before {period.month} ended, so its figures are the month so far, "
            f"not the month. Build it again after {day(period.last_day)} (the monthly schedule does, on the 2nd) "
            "for the pack to hand over."))
    for partial_day in figures.partial_days:
        intro.append(Paragraph(
            f"{day(partial_day)} is partial: data so far. The day was not over in {period.timezone} when the "
            "warehouse built it, so its figures (and every total that includes it) hold what was known then; the "
            "run after the day ends rebuilds it."))
    return Document(
        title=f"Budget review evidence pack: {period.month}" + (" (partial month)" if partial else ""),
        intro=tuple(intro),
        sections=(
            _summary(figures),
            _balances(figures),
            _spend(figures, files),
            _estimated_vs_reported(figures, files),
            _coverage(figures),
            _ledger_completeness(figures),
            _anomalies(figures, files),
            _prices(figures),
            _caveats(figures),
            _pack_files(figures, files),
        ),
    )


# --- sections ----------------------------------------------------------------------------------


def data_coverage(figures: MonthFigures) -> str:
    """One plain sentence on which days of the month the pack has data for."""
    period, days = figures.period, figures.reported_days
    if not figures.has_data:
        return (f"There is no data for {period.month}: the warehouse holds no query-service figures and no "
                f"logged requests for any of its {period.days_in_month} days, so the pack's tables are empty.")
    if not days:
        return (f"The query service has no figures for {period.month} (none of its {period.days_in_month} days "
                "has been pulled); only your logs hold requests for it.")
    if len(days) == period.days_in_month:
        return f"Data covers all {period.days_in_month} days of {period.month}: {day_ranges(days)}."
    missing = sorted(set(period.days) - set(days))
    return (f"Data covers {len(days)} of {period.days_in_month} days: {day_ranges(days)}. "
            f"No data for {day_ranges(missing)}: totals are for the covered days only.")


def _summary(f: MonthFigures) -> Section:
    t = f.totals
    items = [
        f"Reported by CometAPI (query service): {dollars(t['reported_cost_usd'])} for "
        f"{count(t['reported_requests'])} requests over {count(t['reported_key_days'])} key-days.",
        _billed_sentence(f),
        f"Estimated from your logs: {dollars(t['estimated_cost_usd'])} for {count(t['logged_requests'])} logged "
        f"requests; variance (reported - estimated): {dollars(t['variance_usd'])}.",
        f"Coverage: {share(t['estimated_cost_usd'], t['reported_cost_usd'])} of reported spend is explained by "
        f"priced, logged requests; {dollars(t['reconciled_reported_usd'])} "
        f"({share(t['reconciled_reported_usd'], t['reported_cost_usd'])}) is on key-days that reconcile.",
        f"Key-days flagged (beyond tolerance, or not comparable): {count(t['flagged_key_days'])} of "
        f"{count(t['key_days'])}" + (f" ({_status_counts(f)})." if t["flagged_key_days"] else "."),
        f"Key-days not matched exactly: {count(t['not_matched_key_days'])} of {count(t['key_days'])} "
        f"({count(len(f.within_tolerance))} within tolerance, {count(t['flagged_key_days'])} flagged).",
        _anomaly_sentence(f),
        f"Opening balance: {_opening_phrase(f)}; closing balance: {_balance_phrase(f.closing, f.period.ends_at)}.",
    ]
    logged_only = sorted(set(f.logged_days) - set(f.reported_days))
    blocks = [Paragraph(data_coverage(f)), Bullets(tuple(items))]
    if logged_only and f.reported_days:
        blocks.append(Paragraph(f"Your logs or the gateway ledger hold requests on {len(logged_only)} day(s) the "
                                f"query service has no figures for: {day_ranges(logged_only)}."))
    return Section("Summary", tuple(blocks))


def _billed_sentence(f: MonthFigures) -> str:
    if f.gateway_days == 0:
        return ("Billed by the gateway ledger: n/a, the ledger does not cover any day of the month "
                "(COMETAPI_ACCESS_TOKEN not set, or not pulled), so causes cannot be itemised.")
    covered = f"covers {f.gateway_days} of {len(set(f.reported_days) | set(f.logged_days))} days with data"
    return (f"Billed by the gateway ledger: {dollars(f.totals['billed_cost_usd'])} for "
            f"{count(f.totals['gateway_requests'])} calls (the ledger {covered}).")


def _status_counts(f: MonthFigures) -> str:
    counts = Counter(r["status"] for r in f.flagged)
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))


def _anomaly_sentence(f: MonthFigures) -> str:
    if f.anomalies is None:
        return "Anomalies: anomaly detection has not run (the warehouse has no anomalies table)."
    by_severity = Counter(r.get("severity") for r in f.anomalies if r.get("severity"))
    split = ", ".join(f"{by_severity[s]} {s}" for s in ("critical", "warning", "info") if by_severity[s])
    return f"Anomalies: {len(f.anomalies)} finding(s) for the month" + (f" ({split})." if split else ".")


def _opening_phrase(f: MonthFigures) -> str:
    if f.opening_balance is not None:
        return _balance_phrase(f.opening_balance, f.period.starts_at)
    if f.opening is None:
        return f"no opening balance recorded (no snapshot at or after {instant(f.period.starts_at)})"
    return ("no opening balance recorded (no snapshot was taken during the month; the nearest one is under "
            "Opening and closing balance)")


def _balance_phrase(snapshot: Row | None, boundary: datetime) -> str:
    if snapshot is None:
        return f"none (no snapshot at or after {instant(boundary)})"
    return (f"{dollars(snapshot['balance_usd'])} (snapshot of {instant(snapshot['fetched_at'])}, "
            f"{_lag(snapshot['fetched_at'] - boundary)} after {instant(boundary)})")


def _balances(f: MonthFigures) -> Section:
    period = f.period
    rows = []
    opening_label = "opening" if f.opening is None or f.opening_balance is not None else "nearest to the start"
    for label, boundary, snap in ((opening_label, period.starts_at, f.opening), ("closing", period.ends_at, f.closing)):
        if snap is None:
            rows.append((label, instant(boundary), "none", NA, NA, NA, NA))
        else:
            rows.append((label, instant(boundary), instant(snap["fetched_at"]), _lag(snap["fetched_at"] - boundary),
                         usd(snap["balance_usd"]), usd(snap["total_used_usd"]), count(snap["request_count"])))
    notes = []
    for label, boundary, snap in (("opening", period.starts_at, f.opening), ("closing", period.ends_at, f.closing)):
        if snap is None:
            notes.append(f"No {label} balance: no balance snapshot was taken at or after {instant(boundary)}. "
                         "None is invented: past balances cannot be fetched, only recorded when a pull runs.")
    if f.opening is not None and f.opening_balance is None:
        notes.append("The snapshot closest to the month's start was taken after the month ended, so it is not an "
                     "opening balance for the month: no snapshot was taken during it, and no opening balance is "
                     "recorded.")
    if f.opening_balance is not None and f.closing is not None:
        if f.opening["snapshot_id"] == f.closing["snapshot_id"]:
            notes.append("Opening and closing are the same snapshot: the month's change in balance cannot be read "
                         "from snapshots.")
        else:
            change = f.closing["total_used_usd"] - f.opening["total_used_usd"]
            notes.append(f"Lifetime spend grew by {dollars(change)} between the two snapshots; the query service "
                         f"reports {dollars(f.totals['reported_cost_usd'])} for the month's days. They differ by "
                         "any spend between each boundary and its snapshot, and by top-ups (which change the "
                         "balance, not the spend).")
    return Section("Opening and closing balance", (
        Paragraph("Balances are point-in-time: CometAPI reports the balance only at the moment of a call, so the "
                  "pack shows the closest snapshot at or after the month's start and end, never an interpolated one."),
        Table(("", "boundary", "snapshot taken", "after boundary", "balance (USD)", "lifetime spend (USD)",
               "lifetime requests"), tuple(rows), numeric=frozenset({4, 5, 6})),
        *(Paragraph(n) for n in notes),
    ))


def _lag(delta) -> str:
    seconds = int(delta.total_seconds())
    days_, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days_} d {hours} h {rest // 60} min"


def _spend_table(rows, name: tuple[str, str], others: tuple[str, str]) -> Table:
    """Reported, estimated and billed spend per key or per team: (heading, column) for the row's name
    and for what it groups (a key's teams, a team's keys)."""
    return Table(
        (name[0], others[0], "reported requests", "reported (USD)", "estimated (USD)", "billed (USD)"),
        tuple((r[name[1]], r[others[1]], count(r["reported_requests"]), usd(r["reported_cost_usd"]),
               usd(r["estimated_cost_usd"]), usd(r["billed_cost_usd"])) for r in rows),
        total=("total", "", count(_sum(rows, "reported_requests")), usd(_sum(rows, "reported_cost_usd")),
               usd(_sum(rows, "estimated_cost_usd")), usd(_sum(rows, "billed_cost_usd"))),
        numeric=frozenset({2, 3, 4, 5}))


def _spend(f: MonthFigures, files: PackFiles) -> Section:
    t = f.totals
    by_key = _spend_table(f.by_key, ("key", "key_name"), ("team(s)", "teams"))
    by_team = _spend_table(f.by_team, ("team", "team"), ("keys", "keys"))
    by_model = Table(
        ("model", "category", "requests", "prompt tokens", "completion tokens", "cached tokens", "reasoning tokens",
         "estimated (USD)", "allocated (USD)"),
        tuple((r["model"], text(r["billing_category"]), count(r["requests"]), count(r["prompt_tokens"]),
               count(r["completion_tokens"]), count(r["cached_tokens"]), count(r["reasoning_tokens"]),
               usd(r["estimated_cost_usd"]), usd(r["allocated_cost_usd"])) for r in f.by_model),
        total=("total", "", count(_sum(f.by_model, "requests")), count(_sum(f.by_model, "prompt_tokens")),
               count(_sum(f.by_model, "completion_tokens")), count(_sum(f.by_model, "cached_tokens")),
               count(_sum(f.by_model, "reasoning_tokens")), usd(_sum(f.by_model, "estimated_cost_usd")),
               usd(_sum(f.by_model, "allocated_cost_usd"))),
        numeric=frozenset(range(2, 9)))
    by_category = Table(
        ("billing category", "requests", "estimated (USD)", "allocated (USD)"),
        tuple((r["billing_category"] or "unknown (unpriced, not in the ledger)", count(r["requests"]),
               usd(r["estimated_cost_usd"]), usd(r["allocated_cost_usd"])) for r in f.by_category),
        total=("total", count(_sum(f.by_category, "requests")), usd(_sum(f.by_category, "estimated_cost_usd")),
               usd(_sum(f.by_category, "allocated_cost_usd"))),
        numeric=frozenset({1, 2, 3}))
    return Section("Spend", (
        Paragraph(f"Reported spend for the month: {dollars(t['reported_cost_usd'])}. Reported is what CometAPI's "
                  "query service says each key spent (the amount to charge back); estimated is what your logs "
                  "explain (tokens x price version, or the per-call price); billed is what CometAPI's ledger "
                  "itemises. Allocated spreads each key-day's reported cost over its models (by ledger amounts, "
                  "else estimates, else request counts), so per-model and per-category figures add up to exactly "
                  "what CometAPI reported."),
        Image(files.spend_chart, f"Reported spend per day by key, {f.period.month}"),
        Section("By key", (by_key,), 3),
        Section("By team", (Paragraph("A key reassigned during the month is split between its teams by day "
                                      "(key_owners)."), by_team), 3),
        Section("By model", (Paragraph("Estimated here counts every priced request, also those only CometAPI's "
                                       "ledger has (priced from its token counts), so it can exceed the "
                                       "reconciliation's estimate, which counts only what your logs hold."),
                             by_model), 3),
        Section("By billing category", (by_category,), 3),
    ))


def _estimated_vs_reported(f: MonthFigures, files: PackFiles) -> Section:
    money = frozenset({1, 2, 3, 4})
    by_status = Table(
        ("status", "key-days", "reported (USD)", "estimated (USD)", "variance (USD)"),
        tuple((r["status"], count(r["key_days"]), usd(r["reported_cost_usd"]), usd(r["estimated_cost_usd"]),
               usd(r["variance_usd"])) for r in f.by_status),
        total=("total", count(_sum(f.by_status, "key_days")), usd(f.totals["reported_cost_usd"]),
               usd(f.totals["estimated_cost_usd"]), usd(f.totals["variance_usd"])),
        numeric=money)
    by_day = Table(
        ("day", "reported (USD)", "billed (USD)", "estimated (USD)", "variance (USD)", "reported requests",
         "logged requests", "flagged key-days"),
        tuple((day(r["usage_date"]), usd(r["reported_cost_usd"]), usd(r["billed_cost_usd"]),
               usd(r["estimated_cost_usd"]), usd(r["variance_usd"]), count(r["reported_requests"]),
               count(r["logged_requests"]), count(r["flagged_key_days"])) for r in f.by_day),
        total=("total", usd(f.totals["reported_cost_usd"]), usd(f.totals["billed_cost_usd"]),
               usd(f.totals["estimated_cost_usd"]), usd(f.totals["variance_usd"]),
               count(_sum(f.by_day, "reported_requests")), count(_sum(f.by_day, "logged_requests")),
               count(_sum(f.by_day, "flagged_key_days"))),
        numeric=frozenset(range(1, 8)))
    flagged = Table(
        ("day", "key", "team", "reported (USD)", "billed (USD)", "estimated (USD)", "variance (USD)", "variance %",
         "status", "explanation"),
        tuple((day(r["usage_date"]), r["key_name"], r["team"], usd(r["reported_cost_usd"]), usd(r["billed_cost_usd"]),
               usd(r["estimated_cost_usd"]), usd(r["variance_usd"]), pct(r["variance_pct"]), r["status"],
               r["explanation"]) for r in f.flagged),
        numeric=frozenset({3, 4, 5, 6, 7}),
        empty="No key-day is flagged: every key-day matches to unit rounding or is within tolerance.")
    within = Table(
        ("day", "key", "team", "reported (USD)", "billed (USD)", "estimated (USD)", "variance (USD)", "variance %",
         "tolerance (USD)", "explanation"),
        tuple((day(r["usage_date"]), r["key_name"], r["team"], usd(r["reported_cost_usd"]), usd(r["billed_cost_usd"]),
               usd(r["estimated_cost_usd"]), usd(r["variance_usd"]), pct(r["variance_pct"]), usd(r["tolerance_usd"]),
               r["explanation"]) for r in f.within_tolerance),
        numeric=frozenset({3, 4, 5, 6, 7, 8}),
        empty="No key-day is within tolerance without matching exactly.")
    blocks: list = [
        Paragraph("Variance is reported - estimated, per key and reporting day (`recon_key_daily`). Every key-day "
                  f"with its figures is in `{files.recon_csv}`."),
        Image(files.variance_chart, f"Estimated vs reported spend per day, {f.period.month}"),
        Section("By status", (by_status, Bullets(tuple(f"{s}: {m}" for s, m in STATUS_MEANING.items()))), 3),
        Section("By day", (by_day,), 3),
        Section("Flagged key-days and their explanations", (flagged,), 3),
        Section("Key-days within tolerance", (
            Paragraph("Not matched exactly, but the difference is within tolerance: not flagged."), within), 3),
    ]
    if f.restatements is not None:
        blocks.append(Section("Restatements", (
            Paragraph("Past days whose reported figures changed in a later pull (late billing); the pack uses the "
                      "latest pull."),
            Table(("day", "key", "previous (USD)", "new (USD)", "previous pull", "new pull"),
                  tuple((day(r["usage_date"]), r["key_name"], usd(r["previous_cost_usd"]), usd(r["new_cost_usd"]),
                         instant(r["previous_pulled_at"]), instant(r["pulled_at"])) for r in f.restatements),
                  numeric=frozenset({2, 3}), empty="No reported day of the month was restated."),
        ), 3))
    return Section("Estimated vs reported", tuple(blocks))


def _coverage(f: MonthFigures) -> Section:
    t = f.totals
    unexplained = [(r["status"], r["variance_usd"]) for r in f.by_status if r["status"] != "matched"]
    statuses = Table(
        ("pricing status", "requests"),
        tuple((r["pricing_status"], count(r["requests"])) for r in f.pricing_status),
        total=("total", count(t["requests"])), numeric=frozenset({1}))
    items = [
        f"Explained: {dollars(t['estimated_cost_usd'])} of {dollars(t['reported_cost_usd'])} reported "
        f"({share(t['estimated_cost_usd'], t['reported_cost_usd'])}).",
        f"On key-days that reconcile (matched or within tolerance): {dollars(t['reconciled_reported_usd'])} "
        f"({share(t['reconciled_reported_usd'], t['reported_cost_usd'])}).",
        f"Requests seen by your logs or the ledger: {count(t['requests'])}; priced {count(t['priced_requests'])}, "
        f"unpriced {count(t['unpriced_requests'])}, billed but missing from your logs "
        f"{count(t['gateway_only_requests'])}, logged but not in the ledger {count(t['client_only_requests'])}.",
    ]
    items += [f"Variance on {status} key-days: {dollars(v)}." for status, v in unexplained]
    return Section("Coverage", (
        Paragraph(data_coverage(f)),
        Paragraph("Share of the reported spend that priced requests in your logs explain:"),
        Bullets(tuple(items)),
        statuses,
    ))


CHECK_NAMES = {"log_stat": "type-2 quota vs /api/log/self/stat", "data_self": "type-2 quota vs /api/data/self",
               "total": "rows vs the pages' total"}


def _ledger_completeness(f: MonthFigures) -> Section:
    """How each day's gateway ledger pull was checked for completeness (the latest pull of the day)."""
    if not f.gateway_checks:
        return Section("Gateway ledger completeness", (Paragraph(
            "No gateway ledger pull of this month recorded completeness checks (the ledger was not pulled, or "
            "was pulled before they existed): billed figures are complete only as far as paging made them."),))
    summary: dict[tuple[str, str], int] = {}
    for r in f.gateway_checks:
        summary[(r["check_name"], r["status"])] = summary.get((r["check_name"], r["status"]), 0) + 1
    lines = [f"{CHECK_NAMES.get(name, name)}: {status.replace('_', ' ')} on {n} day(s)"
             for (name, status), n in sorted(summary.items())]
    not_checked = sorted({r["detail"] for r in f.gateway_checks if r["status"] == "not_checked" and r["detail"]})
    rows = tuple((day(r["utc_date"]), CHECK_NAMES.get(r["check_name"], r["check_name"]), r["status"],
                  text(r["ledger_units"]), text(r["server_units"]), text(r["api_method"]))
                 for r in f.gateway_checks)
    blocks = [
        Paragraph("Each day's ledger rows were compared with the gateway's own totals before they were landed; a "
                  "day that disagreed was not landed. A check the gateway does not offer is \"not checked\", never "
                  "passed. Units are CometAPI quota units (500 000 = 1 USD)."),
        Bullets(tuple(lines)),
    ]
    if not_checked:
        blocks.append(Paragraph("Why not checked: " + "; ".join(not_checked) + "."))
    blocks.append(Table(("UTC day", "check", "status", "ledger units", "gateway units", "read by"), rows,
                        numeric=frozenset({3, 4})))
    return Section("Gateway ledger completeness", tuple(blocks))


def _anomalies(f: MonthFigures, files: PackFiles) -> Section:
    if f.anomalies is None:
        return Section("Anomalies", (Paragraph(
            "Anomaly detection has not run: the warehouse has no anomalies table. No finding is reported, which is "
            "not the same as no finding: run anomaly detection and rebuild the pack."),))
    columns = tuple(f.anomaly_columns)
    numeric = frozenset(i for i, c in enumerate(columns) if c == "amount_usd")
    labels = tuple(ANOMALY_LABELS.get(c, c) for c in columns)
    return Section("Anomalies", (
        Paragraph("Findings of the anomaly detection (`anomalies`) for the month's days, and account-level "
                  f"findings detected during it. The evidence (request ids, IPs) is shortened here; every "
                  f"finding is in `{files.anomalies_csv}` with its evidence in full."),
        Table(labels, tuple(tuple(text(r[c]) for c in columns) for r in f.anomalies), numeric=numeric,
              empty="Anomaly detection ran and found nothing for this month.",
              prose=frozenset(i for i, c in enumerate(columns) if c in ("detail", "action")),
              long_text=frozenset(i for i, c in enumerate(columns) if c == "evidence"),
              full_text_in=files.anomalies_csv),
    ))


def _prices(f: MonthFigures) -> Section:
    versions = Table(
        ("price version", "model", "category", "input /1M", "output /1M", "cache read /1M", "cache write /1M",
         "per call", "gateway ratio", "effective from", "effective to", "source", "requests", "estimated (USD)"),
        tuple((r["price_version_id"], r["model"], r["billing_category"], text(r["input_usd_per_mtok"]),
               text(r["output_usd_per_mtok"]), text(r["cache_read_usd_per_mtok"]), text(r["cache_write_usd_per_mtok"]),
               text(r["per_call_usd"]), text(r["gateway_ratio"]), day(r["effective_from"]),
               day(r["effective_to"]) if r["effective_to"] else "open", text(r["source"]), count(r["requests"]),
               usd(r["estimated_cost_usd"])) for r in f.price_versions),
        total=("total", "", "", "", "", "", "", "", "", "", "", "", count(_sum(f.price_versions, "requests")),
               usd(_sum(f.price_versions, "estimated_cost_usd"))),
        numeric=frozenset({3, 4, 5, 6, 7, 8, 12, 13}), empty="No request of the month was priced.")
    unpriced = Table(
        ("model", "requests", "keys", "billed by the ledger (USD)"),
        tuple((r["model"] or NA, count(r["requests"]), r["keys"] or NA, usd(r["billed_cost_usd"]))
              for r in f.unpriced_models),
        numeric=frozenset({1, 3}), empty="Every request of the month had a price.")
    changes = Table(
        ("from", "change", "billed since (USD)"),
        tuple((day(r["usage_date"]), str(r["detail"]), usd(r["amount_usd"])) for r in f.price_changes),
        numeric=frozenset({2}), empty="The ledger shows no price change this month.")
    return Section("Price versions used", (
        Paragraph("The price table rows (`prices`) the month's requests were priced with, joined on "
                  "`requests.price_version_id`. Rates are USD before the gateway ratio; the estimate multiplies "
                  "by it. Source: `config` (your prices file) wins, then `ledger` (the ratios CometAPI's ledger "
                  "says it applied), then `catalog` (/api/models snapshots)."),
        versions,
        Section("Price changes seen in the ledger", (Paragraph("Days on which the ratios CometAPI applied to a "
                                                               "model changed, with what it billed at the new "
                                                               "price (anomalies, kind price_change)."), changes), 3),
        Section("Unpriced models", (Paragraph("Requests whose model had no price on its day: their estimate is "
                                              "n/a, never 0."), unpriced), 3),
    ))


def _caveats(f: MonthFigures) -> Section:
    tz = f.period.timezone
    sources = sorted({str(r["source"]) for r in f.price_versions if r["source"]})
    per_call = [f"{r['model']} at ${usd(r['per_call_usd'])} x {text(r['gateway_ratio'])} per call "
                f"({count(r['requests'])} calls)" for r in f.per_call_models]
    items = [
        f"Day time zone: a day is a reporting day in {tz} (COMET_LEDGER_TIMEZONE). CometAPI does not document "
        f"which time zone its daily figures use; if it is not {tz}, spend near midnight lands on a neighbouring "
        "day and day-level variances pair up with the opposite sign on the next day. "
        + (f"Read off the data (table service_day_boundary): {f.day_boundary}." if f.day_boundary else
           "The service's day boundary has not been inferred yet (no reconciliation has run)."),
        "Rates to verify at the source: estimates use the price table"
        + (f" (source: {', '.join(sources)})" if sources else "")
        + ", not CometAPI's live prices. Verify every rate and the gateway ratio on CometAPI's pricing page and "
          "model list before relying on an estimate; a rate that changed without a new price version makes the "
          "estimate wrong, not the bill.",
        "Per-call models are billed per call or task, whatever their token counts: "
        + ("; ".join(per_call) if per_call else "none was used this month") + ".",
        "Balances are point-in-time snapshots taken when a pull runs; the balance at a past instant cannot be "
        "fetched afterwards.",
        "Estimates are DOUBLE and rounded to 6 decimals per row; a total is the warehouse's sum rounded once, so "
        "it can differ from the sum of the rounded rows by a few micro-dollars. Reported and billed figures are "
        "exact.",
    ]
    if f.gateway_days < len(set(f.reported_days) | set(f.logged_days)):
        items.append("The gateway ledger does not cover every day with data: on those days billed figures are "
                     "n/a and the causes of a variance cannot be itemised.")
    return Section("Caveats", (Bullets(tuple(items)),))


def _pack_files(f: MonthFigures, files: PackFiles) -> Section:
    month = f.period.month
    sample = (f"{files.sample_count} raw response objects, the first {files.sample_per_shape} request ids in "
              f"SHA-256 order for each usage shape ({', '.join(files.sample_shapes)}), as logged in the inbox "
              "(file and line given), with the token counts the pipeline took from them")
    if not files.sample_count:
        sample = "empty: no request of the month is in the request-log lake"
    if files.sample_unavailable:
        sample += f"; {files.sample_unavailable} line(s) could not be read back from the inbox (said in the line)"
    items = [
        f"`{files.export_csv}` and `{files.export_parquet}`: the query-service export for {month} (quota_daily: "
        "usage_date, key_name, team, reported_cost_usd, reported_requests, pulled_at, pull_id), ordered by day "
        "and key.",
        f"`{files.recon_csv}`: every key-day's reconciliation (recon_key_daily) with status and explanation.",
        f"`{files.anomalies_csv}`: the month's anomaly findings (anomalies) with their evidence in full.",
        f"`{files.sample}`: {sample}.",
        f"`{files.spend_chart}` and `{files.variance_chart}`: the charts above.",
        "`reconciliation.md` and `reconciliation.html`: this report (the HTML embeds the charts and needs no network).",
        "`manifest.json`: the SHA-256 of every file, the period, the build time and the totals.",
    ]
    blocks: list = [Bullets(tuple(items))]
    if f.inbox is not None:
        i = f.inbox
        blocks.append(Paragraph(
            f"Inbox files holding requests of the month: {count(i['files'])}, "
            f"with {count(i['lines_read'])} lines read: "
            f"{count(i['accepted'])} accepted, {count(i['rejected'])} rejected (see the `rejects` table), "
            f"{count(i['duplicates'])} duplicates; {count(i['unbalanced_files'])} file(s) do not balance."))
    return Section("Files in this pack", tuple(blocks))


def _sum(rows: list[Row], column: str):
    values = [r[column] for r in rows if r[column] is not None]
    return sum(values) if values else None
