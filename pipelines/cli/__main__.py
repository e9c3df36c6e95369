"""`python -m pipelines.cli`: the same as the `comet-ledger` console script."""

import sys

from pipelines.cli.parser import main

sys.exit(main())
