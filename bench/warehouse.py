"""Warehouse benchmark (issue 4): one day's incremental build against the length of the history.

    .venv/bin/python bench/warehouse.py --days 30 90 180 365 --per-day 100000 --runs 3

1. A synthetic lake, generated directly as Parquet in the schemas the pipeline writes (numpy and
   pyarrow, vectorised; cached under bench/out/, git-ignored), for max(--days) reporting days of
   --per-day client-logged requests each:
   - lake/request_logs (`request_log_lake.REQUEST_LOGS`): 5 keys, 15 models (13 priced in
     config/prices.csv, one dated snapshot priced through its base model, `glm-4.6` unpriced), 1 %
     interrupted streams (unknown usage), a new source IP for some key every few weeks;
   - lake/gateway_logs + gateway_pulls (`gateway_lake`): a consume row for 99.5 % of the logged
     requests (billed from the same prices, rounded to the gateway's quota unit), 0.1 % billed
     requests your logs do not hold, 1 % error rows;
   - lake/quota_daily + quota_pulls (`quota_lake`): what the gateway billed per key and day, pulled
     as the daily schedule does (each day's run pulls it and the 3 days before: 4 pulls per day;
     a few later pulls restate a figure), and one balance / key snapshot per daily run.
2. For each history length H: a prepared home whose lake holds days 1..H (files hard-linked from
   the cache) and whose warehouse was built for days 1..H-1 (the state the day before). Then, in a
   fresh subprocess on a fresh copy of that home, the warehouse part of the daily run for day H:
   - `data`: the library calls the warehouse assets of the `daily_ledger` job make, in their order,
     each in its own `warehouse.publish` (inbox_files + rejects, quota_daily + quota_restatements,
     balance and key snapshots, prices + key owners, the reconciliation window with its checks,
     anomalies); the lake assets are not run (their files are already there);
   - `dagster`: the same assets materialised by Dagster for partition H (`daily_ledger` restricted
     to its warehouse assets, in-process, ephemeral instance): building the job and
     `execute_in_process`.
   Each reports its seconds (imports excluded) and its peak RSS (the child's own VmHWM). The runs go
   round-robin over H and the modes, so a noisy spell on the shared machine does not fall on one H.
3. The full rebuild: every warehouse asset for days 1..max(--days) in one window, from an empty
   warehouse (`data` mode), --full-runs times (default --runs).

The machine is shared: expect noise; medians are reported. Timings are never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
FIRST_DAY = date(2025, 1, 1)
REPULL_DAYS = 3  # pipelines.defs.schedules.REPULL_DAYS: a daily run pulls its day and the 3 before
GENERATOR_VERSION = 3  # bump when the generated data changes (invalidates the cache)

# key -> (share of requests, models it uses or None for the token models)
KEYS = {
    "team-a-prod": 0.34,
    "team-a-dev": 0.10,
    "team-b-prod": 0.30,
    "research-batch": 0.16,
    "media-tasks": 0.10,
}
# model -> (share, endpoint, usage_shape, price model in config/prices.csv or None: unpriced)
MODELS = {
    "gpt-4o": (0.10, "/v1/chat/completions", "chat_completion", "gpt-4o"),
    "gpt-4o-mini": (0.12, "/v1/chat/completions", "chat_completion_chunk", "gpt-4o-mini"),
    "gpt-4o-mini-2024-07-18": (0.03, "/v1/chat/completions", "chat_completion", "gpt-4o-mini"),
    "gpt-4.1": (0.06, "/v1/chat/completions", "chat_completion", "gpt-4.1"),
    "gpt-4.1-mini": (0.08, "/v1/chat/completions", "chat_completion", "gpt-4.1-mini"),
    "gpt-4.1-nano": (0.07, "/v1/chat/completions", "chat_completion", "gpt-4.1-nano"),
    "o4-mini": (0.06, "/v1/responses", "response", "o4-mini"),
    "o3": (0.03, "/v1/responses", "response", "o3"),
    "claude-sonnet-4": (0.12, "/v1/messages", "anthropic_message", "claude-sonnet-4"),
    "claude-haiku-4-5": (0.06, "/v1/messages", "anthropic_message", "claude-haiku-4-5"),
    "gemini-2.5-pro": (0.04, "/v1/chat/completions", "chat_completion", "gemini-2.5-pro"),
    "gemini-2.5-flash": (0.07, "/v1/chat/completions", "chat_completion", "gemini-2.5-flash"),
    "deepseek-chat": (0.07, "/v1/chat/completions", "chat_completion", "deepseek-chat"),
    "glm-4.6": (0.02, "/v1/chat/completions", "chat_completion", None),
    "mj_imagine": (0.07, "/mj/submit/imagine", "task", "mj_imagine"),
}
UNPRICED_RATES = (0.6, 2.2)  # what the gateway bills glm-4.6 (USD per 1M input / output tokens, before ratio)
UNKNOWN_USAGE_SHARE = 0.01  # interrupted streams: usage unknown in the client log
CLIENT_ONLY_SHARE = 0.005  # logged, not in the gateway ledger
GATEWAY_ONLY_SHARE = 0.001  # billed, not in your logs (the leaked-key signal)
ERROR_SHARE = 0.01  # gateway error rows (bill nothing)
NEW_IP_EVERY_DAYS = 20  # on average, some key gains a new source IP every this many days
RESTATED_SHARE = 0.02  # key-days whose figure a later pull changes


# --- the synthetic lake --------------------------------------------------------------------------------------


def day_of(index: int) -> date:
    return FIRST_DAY + timedelta(days=index)


def pull_moment(index: int) -> datetime:
    """When the daily run for day `index` pulls: 02:15 UTC the next day."""
    return datetime.combine(day_of(index + 1), datetime.min.time(), UTC).replace(hour=2, minute=15)


def pull_id(index: int, kind: str) -> str:
    return f"{pull_moment(index):%Y%m%dT%H%M%S%f}Z-{kind}{index:04x}"[:32]


def _price_table():
    import csv

    rows = {}
    with open(ROOT / "config" / "prices.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            rows[row["model"]] = row
    return rows


def _hex(rng, n: int, width: int):
    """n random lower-case hex strings of `width` characters, as a pyarrow string array."""
    import numpy as np
    import pyarrow as pa

    nibbles = rng.integers(0, 16, size=(n, width), dtype=np.uint8)
    chars = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)[nibbles]
    offsets = np.arange(n + 1, dtype=np.int32) * width
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(chars.tobytes()))


def _micro_usd(micros):
    """A decimal128(18, 6) array from whole micro-dollars (non-negative int64), built from its buffer."""
    import numpy as np
    import pyarrow as pa

    words = np.column_stack([micros.astype(np.int64), np.zeros(len(micros), np.int64)])
    return pa.Array.from_buffers(pa.decimal128(18, 6), len(micros), [None, pa.py_buffer(words.tobytes())])


def _ips_by_day(days: int, seed: int) -> list[dict[str, list[str]]]:
    """Each key's source IPs per day: two to start with, and now and then a new one that stays."""
    import numpy as np

    rng = np.random.default_rng(seed)
    pools = {key: [f"203.0.113.{10 * k + 1}", f"203.0.113.{10 * k + 2}"] for k, key in enumerate(KEYS)}
    out = []
    for _ in range(days):
        if rng.random() < 1 / NEW_IP_EVERY_DAYS:
            key = list(KEYS)[rng.integers(len(KEYS))]
            pools[key] = pools[key] + [f"198.51.{rng.integers(0, 255)}.{rng.integers(1, 255)}"]
        out.append({k: list(v) for k, v in pools.items()})
    return out


def _pick(values: list, index):
    """values[index] as a pyarrow string array (a take from a small dictionary: no Python per row)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.take(pa.array(values, pa.string()), pa.array(np.asarray(index, dtype=np.int64)))


def generate_day(index: int, per_day: int, ips: dict[str, list[str]]):
    """(request_logs table, gateway_logs table) of one reporting day; deterministic per day."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from pipelines.lib.gateway import lake as gateway_lake
    from pipelines.lib.request_logs import lake as request_log_lake
    from pipelines.lib.request_logs import DETAIL_FIELDS

    rng = np.random.default_rng(1000 + index)
    day = day_of(index)
    prices = _price_table()
    keys, key_p = list(KEYS), np.array(list(KEYS.values()))
    models = list(MODELS)
    model_p = np.array([m[0] for m in MODELS.values()])
    n = per_day + max(1, int(per_day * GATEWAY_ONLY_SHARE))  # every request of the day, logged or not
    logged = np.ones(n, bool)
    logged[rng.choice(n, size=n - per_day, replace=False)] = False

    midnight = int(datetime.combine(day, datetime.min.time(), UTC).timestamp() * 1_000_000)
    ts_us = np.sort(rng.integers(midnight, midnight + 86_400_000_000, size=n))
    ts = pa.array(ts_us, type=pa.timestamp("us", tz="UTC"))
    key_i = rng.choice(len(keys), size=n, p=key_p / key_p.sum())
    model_i = rng.choice(len(models), size=n, p=model_p / model_p.sum())
    model_i[(key_i == keys.index("media-tasks")) & (rng.random(n) < 0.7)] = models.index("mj_imagine")
    per_call = model_i == models.index("mj_imagine")
    is_claude = np.array([m.startswith("claude") for m in models])[model_i]
    is_reasoning = np.array([m in ("o4-mini", "o3") for m in models])[model_i]

    prompt = rng.integers(50, 6000, size=n)
    completion = rng.integers(10, 1200, size=n)
    cached = np.where(rng.random(n) < 0.3, (prompt * rng.random(n) * 0.6).astype(np.int64), 0)
    cache_write = np.where(is_claude & (rng.random(n) < 0.2), ((prompt - cached) * 0.3).astype(np.int64), 0)
    reasoning = np.where(is_reasoning, (completion * 0.6).astype(np.int64), 0)

    # the estimate from config/prices.csv; the gateway bills it rounded to its 0.000002 USD unit
    usd = np.zeros(n)
    for m, name in enumerate(models):
        rows = model_i == m
        price_model = MODELS[name][3]
        if price_model is None:
            rate_in, rate_out = UNPRICED_RATES
            usd[rows] = (prompt[rows] * rate_in + completion[rows] * rate_out) / 1e6 * 0.8
            continue
        p = prices[price_model]
        ratio = float(p["gateway_ratio"])
        if p["billing_category"] == "per_call":
            usd[rows] = float(p["per_call_usd"]) * ratio
            continue
        rate = {col: float(p[col]) if p[col] else 0.0 for col in p if col.endswith("_per_mtok")}
        usd[rows] = ((prompt[rows] - cached[rows] - cache_write[rows]) * rate["input_usd_per_mtok"]
                     + cached[rows] * rate["cache_read_usd_per_mtok"]
                     + cache_write[rows] * rate["cache_write_usd_per_mtok"]
                     + completion[rows] * rate["output_usd_per_mtok"]) / 1e6 * ratio
    # rounded half away from zero, as new-api does (common/quota.go QuotaFromDecimalChecked)
    quota_units = np.maximum(np.floor(usd * 500_000 + 0.5).astype(np.int64), 1)

    # the ratios the gateway states it applied (other.model_ratio ...), consistent with what it billed:
    # model_ratio 1 = $2 per 1M input tokens, the others relative to the input price
    ratios = {name: np.zeros(n) for name in ("model_ratio", "completion_ratio", "cache_ratio",
                                             "cache_creation_ratio", "group_ratio", "model_price")}
    ratios["model_price"][:] = -1.0
    for m, name in enumerate(models):
        rows = model_i == m
        p = prices.get(MODELS[name][3]) if MODELS[name][3] else None
        if p is None:
            rate_in, rate_out, group = *UNPRICED_RATES, 0.8
            read, write = rate_in, 0.0  # billed above with cached tokens at the input price
        elif p["billing_category"] == "per_call":
            ratios["model_price"][rows] = float(p["per_call_usd"])
            ratios["group_ratio"][rows] = float(p["gateway_ratio"])
            continue
        else:
            rate_in, rate_out = float(p["input_usd_per_mtok"]), float(p["output_usd_per_mtok"])
            read, write = (float(p[c]) if p[c] else 0.0 for c in ("cache_read_usd_per_mtok", "cache_write_usd_per_mtok"))
            group = float(p["gateway_ratio"])
        ratios["model_ratio"][rows] = rate_in / 2
        ratios["completion_ratio"][rows] = rate_out / rate_in
        ratios["cache_ratio"][rows] = read / rate_in
        ratios["cache_creation_ratio"][rows] = write / rate_in
        ratios["group_ratio"][rows] = group

    # each key's addresses: the newest one of its pool carries a fifth of its traffic
    ip_names = sorted({ip for pool in ips.values() for ip in pool})
    ip_i = np.empty(n, np.int64)
    for k, key in enumerate(keys):
        rows = np.flatnonzero(key_i == k)
        pool = [ip_names.index(ip) for ip in ips[key]]
        weights = np.full(len(pool), 0.8 / max(len(pool) - 1, 1))
        weights[-1] = 0.2 if len(pool) > 1 else 1.0
        ip_i[rows] = np.array(pool)[rng.choice(len(pool), size=len(rows), p=weights / weights.sum())]

    seconds = pa.array(ts_us // 1_000_000, pa.timestamp("s", tz="UTC"))
    request_id = pc.binary_join_element_wise(pc.strftime(seconds, format="%Y%m%d%H%M%S"), _hex(rng, n, 10), "")
    key_arr, model_arr, ip_arr = _pick(keys, key_i), _pick(models, model_i), _pick(ip_names, ip_i)
    endpoints = _pick([MODELS[m][1] for m in models], model_i)

    # --- client logs: every request but the gateway-only ones ---
    unknown = ~per_call & (rng.random(n) < UNKNOWN_USAGE_SHARE)  # interrupted streams
    known = ~unknown & ~per_call
    shape_i = np.where(unknown, len(models), model_i)
    shapes = _pick([MODELS[m][2] for m in models] + ["chat_completion_chunk"], shape_i)

    def tokens(values, mask):
        return pa.array(values, pa.int64(), mask=~mask)

    def text(values):
        return pc.cast(pa.array(values), pa.string())

    raw_usage = pc.binary_join_element_wise('{"prompt_tokens":', text(prompt), ',"completion_tokens":',
                                            text(completion), ',"total_tokens":', text(prompt + completion), "}", "")
    client = pa.table({
        "request_id": request_id,
        "ts": ts,
        "utc_date": pa.array(np.full(n, day), pa.date32()),
        "key_name": key_arr,
        "model": model_arr,
        "endpoint": endpoints,
        "status": pa.array(np.full(n, 200, dtype=np.int32)),
        "source_ip": ip_arr,
        "latency_ms": pa.array(rng.integers(200, 30_000, size=n)),
        "usage_shape": shapes,
        "usage_status": _pick(["known", "unknown", "per_call"], np.where(per_call, 2, np.where(unknown, 1, 0))),
        "prompt_tokens": tokens(prompt, known),
        "completion_tokens": tokens(completion, known),
        "total_tokens": tokens(prompt + completion, known),
        "cached_tokens": tokens(cached, known),
        "cache_write_tokens": tokens(cache_write, known),
        "reasoning_tokens": tokens(reasoning, known),
        "uncached_prompt_tokens": tokens(prompt - cached - cache_write, known),
        **{name: pa.nulls(n, pa.int64()) for name in DETAIL_FIELDS},  # splits the simulator does not report
        "response_id": pc.binary_join_element_wise("chatcmpl-", _hex(rng, n, 24), ""),
        "raw_usage_json": pc.if_else(pa.array(known), raw_usage, pa.scalar(None, pa.string())),
        "file": pc.binary_join_element_wise(key_arr, pa.scalar(f"/{day}.jsonl"), ""),
        "line_no": pa.array(np.arange(1, n + 1)),
    }).filter(pa.array(logged))
    client = client.select(request_log_lake.REQUEST_LOGS.names).cast(request_log_lake.REQUEST_LOGS)
    client = client.sort_by([("ts", "ascending"), ("request_id", "ascending")])

    # --- the gateway ledger: a consume row per billed request (not the client-only ones), error rows ---
    billed = ~(logged & (rng.random(n) < CLIENT_ONLY_SHARE))
    n_err = int(per_day * ERROR_SHARE)
    rows = np.concatenate([np.flatnonzero(billed), rng.choice(n, size=n_err, replace=False)])
    is_err = np.arange(len(rows)) >= int(billed.sum())
    ok = ~is_err
    m = len(rows)
    take = pa.array(rows)
    anthropic = is_claude[rows]
    metered = ok & ~per_call[rows]  # token-billed consume rows carry tokens
    units = np.where(ok, quota_units[rows], 0)

    def ratio(name, mask):
        return pa.array(ratios[name][rows], mask=~mask)

    gateway = pa.table({
        "request_id": pc.if_else(pa.array(is_err), pc.binary_join_element_wise(pc.take(request_id, take), "-err", ""),
                                 pc.take(request_id, take)),
        "log_id": pa.array(rows % 1024, pa.int64()),
        "created_at": pc.take(seconds, take).cast(pa.timestamp("us", tz="UTC")),  # the log's second: same day
        "utc_date": pa.array(np.full(m, day), pa.date32()),
        "log_type": pa.array(np.where(is_err, 5, 2), pa.int8()),
        "log_type_name": _pick(["consume", "error"], is_err),
        "key_name": pc.take(key_arr, take),
        "model": pc.take(model_arr, take),
        "quota_units": pa.array(units, pa.int64()),
        "billed_usd": _micro_usd(units * 2),  # quota / 500 000 USD, exact
        "prompt_tokens": tokens(np.where(anthropic, prompt[rows] - cached[rows] - cache_write[rows], prompt[rows]),
                                metered),
        "completion_tokens": tokens(completion[rows], metered),
        "cache_tokens": tokens(cached[rows], metered),
        "cache_creation_tokens": tokens(cache_write[rows], metered & anthropic),
        "usage_semantic": _pick(["openai", "anthropic"], anthropic),
        "billing_category": pc.if_else(pa.array(ok), _pick(["token", "per_call"], per_call[rows]),
                                       pa.scalar(None, pa.string())),
        "model_ratio": ratio("model_ratio", ok),
        "group_ratio": ratio("group_ratio", ok),
        "completion_ratio": ratio("completion_ratio", metered),
        "cache_ratio": ratio("cache_ratio", metered),
        "cache_creation_ratio": ratio("cache_creation_ratio", metered & anthropic),
        "model_price": ratio("model_price", ~is_err),
        "is_stream": pa.array(shape_i[rows] == models.index("gpt-4o-mini")),
        "use_time_s": pa.array(rng.integers(1, 30, size=m)),
        "frt_ms": pa.array(rng.integers(100, 3000, size=m)),
        "total_ms": pa.array(rng.integers(200, 30_000, size=m)),
        "request_path": pc.take(endpoints, take),
        "source_ip": pc.take(ip_arr, take),
        "group": _pick(["default"], np.zeros(m)),
        "content": _pick(["model ratio 1.25, completion ratio 4, group ratio 0.8", "upstream error"], is_err),
        "is_correction": pa.array(np.zeros(m, bool)),
        "other_parse_error": pa.array(np.zeros(m, bool)),
        "other_json": _pick(['{"model_ratio":1.25,"group_ratio":0.8,"completion_ratio":4,"model_price":-1}'],
                            np.zeros(m)),
        "source": _pick(["api"], np.zeros(m)),
    })
    for field in gateway_lake.GATEWAY_SCHEMA:  # columns the ledger gained later: as a row without them reads
        if field.name not in gateway.column_names:
            fill = pa.array(np.full(m, field.name == "has_request_id")) if field.type == pa.bool_() \
                else pa.nulls(m, field.type)
            gateway = gateway.append_column(field.name, fill)
    gateway = gateway.select(gateway_lake.GATEWAY_SCHEMA.names)
    gateway = gateway.cast(gateway_lake.GATEWAY_SCHEMA).sort_by(
        [("created_at", "ascending"), ("request_id", "ascending"), ("log_type", "ascending")])
    return client, gateway


def reported_by_key(gateway) -> dict[str, tuple[int, int]]:
    """key -> (billed quota units, requests) of one day: what the query service reports."""
    import pyarrow.compute as pc

    consume = gateway.filter(pc.equal(gateway["log_type"], 2))
    grouped = consume.group_by("key_name").aggregate([("quota_units", "sum"), ("quota_units", "count")])
    return {k: (u, r) for k, u, r in zip(grouped["key_name"].to_pylist(), grouped["quota_units_sum"].to_pylist(),
                                         grouped["quota_units_count"].to_pylist())}


def generate_lake(days: int, per_day: int) -> Path:
    """The cached lake for `days` days (the homes hard-link into it)."""
    from decimal import Decimal

    import numpy as np
    import pyarrow as pa

    from pipelines.lib import lake
    from pipelines.lib.gateway import lake as gateway_lake
    from pipelines.lib.quota import lake as quota_lake

    root = OUT / f"warehouse-lake-{per_day}"
    marker = root / "complete.json"
    if marker.exists():
        meta = json.loads(marker.read_text())
        if meta["days"] >= days and meta["version"] == GENERATOR_VERSION:
            return root
    shutil.rmtree(root, ignore_errors=True)
    started = time.perf_counter()
    lake_root = root / "lake"
    ips = _ips_by_day(days, seed=99)
    rng = np.random.default_rng(7)
    reported: list[dict[str, tuple[int, int]]] = []
    spent_units = 0
    balance_units = 2_000 * 500_000
    for index in range(days):
        day = day_of(index)
        client, gateway = generate_day(index, per_day, ips[index])
        lake.write_partition_file(lake_root, "request_logs", "utc_date", day, "requests", client)
        lake.write_partition_file(lake_root, "gateway_logs", "utc_date", day, "ledger", gateway)
        reported.append(reported_by_key(gateway))
        # the daily run for this day: a quota pull of the day and the 3 before, a ledger pull of the same
        # days, and one balance snapshot
        pulled_at = pull_moment(index)
        first = max(0, index - REPULL_DAYS)
        qid, gid, sid = pull_id(index, "q"), pull_id(index, "g"), pull_id(index, "s")
        entries = 0
        for d in range(first, index + 1):
            rows = []
            for key, (units, requests) in sorted(reported[d].items()):
                if d < index and rng.random() < RESTATED_SHARE:  # a late correction in a later pull
                    units += int(rng.integers(1, 200_000))
                    reported[d][key] = (units, requests)
                rows.append({"usage_date": day_of(d), "key_name": key, "cost_usd": Decimal(units) / 500_000,
                             "requests": requests, "pull_id": qid, "pulled_at": pulled_at})
            entries += len(rows)
            lake.write_partition_file(lake_root, "quota_daily", "usage_date", day_of(d), qid,
                                      pa.Table.from_pylist(rows, schema=quota_lake.QUOTA_DAILY))
        lake.write_partition_file(lake_root, "quota_pulls", "pulled_date", pulled_at.date(), qid, pa.Table.from_pylist([{
            "pull_id": qid, "pulled_at": pulled_at, "pulled_date": pulled_at.date(), "kept_start": day_of(first),
            "kept_end": day, "requested_start": day_of(first), "requested_end": day + timedelta(days=1),
            "days_with_usage": index + 1 - first, "entries": entries, "response_sha256": "0" * 64}],
            schema=quota_lake.QUOTA_PULLS))
        lake.write_partition_file(lake_root, "gateway_pulls", "pulled_date", pulled_at.date(), gid, pa.Table.from_pylist([{
            "pull_id": gid, "pulled_at": pulled_at, "pulled_date": pulled_at.date(), "first_day": day_of(first),
            "last_day": day, "sources": "api", "rows": gateway.num_rows, "rejects": 0}],
            schema=gateway_lake.GATEWAY_PULLS))
        day_units = sum(u for u, _ in reported[index].values())
        spent_units += day_units
        balance_units -= day_units
        if balance_units < 300 * 500_000:  # a monthly-ish top-up
            balance_units += 2_000 * 500_000
        key_rows = [{"snapshot_id": sid, "fetched_at": pulled_at, "fetched_date": pulled_at.date(), "key_name": key,
                     "remain_quota_usd": None, "used_quota_usd": None, "is_unlimited": True} for key in KEYS]
        lake.write_partition_file(lake_root, "key_snapshots", "fetched_date", pulled_at.date(), sid,
                                  pa.Table.from_pylist(key_rows, schema=quota_lake.KEY_SNAPSHOTS))
        lake.write_partition_file(lake_root, "balance_snapshots", "fetched_date", pulled_at.date(), sid,
                                  pa.Table.from_pylist([{
                                      "snapshot_id": sid, "fetched_at": pulled_at, "fetched_date": pulled_at.date(),
                                      "username": "bench", "balance_usd": Decimal(balance_units) / 500_000,
                                      "total_used_usd": Decimal(spent_units) / 500_000,
                                      "request_count": 0}], schema=quota_lake.BALANCE_SNAPSHOTS))
        if (index + 1) % 30 == 0:
            print(f"  generated {index + 1}/{days} days ({time.perf_counter() - started:.0f} s)", flush=True)
    meta = {"days": days, "per_day": per_day, "version": GENERATOR_VERSION,
            "seconds": round(time.perf_counter() - started, 1)}
    marker.write_text(json.dumps(meta))
    print(f"generated the lake: {days} days x {per_day} requests in {meta['seconds']} s", flush=True)
    return root


# --- prepared homes ----------------------------------------------------------------------------------------


def _file_index(path: Path) -> int | None:
    """The daily run a pull/snapshot file belongs to (its name ends with the run's index), else None."""
    stem = path.stem
    return int(stem[-4:], 16) if "Z-" in stem else None


def link_lake(cache: Path, history: int, home: Path) -> None:
    """Hard-link the cached lake's files of days 0..history-1 (and of their daily runs) into `home/lake`."""
    last = day_of(history - 1)
    for src in (cache / "lake").rglob("*.parquet"):
        rel = src.relative_to(cache / "lake")
        index = _file_index(src)
        if index is not None:
            if index > history - 1:
                continue
        elif rel.parts[1].split("=")[0] in ("usage_date", "utc_date") and \
                date.fromisoformat(rel.parts[1].split("=", 1)[1]) > last:
            continue
        dst = home / "lake" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.link(src, dst)


def code_hash() -> str:
    """The warehouse code a prepared home was built with (a change rebuilds it)."""
    import hashlib

    digest = hashlib.sha256()
    paths = sorted((ROOT / "sql").rglob("*.sql")) + [ROOT / "pipelines" / "lib" / f"{m}.py" for m in (
        "warehouse/__init__", "reconciliation/__init__", "reconciliation/anomalies", "quota/lake", "gateway/lake",
        "request_logs/lake", "lake/__init__")]
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def prepared_home(cache: Path, history: int, per_day: int) -> Path:
    """Lake of days 0..history-1; warehouse built for days 0..history-2 (the state the day before)."""
    key = {"code": code_hash(), "version": GENERATOR_VERSION, "history": history}
    home = OUT / "warehouse-homes" / f"{per_day}-{key['code']}" / f"h{history}"
    marker = home.parent / f"h{history}.json"
    if marker.exists() and json.loads(marker.read_text()).get("key") == key:
        return home
    shutil.rmtree(home, ignore_errors=True)
    marker.unlink(missing_ok=True)
    link_lake(cache, history, home)
    result = child("data", home, day_of(0), day_of(history - 2))
    marker.write_text(json.dumps({"key": key, "build": result}))
    print(f"  prepared {history} days of history: days 1..{history - 1} built in {result['seconds']:.1f} s", flush=True)
    return home


def fresh_copy(home: Path, dest: Path) -> Path:
    """A copy of a prepared home to run on: DuckDB files copied, everything else hard-linked (the pipeline
    only ever replaces files, never writes one in place)."""
    shutil.rmtree(dest, ignore_errors=True)

    def copy(src, dst):
        return shutil.copyfile(src, dst) if str(src).endswith((".duckdb", ".wal")) else os.link(src, dst)

    shutil.copytree(home, dest, copy_function=copy)
    return dest


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# --- one measured run (in a child process) ---------------------------------------------------------------


def settings_for(home: Path):
    from pipelines.lib.settings import load_settings

    return load_settings(env={
        "COMET_LEDGER_HOME": str(home), "COMET_LEDGER_START_DATE": FIRST_DAY.isoformat(),
        "COMET_LEDGER_PRICES": str(ROOT / "config" / "prices.csv"),
        "COMET_LEDGER_KEY_OWNERS": str(ROOT / "config" / "key_owners.csv"),
        "COMETAPI_KEY": "bench-unused", "COMET_LEDGER_TIMEZONE": "UTC",
    })


WAREHOUSE_ASSETS = (
    "inbox_files", "rejects", "quota_daily", "quota_restatements", "balance_snapshots", "key_snapshots", "prices",
    "key_owners", "requests", "recon_key_daily", "cost_key_model_daily", "cost_model_daily", "cost_category_monthly",
    "chargeback_monthly", "anomalies",
)


def data_work(home: Path, start: date, end: date) -> dict[str, float]:
    """What the warehouse assets of `daily_ledger` do for [start, end], through the library, step by step."""
    from pipelines.lib import reconciliation
    from pipelines.lib.gateway import lake as gateway_lake
    from pipelines.lib.prices import catalog
    from pipelines.lib.quota import lake as quota_lake
    from pipelines.lib.reconciliation import anomalies
    from pipelines.lib.request_logs import lake as request_log_lake
    from pipelines.lib.warehouse import publish, record_models, run_model, window_to_build

    settings = settings_for(home)
    path, lake_root = settings.warehouse_path, settings.lake
    steps: dict[str, float] = {}

    def step(name):
        steps[name] = time.perf_counter()

    def done(name):
        steps[name] = time.perf_counter() - steps[name]

    step("inbox_warehouse")  # warehouse/inbox_files + rejects (pipelines/defs/request_logs)
    params = (request_log_lake.staging_params(lake_root) | gateway_lake.reject_params(lake_root)
              | catalog.snapshot_params(lake_root))
    with publish(path) as con:
        run_model(con, "stg_inbox_files", params)
        everything = params | {"start": request_log_lake.FIRST_DAY, "end": request_log_lake.LAST_DAY}
        run_model(con, "stg_copy_ranks", everything)
        run_model(con, "request_conflicts", request_log_lake.conflict_params(con, lake_root))
        run_model(con, "inbox_files", everything)
        run_model(con, "rejects", params)
    done("inbox_warehouse")

    step("quota_daily_warehouse")
    tables = ("quota_daily", "quota_restatements")
    with publish(path) as con:
        q_start, q_end, _ = window_to_build(con, tables, start, end, lambda: quota_lake.history(lake_root))
        qp = quota_lake.model_params(lake_root, q_start, q_end)
        for model in ("stg_quota_pulls", "stg_quota_daily", *tables):
            run_model(con, model, qp)
        record_models(con, tables)
        con.execute("SELECT count(*) FROM (SELECT usage_date, key_name FROM quota_daily GROUP BY ALL "
                    "HAVING count(*) > 1)").fetchone()
    done("quota_daily_warehouse")

    step("quota_snapshots_warehouse")
    with publish(path) as con:
        sp = quota_lake.model_params(lake_root)
        run_model(con, "balance_snapshots", sp)
        run_model(con, "key_snapshots", sp)
    done("quota_snapshots_warehouse")

    step("config_warehouse")
    with publish(path) as con:
        reconciliation.load_config(con, settings.prices_path, settings.key_owners_path)
    done("config_warehouse")

    step("reconciliation_warehouse")
    with publish(path, zone=settings.timezone) as con:
        r_start, r_end = reconciliation.rebuild_window(con, lake_root, start, end, settings.tolerance_usd,
                                                       settings.tolerance_pct)
        checks = getattr(reconciliation, "window_checks", None)
        if checks:
            checks(con, r_start, r_end)
    done("reconciliation_warehouse")

    step("anomalies_warehouse")
    with publish(path, zone=settings.timezone) as con:
        a_start, a_end, _ = window_to_build(con, (anomalies.MODEL,), start, end,
                                            lambda: reconciliation.history(lake_root, settings.timezone))
        judged_to = max(a_end, (reconciliation.history(lake_root) or (a_start, a_end))[1])
        anomalies.detect(con, a_start, judged_to, datetime.now(UTC), timezone=settings.timezone)
        record_models(con, (anomalies.MODEL,))
        anomalies.counts(con, a_start, a_end)
    done("anomalies_warehouse")
    return steps


def dagster_work(home: Path, start: date, end: date) -> dict[str, float]:
    """The same assets materialised by Dagster for the partition range [start, end]."""
    import dagster as dg

    from pipelines.definitions import build_definitions
    from pipelines.defs.schedules import partition_range_tags
    from pipelines.runs import QUIET

    job = build_definitions(settings_for(home)).resolve_job_def("daily_ledger")
    instance = dg.DagsterInstance.ephemeral()
    started = time.perf_counter()
    result = job.execute_in_process(
        run_config=QUIET, instance=instance, tags=partition_range_tags(start.isoformat(), end.isoformat()),
        asset_selection=[dg.AssetKey(["warehouse", name]) for name in WAREHOUSE_ASSETS])
    seconds = time.perf_counter() - started
    if not result.success:
        raise SystemExit("the Dagster run failed")
    return {"execute_in_process": seconds}


def run_child(mode: str, home: Path, start: date, end: date) -> None:
    sys.path.insert(0, str(ROOT))
    import pipelines.definitions  # noqa: F401  (imports are not what is measured)

    started = time.perf_counter()
    steps = (data_work if mode == "data" else dagster_work)(home, start, end)
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "steps": steps, "peak_rss": _peak_rss()}))


def _peak_rss() -> int:
    """This process's peak RSS in bytes (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(mode: str, home: Path, start: date, end: date) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", mode, "--home", str(home), "--start", start.isoformat(),
         "--end", end.isoformat()], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"child {mode} {start}..{end} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- the benchmark -----------------------------------------------------------------------------------------


def measure_day(home: Path, history: int, mode: str, run: int) -> dict:
    """One measured run: the daily build of day `history` on a fresh copy of the prepared home."""
    scratch = fresh_copy(home, OUT / "warehouse-runs" / "home")
    result = child(mode, scratch, day_of(history - 1), day_of(history - 1))
    shutil.rmtree(OUT / "warehouse-runs", ignore_errors=True)
    print(f"  {history:>4} days, {mode:<7} run {run + 1}: {result['seconds']:7.2f} s, "
          f"peak {result['peak_rss'] / 2**20:,.0f} MiB  "
          + " ".join(f"{k}={v:.2f}" for k, v in result["steps"].items()), flush=True)
    return result


def full_rebuild(cache: Path, history: int, runs: int) -> list[dict]:
    results = []
    for run in range(runs):
        home = OUT / "warehouse-runs" / "full"
        shutil.rmtree(home, ignore_errors=True)
        link_lake(cache, history, home)
        result = child("data", home, day_of(0), day_of(history - 1))
        result["warehouse_bytes"] = sum(size_of(p) for p in home.iterdir() if p.name != "lake")
        results.append(result)
        print(f"  full rebuild of {history} days, run {run + 1}: {result['seconds']:.1f} s, "
              f"peak {result['peak_rss'] / 2**20:,.0f} MiB  "
              + " ".join(f"{k}={v:.1f}" for k, v in result["steps"].items()), flush=True)
    shutil.rmtree(OUT / "warehouse-runs", ignore_errors=True)
    return results


def median(results: list[dict], key: str = "seconds") -> float:
    return statistics.median(r[key] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, nargs="+", default=[30, 90, 180, 365])
    parser.add_argument("--per-day", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--modes", default="data,dagster")
    parser.add_argument("--full-runs", type=int, help="runs of the full rebuild (default: --runs; 0 skips it)")
    parser.add_argument("--child", choices=("data", "dagster"))
    parser.add_argument("--home", type=Path)
    parser.add_argument("--start", type=date.fromisoformat)
    parser.add_argument("--end", type=date.fromisoformat)
    args = parser.parse_args()
    if args.child:
        run_child(args.child, args.home, args.start, args.end)
        return
    sys.path.insert(0, str(ROOT))
    import duckdb

    longest = max(args.days)
    print(f"cpus {os.cpu_count()}, duckdb {duckdb.__version__}; {longest} days x {args.per_day} requests", flush=True)
    cache = generate_lake(longest, args.per_day)
    modes = args.modes.split(",")
    homes = {history: prepared_home(cache, history, args.per_day) for history in sorted(args.days)}
    table = [{"history": history, "lake_bytes": size_of(home / "lake"),
              "warehouse_bytes": sum(size_of(p) for p in home.iterdir() if p.name != "lake"),
              **{mode: [] for mode in modes}} for history, home in homes.items()]
    # Round-robin over history lengths and modes, so that a noisy spell on the shared machine falls
    # on all of them rather than on one.
    for run in range(args.runs):
        for row in table:
            for mode in modes:
                row[mode].append(measure_day(homes[row["history"]], row["history"], mode, run))
    full_runs = args.runs if args.full_runs is None else args.full_runs
    full = full_rebuild(cache, longest, full_runs) if full_runs else []

    base = table[0]
    print(f"\n| history days | data work s (median) | Dagster wall s (median) | peak RSS MiB (data / Dagster) "
          f"| data / {base['history']} days | Dagster / {base['history']} days | lake GiB | warehouse GiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in table:
        cells = [f"{row['history']}"]
        cells += [f"{median(row[m]):.2f}" if m in row else "-" for m in ("data", "dagster")]
        cells.append(" / ".join(f"{max(r['peak_rss'] for r in row[m]) / 2**20:,.0f}" for m in modes))
        cells += [f"{median(row[m]) / median(base[m]):.2f}x" if m in row else "-" for m in ("data", "dagster")]
        cells += [f"{row['lake_bytes'] / 2**30:.2f}", f"{row['warehouse_bytes'] / 2**30:.2f}"]
        print("| " + " | ".join(cells) + " |")
    if full:
        print(f"\nfull rebuild of {longest} days: median {median(full):.1f} s over {len(full)} run(s), "
              f"peak RSS {max(r['peak_rss'] for r in full) / 2**20:,.0f} MiB, "
              f"warehouse {full[0]['warehouse_bytes'] / 2**30:.2f} GiB; steps (median s): "
              + ", ".join(f"{k} {statistics.median(r['steps'][k] for r in full):.1f}" for k in full[0]["steps"]))
    for row in table:
        for mode in modes:
            steps = row[mode][0]["steps"]
            print(f"{row['history']} days, {mode} steps (median s): "
                  + ", ".join(f"{k} {statistics.median(r['steps'][k] for r in row[mode]):.2f}" for k in steps))


if __name__ == "__main__":
    main()
