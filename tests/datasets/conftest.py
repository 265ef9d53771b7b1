from tests.datasets.reports import datasets_cache  # noqa: F401  (autouse fixture)
