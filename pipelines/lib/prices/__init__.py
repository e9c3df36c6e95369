"""Prices: `tables` reads and validates the user-edited configuration tables (price versions and key
owners), `catalog` lands /api/models snapshots, `reprice` rebuilds past days under changed prices."""
