"""Raw partition writes: replace only the partition, atomically, serialized per partition."""

from __future__ import annotations

import datetime as dt
import threading
from decimal import Decimal
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.storage import replace, staging
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.storage.scope import FrameError, PartitionScope, lock_partition
from lgm_pipeline.storage.tables import raw_jobs
from lgm_pipeline_tests.storage.conftest import (
    DAILY,
    DAY,
    NEXT_DAY,
    TORONTO,
    Writer,
    journey_key,
    journey_row,
    journeys_frame,
    raw_job_row,
)

HOSTILE = 'Robert\'); DROP TABLE journeys;-- \\ \t tab\nnewline "quoted" 🇨🇦 é \\N'


def _jobs(engine: Engine) -> list[tuple[dt.date, str, str]]:
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(sa.text("SELECT service_date, job_id, run_id FROM tenant_lgm.raw_jobs ORDER BY 1, 2"))
        ]


def _frame(jobs: list[str], day: dt.date = DAY, **overrides: object) -> pd.DataFrame:
    return pd.DataFrame([raw_job_row(j, day, **overrides) for j in jobs])


def test_replace_touches_only_its_partition_and_reruns_identically(writer: Writer, engine: Engine) -> None:
    writer.raw("smartmoving_jobs", _frame(["1", "2", "3"]), DAY, run_id="r1")
    writer.raw("smartmoving_jobs", _frame(["9"], NEXT_DAY), NEXT_DAY, run_id="r1")
    result = writer.raw("smartmoving_jobs", _frame(["2", "4"]), DAY, run_id="r2")
    assert (result["deleted"], result["inserted"]) == (3, 2)
    expected = [(DAY, "2", "r2"), (DAY, "4", "r2"), (NEXT_DAY, "9", "r1")]
    assert _jobs(engine) == expected
    writer.raw("smartmoving_jobs", _frame(["2", "4"]), DAY, run_id="r2")
    assert _jobs(engine) == expected


def test_a_raw_write_leaves_planner_statistics_for_the_journeys_read(writer: Writer, engine: Engine) -> None:
    """Without them, the first journeys read after a large first load planned nested loops (minutes)."""
    writer.raw("smartmoving_jobs", _frame(["1", "2", "3"]), DAY)
    with engine.connect() as conn:
        analyzed = conn.execute(
            sa.text("SELECT attname FROM pg_stats WHERE schemaname = 'tenant_lgm' AND tablename = 'raw_jobs'")
        ).scalars()
        assert {"service_date", "customer_id", "opportunity_id"} <= set(analyzed)


def test_load_input_reads_requested_dates_with_python_types(writer: Writer) -> None:
    writer.raw("smartmoving_jobs", _frame(["1"], job_type=None, confirmed=None), DAY)
    writer.raw("smartmoving_jobs", _frame(["9"], NEXT_DAY), NEXT_DAY)
    df = writer.read("smartmoving_jobs", [DAY.isoformat()], DAILY)
    assert df["job_id"].tolist() == ["1"]
    row = df.iloc[0]
    assert row["service_date"] == DAY
    assert row["estimated_charges"] == {"total": 1234.5, "currency": "CAD"}
    assert row["addresses"] == [{"line1": "123 Main St SW"}]
    assert pd.isna(row["job_type"]) and pd.isna(row["confirmed"])
    both = writer.read("smartmoving_jobs", [DAY.isoformat(), NEXT_DAY.isoformat()], DAILY)
    assert both["job_id"].tolist() == ["1", "9"]
    empty = writer.read("smartmoving_jobs", ["2026-11-01"], DAILY)
    assert empty.empty and list(empty.columns) == [c.name for c in raw_jobs.c]


def test_hostile_values_round_trip_verbatim(writer: Writer, engine: Engine) -> None:
    payload = {"name": HOSTILE, "nested": [HOSTILE, {"k": "🇨🇦"}]}
    writer.raw("smartmoving_jobs", _frame(["1"], job_number=HOSTILE, payload=payload), DAY)
    writer.journeys(journeys_frame([journey_row("1", customer_name=HOSTILE, raw_payload=payload)]))
    jobs = writer.read("smartmoving_jobs", [DAY.isoformat()], DAILY)
    assert jobs.loc[0, "job_number"] == HOSTILE
    assert jobs.loc[0, "payload"] == payload
    with engine.connect() as conn:
        name, raw = conn.execute(sa.text("SELECT customer_name, raw_payload FROM tenant_lgm.journeys")).one()
    assert (name, raw) == (HOSTILE, payload)


def test_payload_values_json_barely_carries_are_stored_not_refused(writer: Writer, engine: Engine) -> None:
    """json.loads accepts NaN, Infinity and 70-bit integers; a JSONB column must still take them."""
    payloads = {
        # orjson encodes these itself
        "1": {"nan": float("nan"), "inf": float("inf"), 7: "int key", "amount": Decimal("1.10")},
        # orjson refuses the whole value: the standard encoder's fallback must agree with it
        "2": {"big": 2**70, "nan": float("nan"), 7: "int key", "amount": Decimal("1.10")},
    }
    fetched = dt.datetime(2026, 11, 25, 1, 2, 3, 456789, tzinfo=ZoneInfo("America/Edmonton"))
    rows = [journey_row(job, raw_payload=payload, source_fetched_at=fetched) for job, payload in payloads.items()]
    writer.journeys(journeys_frame(rows))
    with engine.connect() as conn:
        sql = "SELECT smartmoving_job_id, raw_payload, source_fetched_at FROM tenant_lgm.journeys"
        stored = conn.execute(sa.text(sql))
        by_job = {job: (raw, at) for job, raw, at in stored}
    assert by_job["1"] == ({"nan": None, "inf": None, "7": "int key", "amount": "1.10"}, fetched)
    assert by_job["2"] == ({"big": 2**70, "nan": None, "7": "int key", "amount": "1.10"}, fetched)


def test_json_for_jsonb_keeps_numpy_floats_numbers() -> None:
    assert staging.to_json({"x": np.float64(1.5), "n": np.float64("nan")}) == '{"x":1.5,"n":null}'


def test_frame_checks_name_the_problem(writer: Writer) -> None:
    with pytest.raises(FrameError, match="missing columns \\['payload'\\]"):
        writer.raw("smartmoving_jobs", _frame(["1"]).drop(columns=["payload"]), DAY)
    with pytest.raises(FrameError, match="outside partition"):
        writer.raw("smartmoving_jobs", _frame(["1"], NEXT_DAY), DAY)
    with pytest.raises(FrameError, match="unique"):
        writer.journeys(journeys_frame([journey_row("1"), journey_row("1")]))


def test_failure_in_second_chunk_keeps_previous_rows(
    writer: Writer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.raw("smartmoving_jobs", _frame(["1", "2"]), DAY, run_id="good")
    monkeypatch.setattr(staging, "CHUNK_ROWS", 2)
    bad = pd.concat([_frame(["3", "4"]), _frame(["5"], customer_id=None)], ignore_index=True)
    with pytest.raises(sa.exc.IntegrityError, match="customer_id"):
        writer.raw("smartmoving_jobs", bad, DAY, run_id="bad")
    assert _jobs(engine) == [(DAY, "1", "good"), (DAY, "2", "good")]


def test_failure_between_delete_and_insert_keeps_previous_rows(
    writer: Writer, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.raw("smartmoving_jobs", _frame(["1", "2"]), DAY, run_id="good")

    def crash(*args: object) -> int:
        raise RuntimeError("process died")

    monkeypatch.setattr(replace, "_insert_from_stage", crash)
    with pytest.raises(RuntimeError, match="process died"):
        writer.raw("smartmoving_jobs", _frame(["3"]), DAY, run_id="bad")
    assert _jobs(engine) == [(DAY, "1", "good"), (DAY, "2", "good")]
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.sync_runs")).scalar() == 1


def test_killed_connection_keeps_previous_rows(
    writer: Writer, engine: Engine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer.raw("smartmoving_jobs", _frame(["1", "2"]), DAY, run_id="good")
    delete_scope = replace._delete_scope
    killer = create_engine(database_url, poolclass=sa.pool.NullPool)

    def delete_then_die(conn: Connection, *args: object) -> int:
        deleted = delete_scope(conn, *args)  # type: ignore[arg-type]
        pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
        with killer.connect() as other:
            other.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        return deleted

    monkeypatch.setattr(replace, "_delete_scope", delete_then_die)
    with pytest.raises(sa.exc.OperationalError):
        writer.raw("smartmoving_jobs", _frame(["3"]), DAY, run_id="bad")
    killer.dispose()
    assert _jobs(engine) == [(DAY, "1", "good"), (DAY, "2", "good")]


@pytest.mark.parametrize("asset", ["smartmoving_jobs", "journeys"])
def test_concurrent_writers_of_one_partition_are_serialized(writer: Writer, engine: Engine, asset: str) -> None:
    # Overlapping ids with different contents: unserialized, the two delete+insert (or merge)
    # sequences interleave into primary-key violations or a mix of both runs' rows.
    frames = {
        "run-a": [str(i) for i in range(0, 3000)],
        "run-b": [str(i) for i in range(1500, 4000)],
    }
    barrier = threading.Barrier(len(frames))
    errors: list[BaseException] = []

    def write(run_id: str) -> None:
        try:
            if asset == "journeys":
                df = journeys_frame([journey_row(j, title=run_id) for j in frames[run_id]])
                barrier.wait()
                writer.journeys(df, run_id=run_id)
            else:
                df = _frame(frames[run_id])
                barrier.wait()
                writer.raw(asset, df, DAY, run_id=run_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(run_id,)) for run_id in frames]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    table = "raw_jobs" if asset == "smartmoving_jobs" else "journeys"
    with engine.connect() as conn:
        runs = conn.execute(sa.text(f"SELECT run_id, count(*) FROM tenant_lgm.{table} GROUP BY 1")).all()
        written = conn.execute(sa.text("SELECT count(*) FROM tenant_lgm.sync_runs")).scalar()
    assert len(runs) == 1, runs
    assert runs[0][1] == len(frames[runs[0][0]])
    assert written == 2


def test_journeys_writes_of_different_partitions_wait_for_each_other(writer: Writer, engine: Engine) -> None:
    # A merge moves rows of other partitions (a job re-branched or rescheduled); were two partitions'
    # merges to interleave, the one a job left could delete it just after the other moved it.
    from lgm_pipeline.storage.tables import journeys
    from lgm_pipeline.tenants import load_tenants

    finished = threading.Event()
    frame = journeys_frame([journey_row("moved", location_id=TORONTO)])
    with engine.begin() as conn:
        lock_partition(conn, load_tenants()[0], journeys, PartitionScope())  # a Calgary merge
        thread = threading.Thread(target=lambda: (writer.journeys(frame, journey_key(branch=TORONTO)), finished.set()))
        thread.start()
        assert not finished.wait(1.0), "a Toronto merge ran while a Calgary merge held the tenant's journeys"
    thread.join(timeout=30)
    assert finished.is_set()
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT location_id FROM tenant_lgm.journeys")).scalars().all() == [TORONTO]
