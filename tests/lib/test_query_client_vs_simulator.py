"""The query client against the simulator's real sockets, one fault mode at a time."""

from __future__ import annotations

from datetime import date

import pytest

from pipelines.lib.cometapi.http import CometAPIError, RetryPolicy
from pipelines.lib.cometapi.query import QueryClient
from pipelines.simulator.server import SimulatorServer

START, END = date(2026, 10, 1), date(2026, 10, 30)


@pytest.fixture
def server(traffic):
    with SimulatorServer(traffic) as sim:
        yield sim


def client(sim, *, timeout: float = 5.0, attempts: int = 5) -> QueryClient:
    return QueryClient(sim.url, sim.api_key, policy=RetryPolicy(max_attempts=attempts, base_delay=0.01, max_delay=0.05),
                       timeout=timeout)


def daily_totals(pulls) -> dict:
    return {(e.usage_date, e.key_name): (e.cost_usd, e.requests) for p in pulls for e in p.response.daily}


RECOVERABLE = [
    ("rate_limit", {"times": 2, "retry_after": 0}),
    ("status", {"codes": [500, 502, 503, 504]}),
    ("status", {"codes": [524, 524]}),
    ("slow", {"times": 1, "delay": 1.2}),
    ("reset", {"times": 2}),
    ("truncated_json", {"times": 1}),
    ("maintenance", {"times": 3}),
]


@pytest.mark.parametrize("kind, opts", RECOVERABLE, ids=[f"{k}-{i}" for i, (k, _) in enumerate(RECOVERABLE)])
def test_transient_faults_end_in_exactly_the_simulators_figures(server, traffic, kind, opts):
    server.faults.add(kind, **opts)
    with client(server, timeout=1.0) as c:
        pulls = list(c.fetch_daily(START, END))
    assert daily_totals(pulls) == traffic.reported_daily(restated=False)


FATAL = [
    ("html_redirect", {"times": None}, "301"),
    ("error_body_200", {"times": None}, "error"),
    ("renamed_field", {"times": None, "from_": "token_name", "to": "label"}, "token_name"),
    ("missing_field", {"times": None, "field": "request_count"}, "request_count"),
    ("maintenance", {}, "gave up after 3 attempts"),
    ("status", {"codes": [500] * 3}, "gave up after 3 attempts"),
]


@pytest.mark.parametrize("kind, opts, words", FATAL, ids=[k for k, _, _ in FATAL])
def test_lasting_faults_fail_with_one_clear_line(server, kind, opts, words):
    server.faults.add(kind, **opts)
    with client(server, attempts=3) as c, pytest.raises(CometAPIError) as err:
        list(c.fetch_daily(START, END))
    message = str(err.value)
    assert "\n" not in message and words in message
    assert server.api_key not in message


def test_a_renamed_key_field_is_read_through_its_alias(server, traffic):
    server.faults.add("renamed_field", times=None, from_="token_name", to="name")
    with client(server) as c:
        pulls = list(c.fetch_daily(START, END))
    assert daily_totals(pulls) == traffic.reported_daily(restated=False)


def test_malformed_dates_are_refused_unless_the_service_is_broken(server):
    with client(server) as c:
        assert c.malformed_date_probe() is True
        server.faults.add("accept_malformed_dates")
        assert c.malformed_date_probe() is False


def test_unlimited_sentinels_in_both_styles(traffic):
    for style in ("huge", "minus_one"):
        with SimulatorServer(traffic, unlimited_style=style) as sim, client(sim) as c:
            keys = {k.name: k for k in c.fetch_quota().keys}
        assert keys["team-b-prod"].is_unlimited
        assert keys["team-b-prod"].remain_quota_usd is None and keys["team-b-prod"].used_quota_usd is None
        assert not keys["team-a-prod"].is_unlimited and keys["team-a-prod"].remain_quota_usd > 0
