"""The pipeline's one time-zone database in Python: zones from the bundled ``tzdata``, never the machine's copy.

The comparison with another copy of the IANA data is tested here against the machine's own
(``/usr/share/zoneinfo``), so its outcome does not depend on the test server's release.
"""

from __future__ import annotations

import datetime as dt
import pickle
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pytest
import tzdata

from lgm_pipeline.storage.zones import EARLIEST_ZONE, ZoneDisagreement, compare_offsets, python_offsets
from lgm_pipeline.tenants.config import TenantConfigError, parse_tenants
from lgm_pipeline.tenants.timezones import BEGINNING, IANA_VERSION, offset_transitions, utc_offset, zone

SYSTEM_ZONEINFO = Path("/usr/share/zoneinfo")
HOUR = dt.timedelta(hours=1)


def system_zone(name: str) -> ZoneInfo:
    """A zone from the machine's own copy of the IANA data (what ``ZoneInfo(name)`` would read)."""
    with (SYSTEM_ZONEINFO / name).open("rb") as data:
        return ZoneInfo.from_file(data, key=name)


def _system_copy_differing_on_vancouver() -> None:
    """Skip unless the machine has its own IANA data with British Columbia still on UTC-8 in winter."""
    if not (SYSTEM_ZONEINFO / "America/Vancouver").is_file():
        pytest.skip(f"no system time-zone data in {SYSTEM_ZONEINFO}")
    december = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    if december.astimezone(system_zone("America/Vancouver")).utcoffset() == utc_offset("America/Vancouver", december):
        pytest.skip(f"the system's IANA data already agrees with the bundled {IANA_VERSION} on Vancouver")


def test_zones_come_from_the_bundled_tzdata_not_the_machine() -> None:
    vancouver = zone("America/Vancouver")
    assert vancouver is zone("America/Vancouver")  # one object per name, as ZoneInfo(name)
    assert str(vancouver) == "America/Vancouver"
    with (Path(tzdata.__file__).parent / "zoneinfo" / "America" / "Vancouver").open("rb") as data:
        bundled = ZoneInfo.from_file(data, key="America/Vancouver")
    at = dt.datetime(2027, 1, 16, 7, 30, tzinfo=dt.UTC)
    assert at.astimezone(vancouver).utcoffset() == at.astimezone(bundled).utcoffset()
    assert IANA_VERSION == tzdata.IANA_VERSION


def test_a_time_on_a_bundled_zone_pickles_and_comes_back_on_the_same_zone() -> None:
    at = dt.datetime(2026, 11, 27, 23, 30, tzinfo=zone("America/Vancouver"))
    again = pickle.loads(pickle.dumps(at))
    assert again == at and again.tzinfo is zone("America/Vancouver")


@pytest.mark.parametrize(
    ("name", "error"),
    [
        ("Mars/Olympus", ZoneInfoNotFoundError),
        ("America", ZoneInfoNotFoundError),  # a folder of the data, not a zone
        ("tzdata.zi", ValueError),  # a file of the data, not a zone
        ("../zoneinfo/America/Vancouver", ValueError),
        ("/usr/share/zoneinfo/America/Vancouver", ValueError),
        ("", ValueError),
    ],
)
def test_a_name_that_is_no_bundled_zone_fails_as_zoneinfo_would(name: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        zone(name)


def test_an_unknown_zone_in_the_tenants_file_is_still_named_in_the_message() -> None:
    document = {
        "tenants": [
            {
                "key": "acme",
                "client_id": "clm_acme",
                "name": "Acme",
                "timezone": "../../etc/passwd",
                "first_service_date": "2026-01-01",
                "smartmoving": {"api_key_env": "ACME_API_KEY", "base_url_env": "ACME_BASE_URL"},
                "branches": [],
            }
        ]
    }
    with pytest.raises(TenantConfigError, match=r"unknown timezone '\.\./\.\./etc/passwd': use an IANA time zone"):
        parse_tenants(document)


@pytest.mark.parametrize("name", ["America/Vancouver", "America/Toronto", "America/Edmonton", "Pacific/Chatham"])
def test_the_transitions_give_the_zone_own_offset_at_every_hour(name: str) -> None:
    transitions = offset_transitions(name)
    assert transitions[0][0] == BEGINNING
    starts = [start for start, _ in transitions]
    assert starts == sorted(starts)
    at = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    while at < dt.datetime(2029, 1, 1, tzinfo=dt.UTC):
        in_force = [offset for start, offset in transitions if start <= at][-1]
        assert in_force == utc_offset(name, at), at
        at += HOUR
    # A change is found to the second: the second before it still has the old offset.
    for (start, offset), (_, before) in zip(transitions[1:], transitions, strict=False):
        assert utc_offset(name, start) == offset and utc_offset(name, start - dt.timedelta(seconds=1)) == before


def test_the_comparison_warns_of_two_iana_releases_by_zone_and_first_hour() -> None:
    """Python's bundled data against the machine's own copy (Debian 12: 2025b), the same comparison the server gets."""
    _system_copy_differing_on_vancouver()
    zones = ["America/Toronto", "America/Vancouver", EARLIEST_ZONE]
    found = compare_offsets(zones, python_offsets(system_zone), start=dt.datetime(2026, 6, 1, 12, 17, tzinfo=dt.UTC))
    assert [d.zone for d in found] == ["America/Vancouver"]
    [vancouver] = found
    # The fall-back hour of 2026 that BC no longer has: the system copy returns to UTC-8 there.
    assert vancouver == ZoneDisagreement(
        "America/Vancouver", dt.datetime(2026, 11, 1, 9, tzinfo=dt.UTC), ours=-7 * 3600, theirs=-8 * 3600
    )
    assert vancouver.warning(str(SYSTEM_ZONEINFO)) == (
        f"warning: time zone America/Vancouver: from 2026-11-01 09:00 UTC /usr/share/zoneinfo gives UTC-08:00, "
        f"the pipeline's bundled IANA {IANA_VERSION} UTC-07:00; sync windows and day views use the bundled data "
        "(only AT TIME ZONE in your own SQL sees the other)"
    )
    # The same data on both sides: nothing to say.
    assert compare_offsets(zones, python_offsets(zone)) == []


def test_a_zone_the_other_copy_lacks_is_named_too() -> None:
    [missing] = compare_offsets(["America/Vancouver"], lambda zones, start, hours: {})
    assert missing.theirs is None
    assert missing.warning() == (
        "warning: time zone America/Vancouver: PostgreSQL's own data does not have it; sync windows and day views "
        f"use the pipeline's bundled IANA {IANA_VERSION}"
    )
