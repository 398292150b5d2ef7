"""The day views' clocks from the pipeline's own IANA data, and where the server's own data differs.

A PostgreSQL server carries its own copy of the IANA data (the embedded server's ``share/timezone``, a
packaged server's ``/usr/share/zoneinfo``), whatever its release. Were the day views to ask it
(``AT TIME ZONE``) while Python computes the sync window from the bundled ``tzdata``, a rule change one
copy has and the other lacks (British Columbia on UTC-7 from November 2026) would make them disagree
about which day it is at 23:30. So each tenant schema holds the bundled data's offsets of its configured
zones (``zone_offsets``, rewritten on every migrate when they changed) and the views compute a local
date with :data:`LOCAL_DATE_FUNCTION`, which reads them. :func:`compare_offsets` tells where the server's
own data says otherwise: nothing the pipeline computes depends on it, but SQL of one's own does.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.storage.access import quote_ident
from lgm_pipeline.storage.tables import tenant_options, zone_offsets
from lgm_pipeline.tenants.config import Tenant
from lgm_pipeline.tenants.timezones import IANA_VERSION, offset_transitions, zone

#: The zone whose date is the earliest on Earth (UTC-12; POSIX signs are inverted): a bound on "today"
#: that holds whatever a row's branch zone is, so a per-row date filter can still use an index.
EARLIEST_ZONE = "Etc/GMT+12"

#: SQL function ``lgm_local_date(zone, at)`` of each tenant schema: the date on ``zone``'s clock at ``at``.
LOCAL_DATE_FUNCTION = "lgm_local_date"

#: How far ahead the comparison with the server looks, an hour at a time: a year of rules.
COMPARED_HOURS = 366 * 24

#: Offsets from UTC in seconds, one per hour from a start, per zone; None for a zone the source lacks.
Offsets = dict[str, list[int] | None]
#: A source of offsets: (zones, first hour, number of hours) -> :data:`Offsets`.
OffsetReader = Callable[[Sequence[str], dt.datetime, int], Offsets]


def configured_zones(tenants: Iterable[Tenant]) -> list[str]:
    """Every zone the tenants' day views and windows use: each tenant's, each branch's, the earliest."""
    zones = {EARLIEST_ZONE}
    for tenant in tenants:
        zones |= {tenant.timezone, *(b.timezone for b in tenant.branches)}
    return sorted(zones)


def create_local_date_function(conn: Connection, tenant: Tenant) -> None:
    """``lgm_local_date(zone, at)``: ``at``'s date on ``zone``'s clock by the offsets in ``zone_offsets``.

    PL/pgSQL, so it can be created before ``zone_offsets`` exists (migration 4 on an older schema)
    without the body being checked. STABLE: with constant arguments (the earliest zone, the clock) the
    planner evaluates it once per scan, so it can bound an index range, and can estimate it. A zone
    without rows (one set by hand in ``locations``) falls back on the server's own data rather than
    on no date at all.
    """
    schema = quote_ident(conn, tenant.schema)
    offsets = f"{schema}.{quote_ident(conn, zone_offsets.name)}"
    conn.exec_driver_sql(
        f"""
        CREATE OR REPLACE FUNCTION {schema}.{LOCAL_DATE_FUNCTION}(zone_name text, at timestamptz) RETURNS date
        LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE AS $fn$
        DECLARE shift interval;
        BEGIN
          SELECT o.utc_offset INTO shift FROM {offsets} o
          WHERE o.zone = zone_name AND o.valid_from <= at
          ORDER BY o.valid_from DESC LIMIT 1;
          IF shift IS NULL THEN
            RETURN (at AT TIME ZONE zone_name)::date;
          END IF;
          RETURN ((at AT TIME ZONE 'UTC') + shift)::date;
        END
        $fn$
        """
    )


def sync_zone_offsets(conn: Connection, tenant: Tenant) -> bool:
    """Make ``zone_offsets`` the bundled data's offsets of the tenant's zones; True when rows changed.

    Runs on every migrate (every process touching the tenant), so an unchanged table is only read:
    a zone is rewritten when its rows differ (a new IANA release installed with the package, a zone
    added to the tenants file), and a zone no longer configured is deleted.
    """
    scoped = conn.execution_options(**tenant_options(tenant))
    wanted = {(name, at, offset) for name in configured_zones([tenant]) for at, offset in offset_transitions(name)}
    stored = {(r.zone, r.valid_from, r.utc_offset) for r in scoped.execute(sa.select(zone_offsets))}
    changed = sorted({name for name, _, _ in wanted ^ stored})
    if not changed:
        return False
    scoped.execute(zone_offsets.delete().where(zone_offsets.c.zone.in_(changed)))
    rows = [{"zone": name, "valid_from": at, "utc_offset": offset} for name, at, offset in wanted if name in changed]
    if rows:
        scoped.execute(zone_offsets.insert(), rows)
    return True


def _hours(start: dt.datetime, hours: int) -> list[dt.datetime]:
    return [start + dt.timedelta(hours=h) for h in range(hours)]


def python_offsets(load: Callable[[str], dt.tzinfo] = zone) -> OffsetReader:
    """Offsets from zones loaded by ``load``: the bundled data by default (another copy for a comparison)."""

    def read(zones: Sequence[str], start: dt.datetime, hours: int) -> Offsets:
        offsets: Offsets = {}
        for name in zones:
            try:
                clock = load(name)
            except (LookupError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
                offsets[name] = None
                continue
            offsets[name] = [int(at.astimezone(clock).utcoffset().total_seconds()) for at in _hours(start, hours)]  # type: ignore[union-attr]
        return offsets

    return read


def server_offsets(engine: Engine) -> OffsetReader:
    """Offsets by the server's own data (``AT TIME ZONE``), every zone and hour in one query."""

    def read(zones: Sequence[str], start: dt.datetime, hours: int) -> Offsets:
        with engine.connect() as conn:
            # An unknown name would fail the whole query: only the zones the server has are asked.
            rows = conn.execute(
                sa.text(
                    "SELECT z.name, array_agg(CAST(extract(epoch FROM (t AT TIME ZONE z.name) - (t AT TIME ZONE 'UTC'))"
                    " AS integer) ORDER BY t) "
                    "FROM unnest(CAST(:zones AS text[])) AS z(name) "
                    "CROSS JOIN generate_series(CAST(:start AS timestamptz), "
                    "CAST(:start AS timestamptz) + (:hours - 1) * interval '1 hour', interval '1 hour') AS t "
                    "WHERE z.name IN (SELECT n.name FROM pg_timezone_names n) "
                    "GROUP BY z.name"
                ),
                {"zones": list(zones), "start": start, "hours": hours},
            ).all()
        known = {name: list(offsets) for name, offsets in rows}
        return {name: known.get(name) for name in zones}

    return read


@dataclass(frozen=True)
class ZoneDisagreement:
    """The first hour at which another copy of the IANA data gives a zone another offset than ours."""

    zone: str
    at: dt.datetime
    #: Offsets from UTC in seconds; ``theirs`` is None when the other copy lacks the zone.
    ours: int
    theirs: int | None

    def warning(self, theirs_name: str = "PostgreSQL's own data") -> str:
        """One line for an operator: the zone, the instant, both offsets, and which data the pipeline uses."""
        if self.theirs is None:
            return (
                f"warning: time zone {self.zone}: {theirs_name} does not have it; sync windows and day views "
                f"use the pipeline's bundled IANA {IANA_VERSION}"
            )
        return (
            f"warning: time zone {self.zone}: from {self.at:%Y-%m-%d %H:%M} UTC {theirs_name} gives "
            f"{_utc(self.theirs)}, the pipeline's bundled IANA {IANA_VERSION} {_utc(self.ours)}; sync windows and "
            "day views use the bundled data (only AT TIME ZONE in your own SQL sees the other)"
        )


def _utc(seconds: int) -> str:
    sign = "-" if seconds < 0 else "+"
    minutes = abs(seconds) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"


def compare_offsets(
    zones: Sequence[str],
    theirs: OffsetReader,
    *,
    ours: OffsetReader | None = None,
    start: dt.datetime | None = None,
    hours: int = COMPARED_HOURS,
) -> list[ZoneDisagreement]:
    """For each zone, the first hour from ``start`` (now) on which ``theirs`` disagrees with ``ours``.

    ``ours`` defaults to the bundled data; ``theirs`` is the server (:func:`server_offsets`) or another
    copy of the data (:func:`python_offsets`). Zones they agree on for ``hours`` hours are not listed.
    """
    first = (start or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    mine = (ours or python_offsets())(zones, first, hours)
    other = theirs(zones, first, hours)
    found = []
    for name in zones:
        ours_here, theirs_here = mine[name], other.get(name)
        if ours_here is None:
            continue  # a zone the pipeline itself lacks never passed the tenants file's validation
        if theirs_here is None:
            found.append(ZoneDisagreement(name, first, ours_here[0], None))
            continue
        for hour, (a, b) in enumerate(zip(ours_here, theirs_here, strict=True)):
            if a != b:
                found.append(ZoneDisagreement(name, first + dt.timedelta(hours=hour), a, b))
                break
    return found


def time_zone_warnings(
    engine: Engine,
    tenants: Iterable[Tenant],
    *,
    theirs: OffsetReader | None = None,
    start: dt.datetime | None = None,
) -> list[str]:
    """The warning lines for each configured zone the server's own data (or ``theirs``) gives other offsets."""
    zones = configured_zones(tenants)
    return [d.warning() for d in compare_offsets(zones, theirs or server_offsets(engine), start=start)]
