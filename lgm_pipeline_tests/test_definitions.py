"""The code location loads, and its shape is what the UI and the schedule rely on."""

from __future__ import annotations

import dagster as dg

from lgm_pipeline.definitions import build_definitions, defs
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.tenants.config import parse_tenants


def test_definitions_are_loadable() -> None:
    dg.Definitions.validate_loadable(defs())


def test_asset_specs_snapshot() -> None:
    specs = {spec.key.to_user_string(): spec for spec in defs().resolve_all_asset_specs()}
    assert sorted(specs) == [
        "lgm/history_retention",
        "lgm/journeys",
        "lgm/leads",
        "lgm/smartmoving_arrival_windows",
        "lgm/smartmoving_branches",
        "lgm/smartmoving_customers",
        "lgm/smartmoving_job_departures",
        "lgm/smartmoving_jobs",
        "lgm/smartmoving_leads",
        "lgm/smartmoving_opportunities",
        "lgm/webhook_updates",
    ]
    for spec in specs.values():
        assert spec.description, spec.key
        assert spec.owners == ["team:data-engineering"]
        assert spec.tags.get("tenant") == "lgm", spec.key  # the UI filters a tenant's assets by this tag
        if spec.key.path[-1] != "history_retention":  # every stored asset names its table
            assert spec.metadata["dagster/table_name"].value.startswith("tenant_lgm."), spec.key
    # the columns of the tables the CRM reads show before any run; the raw tables' come with a materialization
    with_columns = {key for key, spec in specs.items() if "dagster/column_schema" in spec.metadata}
    assert with_columns == {"lgm/journeys", "lgm/leads"}
    assert specs["lgm/journeys"].metadata["dagster/column_schema"].value.columns
    journeys = specs["lgm/journeys"]
    assert isinstance(journeys.partitions_def, dg.MultiPartitionsDefinition)
    assert {d.name for d in journeys.partitions_def.partitions_defs} == {"date", "branch"}
    assert journeys.group_name == "lgm_journeys"
    assert {"pandas", "postgres"} <= set(journeys.kinds)
    checks = {(c.asset_key.path[-1], c.name) for c in defs().resolve_asset_graph().asset_check_keys}
    assert checks == {
        ("journeys", "customer_contact"),
        ("journeys", "job_fields"),
        ("journeys", "job_type_known"),
        ("journeys", "financials"),
        ("journeys", "addresses"),
        ("journeys", "values_readable"),
        ("journeys", "status_mapping"),
        ("journeys", "journey_ids_unique"),
        ("journeys", "service_date_in_partition"),
        ("journeys", "branch_volume"),
        ("journeys", "journeys_freshness"),
        # an unmapped SmartMoving branch is a date's problem, not every branch partition's
        ("smartmoving_jobs", "branch_mapping"),
        # every raw pull: served = stored + set aside + quarantined (unreadable_records)
        ("smartmoving_customers", "records_read"),
        ("smartmoving_opportunities", "records_read"),
        ("smartmoving_jobs", "records_read"),
        ("smartmoving_branches", "records_read"),
        ("smartmoving_leads", "records_read"),
        ("leads", "lead_contact"),
        ("leads", "lead_branch_mapping"),
        ("leads", "probable_duplicate"),
    }


def test_api_key_is_an_env_var_name_not_a_value() -> None:
    account = defs().resources["smartmoving"].account("lgm")
    assert (account.api_key_env, account.base_url_env) == ("SMARTMOVING_API_KEY", "SMARTMOVING_BASE_URL")


def test_adding_a_tenant_adds_its_assets_and_nothing_else(tmp_path, monkeypatch) -> None:
    import yaml

    from lgm_pipeline import settings
    from lgm_pipeline.tenants import config as tenants_config

    lgm = yaml.safe_load(tenants_config.DEFAULT_TENANTS_FILE.read_text())["tenants"][0]
    acme = {
        **lgm,
        "key": "acme",
        "client_id": "clm_acme",
        "name": "Acme Movers",
        "timezone": "America/Vancouver",
        "smartmoving": {"api_key_env": "ACME_SM_KEY", "base_url_env": "ACME_SM_URL"},
        "branches": [{"location_id": "loc_acme_1", "name": "One", "smartmoving_branch_name": "ONE"}],
    }
    path = tmp_path / "tenants.yaml"
    path.write_text(yaml.safe_dump({"tenants": [lgm, acme]}))
    monkeypatch.setenv(settings.TENANTS_FILE_ENV, str(path))
    assert [t.key for t in load_tenants()] == ["lgm", "acme"]
    two = build_definitions()
    keys = {k.to_user_string() for k in two.resolve_all_asset_keys()}
    assert {"acme/journeys", "lgm/journeys"} <= keys
    daily = ("every_2_hours", "daily")  # two a tenant: the cycle, and the daily work
    # plus the code location's own (its tenants together), not per tenant
    assert {s.name for s in two.schedules} == {f"{key}_{name}" for key in ("lgm", "acme") for name in daily} | {
        "dagster_history_retention_daily",
        "journeys_freshness",
    }
    assert [s.name for s in two.sensors] == ["journeys_automation", "webhook_inbox"]
    both = two.resolve_job_def("journeys_freshness").asset_layer.asset_graph.asset_check_keys
    assert {(k.asset_key.path[0], k.name) for k in both} == {
        ("lgm", "journeys_freshness"),
        ("acme", "journeys_freshness"),
    }
    assert parse_tenants({"tenants": [acme]})[0].schema == "tenant_acme"
    # A tenant's jobs do not grow with the tenants beside it: the daemon reloads every job's snapshot each
    # minute, so anything per tenant in them (the resources' run config defaults) would cost N x N.
    monkeypatch.delenv(settings.TENANTS_FILE_ENV)
    alone = build_definitions()
    for job in ("lgm_smartmoving_refresh", "lgm_journeys"):
        assert two.resolve_job_def(job).get_job_snapshot_id() == alone.resolve_job_def(job).get_job_snapshot_id()
