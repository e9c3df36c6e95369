"""The gateway's per-request ledger: `ledger` holds the rules (one export row or log item becomes a
typed record or a reject), `fast` is the export's bulk reader calling them, `pull` reads a span of
the ledger through the console API's client (its export when that checks out against the gateway's
totals, else its pages), `lake` lands the ledger in the lake by UTC day."""
