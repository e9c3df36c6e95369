"""Plain-Python clients of CometAPI's query service and console API (no Dagster)."""

from pipelines.lib.cometapi.gateway import GatewayClient, fetch_token_usage
from pipelines.lib.cometapi.http import CometAPIError, RetryPolicy, make_client, request_json
from pipelines.lib.cometapi.query import (
    DailyEntry,
    DailyPull,
    KeySnapshot,
    QueryClient,
    QuotaResponse,
    parse_quota,
    split_range,
)

__all__ = [
    "CometAPIError",
    "DailyEntry",
    "DailyPull",
    "GatewayClient",
    "KeySnapshot",
    "QueryClient",
    "QuotaResponse",
    "RetryPolicy",
    "fetch_token_usage",
    "make_client",
    "parse_quota",
    "request_json",
    "split_range",
]
