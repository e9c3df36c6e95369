"""An embedded CometAPI for tests and the demo: deterministic traffic, client logs, and an HTTP server.

- `catalog`: the gateway's prices (new-api ratios) and the matching effective-dated price CSV;
- `traffic`: what the simulated keys did, day by day, with the planted realities;
- `inbox`: the client-captured request logs, written as the contract's inbox files;
- `faults`: scripted failures the server can inject;
- `server`: the HTTP endpoints on loopback.
"""

from pipelines.simulator.catalog import price_versions, prices_csv
from pipelines.simulator.faults import FaultPlan
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import CallRecord, SimulatorServer, serve_forever
from pipelines.simulator.traffic import SimKey, SimRequest, Traffic, generate_traffic

__all__ = [
    "CallRecord",
    "FaultPlan",
    "SimKey",
    "SimRequest",
    "SimulatorServer",
    "Traffic",
    "generate_traffic",
    "price_versions",
    "prices_csv",
    "serve_forever",
    "write_inbox",
]
