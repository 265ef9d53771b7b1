from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _datasets_cache(tmp_path, monkeypatch):
    """LeRobotDataset loads parquet through HF datasets, which caches arrow files: keep them out of ~/.cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets")
