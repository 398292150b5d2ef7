"""Who may read what: per-tenant group roles, grants, row-level security, reader logins.

Each tenant gets NOLOGIN group roles *per database*: ``lgm-<key>-<db>-reader`` (SELECT on its
schema), ``lgm-<key>-<db>-crm_writer`` and ``lgm-<key>-<db>-writer`` (read/write on its schema), all
tenant-wide, and ``lgm-<key>-<db>-branch_reader`` for logins bound to branches (:func:`group_role`;
``<db>``: 8 hex digits of the database name's SHA-256). People and services log in with their own
roles that are members of one of them. No group has any right on another tenant's schema, nor in
another database: the tenant boundary is the schema grant, the database's is the name.

Why these names: roles are cluster-wide while schemas are per database, and ``-`` is a character
neither a tenant key nor a login may contain, so a group name splits into key, database and kind one
way only (``lgm_spx_crm_writer`` was both tenant ``spx``'s CRM group and ``spx_crm``'s writer group).
Each group carries a comment naming its tenant, database and kind; migrating refuses a role of that
name made for anything else (a hand-made role, two database names with the same digest).

Row-level security on the branch-scoped tables narrows a session to some branches: after
``SET lgm.allowed_locations = 'loc_a,loc_b'`` only those rows are visible; unset or empty means
every branch the session may read. That setting is chosen by the session itself, so for the
tenant-wide groups it scopes a view (the CRM filtering per request), it is no barrier.

The barrier between branches is the branch group: a member reads only the rows of the branches
``branch_logins`` lists for its *session* user (a login cannot change it, ``SET ROLE`` does not
change it), through RESTRICTIVE policies that hold whatever else the login is granted. The group
is granted SELECT on an explicit list of tables (:data:`BRANCH_READABLE`), every one of them under
such a policy, and on the views, which run with the reader's rights; raw tables with other
branches' customers (``raw_jobs``, ``raw_customers``, ``raw_leads``) are not granted at all. Two
tables hold no branch's rows and are granted whole: ``company`` and ``zone_offsets`` (the clocks).

Those policies apply to PUBLIC, not to the branch group, and ask whether the *session* user is a
branch login (:data:`BRANCH_LOGIN_FUNCTION`): a branch login an admin also made a CRM writer, or one
that switches to such a group with ``SET ROLE``, is still bound. Every table of the schema has one
(:func:`branch_bounds`): its branches' rows, or none at all for the tables that hold every branch.

RLS is ENABLEd, not FORCEd: the table owner (the pipeline's connection) is not filtered.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from lgm_pipeline.naming import GROUP_KINDS, group_role
from lgm_pipeline.storage.tables import (
    BRANCH_SCOPED_TABLES,
    branch_logins,
    company,
    journey_audit,
    journey_progress,
    journeys,
    journeys_quarantine,
    lead_audit,
    leads,
    leads_quarantine,
    locations,
    metadata,
    raw_branches,
    raw_customers,
    raw_job_departures,
    raw_job_timelines,
    raw_jobs,
    raw_leads,
    raw_opportunities,
    schema_migrations,
    sync_runs,
    tenant_options,
    unreadable_records,
    webhook_events,
    zone_offsets,
)
from lgm_pipeline.tenants.config import Tenant

log = logging.getLogger(__name__)

ALLOWED_LOCATIONS_SETTING = "lgm.allowed_locations"

_LOGIN_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_POLICY = "lgm_branch_scope"
_BOUND_POLICY = "lgm_branch_login_bound"
_ALL_ROWS_POLICY = "lgm_all_rows"
_OWN_BINDING_POLICY = "lgm_own_binding"
#: The comment grant-reader leaves on a login it created: re-running it on that login needs no --replace.
READER_LOGIN_COMMENT = "lgm db grant-reader login"

#: SQL functions (tenant schema, SECURITY DEFINER: a login cannot read ``branch_logins`` of others,
#: nor every login ``branch_logins`` at all) the branch policies call: is the session's login bound
#: to branches, and to which.
BRANCH_LOGIN_FUNCTION = "lgm_session_is_branch_login"
SESSION_BRANCHES_FUNCTION = "lgm_session_branches"

#: What a branch login may SELECT: the branch-scoped tables, their audit and progress, and what the
#: views join (the branch's own rows of each). Every one is under a RESTRICTIVE branch policy.
BRANCH_READABLE: tuple[sa.Table, ...] = (
    journeys,
    journeys_quarantine,
    journey_audit,
    journey_progress,
    leads,
    leads_quarantine,
    lead_audit,
    locations,
    raw_branches,
    raw_job_timelines,
    raw_opportunities,
)

#: Tables that hold every branch's rows with no branch of their own to filter on: a branch login
#: reads none of their rows, whatever group it is given.
BRANCH_CLOSED: tuple[sa.Table, ...] = (raw_customers, raw_jobs, raw_leads, unreadable_records, webhook_events)

#: Tables that say nothing of any branch's rows: a branch login reads them whole.
BRANCH_NEUTRAL: tuple[sa.Table, ...] = (company, zone_offsets, schema_migrations)


class AccessError(ValueError):
    """A login name is invalid or names a role this module must not touch."""


@dataclass(frozen=True)
class Groups:
    """A tenant's four group roles in one database (:func:`lgm_pipeline.naming.group_role`)."""

    reader: str
    writer: str
    crm_writer: str
    branch_reader: str

    @property
    def tenant_wide(self) -> tuple[str, str, str]:
        return (self.reader, self.writer, self.crm_writer)

    def by_kind(self) -> dict[str, str]:
        return {kind: getattr(self, kind) for kind in GROUP_KINDS}


def groups_in(tenant: Tenant, database: str) -> Groups:
    return Groups(*(group_role(tenant.key, kind, database) for kind in GROUP_KINDS))


def groups(conn: Connection, tenant: Tenant) -> Groups:
    """The tenant's groups in the database ``conn`` is connected to."""
    return groups_in(tenant, str(conn.execute(sa.text("SELECT current_database()")).scalar()))


def reader_role(tenant: Tenant, database: str) -> str:
    return groups_in(tenant, database).reader


def writer_role(tenant: Tenant, database: str) -> str:
    return groups_in(tenant, database).writer


def branch_reader_role(tenant: Tenant, database: str) -> str:
    """The group of logins bound to branches by ``branch_logins``; never a member of the tenant-wide groups."""
    return groups_in(tenant, database).branch_reader


def crm_writer_role(tenant: Tenant, database: str) -> str:
    """The CRM's own group role: reads the schema, records field progress; never writes synced tables."""
    return groups_in(tenant, database).crm_writer


def quote_ident(conn: Connection, name: str) -> str:
    return conn.dialect.identifier_preparer.quote_identifier(name)


def quote_literal(conn: Connection, value: str) -> str:
    processor = sa.String().literal_processor(conn.dialect)
    assert processor is not None  # every dialect renders string literals
    return processor(value)


def branch_predicate(conn: Connection, location: str = "location_id") -> str:
    """SQL true for rows of a branch the session allows (all branches when none is set).

    ``location``: the SQL naming the row's branch (a view over audit images has no such column).
    """
    setting = f"current_setting({quote_literal(conn, ALLOWED_LOCATIONS_SETTING)}, true)"
    # Location ids never contain spaces (tenants config), so spaces after commas are dropped.
    return f"(coalesce({setting}, '') = '' OR {location} = ANY (string_to_array(replace({setting}, ' ', ''), ',')))"


def _group_comment(tenant: Tenant, database: str, kind: str) -> str:
    return f"lgm group: tenant {tenant.key}, database {database}, {kind}"


def _create_group_roles(conn: Connection, tenant: Tenant) -> Groups:
    """Create the tenant's groups in this database, or check that the roles of those names are them.

    Roles are cluster-wide: a concurrent migration of the same database may have created one
    already (tolerated), but a role of that name made for anything else is refused, never reused.
    """
    database = str(conn.execute(sa.text("SELECT current_database()")).scalar())
    made = groups_in(tenant, database)
    for kind, role in made.by_kind().items():
        comment = _group_comment(tenant, database, kind)
        conn.exec_driver_sql(
            f"""
            DO $$
            BEGIN
                IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {quote_literal(conn, role)}) THEN
                    CREATE ROLE {quote_ident(conn, role)} NOLOGIN;
                    COMMENT ON ROLE {quote_ident(conn, role)} IS {quote_literal(conn, comment)};
                END IF;
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END
            $$
            """
        )
        found = conn.execute(
            sa.text(
                "SELECT rolcanlogin OR rolsuper OR rolbypassrls OR rolcreaterole AS powerful, "
                "shobj_description(oid, 'pg_authid') AS comment FROM pg_roles WHERE rolname = :r"
            ),
            {"r": role},
        ).one()
        if found.powerful or found.comment != comment:
            raise AccessError(
                f"role {role!r} exists and is not tenant {tenant.key}'s {kind} group of database {database} "
                f"(its comment: {found.comment!r}); refusing to grant it tenant {tenant.key}'s schema"
            )
    return made


def apply_access(conn: Connection, tenant: Tenant) -> None:
    """Create the tenant's group roles, grant them its schema and enable row-level security."""
    names = _create_group_roles(conn, tenant)
    schema = quote_ident(conn, tenant.schema)
    reader, writer = quote_ident(conn, names.reader), quote_ident(conn, names.writer)
    crm, branch = quote_ident(conn, names.crm_writer), quote_ident(conn, names.branch_reader)

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
            # The branch group may narrow by the setting too; its bound is apply_branch_access's policy.
            f"CREATE POLICY {_POLICY} ON {qualified} TO {reader}, {writer}, {crm}, {branch} "
            f"USING {predicate} WITH CHECK {predicate}",
        ]
    for statement in statements:
        conn.exec_driver_sql(statement)


def apply_crm_access(conn: Connection, tenant: Tenant) -> None:
    """The CRM writer group: reads the schema (branch-scoped like readers), records field progress.

    INSERT on ``journey_progress`` covers ``journey_id``, ``stage``, ``at`` and ``note``: the id is
    always generated, and ``by`` is the session's login (migration 12's trigger), neither is the
    writer's to choose.
    """
    apply_access(conn, tenant)  # the group role and the branch policy that names it
    schema = quote_ident(conn, tenant.schema)
    crm = quote_ident(conn, groups(conn, tenant).crm_writer)
    progress = f"{schema}.{quote_ident(conn, journey_progress.name)}"
    insertable = ", ".join(
        quote_ident(conn, c.name) for c in journey_progress.columns if c.name not in ("by", "progress_id")
    )
    for statement in (
        f"GRANT USAGE ON SCHEMA {schema} TO {crm}",
        f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {crm}",
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} GRANT SELECT ON TABLES TO {crm}",
        # Earlier versions granted every column but by; an explicit progress_id broke the next insert.
        f"REVOKE INSERT ON {progress} FROM {crm}",
        f"GRANT INSERT ({insertable}) ON {progress} TO {crm}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {crm}",
        # Progress is recorded on a journey of a branch the session allows (lgm.allowed_locations),
        # read with the writer's own rights, so a branch login's bound holds too.
        f"DROP POLICY IF EXISTS {_POLICY} ON {progress}",
        f"CREATE POLICY {_POLICY} ON {progress} AS RESTRICTIVE FOR INSERT WITH CHECK (EXISTS (SELECT 1 FROM "
        f"{schema}.{quote_ident(conn, journeys.name)} j "
        f"WHERE j.id = journey_id AND {branch_predicate(conn, 'j.location_id')}))",
    ):
        conn.exec_driver_sql(statement)


def _create_session_functions(conn: Connection, tenant: Tenant, names: Groups) -> None:
    """The policies' view of the session: is its login bound to branches, and to which ones.

    SECURITY DEFINER (the schema owner's rights), so a policy on any table can ask without the
    reader holding a right on ``branch_logins``; ``session_user`` inside is still the login.
    """
    schema = quote_ident(conn, tenant.schema)
    bindings = f"{schema}.{quote_ident(conn, branch_logins.name)}"
    settings = "LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp"
    conn.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {schema}.{SESSION_BRANCHES_FUNCTION}() RETURNS text[] {settings} AS $fn$ "
        f"SELECT coalesce(array_agg(b.location_id), '{{}}') FROM {bindings} b WHERE b.login = session_user "
        "$fn$"
    )
    # A member of the branch group with no branch left (it left the tenants file) is bound to none.
    conn.exec_driver_sql(
        f"CREATE OR REPLACE FUNCTION {schema}.{BRANCH_LOGIN_FUNCTION}() RETURNS boolean {settings} AS $fn$ "
        f"SELECT pg_has_role(session_user, {quote_literal(conn, names.branch_reader)}, 'MEMBER') "
        f"OR EXISTS (SELECT 1 FROM {bindings} b WHERE b.login = session_user) "
        "$fn$"
    )


def branch_bounds(conn: Connection, tenant: Tenant) -> dict[str, str]:
    """Per table of the schema: SQL true for the rows a branch login may see (of its bound branches).

    Every table of :data:`tables.metadata` has one (a new table without one fails the migration):
    its branches' rows, ``false`` for :data:`BRANCH_CLOSED`, ``true`` for :data:`BRANCH_NEUTRAL`.
    """
    schema = quote_ident(conn, tenant.schema)

    def table(t: sa.Table) -> str:
        return f"{schema}.{quote_ident(conn, t.name)}"

    # An init plan: computed once per statement, not per row.
    bound = f"(CAST((SELECT {schema}.{SESSION_BRANCHES_FUNCTION}()) AS text[]))"  # an array, not a subquery

    def mine(location: str) -> str:
        return f"({location} = ANY {bound})"

    own_journeys = f"(SELECT j.id FROM {table(journeys)} j WHERE {mine('j.location_id')})"
    own_leads = f"(SELECT l.id FROM {table(leads)} l WHERE {mine('l.location_id')})"
    own_job_ids = f"(SELECT j.smartmoving_job_id FROM {table(journeys)} j WHERE {mine('j.location_id')})"
    # The views match SmartMoving's branch names this way (btrim), so the bound agrees with them.
    own_branch_names = f"(SELECT l.smartmoving_branch_name FROM {table(locations)} l WHERE {mine('l.location_id')})"

    def audited(key: str, own: str) -> str:
        # An insert's audit row has no image and an update's only the changed columns: the row's
        # branch is the journey's (lead's) current one, or one its images name (a delete holds the
        # whole row; a move names both branches, each of which sees it).
        before, after = mine("(before ->> 'location_id')"), mine("(after ->> 'location_id')")
        return f"({before} OR {after} OR {key} IN {own})"

    scoped = mine("location_id")
    bounds = {
        journeys.name: scoped,
        journeys_quarantine.name: scoped,
        leads.name: scoped,
        leads_quarantine.name: scoped,
        locations.name: scoped,
        # A pull's own rows (no branch) hold every branch's counts: only the branch's writes are its.
        sync_runs.name: scoped,
        journey_audit.name: audited("journey_id", own_journeys),
        lead_audit.name: audited("lead_id", own_leads),
        journey_progress.name: f"(journey_id IN {own_journeys})",
        raw_job_timelines.name: f"(job_id IN {own_job_ids})",
        raw_job_departures.name: f"(job_id IN {own_job_ids})",
        raw_branches.name: f"(btrim(name) IN {own_branch_names})",
        raw_opportunities.name: f"(btrim(payload -> 'branch' ->> 'name') IN {own_branch_names})",
        branch_logins.name: "(login = session_user)",
    }
    bounds |= {t.name: "false" for t in BRANCH_CLOSED}
    bounds |= {t.name: "true" for t in BRANCH_NEUTRAL}
    missing = sorted(set(metadata.tables) - set(bounds))
    if missing:  # a new table must say what a branch login sees of it
        raise AssertionError(f"tables without a branch bound: {', '.join(missing)}")
    return bounds


def apply_branch_access(conn: Connection, tenant: Tenant) -> None:
    """The branch group: SELECT on :data:`BRANCH_READABLE` and the views, bounded by ``branch_logins``.

    Every table of the schema gets a RESTRICTIVE policy for PUBLIC that, for a session whose login
    is a branch login, keeps its branches' rows only (none of the tables holding every branch),
    whatever other group it is given or switches to. Tables that had no row-level security
    get a permissive all-rows policy for everyone else, so enabling it changes nothing for them.
    """
    apply_access(conn, tenant)  # the group role, and the branch-scoped tables' permissive policy naming it
    names = groups(conn, tenant)
    schema = quote_ident(conn, tenant.schema)
    branch = quote_ident(conn, names.branch_reader)
    tenant_wide = ", ".join(quote_ident(conn, r) for r in names.tenant_wide)
    bindings = f"{schema}.{quote_ident(conn, branch_logins.name)}"
    scoped = {t.name for t in BRANCH_SCOPED_TABLES}
    readable = {t.name for t in BRANCH_READABLE}
    _create_session_functions(conn, tenant, names)
    statements = [
        f"GRANT USAGE ON SCHEMA {schema} TO {branch}",
        f"GRANT SELECT ON {schema}.{quote_ident(conn, company.name)} TO {branch}",
        # Who reads which branch is the owner's to say: the tenant-wide groups got the table by the
        # schema-wide grants; row-level security (no policy for them) would stop them anyway.
        f"REVOKE ALL ON {bindings} FROM {tenant_wide}",
        f"GRANT SELECT ON {bindings} TO {branch}",
        f"DROP POLICY IF EXISTS {_OWN_BINDING_POLICY} ON {bindings}",
        f"CREATE POLICY {_OWN_BINDING_POLICY} ON {bindings} FOR SELECT TO {branch} USING (login = session_user)",
    ]
    is_branch = f"(SELECT {schema}.{BRANCH_LOGIN_FUNCTION}())"
    for name, predicate in branch_bounds(conn, tenant).items():
        qualified = f"{schema}.{quote_ident(conn, name)}"
        if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": qualified}).scalar() is None:
            continue  # created by a later migration, which applies this again
        if name in readable:
            statements.append(f"GRANT SELECT ON {qualified} TO {branch}")
        bounded = f"(NOT {is_branch} OR {predicate})" if predicate != "true" else "(true)"
        statements += [
            f"ALTER TABLE {qualified} ENABLE ROW LEVEL SECURITY",
            f"DROP POLICY IF EXISTS {_BOUND_POLICY} ON {qualified}",
            f"CREATE POLICY {_BOUND_POLICY} ON {qualified} AS RESTRICTIVE USING {bounded} WITH CHECK {bounded}",
        ]
        if name not in scoped and name != branch_logins.name:
            statements += [
                f"DROP POLICY IF EXISTS {_ALL_ROWS_POLICY} ON {qualified}",
                f"CREATE POLICY {_ALL_ROWS_POLICY} ON {qualified} USING (true) WITH CHECK (true)",
            ]
    offsets = f"{schema}.{quote_ident(conn, zone_offsets.name)}"
    if conn.execute(sa.text("SELECT to_regclass(:t)"), {"t": offsets}).scalar() is not None:
        # The day views' clocks: every zone's offsets, no branch's rows, like company.
        statements.append(f"GRANT SELECT ON {offsets} TO {branch}")
    for statement in statements:
        conn.exec_driver_sql(statement)
    grant_branch_views(conn, tenant)


def grant_branch_views(conn: Connection, tenant: Tenant) -> None:
    """SELECT on the schema's security-invoker views for the branch group (a replaced view loses it).

    Such a view reads with the reader's own grants and policies, so it shows a branch login its
    branches only, or fails on a table the group is not granted. A view with the owner's rights
    would show everything: it is never granted.
    """
    branch_group = groups(conn, tenant).branch_reader
    if conn.execute(sa.text("SELECT to_regrole(:r)"), {"r": branch_group}).scalar() is None:
        return  # before the migration that creates the group
    views = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = :s AND c.relkind = 'v' AND 'security_invoker=true' = ANY (c.reloptions) "
            "ORDER BY 1"
        ),
        {"s": tenant.schema},
    ).scalars()
    schema, branch = quote_ident(conn, tenant.schema), quote_ident(conn, branch_group)
    for view in list(views):
        conn.exec_driver_sql(f"GRANT SELECT ON {schema}.{quote_ident(conn, view)} TO {branch}")


_AMBIGUOUS_LEGACY = "lgm: legacy group of two tenants, members carried to neither"


def legacy_group_role(tenant_key: str, kind: str) -> str:
    """A group's name before migration 12: ``lgm_<key>_<kind>``, cluster-wide and ambiguous."""
    return f"lgm_{tenant_key}_{kind}"


def _legacy_claimants(conn: Connection, role: str) -> list[tuple[str, str]]:
    """(schema, kind) of every tenant schema of this database the legacy ``role`` has USAGE on, as a group
    of that schema's tenant: ``lgm_spx_crm_writer`` may be ``spx``'s crm_writer and ``spx_crm``'s writer."""
    claimants = []
    for kind in GROUP_KINDS:
        suffix = f"_{kind}"
        if not (role.startswith("lgm_") and role.endswith(suffix)) or len(role) <= len("lgm_") + len(suffix):
            continue
        schema = f"tenant_{role[len('lgm_') : -len(suffix)]}"
        used = conn.execute(
            sa.text(
                "SELECT EXISTS (SELECT 1 FROM pg_namespace n, aclexplode(n.nspacl) a "
                "WHERE n.nspname = :s AND a.grantee = to_regrole(:r) AND a.privilege_type = 'USAGE')"
            ),
            {"s": schema, "r": role},
        ).scalar()
        if used:
            claimants.append((schema, kind))
    return claimants


def carry_legacy_groups(conn: Connection, tenant: Tenant) -> list[str]:
    """Migration 12: move the members of the tenant's ``lgm_<key>_<kind>`` groups to this database's groups.

    Each legacy group with a right on this tenant's schema here loses every right on it (grants,
    default privileges; its policies were replaced by the new groups'), its direct members join
    the new group of the same kind, and it is dropped once no database uses it (until then its
    members keep their rights elsewhere). A legacy name two tenants of this database share
    (``lgm_spx_crm_writer``: ``spx``'s CRM group, ``spx_crm``'s writers) cannot tell whose member a
    login was: its members are carried to neither and named in the log for an admin to grant.
    Returns one line per change.
    """
    names = groups(conn, tenant)
    schema = quote_ident(conn, tenant.schema)
    said: list[str] = []
    for kind, new in names.by_kind().items():
        old = legacy_group_role(tenant.key, kind)
        if conn.execute(sa.text("SELECT to_regrole(:r)"), {"r": old}).scalar() is None:
            continue
        claimants = _legacy_claimants(conn, old)
        if (tenant.schema, kind) not in claimants:
            continue  # no right here: made for another database (or never granted), not ours to move
        members = list(
            conn.execute(
                sa.text(
                    "SELECT r.rolname FROM pg_auth_members m JOIN pg_roles r ON r.oid = m.member "
                    "WHERE m.roleid = to_regrole(:g) ORDER BY 1"
                ),
                {"g": old},
            ).scalars()
        )
        ambiguous = conn.execute(
            sa.text("SELECT shobj_description(to_regrole(:r), 'pg_authid') = :c"), {"r": old, "c": _AMBIGUOUS_LEGACY}
        ).scalar()
        if len(claimants) > 1 or ambiguous:
            # Said on the role too: the other tenant's migration, after this one revoked its rights
            # here, would otherwise see a single claimant and carry the members there.
            conn.exec_driver_sql(
                f"COMMENT ON ROLE {quote_ident(conn, old)} IS {quote_literal(conn, _AMBIGUOUS_LEGACY)}"
            )
            others = (
                ", ".join(f"{s}'s {k}" for s, k in claimants if (s, k) != (tenant.schema, kind)) or "another tenant's"
            )
            line = (
                f"tenant {tenant.key}: legacy group {old} was also {others}; its members "
                f"({', '.join(members) or 'none'}) are not carried to {new}: grant them the right group by hand"
            )
            log.warning(line)
            said.append(line)
        else:
            for member in members:
                conn.exec_driver_sql(f"GRANT {quote_ident(conn, new)} TO {quote_ident(conn, member)}")
                said.append(f"tenant {tenant.key}: {member} moved from {old} to {new}")
        q = quote_ident(conn, old)
        for statement in (
            f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {q}",
            f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {q}",
            f"REVOKE ALL ON ALL FUNCTIONS IN SCHEMA {schema} FROM {q}",
            f"REVOKE ALL ON SCHEMA {schema} FROM {q}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON TABLES FROM {q}",
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA {schema} REVOKE ALL ON SEQUENCES FROM {q}",
        ):
            conn.exec_driver_sql(statement)
        # Another database (or another tenant here) may still use it: then it stays until that one migrates.
        savepoint = conn.begin_nested()
        try:
            conn.exec_driver_sql(f"DROP ROLE {q}")
        except sa.exc.DBAPIError:
            savepoint.rollback()
        else:
            savepoint.commit()
            said.append(f"tenant {tenant.key}: legacy group {old} dropped")
    for line in said:
        log.info(line)
    return said


def _is_member(conn: Connection, login: str, group: str, *, directly: bool = False) -> bool:
    if directly:
        sql = (
            "SELECT EXISTS (SELECT 1 FROM pg_auth_members m "
            "WHERE m.member = to_regrole(:l) AND m.roleid = to_regrole(:g))"
        )
    else:
        sql = "SELECT CASE WHEN to_regrole(:g) IS NOT NULL THEN pg_has_role(:l, :g, 'MEMBER') ELSE false END"
    return bool(conn.execute(sa.text(sql), {"l": login, "g": group}).scalar())


def _bind_to_branches(conn: Connection, tenant: Tenant, login: str, location_ids: Sequence[str]) -> list[str]:
    """Make ``login`` a branch reader of ``location_ids`` only (an empty list: a tenant-wide reader).

    Returns one line per change.
    """
    role = quote_ident(conn, login)
    names = groups(conn, tenant)
    said: list[str] = []
    scoped = conn.execution_options(**tenant_options(tenant))
    before = sorted(
        scoped.execute(sa.select(branch_logins.c.location_id).where(branch_logins.c.login == login)).scalars()
    )
    wanted = list(dict.fromkeys(location_ids))
    scoped.execute(branch_logins.delete().where(branch_logins.c.login == login))
    if before and sorted(wanted) != before:
        said.append(f"no longer bound to {', '.join(before)}")
    if not wanted:
        if _is_member(conn, login, names.branch_reader, directly=True):
            conn.exec_driver_sql(f"REVOKE {quote_ident(conn, names.branch_reader)} FROM {role}")
            said.append(f"left group {names.branch_reader}")
        if not _is_member(conn, login, names.reader, directly=True):
            conn.exec_driver_sql(f"GRANT {quote_ident(conn, names.reader)} TO {role}")
            said.append(f"joined group {names.reader} (reads every branch of {tenant.schema})")
        return said
    for group in names.tenant_wide:
        if _is_member(conn, login, group, directly=True):
            conn.exec_driver_sql(f"REVOKE {quote_ident(conn, group)} FROM {role}")
            said.append(f"left group {group}")
    # A tenant-wide group reaches tables no branch policy covers (raw_jobs, raw_customers), and
    # the owner is never filtered: either would make the branch bound void.
    reaching = [g for g in names.tenant_wide if _is_member(conn, login, g)]
    owner = conn.execute(
        sa.text(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE n.nspname = :s AND (pg_has_role(:l, n.nspowner, 'MEMBER') "
            "OR (c.oid IS NOT NULL AND pg_has_role(:l, c.relowner, 'MEMBER'))))"
        ),
        {"s": tenant.schema, "l": login},
    ).scalar()
    if reaching or owner:
        through = ", ".join(reaching) if reaching else f"ownership in schema {tenant.schema}"
        raise AccessError(f"login {login!r} reads every branch through {through}; refusing to bind it to a branch")
    if not _is_member(conn, login, names.branch_reader, directly=True):
        conn.exec_driver_sql(f"GRANT {quote_ident(conn, names.branch_reader)} TO {role}")
        said.append(f"joined group {names.branch_reader}")
    scoped.execute(branch_logins.insert(), [{"login": login, "location_id": loc} for loc in wanted])
    if sorted(wanted) != before:
        said.append(f"bound to {', '.join(wanted)} (reads only their rows)")
    return said


def check_locations(tenant: Tenant, location_ids: Sequence[str]) -> None:
    """Refuse a location id the tenants file does not configure, naming the ones it does."""
    unknown = [loc for loc in location_ids if loc not in tenant.location_ids]
    if unknown:
        raise AccessError(
            f"tenant {tenant.key} has no location {', '.join(unknown)}; configured: {', '.join(tenant.location_ids)}"
        )


def grant_reader(
    engine: Engine,
    tenant: Tenant,
    login: str,
    password: str,
    location_ids: Sequence[str] = (),
    *,
    replace: bool = False,
) -> list[str]:
    """Create (or update) LOGIN role ``login``: a tenant-wide reader, or one bound to ``location_ids``.

    Re-running on a login this command created sets the password and the scope again: other
    branches, or tenant-wide when none are given. A login it did not create (the CRM's own, a
    person's) is refused unless ``replace``: its password would be replaced and its tenant-wide
    groups revoked, which only its owner may decide. Returns one line per change. Only a SCRAM
    verifier computed client-side (libpq's ``PQencryptPasswordConn``) is sent to the server, so the
    clear password appears in no statement, server log or error message.
    """
    if not _LOGIN_RE.match(login) or login.startswith("pg_") or login.startswith("lgm_"):
        raise AccessError(f"login {login!r} must match {_LOGIN_RE.pattern} and not start with pg_/lgm_")
    if not password:
        raise AccessError("password must not be empty")
    check_locations(tenant, location_ids)
    with engine.begin() as conn:
        existing = conn.execute(
            sa.text(
                "SELECT rolsuper, rolcreaterole, rolbypassrls, rolcanlogin, "
                "shobj_description(oid, 'pg_authid') AS comment FROM pg_roles WHERE rolname = :r"
            ),
            {"r": login},
        ).one_or_none()
        if existing is not None and (
            existing.rolsuper or existing.rolcreaterole or existing.rolbypassrls or not existing.rolcanlogin
        ):
            raise AccessError(f"role {login!r} exists and is not a plain login role; refusing to alter it")
        ours = existing is not None and existing.comment == READER_LOGIN_COMMENT
        if existing is not None and not ours and not replace:
            raise AccessError(
                f"login {login!r} exists and was not created by grant-reader; its password and grants stay "
                "as they are (pass --replace to replace its password and scope)"
            )
        driver = conn.connection.driver_connection
        verifier = driver.pgconn.encrypt_password(  # type: ignore[union-attr]
            password.encode(), login.encode(), b"scram-sha-256"
        ).decode()
        verb = "ALTER" if existing is not None else "CREATE"
        role = quote_ident(conn, login)
        # Plain driver SQL: the verifier's ':' must not be read as a SQLAlchemy bind parameter.
        conn.exec_driver_sql(f"{verb} ROLE {role} LOGIN PASSWORD {quote_literal(conn, verifier)}")
        said = [f"password of existing login {login} replaced" if existing is not None else f"login {login} created"]
        if not ours:
            conn.exec_driver_sql(f"COMMENT ON ROLE {role} IS {quote_literal(conn, READER_LOGIN_COMMENT)}")
            if existing is not None:
                said.append(f"{login} is now managed by grant-reader (comment was {existing.comment!r})")
        said += _bind_to_branches(conn, tenant, login, location_ids)
    return said
