"""check_connection reports instead of raising; the Dagster resource keeps the key out of reprs."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
import httpx
import pytest

from lgm_pipeline.smartmoving.client import SmartMovingClient
from lgm_pipeline.smartmoving.connection import check_connection
from lgm_pipeline.smartmoving.resource import SmartMovingAccount, SmartMovingResource
from lgm_pipeline_tests.smartmoving.conftest import TEST_KEY

MakeClient = Callable[..., SmartMovingClient]


def test_connection_ok_lists_branch_names(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ping"):
            return httpx.Response(200, text="")
        return httpx.Response(200, json=[{"id": "1", "name": "Toronto"}, {"id": "2", "name": "Ottawa"}])

    report = check_connection(make_client(handler))
    assert report.ok and report.key_valid and report.error is None
    assert report.branches == ["Toronto", "Ottawa"]
    assert report.latency_ms is not None and report.latency_ms >= 0


def test_connection_with_bad_key_is_reported_not_raised(make_client: MakeClient) -> None:
    report = check_connection(make_client(lambda request: httpx.Response(401)))
    assert (report.ok, report.key_valid, report.branches) == (False, False, [])
    assert report.error == "SmartMoving rejected the API key (401)"


def test_connection_when_unreachable_cannot_judge_the_key(make_client: MakeClient) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused")

    report = check_connection(make_client(handler, max_retries=1))
    assert (report.ok, report.key_valid, report.latency_ms) == (False, None, None)
    assert report.error is not None and "unavailable after 2 attempts" in report.error


@pytest.mark.parametrize(("status", "key_valid"), [(404, None), (403, True)])
def test_branches_out_of_the_keys_reach_after_ping_answered_is_partial(
    make_client: MakeClient, status: int, key_valid: bool | None
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/ping"):
            return httpx.Response(200, text="")
        return httpx.Response(status, json={"message": "Forbidden" if status == 403 else "Not Found"})

    report = check_connection(make_client(handler))
    assert (report.ok, report.partial, report.key_valid) == (False, True, key_valid)
    assert report.unavailable_endpoint == "/api/branches" and report.latency_ms is not None
    assert report.error is not None and "/api/branches" in report.error and "ping answered" in report.error


def test_a_404_on_ping_is_no_partial_connection(make_client: MakeClient) -> None:
    report = check_connection(make_client(lambda request: httpx.Response(404, text="Not Found")))
    assert (report.ok, report.partial, report.unavailable_endpoint) == (False, False, None)
    assert report.error is not None and "404 Not Found for https://sm.example.test/v1/api/ping" in report.error


def test_resource_resolves_env_var_and_hides_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LGM_TEST_SMARTMOVING_KEY", TEST_KEY)
    monkeypatch.setenv("LGM_TEST_SMARTMOVING_URL", "https://sm.example.test/v1")
    account = SmartMovingAccount(
        base_url_env="LGM_TEST_SMARTMOVING_URL",
        api_key_env="LGM_TEST_SMARTMOVING_KEY",
        page_size=250,
        rate_limit_per_minute=None,
    )
    resource = SmartMovingResource.for_accounts({"lgm": account})
    seen: dict[str, object] = {}

    @dg.asset
    def probe(smartmoving: SmartMovingResource) -> None:
        seen["repr"] = repr(smartmoving)
        seen["str"] = str(smartmoving)
        with smartmoving.account("lgm").get_client() as client:
            seen["client"] = repr(client)
            seen["page_size"] = client.page_size
            seen["limited"] = client._bucket is not None
            seen["resolved"] = client._api_key == TEST_KEY

    result = dg.materialize([probe], resources={"smartmoving": resource})
    assert result.success
    assert seen["resolved"] is True
    assert (seen["page_size"], seen["limited"]) == (250, False)
    assert seen["client"] == "SmartMovingClient(base_url='https://sm.example.test/v1')"
    for text in (seen["repr"], seen["str"], repr(resource)):
        assert TEST_KEY not in str(text)


def test_run_config_tunes_the_tenants_it_names_and_the_others_keep_their_tenants_file_settings() -> None:
    bound = {
        key: SmartMovingAccount(base_url_env=f"{key}_URL", api_key_env=f"{key}_KEY", page_size=250, max_retries=1)
        for key in ("lgm", "acme")
    }
    seen: dict[str, SmartMovingAccount] = {}

    @dg.asset
    def probe(smartmoving: SmartMovingResource) -> None:
        seen.update({key: smartmoving.account(key) for key in bound})

    tuned = {"resources": {"smartmoving": {"config": {"accounts": {"acme": {"page_size": 7}}}}}}
    result = dg.materialize(
        [probe], resources={"smartmoving": SmartMovingResource.for_accounts(bound)}, run_config=tuned
    )
    assert result.success
    assert (seen["lgm"].page_size, seen["lgm"].max_retries) == (250, 1)
    # a named tenant runs with exactly the knobs given: the others are the client's defaults, not the file's
    assert (seen["acme"].page_size, seen["acme"].max_retries) == (7, 5)
    assert seen["acme"].api_key_env == "acme_KEY"  # credentials stay the bound ones
