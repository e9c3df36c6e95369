"""The gateway's per-request ledger: `ledger` holds the rules (one export row or log item becomes a
typed record or a reject), `fast` is the export's bulk reader calling them, `lake` lands the ledger
in the lake by UTC day."""
