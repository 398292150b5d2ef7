"""The pipeline's one time-zone database: the IANA data of the ``tzdata`` package, never the machine's.

Python decides each branch's sync window and PostgreSQL its day views; if each read its own copy of the
IANA data (``/usr/share/zoneinfo`` here, the server's ``share/timezone`` there), a change of rules
such as British Columbia's permanent UTC-7 from November 2026 would make them disagree about which day
it is. So every zone the pipeline uses is loaded from the package it ships with (:func:`zone`), and the
database takes its day boundaries from the same data (:func:`offset_transitions`, copied into each
tenant's ``zone_offsets`` table).
"""

from __future__ import annotations

import bisect
import datetime as dt
from functools import cache
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import tzdata

#: The IANA release the pipeline runs on (``2026f``), whatever the machine or the database has.
IANA_VERSION: str = tzdata.IANA_VERSION

#: The years whose offset changes are copied into the database: before the first the first offset
#: holds, after the last the last one (PostgreSQL's own data fills in for a zone it lacks entirely).
TRANSITION_YEARS = (2000, 2060)

#: Where the first offset starts in ``zone_offsets``: the epoch, not year 1, which a session west of
#: UTC would read back as year 0, a date Python has not.
BEGINNING = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class BundledZone(ZoneInfo):
    """A zone read from the bundled data; pickles by name, reloading from that same data.

    ``ZoneInfo.from_file`` objects refuse to pickle (they have no key the system could look up), and
    a datetime on a branch's clock may travel between processes (Dagster's run workers).
    """

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return zone, (str(self.key),)


@cache
def zone(name: str) -> ZoneInfo:
    """The zone ``name`` from the bundled IANA data (one object per name, as ``ZoneInfo(name)`` caches).

    Raises ``ZoneInfoNotFoundError`` for a name the data does not have and ``ValueError`` for one that is
    not a zone name at all, as ``ZoneInfo(name)`` does.
    """
    parts = name.split("/")
    # As ZoneInfo(name): a key is a relative path inside the database, never a way out of it.
    if not name or name.startswith("/") or "\\" in name or "\0" in name or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"ZoneInfo keys must be normalized relative paths, got: {name!r}")
    resource = resources.files("tzdata.zoneinfo").joinpath(*parts)
    if not resource.is_file():
        raise ZoneInfoNotFoundError(f"No time zone found with key {name} in tzdata {IANA_VERSION}")
    with resource.open("rb") as data:
        # A file of the package that is no zone (tzdata.zi, zone.tab) fails here with ValueError.
        return BundledZone.from_file(data, key=name)


def utc_offset(name: str, at: dt.datetime) -> dt.timedelta:
    """The offset from UTC of zone ``name`` at the aware instant ``at``."""
    offset = at.astimezone(zone(name)).utcoffset()
    assert offset is not None  # a ZoneInfo always has one
    return offset


@cache
def offset_transitions(name: str) -> tuple[tuple[dt.datetime, dt.timedelta], ...]:
    """The zone's offsets over :data:`TRANSITION_YEARS`: (first instant, offset) per change, UTC.

    The first entry starts at :data:`BEGINNING`. Found by stepping a day at a time and bisecting to
    the second within the day of a change: IANA rules change an offset at most once in a day, and no
    change is undone within one.
    """
    first, last = TRANSITION_YEARS
    at = dt.datetime(first, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(last + 1, 1, 1, tzinfo=dt.UTC)
    current = utc_offset(name, at)
    transitions = [(BEGINNING, current)]
    day = dt.timedelta(days=1)
    while at < end:
        following = at + day
        offset = utc_offset(name, following)
        if offset != current:
            # The first second of the day at which the new offset holds.
            seconds = bisect.bisect_left(
                range(86_400), True, key=lambda s: utc_offset(name, at + dt.timedelta(seconds=s + 1)) != current
            )
            transitions.append((at + dt.timedelta(seconds=seconds + 1), offset))
            current = offset
        at = following
    return tuple(transitions)
