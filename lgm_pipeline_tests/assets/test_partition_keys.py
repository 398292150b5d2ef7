"""A journeys partition launched by any client: the text key of a tag works, a wrong one says the right form."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest
import sqlalchemy as sa

from lgm_pipeline.assets.automation import journeys_job_name
from lgm_pipeline.naming import JOURNEY_KEY_FORM, journey_partition_key, parse_journey_partition_key
from lgm_pipeline.tenants import Tenant
from lgm_pipeline_tests.conftest import pull_cycle

PARTITION_TAG = "dagster/partition"


def test_a_key_parses_typed_or_as_text() -> None:
    typed = journey_partition_key("2026-11-27", "loc_lgm_calgary_001")
    expected = (dt.date(2026, 11, 27), "loc_lgm_calgary_001")
    assert parse_journey_partition_key(typed) == expected
    # Dagster's text form joins the dimensions in name order: branch, then date.
    assert str(typed) == "loc_lgm_calgary_001|2026-11-27"
    assert parse_journey_partition_key("loc_lgm_calgary_001|2026-11-27") == expected


@pytest.mark.parametrize("key", ["nonsense", "2026-11-27|loc_lgm_calgary_001", "loc_lgm_calgary_001|", "a|b|c"])
def test_a_malformed_key_names_the_expected_form(key: str) -> None:
    with pytest.raises(ValueError, match="is not of the form") as raised:
        parse_journey_partition_key(key)
    assert JOURNEY_KEY_FORM in str(raised.value)


def _failure_messages(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(
        event.event_specific_data.error.message
        for event in result.all_events
        if event.is_failure and event.event_specific_data is not None and event.event_specific_data.error
    )


def test_a_run_tagged_only_with_the_partition_rebuilds_that_branch(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, db: sa.Engine
) -> None:
    today = tenant.today()
    assert pull_cycle(defs, tenant, instance, partition_key=today.isoformat()).success

    key = f"loc_lgm_calgary_001|{today.isoformat()}"
    journeys = defs.resolve_job_def(journeys_job_name(tenant))
    result = journeys.execute_in_process(instance=instance, tags={PARTITION_TAG: key})
    assert result.success

    with db.connect() as conn:
        written = conn.execute(
            sa.text(f"SELECT partition_key, location_id FROM {tenant.schema}.sync_runs WHERE run_id = :r"),
            {"r": result.run_id},
        ).all()
    assert [tuple(row) for row in written] == [(key, "loc_lgm_calgary_001")]


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("calgary 2026-11-27", "is not of the form <location_id>|<YYYY-MM-DD>"),
        ("loc_nowhere|{today}", "does not exist"),
    ],
)
def test_a_run_with_a_wrong_partition_fails_naming_the_form_and_writes_nothing(
    defs: dg.Definitions, tenant: Tenant, instance: dg.DagsterInstance, db: sa.Engine, key: str, says: str
) -> None:
    today = tenant.today()
    assert pull_cycle(defs, tenant, instance, partition_key=today.isoformat()).success

    journeys = defs.resolve_job_def(journeys_job_name(tenant))
    tags = {PARTITION_TAG: key.format(today=today.isoformat())}
    result = journeys.execute_in_process(instance=instance, tags=tags, raise_on_error=False)
    assert not result.success
    messages = _failure_messages(result)
    assert says in messages and JOURNEY_KEY_FORM in messages, messages
    with db.connect() as conn:
        stored = conn.execute(sa.text(f"SELECT count(*) FROM {tenant.schema}.journeys")).scalar_one()
        recorded = conn.execute(
            sa.text(f"SELECT count(*) FROM {tenant.schema}.sync_runs WHERE run_id = :r"), {"r": result.run_id}
        ).scalar_one()
    assert (stored, recorded) == (0, 0)
