"""What a fault campaign (bench/fault_campaign.py) checks in the databases and texts it leaves behind.

Kept apart from the campaign's driver so the reliability suite can test the checker itself
(lgm_pipeline_tests/reliability/test_fault_campaign.py) on small hand-made tables and texts: a checker
that passes everything would make every campaign look clean.

Every check returns a list of problems, each one line an engineer can act on (which table, which id,
which column); an empty list is a pass. Rows are read as ``to_jsonb`` objects, the same form the audit
images are written in, so a journey row, its audit images and its twin in another database compare as
plain JSON values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from lgm_pipeline.cli.dead_syncs import PID_TAG

Row = dict[str, Any]

#: Columns every write sets anew (timestamps, run ids): not part of what a sync decides.
BOOKKEEPING_COLUMNS: dict[str, tuple[str, ...]] = {
    "journeys": ("synced_at", "source_fetched_at", "run_id"),
    "journeys_quarantine": ("first_seen_at", "last_seen_at", "run_id"),
    "leads": ("synced_at", "source_fetched_at", "run_id"),
    "leads_quarantine": ("first_seen_at", "last_seen_at", "run_id"),
    "locations": ("updated_at",),
}
#: Keys left out inside JSON columns, as paths. A quarantined row keeps the whole typed record, bookkeeping
#: included. A journey's raw payload keeps the opportunity's details as fetched, and those are reused while
#: the customers list's summary of the opportunity is unchanged (README: smartmoving_opportunities), so
#: their copy of the customer may be older than the list's, which the typed columns read and which the
#: payload keeps beside it (``raw_payload.customer``): that copy alone is left out.
_RECORD_BOOKKEEPING = tuple(("record", key) for key in ("synced_at", "source_fetched_at", "run_id"))
_DETAILS_CUSTOMER = ("raw_payload", "opportunity", "customer")
NESTED_EXCLUDED: dict[str, tuple[tuple[str, ...], ...]] = {
    "journeys": (_DETAILS_CUSTOMER,),
    "journeys_quarantine": (*_RECORD_BOOKKEEPING, _DETAILS_CUSTOMER),
    "leads_quarantine": _RECORD_BOOKKEEPING,
}
#: How many rows or problems a message lists before it only counts the rest.
SHOWN = 3
#: A secret is found from this many characters on: a leak cut short or split still shows.
MIN_SECRET_RUN = 8

_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}(:?\d{2})?|Z)$")


def canonical(value: Any) -> Any:
    """A JSON value with timestamps in UTC: two sessions on different time zones render one instant differently."""
    if isinstance(value, str) and _TIMESTAMP.match(value):
        try:
            return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC).isoformat()
        except ValueError:
            return value
    if isinstance(value, dict):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return [canonical(v) for v in value]
    return value


def _compact(row: Mapping[str, Any], limit: int = 400) -> str:
    text = json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listed(problems: list[str], what: str) -> list[str]:
    """The first problems, then how many more: a thousand lines of one bug hide the second bug."""
    if len(problems) <= SHOWN * 3:
        return problems
    return [*problems[: SHOWN * 3], f"... and {len(problems) - SHOWN * 3} more {what}"]


# --- the databases' rows ------------------------------------------------------------------------


def without_path(value: Any, path: Sequence[str]) -> Any:
    """``value`` without the key at ``path`` (nested objects), unchanged where the path does not lead."""
    if not path or not isinstance(value, dict) or path[0] not in value:
        return value
    if len(path) == 1:
        return {k: v for k, v in value.items() if k != path[0]}
    return {**value, path[0]: without_path(value[path[0]], path[1:])}


def read_rows(
    conn: Connection,
    relation: str,
    key: str,
    excluded: Sequence[str] = (),
    where: str = "TRUE",
    params: Mapping[str, Any] | None = None,
    nested_excluded: Sequence[Sequence[str]] = (),
) -> dict[str, Row]:
    """``relation``'s rows as JSON objects by ``key``, without the ``excluded`` columns and nested keys.

    ``relation`` and ``where`` are the caller's SQL (schema-qualified table, a filter on ``t``);
    values travel as ``params``.
    """
    query = sa.text(f"SELECT to_jsonb(t) - CAST(:excluded AS text[]) FROM {relation} t WHERE {where}")
    rows: dict[str, Row] = {}
    for (row,) in conn.execute(query, {"excluded": list(excluded), **(params or {})}):
        for path in nested_excluded:
            row = without_path(row, path)
        rows[str(row[key])] = canonical(row)
    return rows


@dataclass
class TableDiff:
    """Two databases' rows of one table, by key."""

    table: str
    only_campaign: list[Row] = field(default_factory=list)
    only_reference: list[Row] = field(default_factory=list)
    #: (key, the differing columns, campaign values, reference values)
    differing: list[tuple[str, list[str], Row, Row]] = field(default_factory=list)
    #: Rows only the campaign holds and may hold (history a fresh database cannot have), by key.
    history: list[Row] = field(default_factory=list)
    #: Rows that differ only in columns read from reused opportunity details: (key, the differing columns).
    details_lag: list[tuple[str, list[str]]] = field(default_factory=list)
    compared: int = 0

    @property
    def ok(self) -> bool:
        return not (self.only_campaign or self.only_reference or self.differing)

    def set_aside_details_lag(self, from_details: Iterable[str]) -> None:
        """Move the rows whose every differing column is read from the opportunity's details to ``details_lag``.

        Those details are reused while the customers list's summary is unchanged, for up to
        ``detail_max_age_hours`` (a budget trade-off, docs/reliability.md bug 2): such a row lags, by
        design, until they are fetched again. A row that differs in anything else stays a difference.
        """
        allowed = set(from_details)
        self.details_lag += [(key, columns) for key, columns, _, _ in self.differing if set(columns) <= allowed]
        self.differing = [d for d in self.differing if not set(d[1]) <= allowed]

    def set_aside_rows(self, keys: set[str], columns: list[str], key: str = "id") -> None:
        """Move the rows of ``keys`` found on one side only to ``details_lag`` (``columns``: what lags)."""
        one_side = self.only_campaign + self.only_reference
        self.details_lag += [(str(r.get(key)), columns) for r in one_side if str(r.get(key)) in keys]
        self.only_campaign = [r for r in self.only_campaign if str(r.get(key)) not in keys]
        self.only_reference = [r for r in self.only_reference if str(r.get(key)) not in keys]

    def problems(self, key: str = "id") -> list[str]:
        lines: list[str] = []
        for rows, where in ((self.only_campaign, "campaign"), (self.only_reference, "reference")):
            if rows:
                lines.append(f"{self.table}: {len(rows)} row(s) only in the {where} database")
                lines += [f"  {key}={r.get(key)}: {_compact(r)}" for r in rows[:SHOWN]]
        if self.differing:
            lines.append(f"{self.table}: {len(self.differing)} row(s) differ")
            for row_key, columns, mine, theirs in self.differing[:SHOWN]:
                lines.append(f"  {key}={row_key}: columns {', '.join(columns)}")
                lines.append(f"    campaign:  {_compact(mine)}")
                lines.append(f"    reference: {_compact(theirs)}")
        return lines


def set_aside_branch_lag(journeys: TableDiff, quarantine: TableDiff) -> None:
    """A journey on one side that the other holds in ``journeys_quarantine``: its branch, read from reused
    opportunity details, lags (moved to a branch the tenants file does not map, or back): by design, as for
    the columns of ``set_aside_details_lag``, until the details are fetched again."""

    def ids(rows: list[Row]) -> set[str]:
        return {str(r.get("id")) for r in rows}

    lagging = (ids(journeys.only_campaign) & ids(quarantine.only_reference)) | (
        ids(journeys.only_reference) & ids(quarantine.only_campaign)
    )
    for diff in (journeys, quarantine):
        diff.set_aside_rows(lagging, ["location_id", "branch_name"])


def compare_rows(
    table: str,
    campaign: Mapping[str, Row],
    reference: Mapping[str, Row],
    may_exist_only_in_campaign: Callable[[Row], bool] | None = None,
) -> TableDiff:
    """Rows by key: missing on either side, or differing in any column (named, with both values)."""
    diff = TableDiff(table, compared=len(set(campaign) | set(reference)))
    for row_key in sorted(set(campaign) | set(reference)):
        mine, theirs = campaign.get(row_key), reference.get(row_key)
        if theirs is None:
            assert mine is not None
            if may_exist_only_in_campaign is not None and may_exist_only_in_campaign(mine):
                diff.history.append(mine)
            else:
                diff.only_campaign.append(mine)
        elif mine is None:
            diff.only_reference.append(theirs)
        elif mine != theirs:
            columns = sorted(c for c in set(mine) | set(theirs) if mine.get(c) != theirs.get(c))
            diff.differing.append(
                (row_key, columns, {c: mine.get(c) for c in columns}, {c: theirs.get(c) for c in columns})
            )
    return diff


def duplicate_problems(conn: Connection, schema: str) -> list[str]:
    """One journey per SmartMoving job, one lead per SmartMoving lead, and nothing both stored and quarantined."""
    queries = {
        "journeys: a SmartMoving job with several journeys": (
            f"SELECT smartmoving_job_id, count(*) FROM {schema}.journeys GROUP BY 1 HAVING count(*) > 1"
        ),
        "leads: a SmartMoving lead with several rows": (
            f"SELECT smartmoving_lead_id, count(*) FROM {schema}.leads GROUP BY 1 HAVING count(*) > 1"
        ),
        "journeys: an id both on the board and in journeys_quarantine": (
            f"SELECT id, 2 FROM {schema}.journeys INTERSECT SELECT id, 2 FROM {schema}.journeys_quarantine"
        ),
        "leads: an id both stored and in leads_quarantine": (
            f"SELECT id, 2 FROM {schema}.leads INTERSECT SELECT id, 2 FROM {schema}.leads_quarantine"
        ),
    }
    problems = []
    for what, query in queries.items():
        found = conn.execute(sa.text(query)).all()
        if found:
            problems.append(f"{what}: {len(found)}, e.g. " + ", ".join(f"{k} (x{n})" for k, n in found[:SHOWN]))
    return problems


#: Values of ``sync_runs.status`` the writer records (storage/write.py): a write is recorded in its own commit.
SYNC_RUN_STATUSES = frozenset({"success"})
#: Assets written by merge, whose counts must add up (inserted + updated + quarantined within the rows).
MERGED_ASSETS = frozenset({"journeys", "leads"})


def sync_run_problems(conn: Connection, schema: str) -> list[str]:
    """``sync_runs`` rows a finished write cannot have left: unknown status, time running backwards,
    counts missing, negative or not adding up, a journeys row without its checks' counts or partition."""
    rows = conn.execute(sa.text(f"SELECT * FROM {schema}.sync_runs ORDER BY id")).mappings().all()
    problems = []
    counts = ("rows_written", "inserted", "updated", "deleted", "quarantined")
    for r in rows:
        what = f"sync_runs id {r['id']} ({r['asset']} {r['partition_key']}, run {r['run_id']})"
        if r["status"] not in SYNC_RUN_STATUSES:
            problems.append(f"{what}: status {r['status']!r}")
        if r["finished_at"] is None or r["started_at"] is None or r["finished_at"] < r["started_at"]:
            problems.append(f"{what}: started {r['started_at']}, finished {r['finished_at']}")
        if any(r[c] is None or r[c] < 0 for c in counts):
            problems.append(f"{what}: counts {[r[c] for c in counts]}")
            continue
        if r["asset"] in MERGED_ASSETS and r["inserted"] + r["updated"] + r["quarantined"] > r["rows_written"]:
            problems.append(f"{what}: inserted + updated + quarantined exceed the {r['rows_written']} rows written")
        if r["asset"] == "journeys" and (
            r["checks_warned"] is None or r["checks_failed"] is None or r["service_date"] is None
        ):
            problems.append(f"{what}: a journeys write without its checks' counts or its partition")
        if r["api_calls"] is not None and r["api_calls"] < 0:
            problems.append(f"{what}: api_calls {r['api_calls']}")
    return _listed(problems, "sync_runs problems")


# --- the audit trail ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """One audit row: what happened to ``key`` (insert, update, delete) and the images it keeps."""

    audit_id: int
    key: str
    action: str
    changed_columns: tuple[str, ...]
    before: Row | None
    after: Row | None


def read_audit(conn: Connection, relation: str, key_column: str) -> list[AuditEntry]:
    query = sa.text(
        f"SELECT audit_id, {key_column}, action, changed_columns, before, after FROM {relation} ORDER BY audit_id"
    )
    return [
        AuditEntry(int(a), str(k), str(action), tuple(cols or ()), canonical(before), canonical(after))
        for a, k, action, cols, before, after in conn.execute(query)
    ]


def replay_audit(table: str, entries: Iterable[AuditEntry], current: Mapping[str, Row]) -> list[str]:
    """Replay the audit row by row per key and compare with ``current`` (rows by id, as ``read_rows`` gives).

    An insert keeps no image (storage/merge.py), so a replayed row knows the columns its later updates
    recorded: their ``after`` values. Checked: every action fits the row's state (no update or delete
    of an absent row, no second insert), each update's and delete's ``before`` agrees with the last
    recorded values, the replayed ids are exactly the current ids, and every recorded value is the
    current one.
    """
    state: dict[str, Row | None] = {}
    problems: list[str] = []
    for entry in entries:
        known = state.get(entry.key)
        where = f"{table} {entry.key} (audit_id {entry.audit_id}, {entry.action})"
        if entry.action == "insert":
            if known is not None:
                problems.append(f"{where}: inserted again without a delete between")
            state[entry.key] = {}
        elif entry.action == "update":
            if known is None:
                problems.append(f"{where}: updated while absent")
                known = {}
            before, after = entry.before or {}, entry.after or {}
            for column in entry.changed_columns:
                if column not in after and column not in before:
                    continue  # left out of the images (raw_payload): only named
                if column in known and before.get(column) != known[column]:
                    problems.append(f"{where}: before {column}={before.get(column)!r}, last recorded {known[column]!r}")
                known[column] = after.get(column)
            state[entry.key] = known
        elif entry.action == "delete":
            if known is None:
                problems.append(f"{where}: deleted while absent")
            else:
                image = entry.before or {}
                for column, value in known.items():
                    if image.get(column) != value:
                        problems.append(f"{where}: deleted {column}={image.get(column)!r}, last recorded {value!r}")
            state[entry.key] = None
        else:
            problems.append(f"{where}: unknown action")
    present = {k for k, v in state.items() if v is not None}
    for row_key in sorted(set(current) - present):
        problems.append(f"{table} {row_key}: in the table, but the audit never inserted it (or deleted it last)")
    for row_key in sorted(present - set(current)):
        problems.append(f"{table} {row_key}: the audit leaves it present, the table does not have it")
    for row_key in sorted(present & set(current)):
        recorded = state[row_key] or {}
        for column, value in sorted(recorded.items()):
            if current[row_key].get(column) != value:
                now = current[row_key].get(column)
                problems.append(f"{table} {row_key}: {column} is {now!r}, the audit last recorded {value!r}")
    return _listed(problems, "audit problems")


def audit_problems(conn: Connection, schema: str) -> list[str]:
    """Both audited tables of a tenant schema replayed against their rows."""
    problems = []
    for table, audit, key in (("journeys", "journey_audit", "journey_id"), ("leads", "lead_audit", "lead_id")):
        current = read_rows(conn, f"{schema}.{table}", "id")
        problems += replay_audit(table, read_audit(conn, f"{schema}.{audit}", key), current)
    return problems


# --- secrets ------------------------------------------------------------------------------------


def secret_needles(secret: str, length: int = MIN_SECRET_RUN) -> set[str]:
    """Every run of ``length`` characters of the secret and of its reverse, lower-cased.

    A text holding any longer piece holds one of these; compared with the lower-cased text, any
    casing of the secret is found.
    """
    lowered = secret.lower()
    if len(lowered) < length:
        return {lowered, lowered[::-1]}
    return {s[i : i + length] for s in (lowered, lowered[::-1]) for i in range(len(s) - length + 1)}


@dataclass(frozen=True)
class Leak:
    where: str
    secret: str  # the secret's name, never its value
    context: str  # the text around it, the secret's characters masked

    def __str__(self) -> str:
        return f"{self.secret} in {self.where}: ...{self.context}..."


def _masked_context(text: str, lowered: str, position: int, needles: set[str]) -> str:
    """The text around ``position`` with every piece of the secret in it masked, so a report never leaks it."""
    start, end = max(0, position - 30), min(len(text), position + 60)
    # Masked over a wider stretch than shown: a piece cut by the edge of the context is masked too.
    lo, hi = max(0, start - 64), min(len(text), end + 64)
    masked = list(text[lo:hi])
    region = lowered[lo:hi]
    for needle in needles:
        found = region.find(needle)
        while found >= 0:
            masked[found : found + len(needle)] = "*" * len(needle)
            found = region.find(needle, found + 1)
    return "".join(masked[start - lo : end - lo]).replace("\n", " ")


def scan_text(where: str, text: str, secrets: Mapping[str, str]) -> list[Leak]:
    """Leaks of ``secrets`` (name -> value) in ``text``: any casing, reversed, or a piece of 8+ characters."""
    lowered = text.lower()
    leaks = []
    for name, value in secrets.items():
        needles = secret_needles(value)
        positions = [p for p in (lowered.find(n) for n in needles) if p >= 0]
        if positions:
            leaks.append(Leak(where, name, _masked_context(text, lowered, min(positions), needles)))
    return leaks


def _tables(conn: Connection) -> list[tuple[str, str]]:
    return [
        (s, t)
        for s, t in conn.execute(
            sa.text(
                "SELECT table_schema, table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                "AND table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2"
            )
        )
    ]


def _binary_text(value: bytes) -> str:
    """A bytea value as text: Dagster keeps some bodies zlib-compressed."""
    with contextlib.suppress(zlib.error):
        value = zlib.decompress(value)
    return value.decode("utf-8", "replace")


def scan_database(conn: Connection, label: str, secrets: Mapping[str, str]) -> list[Leak]:
    """Every table of the connection's database: each row as text, searched by the server; bytea columns
    decompressed and searched here."""
    needles = sorted({n for value in secrets.values() for n in secret_needles(value)})
    if not needles:
        return []
    leaks: list[Leak] = []
    # One regular expression, so each row is lower-cased and searched once (not once per piece).
    pattern = "|".join(re.escape(n) for n in needles)
    for schema, table in _tables(conn):
        relation = f'"{schema}"."{table}"'
        query = sa.text(f"SELECT t::text FROM {relation} t WHERE lower(t::text) ~ :pattern LIMIT 5")
        for (text,) in conn.execute(query, {"pattern": pattern}):
            leaks += scan_text(f"{label} table {schema}.{table}", text, secrets)
        binary = conn.execute(
            sa.text(
                "SELECT column_name FROM information_schema.columns "
                "WHERE table_schema = :s AND table_name = :t AND data_type = 'bytea'"
            ),
            {"s": schema, "t": table},
        ).scalars()
        for column in binary:
            for (value,) in conn.execute(sa.text(f'SELECT "{column}" FROM {relation} WHERE "{column}" IS NOT NULL')):
                leaks += scan_text(f"{label} table {schema}.{table}.{column}", _binary_text(bytes(value)), secrets)
    return leaks


# --- Dagster's instance ---------------------------------------------------------------------------


#: The words every pool problem ends with: what the campaign looks for to stop or to settle the runs.
BLOCKS_THE_POOL = "every later run of the pool waits for it"


def held_slot_problems(conn: Connection, next_sync_settles: bool = False) -> list[str]:
    """Pool slots (Dagster's global concurrency, ``pools`` in dagster.yaml) still taken by a run.

    Called when no sync is running, so the runs in question are dead. A slot is taken three ways: held
    (``concurrency_slots``), assigned to a step that has yet to claim it, or, for a step still queued,
    about to be assigned to it the moment a slot frees (``pending_steps``, highest priority first). A
    dead run never releases any of them, so every later step of that pool (the tenant's SmartMoving
    pulls) waits, without a word, for ever, unless something settles the run.

    ``next_sync_settles``: between cycles, a run tagged with the ``lgm sync`` process that started it is
    left to the next ``lgm sync``, which settles the runs of dead syncs before its first run
    (``lgm_pipeline/cli/dead_syncs.py``); that it does shows in the next cycle (a sync that waited would
    meet its deadline) and in the final check, made with ``next_sync_settles=False``.
    """
    if not conn.execute(sa.text("SELECT to_regclass('concurrency_slots')")).scalar():
        return []
    left_to_next_sync = (
        "AND NOT EXISTS (SELECT 1 FROM run_tags t WHERE t.run_id = {run}.run_id AND t.key = :pid_tag) "
        if next_sync_settles
        else ""
    )
    taken = conn.execute(
        sa.text(
            "SELECT s.concurrency_key, s.run_id, s.step_key, r.status, 'holds its slot' FROM concurrency_slots s "
            "LEFT JOIN runs r ON r.run_id = s.run_id WHERE s.run_id IS NOT NULL AND NOT s.deleted "
            + left_to_next_sync.format(run="s")
            + "UNION ALL "
            "SELECT p.concurrency_key, p.run_id, p.step_key, r.status, CASE WHEN p.assigned_timestamp IS NULL "
            "THEN 'is queued for the next free slot' ELSE 'was assigned a slot it never claimed' END "
            "FROM pending_steps p LEFT JOIN runs r ON r.run_id = p.run_id "
            # A step holding its slot keeps its (assigned) queue entry until it frees both: said once.
            "WHERE NOT EXISTS (SELECT 1 FROM concurrency_slots h "
            "WHERE h.run_id = p.run_id AND h.step_key = p.step_key) "
            + left_to_next_sync.format(run="p")
            + "ORDER BY 2, 3"
        ),
        {"pid_tag": PID_TAG} if next_sync_settles else {},
    ).all()
    return [
        f"pool {key}: run {run_id} ({status or 'no such run'}), step {step}, {how} though no sync runs: "
        + BLOCKS_THE_POOL
        for key, run_id, step, status, how in taken
    ]
