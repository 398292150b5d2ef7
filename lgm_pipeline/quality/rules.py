"""The validation rules as pandera schemas: the single definition of each rule.

The old system's five rules, plus two that keep booked work visible (a job type SmartMoving added,
a truck job without its addresses). A *blocking* rule failing for a row means the journey cannot
be placed (no job identity, no branch, no CRM stage): the row goes to quarantine with its reasons.
A *warning* rule flags the row (``dq_flags``) and the journey is stored. The asset checks report
both, per rule. A rule may apply to some rows only (``applies_to``), e.g. booked work.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pandas as pd
import pandera.pandas as pa

from lgm_pipeline.domain.mappings import JOB_TYPES, STATUS_MAPPING
from lgm_pipeline.tenants import Tenant
from lgm_pipeline.transform.journeys import Readings, custom_job_types

E164_NANP = r"^\+1[2-9]\d{2}[2-9]\d{6}(;ext=\d{1,6})?$"
PLAUSIBLE_EMAIL = r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$"
NOT_BLANK = r"\S"


CONTACT_COLUMNS = frozenset({"customer_name", "customer_phone", "customer_email", "name", "phone", "email"})
WIDE_CHECK_COLUMNS = {
    "estimated_cost_present_when_booked": "estimated_cost",
    "truck_job_has_its_addresses": "addresses",
    "name_and_a_phone_or_email": "name",
    "named_branch_is_mapped": "branch_name",
}


#: A blocking rule's check turns ERROR when it quarantines more than this share of the rows it checked.
MAX_QUARANTINE_SHARE = 0.05

#: Rules about rows that belong to no branch partition (a SmartMoving branch the tenants file does not
#: map): checked once per date on ``smartmoving_jobs``, not in every branch partition of the date.
DATE_LEVEL_RULES = frozenset({"branch_mapping"})


class Severity(StrEnum):
    BLOCKING = "blocking"
    WARNING = "warning"


@dataclass(frozen=True)
class Rule:
    name: str
    severity: Severity
    description: str
    schema: pa.DataFrameSchema
    applies_to: Callable[[pd.DataFrame], pd.Series] | None = None  # rows the rule checks; None: all
    #: The normalization flags the rows itself (``dq_flags`` under the rule's name, naming the field and the
    #: value it could not read); the schema finds those rows and their own reasons are reported.
    flagged_upstream: bool = False


def _booked(frame: pd.DataFrame) -> pd.Series:
    return frame["booked"].fillna(False).astype(bool)


def _missing_required_addresses(frame: pd.DataFrame) -> pd.Series:
    """True where a truck job lacks a pickup or drop-off its type cannot do without."""
    requires = frame["job_type"].map(lambda code: JOB_TYPES[code].requires if code in JOB_TYPES else ())
    needs_pickup = requires.map(lambda roles: "pickup" in roles).astype(bool)
    needs_dropoff = requires.map(lambda roles: "dropoff" in roles).astype(bool)
    truck = frame["needs_truck"].fillna(False).astype(bool)
    return truck & ((needs_pickup & frame["pickup_address"].isna()) | (needs_dropoff & frame["dropoff_address"].isna()))


def rules_for(tenant: Tenant) -> list[Rule]:
    known_types = sorted(set(JOB_TYPES) | set(custom_job_types(tenant)))
    return [
        Rule(
            "customer_contact",
            Severity.WARNING,
            "Booked work: customer name, phone and email present and well-formed (phone: 10-digit NANP "
            "after normalization, extension allowed; email: a plausible address).",
            pa.DataFrameSchema(
                {
                    "customer_name": pa.Column(nullable=False, checks=pa.Check.str_contains(NOT_BLANK)),
                    "customer_phone": pa.Column(nullable=False, checks=pa.Check.str_matches(E164_NANP)),
                    "customer_email": pa.Column(nullable=False, checks=pa.Check.str_matches(PLAUSIBLE_EMAIL)),
                },
                name="customer_contact",
            ),
            applies_to=_booked,
        ),
        Rule(
            "job_fields",
            Severity.BLOCKING,
            "Job number, service date and a job type present (a type SmartMoving added is a warning, below).",
            pa.DataFrameSchema(
                {
                    "job_number": pa.Column(nullable=False, checks=pa.Check.str_contains(NOT_BLANK)),
                    "service_date": pa.Column(nullable=False),
                    "job_type": pa.Column(nullable=False),
                },
                name="job_fields",
            ),
        ),
        Rule(
            "job_type_known",
            Severity.WARNING,
            "The job type is SmartMoving's or named in tenants.yaml; an unknown one stays a journey, named "
            "'Unknown (<code>)' with needs_truck unknown, until it is named.",
            pa.DataFrameSchema(
                {"job_type": pa.Column(nullable=True, checks=pa.Check.isin(known_types))}, name="job_type_known"
            ),
        ),
        Rule(
            "branch_mapping",
            Severity.BLOCKING,
            "The SmartMoving branch name maps to a branch configured for the tenant.",
            pa.DataFrameSchema(
                {"location_id": pa.Column(nullable=False, checks=pa.Check.isin(tenant.location_ids))},
                name="branch_mapping",
            ),
        ),
        Rule(
            "financials",
            Severity.WARNING,
            "Estimated cost (this job's charges before tax) present for booked work; no amount negative.",
            pa.DataFrameSchema(
                {
                    "estimated_cost": pa.Column(nullable=True, checks=pa.Check.ge(0)),
                    "actual_cost": pa.Column(nullable=True, checks=pa.Check.ge(0)),
                },
                checks=[
                    pa.Check(
                        lambda df: ~_booked(df) | df["estimated_cost"].notna(),
                        name="estimated_cost_present_when_booked",
                    )
                ],
                name="financials",
            ),
        ),
        Rule(
            "addresses",
            Severity.WARNING,
            "A booked truck job has the addresses its type needs (a move: pickup and drop-off; storage "
            "in: pickup; storage out: drop-off); blank addresses do not count.",
            pa.DataFrameSchema(
                checks=[pa.Check(lambda df: ~_missing_required_addresses(df), name="truck_job_has_its_addresses")],
                name="addresses",
            ),
            applies_to=_booked,
        ),
        Rule(
            Readings.RULE,
            Severity.WARNING,
            "Amounts and quantities SmartMoving sent are readable (a number or a numeric text the money "
            "columns can hold); one that is not is left empty in its column, never read as 'no amount', and "
            "named in dq_flags with the field and the value (estimatedCharges[1].totalCost: unreadable 'TBD').",
            pa.DataFrameSchema(
                {
                    "dq_flags": pa.Column(
                        object,
                        checks=pa.Check(
                            lambda flags: not any(f.get("rule") == Readings.RULE for f in flags or []),
                            element_wise=True,
                            name="every_value_read",
                        ),
                    )
                },
                name=Readings.RULE,
            ),
            flagged_upstream=True,
        ),
        Rule(
            "status_mapping",
            Severity.BLOCKING,
            "The SmartMoving opportunity status maps to a CRM journey stage.",
            pa.DataFrameSchema(
                {"smartmoving_status": pa.Column(nullable=False, checks=pa.Check.isin(sorted(STATUS_MAPPING)))},
                name="status_mapping",
            ),
        ),
    ]


def _reachable(frame: pd.DataFrame) -> pd.Series:
    named = frame["name"].fillna("").astype(str).str.contains(NOT_BLANK)
    phone = frame["phone"].fillna("").astype(str).str.match(E164_NANP)
    email = frame["email"].fillna("").astype(str).str.match(PLAUSIBLE_EMAIL)
    return named & (phone | email)


def partition_rules_for(tenant: Tenant) -> list[Rule]:
    """The rules a (date, branch) partition of journeys reports as its checks: about its own rows."""
    return [rule for rule in rules_for(tenant) if rule.name not in DATE_LEVEL_RULES]


def lead_rules_for(tenant: Tenant) -> list[Rule]:
    return [
        Rule(
            "lead_contact",
            Severity.BLOCKING,
            "A name and a way to reach the person: an E.164 phone or a plausible email.",
            pa.DataFrameSchema(checks=[pa.Check(_reachable, name="name_and_a_phone_or_email")], name="lead_contact"),
        ),
        Rule(
            "lead_branch_mapping",
            Severity.WARNING,
            "A branch the lead names maps to one of the tenant's (a lead may name none).",
            pa.DataFrameSchema(
                checks=[
                    pa.Check(
                        lambda df: df["branch_name"].isna() | df["location_id"].isin(tenant.location_ids),
                        name="named_branch_is_mapped",
                    )
                ],
                name="lead_branch_mapping",
            ),
        ),
        Rule(
            "probable_duplicate",
            Severity.WARNING,
            "No earlier lead of the last 30 days has the same phone or email (else: the same household again).",
            pa.DataFrameSchema(
                {"probable_duplicate_of": pa.Column(nullable=True, checks=pa.Check(lambda s: s.isna()))},
                name="probable_duplicate",
            ),
        ),
    ]


@dataclass
class RuleResult:
    rule: Rule
    failing_rows: int
    examples: list[dict[str, Any]] = field(default_factory=list)
    rows_checked: int = 0


@dataclass
class ValidationOutcome:
    frame: pd.DataFrame  # input rows + dq_flags (warnings) + quarantine_reasons (blocking, else None)
    results: list[RuleResult]

    @property
    def quarantined(self) -> int:
        return int(self.frame["quarantine_reasons"].notna().sum())


def _short(value: Any) -> Any:
    if value is None or (isinstance(value, float) and value != value):
        return None
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _masked(column: str, value: Any) -> Any:
    """Examples go to Dagster metadata, which every UI user sees: no customer contact details there."""
    if column in CONTACT_COLUMNS and isinstance(value, str) and value:
        return f"{value[0]}*** ({len(value)} chars)"
    return value


def _failures(rule: Rule, frame: pd.DataFrame) -> dict[Any, list[dict[str, Any]]]:
    """Row index -> the reasons this rule fails it (one per column and check)."""
    try:
        rule.schema.validate(frame, lazy=True)
        return {}
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    reasons: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    seen: set[tuple[Any, str, str]] = set()
    for case in cases.dropna(subset=["index"]).itertuples(index=False):
        check = str(case.check)
        # A dataframe-wide check reports every column of a failing row; name the column it is about.
        column = WIDE_CHECK_COLUMNS.get(check, str(case.column))
        if (case.index, column, check) in seen:
            continue
        seen.add((case.index, column, check))
        reasons[case.index].append(
            {"rule": rule.name, "column": column, "check": check, "value": _short(frame.at[case.index, column])}
        )
    return reasons


def _examples(frame: pd.DataFrame, failures: dict[Any, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    # Which record, in the words its users know it by: a job number, or SmartMoving's lead id.
    label = "job_number" if "job_number" in frame.columns else "smartmoving_lead_id"
    return [
        {
            label: _short(frame.at[i, label]),
            "column": r["column"],
            "check": r["check"],
            "value": _masked(r["column"], r["value"]),
        }
        for i, reasons in list(failures.items())[:5]
        for r in reasons[:1]
    ]


def validate_journeys(frame: pd.DataFrame, tenant: Tenant) -> ValidationOutcome:
    """Apply every journey rule; never drops a row."""
    return validate(frame, rules_for(tenant))


def validate_leads(frame: pd.DataFrame, tenant: Tenant) -> ValidationOutcome:
    """Apply every lead rule; never drops a row."""
    return validate(frame, lead_rules_for(tenant))


def validate(frame: pd.DataFrame, rules: list[Rule]) -> ValidationOutcome:
    """Apply ``rules``; never drops a row."""
    frame = frame.copy()
    flags: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    blocking: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    results: list[RuleResult] = []
    upstream = frame["dq_flags"] if "dq_flags" in frame.columns else pd.Series([[]] * len(frame), index=frame.index)
    for rule in rules:
        checked = frame[rule.applies_to(frame)] if rule.applies_to and len(frame) else frame
        failures = _failures(rule, checked) if len(checked) else {}
        if rule.flagged_upstream:
            # Already in the row's flags: report the normalization's own reasons, add nothing.
            failures = {i: [f for f in upstream.at[i] if f.get("rule") == rule.name] for i in failures}
            results.append(RuleResult(rule, len(failures), _examples(frame, failures), rows_checked=len(checked)))
            continue
        target = blocking if rule.severity is Severity.BLOCKING else flags
        for index, reasons in failures.items():
            target[index].extend(reasons)
        results.append(RuleResult(rule, len(failures), _examples(frame, failures), rows_checked=len(checked)))
    frame["dq_flags"] = [[*(upstream.at[i] or []), *flags.get(i, [])] for i in frame.index]
    frame["quarantine_reasons"] = [blocking.get(i) or None for i in frame.index]
    return ValidationOutcome(frame, results)
