"""``lgm check-connection`` and the start of ``lgm serve`` (and ``lgm up``) name each zone the server's own data gives
other offsets than the pipeline's bundled IANA data, in one line each, and carry on."""

from __future__ import annotations

import datetime as dt
import functools
import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from lgm_pipeline.cli.main import main
from lgm_pipeline.simulator import SimulatorConfig, start_simulator
from lgm_pipeline.storage import zones
from lgm_pipeline.storage.database import create_engine
from lgm_pipeline.tenants import load_tenants
from lgm_pipeline.tenants.timezones import IANA_VERSION
from lgm_pipeline_tests.tenants.test_timezones import _system_copy_differing_on_vancouver, system_zone

#: The comparison's first hour, fixed so the lines do not depend on when the test runs.
START = dt.datetime(2026, 10, 1, tzinfo=dt.UTC)
LINE = re.compile(
    r"warning: time zone (?P<zone>\S+): from \d{4}-\d{2}-\d{2} \d{2}:00 UTC PostgreSQL's own data gives "
    rf"UTC[+-]\d\d:\d\d, the pipeline's bundled IANA {IANA_VERSION} UTC[+-]\d\d:\d\d; sync windows and day views "
    r"use the bundled data \(only AT TIME ZONE in your own SQL sees the other\)"
)


@pytest.fixture
def simulator_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with start_simulator(SimulatorConfig(rate_limit_per_minute=None, churn=0.0, customers_per_day=5)) as sim:
        monkeypatch.setenv("SMARTMOVING_BASE_URL", sim.base_url)
        monkeypatch.setenv("SMARTMOVING_API_KEY", sim.api_key)
        yield


def _compare_from(monkeypatch: pytest.MonkeyPatch, **fixed: Any) -> None:
    """The commands' comparison with a fixed first hour (and, given ``theirs``, another copy of the data)."""
    monkeypatch.setattr(zones, "time_zone_warnings", functools.partial(zones.time_zone_warnings, start=START, **fixed))


def _zone_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: time zone")]


def test_check_connection_names_each_zone_the_server_disagrees_on_and_still_succeeds(
    database_url: str, simulator_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _compare_from(monkeypatch)
    assert main(["check-connection"]) == 0
    captured = capsys.readouterr()
    lines = _zone_lines(captured.err)
    engine = create_engine(database_url, poolclass=sa.pool.NullPool)
    try:
        # What the server's own data says, whichever IANA release the test server has.
        assert lines == zones.time_zone_warnings(engine, load_tenants(), start=START)
        with engine.connect() as conn:
            winter = conn.execute(
                sa.text("SELECT CAST('2026-12-01T12:00:00Z' AS timestamptz) AT TIME ZONE 'America/Vancouver'")
            ).scalar()
    finally:
        engine.dispose()
    assert all(LINE.fullmatch(line) for line in lines), lines
    if winter == dt.datetime(2026, 12, 1, 4):  # the server keeps BC on UTC-8 in winter (IANA before 2026f)
        assert (
            "warning: time zone America/Vancouver: from 2026-11-01 09:00 UTC PostgreSQL's own data gives UTC-08:00, "
            f"the pipeline's bundled IANA {IANA_VERSION} UTC-07:00; sync windows and day views use the bundled data "
            "(only AT TIME ZONE in your own SQL sees the other)"
        ) in lines
    assert "lgm: ok" in captured.out  # the SmartMoving report as before, on stdout


def test_check_connection_says_it_could_not_compare_and_carries_on(
    database_url: str, simulator_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def unreachable(engine: object) -> zones.OffsetReader:
        def read(*args: object) -> zones.Offsets:
            raise sa.exc.OperationalError("SELECT ...", {}, Exception("server closed the connection"))

        return read

    monkeypatch.setattr(zones, "server_offsets", unreachable)
    assert main(["check-connection"]) == 0
    err = capsys.readouterr().err
    assert "warning: could not compare the time zones with PostgreSQL's (OperationalError)" in err.splitlines()


def test_serve_names_the_zones_before_anything_else_it_says(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Against the machine's own IANA copy (Debian 12: 2025b), so the line is the same on every test server."""
    _system_copy_differing_on_vancouver()
    _compare_from(monkeypatch, theirs=zones.python_offsets(system_zone))
    with socket.socket() as busy:  # serve stops at its port check: what it said before is what a user sees
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port), "--code-port", str(port)]) == 2
    err = capsys.readouterr().err.splitlines()
    vancouver = (
        "warning: time zone America/Vancouver: from 2026-11-01 09:00 UTC PostgreSQL's own data gives UTC-08:00, "
        f"the pipeline's bundled IANA {IANA_VERSION} UTC-07:00; sync windows and day views use the bundled data "
        "(only AT TIME ZONE in your own SQL sees the other)"
    )
    assert vancouver in err
    assert err.index(vancouver) < next(i for i, line in enumerate(err) if line.startswith("lgm: port"))
    assert not any(line.startswith("warning: time zone America/Toronto") for line in err)
