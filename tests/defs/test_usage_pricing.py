"""What the SDKs' dumps cost in the warehouse: the new splits priced by the optional price columns, and a
reported kind without its price leaving the estimate NULL with `missing_price`, never under-counted.

The inbox holds every line of tests/fixtures/sdk/dumps.jsonl (test_sdk_usage.py), each under a request id of
its own, so the four dumps of a case are four requests that must cost the same.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from conftest import make_settings, materialize_days, table_rows
from pipelines.lib.prices.tables import OPTIONAL_PRICE_COLUMNS, PRICE_COLUMNS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sdk" / "dumps.jsonl"
DAY = date(2026, 3, 20)  # every fixture request's day (envelope ts or the body's created)

PRICES = {  # model: (input, output, cache read, cache write, 1h write, audio, image, web search, web fetch)
    "gpt-4.1": ("2", "8", "0.5", "2.5", "", "", "3", "0.025", ""),
    "gpt-4o-audio-preview": ("2.5", "10", "", "", "", "40", "", "", ""),
    "deepseek-chat": ("0.28", "0.42", "0.028", "", "", "", "", "", ""),
    "claude-sonnet-4": ("3", "15", "0.3", "3.75", "6", "", "", "0.01", "0"),
}

# per case: the estimate with every price above (ratio 0.8), by hand from the case's buckets
WITH_PRICES = {
    # text 2000-800-600-300 = 300 at 2, image 300 at 3, reads 800 at 0.5, writes 600 at 2.5, output 120 at 8
    "chat_completion": (300 * 2 + 300 * 3 + 800 * 0.5 + 600 * 2.5 + 120 * 8) / 1e6,
    "chat_completion_audio": (300 * 2.5 + 1200 * 40 + 30 * 10) / 1e6,  # audio 1200 at 40, text 300 at 2.5
    "chat_completion_chunk": (29 * 2 + 2 * 8) / 1e6,
    "chat_completion_chunk_interrupted": None,
    "deepseek_hit_miss": (40 * 0.28 + 60 * 0.028 + 10 * 0.42) / 1e6,
    "deepseek_zero_details": (40 * 0.28 + 60 * 0.028 + 10 * 0.42) / 1e6,
    "response": (200 * 2 + 1200 * 0.5 + 600 * 2.5 + 300 * 8) / 1e6 + 3 * 0.025,  # + 3 hosted web searches
    "response_completed": (2000 * 2 + 300 * 8) / 1e6,
    # writes: 1000 of 1 hour at 6, 200 of 5 minutes at 3.75; 2 searches at 0.01, a fetch at 0
    "anthropic_message": (15 * 3 + 3400 * 0.3 + 200 * 3.75 + 1000 * 6 + 51 * 15) / 1e6 + 2 * 0.01,
    "anthropic_message_plain": (10 * 3 + 5 * 15) / 1e6,
    "anthropic_message_start": None,
    "anthropic_message_delta": (15 * 3 + 3400 * 0.3 + 1200 * 3.75 + 51 * 15) / 1e6 + 2 * 0.01,  # no split: 5m price
    "anthropic_message_delta_output_only": None,
}
# with a price file written before the optional columns: what needs one of them has no estimate
NEEDS_AN_OPTIONAL_PRICE = {"chat_completion", "chat_completion_audio", "response", "anthropic_message",
                           "anthropic_message_delta"}
UNKNOWN = {name for name, cost in WITH_PRICES.items() if cost is None}


def price_file(path: Path, *, optional: bool) -> Path:
    columns = (*PRICE_COLUMNS, *OPTIONAL_PRICE_COLUMNS) if optional else PRICE_COLUMNS
    rows = []
    for model, (inp, out, read, write, write_1h, audio, image, search, fetch) in PRICES.items():
        row = {"model": model, "billing_category": "token", "input_usd_per_mtok": inp, "output_usd_per_mtok": out,
               "cache_read_usd_per_mtok": read, "cache_write_usd_per_mtok": write, "per_call_usd": "",
               "gateway_ratio": "0.8", "effective_from": "2026-01-01", "effective_to": "", "source": "test",
               "cache_write_1h_usd_per_mtok": write_1h, "audio_input_usd_per_mtok": audio,
               "image_input_usd_per_mtok": image, "web_search_usd_per_request": search,
               "web_fetch_usd_per_request": fetch}
        rows.append(",".join(row[c] for c in columns))
    path.write_text("\n".join([",".join(columns), *rows]) + "\n")
    return path


def estimates(settings) -> dict[str, tuple]:
    """case -> (estimate, pricing_status) of its four dumps (asserted to agree)."""
    by_case: dict[str, set] = {}
    for request_id, estimated, status in table_rows(
            settings, "SELECT request_id, estimated_cost_usd, pricing_status FROM requests"):
        case = request_id.split("/")[0]
        by_case.setdefault(case, set()).add((None if estimated is None else round(estimated, 12), status))
    assert all(len(outcomes) == 1 for outcomes in by_case.values()), by_case
    return {case: outcomes.pop() for case, outcomes in by_case.items()}


@pytest.fixture
def sdk_home(tmp_path, sim):
    prices = tmp_path / "prices.csv"
    settings = make_settings(tmp_path / "home", sim, COMET_LEDGER_PRICES=str(prices),
                             COMET_LEDGER_START_DATE="2026-03-01")
    settings.inbox.joinpath("team-a-prod").mkdir(parents=True)
    lines = []
    for line in FIXTURE.read_text().splitlines():
        entry = json.loads(line)
        lines.append(json.dumps({**entry, "request_id": entry["fixture"]}))  # each dump a request of its own
    (settings.inbox / "team-a-prod" / "sdk.jsonl").write_text("\n".join(lines) + "\n")
    return settings, prices


def test_the_new_splits_are_priced_and_a_missing_price_is_null_with_a_reason(sdk_home):
    settings, prices = sdk_home
    price_file(prices, optional=True)
    materialize_days(settings, DAY, DAY)
    got = estimates(settings)
    assert set(got) == set(WITH_PRICES)
    for case, cost in WITH_PRICES.items():
        if cost is None:
            assert got[case] == (None, "unknown_usage"), case
        else:
            assert got[case][1] == "priced", case
            assert got[case][0] == pytest.approx(cost * 0.8, rel=1e-12, abs=1e-15), case
    # the splits reached the table as logged
    rows = table_rows(settings, "SELECT cache_write_tokens, cache_write_5m_tokens, cache_write_1h_tokens, "
                                "web_search_requests, web_fetch_requests, audio_prompt_tokens, image_prompt_tokens "
                                "FROM requests WHERE request_id = 'anthropic_message/model_dump_json'")
    assert rows == [(1200, 200, 1000, 2, 1, None, None)]

    # the same logs against a price file without the optional columns (as written before they existed)
    price_file(prices, optional=False)
    materialize_days(settings, DAY, DAY)
    got = estimates(settings)
    for case, cost in WITH_PRICES.items():
        if case in UNKNOWN:
            assert got[case] == (None, "unknown_usage"), case
        elif case in NEEDS_AN_OPTIONAL_PRICE:
            assert got[case] == (None, "missing_price"), case  # never the classic buckets' smaller sum
        else:
            assert got[case] == (pytest.approx(cost * 0.8, rel=1e-12, abs=1e-15), "priced"), case


def test_a_lake_staged_before_the_new_columns_still_assembles_with_them_null(sdk_home):
    import pyarrow.parquet as pq

    from pipelines.lib.request_logs import DETAIL_FIELDS

    settings, prices = sdk_home
    price_file(prices, optional=True)
    materialize_days(settings, DAY, DAY)
    before = table_rows(settings, "SELECT request_id, prompt_tokens, cached_tokens, cache_write_tokens "
                                  "FROM requests ORDER BY 1")
    # what an older version left: staged records and day files without the new columns
    for dataset in ("inbox_records", "request_logs"):
        for path in (settings.lake / dataset).glob("*/*.parquet"):
            table = pq.read_table(path, partitioning=None)
            pq.write_table(table.drop_columns(list(DETAIL_FIELDS)), path)
    materialize_days(settings, DAY, DAY)  # assembles that day again from the old staged records
    assert table_rows(settings, "SELECT request_id, prompt_tokens, cached_tokens, cache_write_tokens "
                                "FROM requests ORDER BY 1") == before
    assert table_rows(settings, "SELECT count(*), count(cache_write_1h_tokens), count(web_search_requests), "
                                "count(audio_prompt_tokens) FROM requests") == [(len(before), 0, 0, 0)]
    # read as not reported: the 1-hour writes of the old rows are priced as cache writes, as they were
    got = estimates(settings)
    assert got["anthropic_message"] == (pytest.approx((15 * 3 + 3400 * 0.3 + 1200 * 3.75 + 51 * 15) / 1e6 * 0.8),
                                        "priced")
