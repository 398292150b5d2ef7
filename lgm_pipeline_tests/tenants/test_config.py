from __future__ import annotations

import datetime as dt

import pytest

from lgm_pipeline.tenants import TenantConfigError, load_tenants
from lgm_pipeline.tenants.config import parse_tenants


def test_lgm_is_configured_with_its_six_branches() -> None:
    [lgm] = load_tenants()
    assert lgm.client_id == "clm_f55e13de_a5c4_4990_ad02_34bb07187daa"
    assert lgm.schema == "tenant_lgm"
    assert lgm.location_ids == [
        "loc_lgm_calgary_001",
        "loc_lgm_vancouver_001",
        "loc_lgm_burnaby_corporate_001",
        "loc_lgm_toronto_001",
        "loc_lgm_edmonton_001",
        "loc_lgm_winnipeg_001",
    ]
    assert lgm.branch_by_smartmoving_name()["CALGARY 🇨🇦 - Let's Get Moving"].location_id == "loc_lgm_calgary_001"
    assert lgm.smartmoving.api_key_env == "SMARTMOVING_API_KEY"


def test_window_is_today_and_tomorrow_when_every_branch_agrees_on_the_date() -> None:
    [lgm] = load_tenants()
    late_evening_toronto = dt.datetime(2026, 11, 26, 3, 30, tzinfo=dt.UTC)  # 22:30 on the 25th in Toronto
    assert lgm.sync_window(late_evening_toronto) == [dt.date(2026, 11, 25), dt.date(2026, 11, 26)]


def test_each_lgm_branch_keeps_its_own_clock() -> None:
    [lgm] = load_tenants()
    zones = {b.name: b.timezone for b in lgm.branches}
    assert zones == {
        "Calgary": "America/Edmonton",
        "Edmonton": "America/Edmonton",
        "Vancouver": "America/Vancouver",
        "Burnaby": "America/Vancouver",
        "Winnipeg": "America/Winnipeg",
        "Toronto": "America/Toronto",
    }


def test_a_branch_without_a_timezone_takes_the_tenants() -> None:
    [acme] = parse_tenants({"tenants": [_tenant(timezone="America/Halifax")]})
    assert acme.branches[0].timezone == "America/Halifax"


def _tenant(**overrides: object) -> dict:
    base = {
        "key": "acme",
        "client_id": "c1",
        "name": "Acme",
        "timezone": "America/Toronto",
        "first_service_date": "2026-01-01",
        "smartmoving": {"api_key_env": "ACME_KEY", "base_url_env": "ACME_URL"},
        "branches": [{"location_id": "loc_a", "name": "A", "smartmoving_branch_name": "A"}],
    }
    return base | overrides


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"key": "Acme; DROP"}, "key="),
        ({"timezone": "Mars/Olympus"}, "unknown timezone"),
        (
            {"branches": [{"location_id": "loc_a", "name": "A", "smartmoving_branch_name": "A", "timezone": "PST"}]},
            r"tenant 'acme' branches\[0\]: unknown timezone 'PST': use an IANA time zone name",
        ),
        ({"branches": [{"location_id": "loc_a", "name": "A"}]}, "smartmoving_branch_name"),
        ({"smartmoving": {"api_key_env": "lower", "base_url_env": "X"}}, "api_key_env"),
        ({"first_service_date": "yesterday"}, "first_service_date"),
        (
            {"branches": [{"location_id": "loc_a", "name": "A", "smartmoving_branch_name": "A"}] * 2},
            "duplicate location_id",
        ),
        ({"currency": "dollars"}, "currency="),
        ({"catch_up_days": -1}, "catch_up_days=-1"),
        ({"catch_up_days": "seven"}, "catch_up_days="),
        ({"job_types": {"piano": "Piano"}}, r"job_types\['piano'\]"),
        ({"job_types": {101: {"name": "Piano", "addresses": "anywhere"}}}, "addresses='anywhere'"),
        ({"job_types": {101: {"name": "Piano", "needs_truck": "yes"}}}, "needs_truck"),
        ({"job_types": {101: {"needs_truck": True}}}, "name"),
        (
            {"cycle_offset_minutes": 120},
            r"tenant 'acme': cycle_offset_minutes=120 must be a whole number from 0 to 119",
        ),
        ({"cycle_offset_minutes": -1}, "cycle_offset_minutes=-1"),
        ({"cycle_offset_minutes": "15"}, "cycle_offset_minutes='15'"),
        ({"cycle_offset_minutes": True}, "cycle_offset_minutes=True"),
    ],
)
def test_invalid_config_gives_a_clear_error(overrides: dict, message: str) -> None:
    with pytest.raises(TenantConfigError, match=message):
        parse_tenants({"tenants": [_tenant(**overrides)]})


def test_duplicate_tenant_keys_rejected() -> None:
    with pytest.raises(TenantConfigError, match="duplicate tenant keys"):
        parse_tenants({"tenants": [_tenant(), _tenant()]})


def test_currency_catch_up_and_custom_job_types_are_read_with_defaults() -> None:
    [plain] = parse_tenants({"tenants": [_tenant()]})
    assert (plain.currency, plain.catch_up_days, plain.job_types) == ("CAD", 7, ())
    [custom] = parse_tenants(
        {
            "tenants": [
                _tenant(
                    currency="USD",
                    catch_up_days=0,
                    job_types={101: "Piano move", 102: {"name": "Shred", "needs_truck": False, "addresses": "pickup"}},
                )
            ]
        }
    )
    assert (custom.currency, custom.catch_up_days) == ("USD", 0)
    assert [(t.code, t.name, t.needs_truck, t.addresses) for t in custom.job_types] == [
        (101, "Piano move", None, "route"),
        (102, "Shred", False, "pickup"),
    ]
