"""Who may read what: per-tenant group roles, grants, row-level security, reader logins.

Each tenant gets two NOLOGIN group roles, ``lgm_<key>_reader`` (SELECT on its schema) and
``lgm_<key>_writer`` (read/write on its schema); people and services log in with their own
roles that are members of one of them. Neither group has any right on another tenant's schema.

Row-level security on the branch-scoped tables narrows a session to some branches: after
``SET lgm.allowed_locations = 'loc_a,loc_b'`` only those rows are visible; unset or empty means
every branch of the tenant. That setting is chosen by the session itself, so it scopes a
company-level reader's view (e.g. a branch dashboard); it is not a barrier between branches.
The tenant boundary is the schema grant. RLS is ENABLEd, not FORCEd: the table owner (the
pipeline's connection) is not filtered.
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.storage.tables import BRANCH_SCOPED_TABLES, journey_progress
from lgm_pipeline.tenants.config import Tenant

ALLOWED_LOCATIONS_SETTING = "lgm.allowed_locations"

_LOGIN_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_POLICY = "lgm_branch_scope"


class AccessError(ValueError):
    """A login name is invalid or names a role this module must not touch."""


def reader_role(tenant: Tenant) -> str:
    return f"lgm_{tenant.key}_reader"


def writer_role(tenant: Tenant) -> str:
    return f"lgm_{tenant.key}_writer"


def crm_writer_role(tenant: Tenant) -> str:
    """The CRM's own group role: reads the schema, records field progress; never writes synced tables."""
    return f"lgm_{tenant.key}_crm_writer"


def quote_ident(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def quote_literal(conn: Connection, value: str) -> str:
    processor = sa.String().literal_processor(conn.dialect)
    assert processor is not None  # every dialect renders string literals
    return processor(value)


def branch_predicate(conn: Connection) -> str:
    """SQL true for rows of a branch the session allows (all branches when none is set)."""
    setting = f"current_setting({quote_literal(conn, ALLOWED_LOCATIONS_SETTING)}, true)"
    # Location ids never contain spaces (tenants config), so spaces after commas are dropped.
    return f"(coalesce({setting}, '') = '' OR location_id = ANY (string_to_array(replace({setting}, ' ', ''), ',')))"


def _create_group_role(conn: Connection, role: str) -> None:
    # Roles are cluster-wide while schemas are per database: another database (or a concurrent
    # migration elsewhere) may have created it already, so existence and the creation race are
    # both tolerated.
    conn.exec_driver_sql(
        f"""
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(conn, role)}) THEN
                    CREATE ROLE {quote_ident(conn, role)} NOLOGIN;
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END
            $$
            """
    )


def apply_access(conn: Connection, tenant: Tenant) -> None:
    """Create the tenant's group roles, grant them its schema and enable row-level security."""
    schema = quote_ident(conn, tenant.schema)
    reader = quote_ident(conn, reader_role(tenant))
    writer = quote_ident(conn, writer_role(tenant))
    crm = quote_ident(conn, crm_writer_role(tenant))
    _create_group_role(conn, reader_role(tenant))
    _create_group_role(conn, writer_role(tenant))
    _create_group_role(conn, crm_writer_role(tenant))

    statements = [
        f"GRANT USAGE ON SCHEMA {schema} TO {reader}, {writer}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {reader}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {writer}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {schema} TO {writer}",
        # Tables and views added by later migrations (run by this same role) inherit the grants.
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {reader}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {writer}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT USAGE, SELECT ON SEQUENCES TO {writer}",
    ]
    predicate = branch_predicate(conn)
    for table in BRANCH_SCOPED_TABLES:
        qualified = f"{schema}.{quote_ident(conn, table.name)}"
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
            continue  # created by a later migration, which applies the policy again
        statements += [
            f"ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS {_POLICY} ON {qualified}",
            f"CREATE POLICY {_POLICY} ON {qualified} TO {reader}, {writer}, {crm} "
            f"USING {predicate} WITH CHECK {predicate}",
        ]
    for statement in statements:
        conn.exec_driver_sql(statement)


def apply_crm_access(conn: Connection, tenant: Tenant) -> None:
    """The CRM writer group: reads the schema (branch-scoped like readers), records field progress.

    INSERT on ``journey_progress`` covers every column but ``by``, whose default is the login: who
    recorded a stage is not the writer's to choose.
    """
    apply_access(conn, tenant)  # the group role and the branch policy that names it
    schema = quote_ident(conn, tenant.schema)
    crm = quote_ident(conn, crm_writer_role(tenant))
    progress = f"{schema}.{quote_ident(conn, journey_progress.name)}"
    insertable = ", ".join(quote_ident(conn, c.name) for c in journey_progress.columns if c.name not in ("by",))
    for statement in (
        f"GRANT USAGE ON SCHEMA {schema} TO {crm}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {crm}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {crm}",
        f"GRANT INSERT ({insertable}) ON {progress} TO {crm}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {crm}",
    ):
        conn.exec_driver_sql(statement)


def grant_reader(engine: Engine, tenant: Tenant, login: str, password: str) -> None:
    """Create (or update the password of) LOGIN role ``login``, a member of the tenant's readers.

    Only a SCRAM verifier computed client-side (libpq's ``PQencryptPasswordConn``) is sent to
    the server, so the clear password appears in no statement, server log or error message.
    """
    if not _LOGIN_RE.match(login) or login.startswith("pg_") or login.startswith("lgm_"):
        raise AccessError(f"login {login!r} must match {_LOGIN_RE.pattern} and not start with pg_/lgm_")
    if not password:
        raise AccessError("password must not be empty")
    with engine.begin() as conn:
        existing = conn.execute(
            sa.text("SELECT rolsuper, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = :r"),
            {"r": login},
        ).one_or_none()
        if existing is not None and (existing.rolsuper or existing.rolcreaterole or not existing.rolcanlogin):
            raise AccessError(f"role {login!r} exists and is not a plain login role; refusing to alter it")
        driver = conn.connection.driver_connection
        verifier = driver.pgconn.encrypt_password(  # type: ignore[union-attr]
            password.encode(), login.encode(), b"scram-sha-256"
        ).decode()
        verb = "ALTER" if existing is not None else "CREATE"
        # Plain driver SQL: the verifier's ':' must not be read as a SQLAlchemy bind parameter.
        conn.exec_driver_sql(f"{verb} ROLE {quote_ident(conn, login)} LOGIN PASSWORD {quote_literal(conn, verifier)}")
        conn.exec_driver_sql(f"GRANT {quote_ident(conn, reader_role(tenant))} TO {quote_ident(conn, login)}")
