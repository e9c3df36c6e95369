"""The query service's answers (daily spend per key, balance and key snapshots): `lake` writes them
to the lake."""
