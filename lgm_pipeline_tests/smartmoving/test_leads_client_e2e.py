"""The client's leads against the simulator's page faults: retried errors, deduplicated pages, refused bad pages."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest

from lgm_pipeline.simulator import FaultConfig, RunningSimulator, SimulatorConfig, start_simulator
from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.errors import MalformedPayloadError
from lgm_pipeline_tests.smartmoving.conftest import TEST_KEY

pytestmark = pytest.mark.e2e

DAY = date(2026, 11, 25)


@pytest.fixture
def sim() -> Iterator[RunningSimulator]:
    config = SimulatorConfig(api_key=TEST_KEY, rate_limit_per_minute=None, churn=0.0, customers_per_day=60)
    with start_simulator(config) as running:
        yield running


def _client(sim: RunningSimulator) -> SmartMovingClient:
    # Backoff shrunk so retries take milliseconds.
    return SmartMovingClient(
        sim.base_url, sim.api_key, page_size=5, rate_limit_per_minute=None, backoff_base_seconds=0.005
    )


def test_leads_survive_errors_and_pages_that_slide(sim: RunningSimulator) -> None:
    expected = sim.world.lead_ids_on(DAY)
    sim.set_faults(FaultConfig(error_rate=0.2, duplicate_across_pages=True))
    with _client(sim) as client:
        leads = client.list_leads(DAY, DAY)
    assert sorted(lead["id"] for lead in leads) == sorted(expected)
    assert client.calls["leads"] >= len(expected) / 5


@pytest.mark.parametrize(
    ("faults", "field"),
    [(FaultConfig(malformed_pages=[2]), "body")],
    ids=["truncated-json"],
)
def test_bad_lead_pages_are_refused_naming_page_and_field(
    sim: RunningSimulator, faults: FaultConfig, field: str
) -> None:
    sim.set_faults(faults)
    with _client(sim) as client, pytest.raises(MalformedPayloadError) as err:
        client.list_leads(DAY, DAY)
    assert (err.value.endpoint, err.value.page, err.value.field) == ("leads", 2, field)
