"""The fault campaign's checker (bench/campaign_checks.py) catches what it exists to catch.

A campaign that passes says nothing unless its checks would have failed: a journey row dropped from or
altered in one database, an audit that does not replay to the rows, a key leaked in another case or
reversed. The campaign itself (bench/fault_campaign.py, minutes of syncs) is for .ci/run; these run in
a second.
"""

from __future__ import annotations

import importlib.util
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

from lgm_pipeline.cli.dead_syncs import PID_TAG
from lgm_pipeline.storage.database import create_engine

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str) -> ModuleType:
    # bench/ is scripts, not a package: load the module from its file, as the campaign imports it.
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


checks = _load("campaign_checks")

KEY = "fc-key-kA3dM9zQp2Lx7VwT4nHr8sGj6bYe"


def _journey(row_id: str, **changes: Any) -> dict[str, Any]:
    return {
        "id": row_id,
        "status": "BOOKED",
        "customer_name": "Chloé Tremblay",
        "estimated_cost": 1250.5,
        "raw_payload": {"job": {"id": row_id}, "opportunity": {"customer": {"name": "old copy"}}},
        **changes,
    }


# --- comparison ---------------------------------------------------------------------------------


def test_identical_rows_pass() -> None:
    rows = {i: _journey(i) for i in ("j1", "j2", "j3")}
    diff = checks.compare_rows("journeys", rows, {k: dict(v) for k, v in rows.items()})
    assert diff.ok and diff.problems() == [] and diff.compared == 3


def test_a_row_dropped_from_one_database_is_named() -> None:
    reference = {i: _journey(i) for i in ("j1", "j2", "j3")}
    campaign = {k: v for k, v in reference.items() if k != "j2"}
    diff = checks.compare_rows("journeys", campaign, reference)
    assert not diff.ok
    text = "\n".join(diff.problems())
    assert "1 row(s) only in the reference database" in text and "id=j2" in text
    # And the other way round: a row the reference does not have.
    diff = checks.compare_rows("journeys", reference, campaign)
    assert "only in the campaign database" in "\n".join(diff.problems()) and "id=j2" in "\n".join(diff.problems())


def test_an_altered_row_is_named_with_its_columns_and_both_values() -> None:
    reference = {i: _journey(i) for i in ("j1", "j2")}
    campaign = {**reference, "j1": _journey("j1", customer_name="Chloe Tremblay", estimated_cost=1250.0)}
    diff = checks.compare_rows("journeys", campaign, reference)
    [(key, columns, mine, theirs)] = diff.differing
    assert key == "j1" and columns == ["customer_name", "estimated_cost"]
    assert mine == {"customer_name": "Chloe Tremblay", "estimated_cost": 1250.0}
    assert theirs == {"customer_name": "Chloé Tremblay", "estimated_cost": 1250.5}
    text = "\n".join(diff.problems())
    assert "id=j1: columns customer_name, estimated_cost" in text and "Chloe Tremblay" in text


def test_only_rows_the_rule_allows_may_exist_in_the_campaign_alone() -> None:
    reference = {"j1": _journey("j1")}
    campaign = {**reference, "j2": _journey("j2", status="CANCELLED"), "j3": _journey("j3")}
    diff = checks.compare_rows("journeys", campaign, reference, lambda row: row["status"] == "CANCELLED")
    assert [r["id"] for r in diff.history] == ["j2"]
    assert [r["id"] for r in diff.only_campaign] == ["j3"] and not diff.ok


def test_only_rows_differing_in_columns_read_from_reused_details_are_set_aside_as_lag() -> None:
    reference = {i: _journey(i) for i in ("j1", "j2")}
    campaign = {
        "j1": _journey("j1", location_id="loc_lgm_edmonton_001"),  # moved branch, details not fetched again yet
        "j2": _journey("j2", location_id="loc_lgm_edmonton_001", customer_name="Chloe Tremblay"),  # and the list
    }
    diff = checks.compare_rows("journeys", campaign, reference)
    diff.set_aside_details_lag({"location_id", "estimated_cost"})
    assert diff.details_lag == [("j1", ["location_id"])]
    [(key, columns, _, _)] = diff.differing
    assert key == "j2" and columns == ["customer_name", "location_id"] and not diff.ok


@pytest.fixture
def two_databases(database_url: str) -> Iterator[sa.Connection]:
    """One database, two schemas standing for the campaign's and the reference's: the reader is per relation."""
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        for schema in ("campaign", "reference"):
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
            conn.execute(
                sa.text(
                    f"CREATE TABLE {schema}.journeys (id text PRIMARY KEY, status text, estimated_cost numeric(12, 2),"
                    " raw_payload jsonb, synced_at timestamptz, run_id text)"
                )
            )
            conn.execute(
                sa.text(
                    f"INSERT INTO {schema}.journeys VALUES "
                    '(\'j1\', \'BOOKED\', 100.50, \'{"opportunity": {"customer": {"name": "A"}}}\', now(), :run), '
                    "('j2', 'COMPLETED', 99.00, '{}', now(), :run)"
                ),
                {"run": f"run-of-{schema}"},
            )
        yield conn
    engine.dispose()


def _read(conn: sa.Connection, schema: str) -> dict[str, dict[str, Any]]:
    return checks.read_rows(
        conn,
        f"{schema}.journeys",
        "id",
        ("synced_at", "run_id"),
        nested_excluded=[("raw_payload", "opportunity", "customer")],
    )


def test_rows_read_from_two_databases_compare_without_bookkeeping(two_databases: sa.Connection) -> None:
    conn = two_databases
    # Written at other moments by other runs, and the details' copy of the customer differs: still equal.
    conn.execute(sa.text("UPDATE reference.journeys SET synced_at = now() - interval '1 hour'"))
    conn.execute(
        sa.text("""UPDATE reference.journeys SET raw_payload = '{"opportunity": {"customer": {}}}' WHERE id = 'j1'""")
    )
    diff = checks.compare_rows("journeys", _read(conn, "campaign"), _read(conn, "reference"))
    assert diff.ok, diff.problems()

    conn.execute(sa.text("DELETE FROM campaign.journeys WHERE id = 'j2'"))
    conn.execute(sa.text("UPDATE reference.journeys SET estimated_cost = 100.75 WHERE id = 'j1'"))
    diff = checks.compare_rows("journeys", _read(conn, "campaign"), _read(conn, "reference"))
    text = "\n".join(diff.problems())
    assert "only in the reference database" in text and "id=j2" in text
    assert "id=j1: columns estimated_cost" in text and "100.75" in text


# --- audit replay -------------------------------------------------------------------------------


def _audit(*entries: tuple[str, str, tuple[str, ...], dict | None, dict | None]) -> list[Any]:
    return [checks.AuditEntry(i, key, action, cols, b, a) for i, (key, action, cols, b, a) in enumerate(entries, 1)]


def test_an_audit_that_replays_to_the_rows_passes() -> None:
    entries = _audit(
        ("j1", "insert", (), None, None),
        ("j1", "update", ("status",), {"status": "BOOKED"}, {"status": "COMPLETED"}),
        ("j2", "insert", (), None, None),
        ("j2", "delete", (), {"id": "j2", "status": "BOOKED"}, None),
    )
    assert checks.replay_audit("journeys", entries, {"j1": {"id": "j1", "status": "COMPLETED"}}) == []


def test_rows_the_audit_does_not_explain_are_named() -> None:
    entries = _audit(
        ("j1", "insert", (), None, None),
        ("j1", "update", ("status",), {"status": "BOOKED"}, {"status": "COMPLETED"}),
        ("j2", "update", ("status",), {"status": "BOOKED"}, {"status": "CANCELLED"}),
    )
    current = {"j1": {"id": "j1", "status": "CANCELLED"}, "j3": {"id": "j3", "status": "BOOKED"}}
    problems = "\n".join(checks.replay_audit("journeys", entries, current))
    assert "journeys j1: status is 'CANCELLED', the audit last recorded 'COMPLETED'" in problems
    assert "j2 (audit_id 3, update): updated while absent" in problems
    assert "journeys j3: in the table, but the audit never inserted it" in problems


# --- secrets ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"error: {KEY}",
        f"header x-api-key: {KEY.upper()}",
        f"reversed {KEY[::-1]} here",
        f"cut short: ...{KEY[5:14]}...",
        f"UPPER AND REVERSED {KEY[::-1].upper()}",
    ],
)
def test_the_secret_scan_finds_the_key_in_any_case_reversed_or_in_pieces(text: str) -> None:
    [leak] = checks.scan_text("stderr of cycle 3", text, {"API key": KEY})
    assert leak.where == "stderr of cycle 3" and leak.secret == "API key"
    for piece in checks.secret_needles(KEY):
        assert piece not in str(leak).lower()  # the report never repeats the secret


def test_the_secret_scan_passes_text_without_it() -> None:
    text = f"run 5f0c2e1a-9b7d-4c3e-8f1a-2b3c4d5e6f70 ok; seven characters of the key: {KEY[8:15]}"
    assert checks.scan_text("event log", text, {"API key": KEY}) == []


def test_the_database_scan_finds_the_key_in_a_row_and_in_a_compressed_body(two_databases: sa.Connection) -> None:
    conn = two_databases
    assert checks.scan_database(conn, "campaign", {"API key": KEY}) == []
    conn.execute(sa.text("CREATE TABLE campaign.event_logs (id int, event text, body bytea)"))
    conn.execute(
        sa.text("INSERT INTO campaign.event_logs VALUES (1, :event, NULL), (2, 'ok', :body)"),
        {"event": f"failed: {KEY[::-1].upper()}", "body": zlib.compress(f"headers {KEY}".encode())},
    )
    leaks = checks.scan_database(conn, "campaign", {"API key": KEY})
    assert sorted(leak.where for leak in leaks) == [
        "campaign table campaign.event_logs",
        "campaign table campaign.event_logs.body",
    ]


def test_a_pool_slot_held_assigned_or_queued_for_by_a_dead_run_is_named(two_databases: sa.Connection) -> None:
    """Dagster's own tables, reduced to the columns the check reads."""
    conn = two_databases
    assert checks.held_slot_problems(conn) == []  # an instance never used: nothing to say
    conn.execute(
        sa.text(
            "CREATE TABLE concurrency_slots (id serial, concurrency_key text, run_id text, step_key text,"
            " deleted bool);"
            "CREATE TABLE pending_steps (id serial, concurrency_key text, run_id text, step_key text,"
            " assigned_timestamp timestamp, priority int);"
            "CREATE TABLE runs (run_id text, status text);"
            "INSERT INTO runs VALUES ('r1', 'STARTED'), ('r2', 'STARTED'), ('r3', 'SUCCESS');"
            "INSERT INTO concurrency_slots (concurrency_key, run_id, step_key, deleted)"
            " VALUES ('smartmoving_lgm', NULL, NULL, false)"
        )
    )
    assert checks.held_slot_problems(conn) == []  # a free slot, nobody waiting
    conn.execute(
        sa.text(
            "UPDATE concurrency_slots SET run_id = 'r1', step_key = 'customers';"
            "INSERT INTO pending_steps (concurrency_key, run_id, step_key, assigned_timestamp) VALUES"
            " ('smartmoving_lgm', 'r1', 'customers', now()),"  # the holder's own entry: said once
            " ('smartmoving_lgm', 'r2', 'leads', NULL)"
        )
    )
    problems = checks.held_slot_problems(conn)
    assert len(problems) == 2 and all(checks.BLOCKS_THE_POOL in p for p in problems)
    assert "run r1 (STARTED), step customers, holds its slot" in problems[0]
    assert "run r2 (STARTED), step leads, is queued for the next free slot" in problems[1]

    # Between cycles, a run tagged with its lgm sync process is the next sync's to settle; the final check is not.
    conn.execute(sa.text("CREATE TABLE run_tags (run_id text, key text, value text)"))
    conn.execute(sa.text("INSERT INTO run_tags VALUES ('r1', :pid_tag, '4242')"), {"pid_tag": PID_TAG})
    [untagged] = checks.held_slot_problems(conn, next_sync_settles=True)
    assert "run r2" in untagged
    assert len(checks.held_slot_problems(conn)) == 2
