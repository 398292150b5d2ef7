"""The journeys merge: idempotence, audit, reschedules, quarantine, stale rebuilds."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from lgm_pipeline_tests.storage.conftest import (
    CALGARY,
    DAY,
    FETCHED_AT,
    NEXT_DAY,
    TORONTO,
    Writer,
    journey_key,
    journey_row,
    journeys_frame,
    raw_job_row,
)


def _rows(engine: Engine, sql: str, **params: object) -> list[sa.Row]:
    with engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_rerun_is_idempotent(writer: Writer, engine: Engine) -> None:
    df = journeys_frame([journey_row(str(i)) for i in range(5)])
    first = writer.journeys(df, run_id="run-1")
    assert (first["inserted"], first["updated"], first["deleted"]) == (5, 0, 0)
    before = _rows(engine, "SELECT * FROM tenant_lgm.journeys ORDER BY id")
    audit_before = _rows(engine, "SELECT count(*) FROM tenant_lgm.journey_audit")[0][0]

    second = writer.journeys(df.assign(run_id="run-2", synced_at=FETCHED_AT + dt.timedelta(hours=1)), run_id="run-2")
    assert (second["inserted"], second["updated"], second["deleted"], second["dagster/row_count"]) == (0, 0, 0, 5)
    assert _rows(engine, "SELECT * FROM tenant_lgm.journeys ORDER BY id") == before
    assert _rows(engine, "SELECT count(*) FROM tenant_lgm.journey_audit")[0][0] == audit_before == 5
    runs = _rows(engine, "SELECT run_id, inserted, updated FROM tenant_lgm.sync_runs ORDER BY id")
    assert [tuple(r) for r in runs] == [("run-1", 5, 0), ("run-2", 0, 0)]


def test_audit_records_inserts_updates_deletes(writer: Writer, engine: Engine) -> None:
    writer.journeys(journeys_frame([journey_row("a"), journey_row("b"), journey_row("c")]), run_id="run-1")
    changed = journey_row(
        "a", customer_phone="+1 403 555 0199", estimated_cost=1500, source_fetched_at=FETCHED_AT + dt.timedelta(hours=1)
    )
    result = writer.journeys(journeys_frame([changed, journey_row("b"), journey_row("d")]), run_id="run-2")
    assert (result["inserted"], result["updated"], result["deleted"]) == (1, 1, 1)

    audit = {
        (r.journey_id, r.action): r
        for r in _rows(engine, "SELECT * FROM tenant_lgm.journey_audit WHERE run_id = 'run-2'")
    }
    assert set(audit) == {("jrn_a", "update"), ("jrn_c", "delete"), ("jrn_d", "insert")}
    update = audit["jrn_a", "update"]
    assert sorted(update.changed_columns) == ["customer_phone", "estimated_cost"]
    assert update.before == {"customer_phone": "+1 403 555 0100", "estimated_cost": 1234.5}
    assert update.after == {"customer_phone": "+1 403 555 0199", "estimated_cost": 1500.0}
    assert update.partition_key == str(journey_key())
    assert audit["jrn_c", "delete"].before["customer_name"] == "Jane Doe"
    insert = audit["jrn_d", "insert"]
    assert (insert.changed_columns, insert.before, insert.after) == ([], None, None)


def test_audit_history_gives_back_the_inserted_row(writer: Writer, engine: Engine) -> None:
    """Inserts carry no image: the current row with the updates' before images undone is it."""
    writer.journeys(journeys_frame([journey_row("a")]), run_id="run-1")
    image = "to_jsonb(j) - ARRAY['synced_at', 'run_id', 'source_fetched_at']"
    (as_inserted,) = _rows(engine, f"SELECT {image} FROM tenant_lgm.journeys j")[0]
    for hours, changes in enumerate(
        [{"customer_phone": "+1 403 555 0199"}, {"customer_phone": "+1 403 555 0142", "title": "Studio"}], start=1
    ):
        later = FETCHED_AT + dt.timedelta(hours=hours)
        frame = journeys_frame([journey_row("a", source_fetched_at=later, **changes)])
        writer.journeys(frame, run_id=f"run-{hours + 1}")

    (row,) = _rows(engine, f"SELECT {image} FROM tenant_lgm.journeys j")[0]
    assert row != as_inserted
    undo = _rows(engine, "SELECT before FROM tenant_lgm.journey_audit WHERE action = 'update' ORDER BY audit_id DESC")
    assert len(undo) == 2
    for (before,) in undo:
        row |= before
    assert row == as_inserted


def test_stale_rebuild_does_not_move_a_job_back(writer: Writer, engine: Engine) -> None:
    newer = FETCHED_AT + dt.timedelta(hours=2)
    writer.journeys(journeys_frame([journey_row("a", customer_name="New", source_fetched_at=newer)]))
    result = writer.journeys(journeys_frame([journey_row("a", customer_name="Old")]))
    assert result["updated"] == 0
    assert _rows(engine, "SELECT customer_name FROM tenant_lgm.journeys")[0][0] == "New"


TORONTO_NAME = "TORONTO 🇨🇦 - Let's Get Moving"


def _pulled(writer: Writer, job: str, day: dt.date, branch_name: str, fetched_at: dt.datetime) -> None:
    """What a raw pull leaves: the job filed under ``day``, its opportunity naming ``branch_name``."""
    writer.raw("smartmoving_jobs", pd.DataFrame([raw_job_row(job, day, fetched_at=fetched_at)]), day=day)
    opportunity = {
        "service_date": day,
        "opportunity_id": f"opp_{job}",
        "customer_id": f"cus_{job}",
        "summary_hash": "h",
        "payload": {"id": f"opp_{job}", "branch": {"name": branch_name}},
        "fetched_at": fetched_at,
    }
    writer.raw("smartmoving_opportunities", pd.DataFrame([opportunity]), day=day)


def _audit(engine: Engine, journey: str) -> list[tuple]:
    return [
        tuple(r)
        for r in _rows(
            engine,
            "SELECT action, changed_columns, before, after FROM tenant_lgm.journey_audit "
            f"WHERE journey_id = '{journey}' ORDER BY audit_id",
        )
    ]


def _where(engine: Engine) -> list[tuple]:
    rows = _rows(engine, "SELECT id, service_date, location_id FROM tenant_lgm.journeys ORDER BY id")
    return [tuple(r) for r in rows]


def _reschedule(writer: Writer, engine: Engine, order: list[str], day: dt.date, branch: str) -> None:
    """Job a moves from (DAY, Calgary) to (day, branch); the two partitions are rebuilt in ``order``."""
    writer.journeys(journeys_frame([journey_row("a"), journey_row("keep")]), key=journey_key(DAY))
    later = FETCHED_AT + dt.timedelta(hours=1)
    _pulled(writer, "a", day, TORONTO_NAME if branch == TORONTO else "CALGARY 🇨🇦 - Let's Get Moving", later)
    moved = journey_row("a", service_date=day, location_id=branch, source_fetched_at=later)
    frames = {
        "old": (journeys_frame([journey_row("keep")]), journey_key(DAY)),
        "new": (journeys_frame([moved]), journey_key(day, branch)),
    }
    for which in order:
        writer.journeys(frames[which][0], key=frames[which][1])
        # never absent: after each commit the job is in one partition or the other
        assert "jrn_a" in [r[0] for r in _where(engine)]
    assert _where(engine) == [("jrn_a", day, branch), ("jrn_keep", DAY, CALGARY)]
    [insert, update] = _audit(engine, "jrn_a")
    assert insert[0] == "insert" and update[0] == "update"  # one move, not a delete and an insert
    moved_columns = ["location_id", "service_date"] if day != DAY else ["location_id"]
    assert sorted(update[1]) == moved_columns
    assert update[2]["location_id"] == CALGARY and update[3]["location_id"] == branch  # old and new partition


@pytest.mark.parametrize("order", [["old", "new"], ["new", "old"]])
def test_a_rescheduled_job_moves_in_one_update_whichever_partition_is_rebuilt_first(
    writer: Writer, engine: Engine, order: list[str]
) -> None:
    _reschedule(writer, engine, order, NEXT_DAY, TORONTO)


@pytest.mark.parametrize("order", [["old", "new"], ["new", "old"]])
def test_a_job_moved_to_another_branch_on_its_date_moves_in_one_update(
    writer: Writer, engine: Engine, order: list[str]
) -> None:
    _reschedule(writer, engine, order, DAY, TORONTO)


def test_a_job_no_pull_files_anywhere_leaves_with_a_delete(writer: Writer, engine: Engine) -> None:
    writer.journeys(journeys_frame([journey_row("a"), journey_row("gone"), journey_row("stale")]))
    # "stale" was last seen elsewhere by a fetch older than the journey's own: no evidence of a move
    _pulled(writer, "stale", NEXT_DAY, TORONTO_NAME, FETCHED_AT - dt.timedelta(hours=1))
    writer.journeys(journeys_frame([journey_row("a")]))
    assert _where(engine) == [("jrn_a", DAY, CALGARY)]
    assert [a[0] for a in _audit(engine, "jrn_gone")] == ["insert", "delete"]
    assert [a[0] for a in _audit(engine, "jrn_stale")] == ["insert", "delete"]


REASON = [{"rule": "booked_needs_cost", "column": "estimated_cost", "check": "not_null", "value": None}]


def test_quarantine_lifecycle(writer: Writer, engine: Engine) -> None:
    unknown_branch = journey_row(
        "x",
        location_id=None,
        branch_name="REGINA - Let's Get Moving",
        quarantine_reasons=[{"rule": "known_branch", "column": "branch_name", "check": "isin", "value": "REGINA"}],
    )
    bad = journey_row("b", estimated_cost=None, quarantine_reasons=REASON)
    result = writer.journeys(journeys_frame([journey_row("a"), bad, unknown_branch]), run_id="run-1")
    # the partition counts its own rows: the unknown branch's row is held, counted once per date elsewhere
    assert (result["dagster/partition_row_count"], result["inserted"], result["quarantined"]) == (2, 1, 1)
    q = {r.id: r for r in _rows(engine, "SELECT * FROM tenant_lgm.journeys_quarantine")}
    assert set(q) == {"jrn_b", "jrn_x"}
    assert q["jrn_b"].reasons == REASON
    assert q["jrn_b"].record["estimated_cost"] is None and "raw_payload" not in q["jrn_b"].record
    assert q["jrn_x"].location_id is None and q["jrn_x"].service_date == DAY

    # Every branch partition of the date writes the unknown-branch row the same way.
    writer.journeys(journeys_frame([unknown_branch]), key=journey_key(DAY, TORONTO), run_id="run-2")
    again = _rows(engine, "SELECT id, first_seen_at, last_seen_at, run_id FROM tenant_lgm.journeys_quarantine")
    by_id = {r.id: r for r in again}
    assert set(by_id) == {"jrn_b", "jrn_x"}
    assert by_id["jrn_x"].first_seen_at == q["jrn_x"].first_seen_at
    assert by_id["jrn_x"].run_id == "run-2"

    # b is fixed (leaves quarantine), a turns bad (leaves journeys, audited as a delete).
    fixed = journey_row("b", source_fetched_at=FETCHED_AT + dt.timedelta(hours=1))
    a_bad = journey_row("a", estimated_cost=None, quarantine_reasons=REASON)
    result = writer.journeys(journeys_frame([a_bad, fixed, unknown_branch]), run_id="run-3")
    assert (result["inserted"], result["deleted"], result["quarantined"]) == (1, 1, 1)
    assert [r.id for r in _rows(engine, "SELECT id FROM tenant_lgm.journeys")] == ["jrn_b"]
    assert sorted(r.id for r in _rows(engine, "SELECT id FROM tenant_lgm.journeys_quarantine")) == ["jrn_a", "jrn_x"]

    # A partition without quarantined rows empties its share of the quarantine.
    writer.journeys(journeys_frame([journey_row("a"), fixed]), run_id="run-4")
    assert _rows(engine, "SELECT count(*) FROM tenant_lgm.journeys_quarantine")[0][0] == 0


def test_load_input_returns_requested_partitions(writer: Writer) -> None:
    writer.journeys(journeys_frame([journey_row("a")]), key=journey_key(DAY, CALGARY))
    writer.journeys(journeys_frame([journey_row("t", location_id=TORONTO)]), key=journey_key(DAY, TORONTO))
    from lgm_pipeline_tests.storage.conftest import JOURNEY_PARTITIONS

    df = writer.read("journeys", [str(journey_key(DAY, TORONTO))], JOURNEY_PARTITIONS)
    assert df["id"].tolist() == ["jrn_t"]
    assert df.loc[0, "addresses"][0]["city"] == "Calgary"
    assert df.loc[0, "service_date"] == DAY
    assert isinstance(df, pd.DataFrame)
