"""The storage fixtures (a migrated tenant database, the IO manager) for the leads tests."""

from lgm_pipeline_tests.storage.conftest import engine, io_manager, postgres, tenant  # noqa: F401
