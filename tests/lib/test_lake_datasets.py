"""The dataset catalog (pipelines/lib/lake/datasets.py) against a lake the product wrote: every folder
it writes is named there, with the partition column, file name and schema its files have."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import SIM_START, make_settings, materialize_days
from pipelines.lib.lake import datasets as lake_datasets
from pipelines.simulator.inbox import write_inbox
from pipelines.simulator.server import SimulatorServer

LAST = SIM_START + timedelta(days=2)
NOT_DATASETS = {"_schemas", "_layout", "_cache"}  # placeholders, the layout marker, the inbox hash cache
ONLY_ON_BAD_INPUT = {"gateway_rejects", "catalog_rejects"}  # written when a pull finds an unusable row


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory, traffic) -> Path:
    """Three simulated days, every asset, the gateway ledger included."""
    with SimulatorServer(traffic) as sim:
        settings = make_settings(tmp_path_factory.mktemp("datasets") / "home", sim,
                                 COMETAPI_ACCESS_TOKEN=sim.access_token)
        write_inbox(traffic, settings.inbox, days=[SIM_START + timedelta(days=i) for i in range(3)])
        materialize_days(settings, SIM_START, LAST)
        yield settings.lake


def written(lake_root: Path) -> dict[str, list[Path]]:
    return {folder.name: sorted(p for p in folder.glob("*/*.parquet") if not p.name.startswith("."))
            for folder in sorted(lake_root.iterdir()) if folder.is_dir() and folder.name not in NOT_DATASETS}


def test_every_dataset_written_is_in_the_catalog_with_its_partitioning(lake_root):
    found = written(lake_root)
    assert set(found) <= set(lake_datasets.DATASETS), set(found) - set(lake_datasets.DATASETS)
    assert set(lake_datasets.DATASETS) - set(found) <= ONLY_ON_BAD_INPUT
    for name, files in found.items():
        dataset = lake_datasets.dataset(name)
        assert files, name
        assert {f.parent.name.split("=", 1)[0] for f in files} == {dataset.partition}, name
        if dataset.file is not None:
            assert {f.name for f in files} == {f"{dataset.file}.parquet"}, name
        value = files[0].parent.name.split("=", 1)[1]
        assert str(files[0]) in dataset.files(lake_root, [value]), name


def test_every_catalog_schema_is_what_is_on_disk(lake_root):
    for name, files in written(lake_root).items():
        schema = lake_datasets.dataset(name).schema
        for f in files:
            assert pq.read_schema(f).remove_metadata() == schema.remove_metadata(), (name, f.name)


def test_a_placeholder_is_a_zero_row_file_with_the_datasets_schema(lake_root):
    for dataset in lake_datasets.DATASETS.values():
        path = Path(dataset.empty(lake_root))
        assert path == lake_root / "_schemas" / f"{dataset.name}.parquet"
        table = pq.read_table(path, partitioning=None)
        assert (table.num_rows, table.schema.remove_metadata()) == (0, dataset.schema.remove_metadata())
        files = dataset.files_or_empty(lake_root)
        assert files == (dataset.files(lake_root) or [str(path)])
        assert dataset.files_and_empty(lake_root)[-1] == str(path)
