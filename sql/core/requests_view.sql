-- requests (the view analysts query): the descriptions of the view and its columns. The view is
-- created by pipelines/lib/warehouse/__init__.py (`replace_days`) over the current Parquet file of every
-- reporting day, and this file is run right after; the rows come from requests.sql.
-- Grain: one request (request_id), as requests.sql builds it. Inputs: the view. Parameters: none.
COMMENT ON VIEW requests IS 'Every request seen by your logs or by CometAPI''s ledger, with its estimated and billed cost';
COMMENT ON COLUMN requests.request_id IS 'CometAPI request id (X-Cometapi-Request-Id); joins client logs and the gateway ledger';
COMMENT ON COLUMN requests.ts IS 'request time, UTC (client log, else gateway ledger)';
COMMENT ON COLUMN requests.usage_date IS 'reporting day in COMET_LEDGER_TIMEZONE';
COMMENT ON COLUMN requests.team IS 'owner of the key on that day (key_owners), else unassigned';
COMMENT ON COLUMN requests.model IS 'model as CometAPI billed it (gateway ledger), else as logged';
COMMENT ON COLUMN requests.logged_model IS 'model as your logs name it (may carry a snapshot suffix); NULL when not logged';
COMMENT ON COLUMN requests.priced_model IS 'the prices.model it was priced as (NULL: unpriced)';
COMMENT ON COLUMN requests.billing_category IS 'token or per_call: from the price table, else from the gateway ledger, else NULL';
COMMENT ON COLUMN requests.usage_status IS 'client side: known, unknown (interrupted stream, error reply) or per_call; NULL when not logged';
COMMENT ON COLUMN requests.prompt_tokens IS 'all input tokens, cache reads and writes included (OpenAI semantics)';
COMMENT ON COLUMN requests.cached_tokens IS 'cache-read input tokens (a subset of prompt_tokens)';
COMMENT ON COLUMN requests.cache_write_tokens IS 'cache-write input tokens (a subset of prompt_tokens)';
COMMENT ON COLUMN requests.reasoning_tokens IS 'reasoning tokens (a subset of completion_tokens)';
COMMENT ON COLUMN requests.cache_write_5m_tokens IS 'cache writes with a 5-minute lifetime (Anthropic usage.cache_creation), a subset of cache_write_tokens; NULL when not reported';
COMMENT ON COLUMN requests.cache_write_1h_tokens IS 'cache writes with a 1-hour lifetime (Anthropic usage.cache_creation), priced at prices.cache_write_1h_usd_per_mtok; NULL when not reported';
COMMENT ON COLUMN requests.audio_prompt_tokens IS 'audio input tokens (OpenAI prompt_tokens_details.audio_tokens), a subset of prompt_tokens priced at prices.audio_input_usd_per_mtok; NULL when not reported';
COMMENT ON COLUMN requests.image_prompt_tokens IS 'image input tokens (OpenAI prompt_tokens_details.image_tokens), a subset of prompt_tokens priced at prices.image_input_usd_per_mtok; NULL when not reported';
COMMENT ON COLUMN requests.web_search_requests IS 'server-side web searches (Anthropic usage.server_tool_use, OpenAI Responses tool_usage.web_search), billed per request; NULL when not reported';
COMMENT ON COLUMN requests.web_fetch_requests IS 'server-side web fetches (Anthropic usage.server_tool_use), billed per request; NULL when not reported';
COMMENT ON COLUMN requests.estimate_basis IS 'client_tokens, gateway_tokens or per_call: what the estimate was computed from';
COMMENT ON COLUMN requests.estimated_cost_usd IS 'tokens x price version (+ server-tool requests x their price) x gateway_ratio, or per_call_usd x gateway_ratio; NULL with pricing_status when it cannot be known';
COMMENT ON COLUMN requests.billed_cost_usd IS 'what CometAPI''s ledger billed for the call (quota / 500000); NULL when the ledger does not have it';
COMMENT ON COLUMN requests.price_version_id IS 'the prices row used';
COMMENT ON COLUMN requests.price_source IS 'source of that prices row: config, ledger or catalog (the first with a version in force, in that order); NULL: unpriced';
COMMENT ON COLUMN requests.pricing_status IS 'priced, unpriced (no price for the model on that day), unknown_usage (tokens unknown), missing_price (a reported token kind or server-tool request whose price is empty)';
COMMENT ON COLUMN requests.seen_in IS 'both, client (your logs only) or gateway (billed by CometAPI, not in your logs)';
COMMENT ON COLUMN requests.source_ip IS 'caller IP (client log, else gateway ledger when it records IPs)';
COMMENT ON COLUMN requests.key_name IS 'key display name (client log, else gateway ledger)';
COMMENT ON COLUMN requests.completion_tokens IS 'output tokens, reasoning included';
COMMENT ON COLUMN requests.total_tokens IS 'prompt_tokens + completion_tokens';

COMMENT ON COLUMN requests.task_id IS 'a per-call task''s id as the gateway answered its submit (your logs); CometAPI''s ledger names it on the task''s later refund or correction (ledger_task_adjustments). NULL for other requests and for tasks your logs do not hold';
