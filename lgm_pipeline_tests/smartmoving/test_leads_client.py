"""The client's leads: the creation-date filter, every page, counted calls, a lead SmartMoving no longer knows."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest

from lgm_pipeline.simulator import SimulatorConfig, start_simulator
from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.errors import NotFoundError
from lgm_pipeline_tests.smartmoving.conftest import envelope

DAY = dt.date(2026, 11, 25)


def test_leads_are_pulled_page_by_page_with_the_creation_date_filter(
    make_client: Callable[..., SmartMovingClient],
) -> None:
    asked: list[dict[str, str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        params = dict(request.url.params)
        asked.append(params)
        page = int(params["Page"])
        leads = [{"id": f"lead-{page}-{n}"} for n in range(2)]
        return httpx.Response(200, json=envelope(leads, page, last=page == 3) | {"totalResults": 6})

    client = make_client(handler, page_size=2)
    leads = client.list_leads(DAY - dt.timedelta(days=1), DAY)
    assert [lead["id"] for lead in leads] == [f"lead-{p}-{n}" for p in (1, 2, 3) for n in range(2)]
    assert {(a["From"], a["To"], a["PageSize"]) for a in asked} == {("20261124", "20261125", "2")}
    assert dict(client.calls) == {"leads": 3}


def test_a_lead_without_an_id_is_passed_on_for_quarantine(make_client: Callable[..., SmartMovingClient]) -> None:
    client = make_client(lambda request: httpx.Response(200, json=envelope([{"name": "no id"}], 1, last=True)))
    assert client.list_leads(DAY, DAY) == [{"name": "no id"}]
    assert client.received["leads"] == 1


def test_leads_from_the_simulator_and_one_it_does_not_know() -> None:
    config = SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=60)
    with (
        start_simulator(config) as simulator,
        SmartMovingClient(simulator.base_url, simulator.api_key, page_size=10) as client,
    ):
        leads = client.list_leads(DAY, DAY)
        assert len(leads) == len(simulator.world.lead_ids_on(DAY)) > 0
        assert client.get_lead(leads[0]["id"]) == leads[0]
        with pytest.raises(NotFoundError):
            client.get_lead("00000000-0000-4000-8000-000000000000")
