"""`comet-ledger`, the command line, one module per group of commands.

`parser` holds the entry point (`main`, the console script `pipelines.cli:main`), SIGTERM handling
and the arguments; `pipeline` the commands that materialise days (`run`, `backfill`); `reports` those
that read or check what was pulled (`review`, `export focus`, `reprice`, `smoke-test`); `alerts` the
alert commands; `simulated` those that run against the embedded simulator (`demo`, `simulate`,
`dev`); `summary` the figures printed after a run, as tables or JSON; `common` what they share.
"""

from pipelines.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
