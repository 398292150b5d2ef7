"""The merge strategy of ``journeys`` and ``leads``: rows merged by id, with an audit trail and a quarantine.

A merged row outlives the fetch that produced it: it is updated only when its content changed,
moves when its date or branch did, and leaves (audited) when the source no longer lists it.
Rows failing the quality rules go to the table's quarantine instead. The caller's transaction
holds it all: a failure anywhere leaves the previous rows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from lgm_pipeline.storage.access import quote_ident, quote_literal
from lgm_pipeline.storage.scope import (
    FrameError,
    PartitionScope,
    WriteResult,
    in_scope,
    lock_partition,
    qualified,
    scope_params,
    scope_sql,
)
from lgm_pipeline.storage.staging import stage_frame
from lgm_pipeline.storage.tables import date_column
from lgm_pipeline.tenants.config import Tenant

#: Extra column of a merged table's frame: None for valid rows, a non-empty list of
#: ``{rule, column, check, value}`` dicts for rows that go to the quarantine table.
QUARANTINE_REASONS = "quarantine_reasons"

#: Columns not compared when deciding whether a row changed: they move on every sync.
VOLATILE_COLUMNS = frozenset({"id", "synced_at", "run_id", "source_fetched_at"})

#: Left out of audit before/after images (still listed in changed_columns): the source payload
#: is kept in the raw tables and would multiply the audit table's size for no extra information.
AUDIT_IMAGE_EXCLUDED = frozenset({"raw_payload"})


@dataclass(frozen=True)
class Departure:
    """Why a row left the table, in the audit table's own ``columns`` of its delete row."""

    columns: tuple[str, ...]
    #: SQL: a query over a leaving row ``g`` (the table's row) returning at most one row of ``columns``.
    source: Callable[[Connection, Tenant], str]


@dataclass(frozen=True)
class MergeById:
    """A table merged by ``id`` into itself, with ``audit`` and ``quarantine`` beside it."""

    quarantine: sa.Table
    audit: sa.Table
    audit_key: str  # the audit table's column naming the merged row
    #: Stage values that may insert a row; any other row only updates one that exists (None: all).
    insertable: Mapping[str, frozenset[str]] | None = None
    #: SQL predicate on a stored row ``p`` of the partition that the frame no longer lists: true when
    #: the source now files it in another partition, whose write will move it there (one audited
    #: update). Such a row stays until then instead of being deleted here and inserted there: never
    #: absent between two commits. None: every row the frame no longer lists leaves.
    filed_elsewhere: Callable[[Connection, Tenant], str] | None = None
    #: Where a row that leaves finds why (None: its delete row says nothing more than the image).
    departure: Departure | None = None

    extra_columns = MappingProxyType({QUARANTINE_REASONS: JSONB()})

    def check(self, table: sa.Table, df: pd.DataFrame, scopes: Sequence[PartitionScope]) -> None:
        if df["id"].isna().any() or df["id"].duplicated().any():
            raise FrameError(f"{table.name} frame: id must be present and unique")
        if len(scopes) > 1:
            date = date_column(table)
            owned = pd.concat([in_scope(df, scope, date=date) for scope in scopes], axis=1).any(axis=1)
            if not owned.all():
                raise FrameError(f"{int((~owned).sum())} row(s) of the {table.name} frame lie outside the partitions")

    def write(
        self,
        conn: Connection,
        tenant: Tenant,
        table: sa.Table,
        df: pd.DataFrame,
        scopes: Sequence[PartitionScope],
        constants: Mapping[str, Any],
        run_id: str,
    ) -> dict[PartitionScope, WriteResult]:
        """Merge partition by partition (leads' dates, a journeys run's branches), each as its own write would.

        A journey row of an unmapped branch (no location) goes with every branch partition of its date.
        """
        date = date_column(table)
        results: dict[PartitionScope, WriteResult] = {}
        for scope in scopes:
            part = df if len(scopes) == 1 else df[in_scope(df, scope, date=date)]
            stage = stage_frame(conn, table, part, constants, extra=self.extra_columns, index_id=True)
            results[scope] = _merge(conn, tenant, table, self, stage, scope, run_id)
            # The next date stages and collects its changes under the same names.
            conn.exec_driver_sql(f"DROP TABLE {stage}, {_changed_ids(conn, table)}")
        return results


def _changed_ids(conn: Connection, table: sa.Table) -> str:
    return f"pg_temp.{quote_ident(conn, 'lgm_changed_' + table.name)}"


def _image(row_json: str, columns: str) -> str:
    """The jsonb object of only ``columns`` (a text[] expression) taken from ``row_json``."""
    return f"(SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each({row_json}) e WHERE e.key = ANY({columns}))"


def _merge(
    conn: Connection,
    tenant: Tenant,
    table: sa.Table,
    spec: MergeById,
    stage: str,
    scope: PartitionScope,
    run_id: str,
) -> WriteResult:
    """Merge the staged rows of one partition (``scope``) into ``table``."""
    q = lambda name: quote_ident(conn, name)  # noqa: E731
    target = qualified(conn, tenant, table)
    quarantine = qualified(conn, tenant, spec.quarantine)
    audit = qualified(conn, tenant, spec.audit)
    date = date_column(table)
    params = {**scope_params(scope), "run_id": run_id, "partition_key": scope.key}

    problems = conn.execute(
        sa.text(
            f"""
            SELECT
              count(*) FILTER (WHERE s.{q(QUARANTINE_REASONS)} IS NULL AND NOT ({scope_sql(scope, "s", date=date)})),
              count(*) FILTER (WHERE s.{q(QUARANTINE_REASONS)} IS NOT NULL
                               AND (jsonb_typeof(s.{q(QUARANTINE_REASONS)}) <> 'array'
                                    OR jsonb_array_length(s.{q(QUARANTINE_REASONS)}) = 0)),
              count(*) FILTER (WHERE s.{q(QUARANTINE_REASONS)} IS NOT NULL
                               AND NOT ({scope_sql(scope, "s", date=date, nulls_included=True)}))
            FROM {stage} s
            """
        ),
        params,
    ).one()
    if any(problems):
        raise FrameError(
            f"{table.name} frame for partition {scope.key}: {problems[0]} valid row(s) outside the partition, "
            f"{problems[1]} quarantine_reasons not a non-empty list, "
            f"{problems[2]} quarantined row(s) of another date or branch"
        )

    # One writer of the table per tenant at a time, not per partition: a merge also moves rows of
    # other partitions (a job rescheduled or re-branched), and a concurrent merge of the partition the row
    # left could otherwise delete it after this one moved it. Merges take well under a second.
    lock_partition(conn, tenant, table, PartitionScope())
    valid = f"s.{q(QUARANTINE_REASONS)} IS NULL"
    audit_columns = f"{q(spec.audit_key)}, action, changed_columns, before, after, run_id, partition_key"
    excluded_from_image = "ARRAY[" + ", ".join(f"'{c}'" for c in sorted(AUDIT_IMAGE_EXCLUDED)) + "]"

    # Rows of this partition no longer in it (deleted in SmartMoving, or moved where no write will
    # take them), and ids quarantined now wherever they were: out of the table, each with an audit row.
    moving = (
        f"\n                  AND NOT ({spec.filed_elsewhere(conn, tenant)}) -- moves with its new partition's write"
        if spec.filed_elsewhere is not None
        else ""
    )
    why_columns = why_values = why_join = ""
    if spec.departure is not None:
        why_columns = "".join(f", {q(c)}" for c in spec.departure.columns)
        why_values = "".join(f", why.{q(c)}" for c in spec.departure.columns)
        why_join = f"\n            LEFT JOIN LATERAL ({spec.departure.source(conn, tenant)} LIMIT 1) why ON true"
    deleted = conn.execute(
        sa.text(
            f"""
            WITH gone AS (
              DELETE FROM {target} j
              WHERE j.id IN (
                -- A UNION, not an OR: each side plans as a (spillable) join; an OR of the two
                -- turns the anti-join into a per-row subplan, quadratic on large partitions.
                SELECT p.id FROM {target} p
                WHERE {scope_sql(scope, "p", date=date)}
                  AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.id = p.id AND {valid}){moving}
                UNION ALL
                SELECT s.id FROM {stage} s WHERE NOT ({valid})
              )
              RETURNING j.*
            )
            INSERT INTO {audit} ({audit_columns}{why_columns})
            SELECT g.id, 'delete', '{{}}', to_jsonb(g) - {excluded_from_image}, NULL,
                   :run_id, :partition_key{why_values}
            FROM gone g{why_join}
            """
        ),
        params,
    ).rowcount

    columns = [c.name for c in table.columns]
    compared = [c for c in columns if c not in VOLATILE_COLUMNS]
    column_list = ", ".join(q(c) for c in columns)

    differs = "({}) IS DISTINCT FROM ({})".format(
        ", ".join(f"j.{q(c)}" for c in compared), ", ".join(f"s.{q(c)}" for c in compared)
    )
    changed_ids = _changed_ids(conn, table)

    changed = "array_remove(ARRAY[{}], NULL)".format(
        ", ".join(f"CASE WHEN j.{q(c)} IS DISTINCT FROM old.{q(c)} THEN '{c}' END" for c in compared)
    )
    # Existing ids whose content changed, wherever they are: a job rescheduled into this
    # partition moves here. Unchanged rows and stale rebuilds (older source_fetched_at) are not
    # touched at all. Found first, in one join: an unchanged rebuild (the usual two-hourly case)
    # stops here instead of joining three ways.
    pending = conn.exec_driver_sql(
        f"""
        CREATE TEMP TABLE {changed_ids} ON COMMIT DROP AS
        SELECT s.id FROM {stage} s JOIN {target} j ON j.id = s.id
        WHERE {valid} AND {differs} AND s.source_fetched_at >= j.source_fetched_at
        """
    ).rowcount
    updated = 0
    if pending:
        conn.exec_driver_sql(f"ANALYZE {changed_ids}")
        # The self-join `old` reads the statement's snapshot, i.e. the values before the update,
        # so the audit gets exactly the changed columns' old and new values.
        updated = conn.execute(
            sa.text(
                f"""
                WITH changed AS (
                  UPDATE {target} j SET {", ".join(f"{q(c)} = s.{q(c)}" for c in columns if c != "id")}
                  FROM {changed_ids} c JOIN {stage} s ON s.id = c.id JOIN {target} old ON old.id = c.id
                  WHERE j.id = c.id
                  RETURNING j.id, {changed} AS columns,
                            to_jsonb(j) - {excluded_from_image} AS new_row,
                            to_jsonb(old) - {excluded_from_image} AS old_row
                )
                INSERT INTO {audit} ({audit_columns})
                SELECT id, 'update', columns, {_image("old_row", "columns")}, {_image("new_row", "columns")},
                       :run_id, :partition_key
                FROM changed
                """
            ),
            params,
        ).rowcount
    # New ids. No other journeys write can insert one meanwhile (tenant lock above); if one did,
    # the primary key fails the whole write rather than overwrite unaudited.
    # The insert's audit row carries no image (``after`` NULL): the inserted values are the
    # journey's row, its later updates' ``before`` images and, if deleted, the delete's full
    # ``before`` image. Not recoverable that way once a row is updated: its insert-time
    # bookkeeping columns (source_fetched_at, synced_at; the audit row's run and time stand for
    # them) and raw_payload (kept per fetch in raw_jobs). Building a jsonb image per inserted row
    # was the costliest part of a first load (about 2.7 s of 100k rows).
    # A row the spec does not let in (for journeys: a lead, a job first seen cancelled) only ever
    # updates a row that exists.
    insertable = "".join(
        f" AND s.{q(column)} IN ({', '.join(quote_literal(conn, v) for v in sorted(values))})"
        for column, values in (spec.insertable or {}).items()
    )
    inserted = conn.execute(
        sa.text(
            f"""
            WITH added AS (
              INSERT INTO {target} ({column_list})
              SELECT {column_list} FROM {stage} s
              WHERE {valid}{insertable}
                AND NOT EXISTS (SELECT 1 FROM {target} t WHERE t.id = s.id)
              RETURNING id
            )
            INSERT INTO {audit} ({audit_columns})
            SELECT a.id, 'insert', '{{}}', NULL, NULL, :run_id, :partition_key
            FROM added a
            """
        ),
        params,
    ).rowcount
    # An id valid now (in any partition) leaves quarantine; this partition's quarantine is
    # replaced by the frame's quarantined rows. Rows of unknown branches (location_id NULL)
    # belong to every branch partition of the date, which all write them identically.
    conn.execute(
        sa.text(f"DELETE FROM {quarantine} qr USING {stage} s WHERE s.id = qr.id AND {valid}"),
        params,
    )
    conn.execute(
        sa.text(
            f"""
            DELETE FROM {quarantine} qr
            WHERE {scope_sql(scope, "qr", date=date, null_location_included=True)}
              AND NOT EXISTS (SELECT 1 FROM {stage} s WHERE s.id = qr.id AND NOT ({valid}))
            """
        ),
        params,
    )
    special = {
        "reasons": f"s.{q(QUARANTINE_REASONS)}",
        "record": f"to_jsonb(s) - ARRAY['{QUARANTINE_REASONS}', 'raw_payload']",
        "first_seen_at": "now()",
        "last_seen_at": "now()",
        "client_id": "coalesce(s.client_id, :client_id)",
        date: f"coalesce(s.{q(date)}, CAST(:service_date AS date))",
    }
    held = [c.name for c in spec.quarantine.columns]
    values = ", ".join(special.get(c, f"s.{q(c)}") for c in held)
    updates = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in held if c not in ("id", "first_seen_at"))
    conn.execute(
        sa.text(
            f"""
            INSERT INTO {quarantine} AS qr ({", ".join(q(c) for c in held)})
            SELECT {values} FROM {stage} s WHERE NOT ({valid})
            ON CONFLICT (id) DO UPDATE SET {updates}
            """
        ),
        {**params, "client_id": tenant.client_id},
    )
    # The partition's own count: rows of no branch, held by every branch partition of the date, are
    # counted (and checked) once per date, not once per branch.
    own = "" if scope.location_id is None or "location_id" not in table.columns else "WHERE s.location_id IS NOT NULL"
    rows, quarantined = conn.execute(
        sa.text(f"SELECT count(*), count(*) FILTER (WHERE NOT ({valid})) FROM {stage} s {own}"), params
    ).one()
    return WriteResult(table.name, rows, inserted=inserted, updated=updated, deleted=deleted, quarantined=quarantined)
