"""The simulated SmartMoving account: customers, opportunities and jobs, generated and evolved.

Records are stored as plain dicts already in the API's shape, so ``patch`` can inject any raw
value (an unknown status, a negative total) and the HTTP layer serves it back untouched. Keys
starting with ``_`` are private bookkeeping and never rendered.

Each service date is generated on first use from ``Random(seed, date)`` alone, so a date holds
the same records whichever order dates are asked in. Generated records only spill onto the next
day (multi-day moves, a second opportunity), which is why a query for day D also generates D-1.
Rarer oddities (TBD jobs, odd job types, closing a day) draw from generators keyed by the record's
id instead, so introducing them left every record of the day's sequence as it was.

Each change the world makes (never the generation of a date: those records were always there) is
handed to ``World.on_change`` as the body of the webhook SmartMoving would send for it.
"""

from __future__ import annotations

import copy
import datetime as dt
import random
import threading
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from lgm_pipeline.simulator.config import SimulatorConfig, check_date_filter
from lgm_pipeline.simulator.reference_data import (
    CITIES,
    DEFAULT_UNKNOWN_BRANCH,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    MOVE_SIZES,
    ODD_NAMES,
    REFERRAL_SOURCES,
    SALES_REPS,
    TAX_RATES,
    City,
    city_for_branch,
)
from lgm_pipeline.smartmoving.enums import JobType, OpportunityStatus, OpportunityType, PhoneType
from lgm_pipeline.tenants import TenantConfigError, load_tenants
from lgm_pipeline.tenants.timezones import zone

Record = dict[str, Any]
# A SmartMoving webhook's JSON body: kebab-case keys, e.g. {"event-type": "opportunity-deleted", "opportunity-id": ...}.
Event = dict[str, Any]

S = OpportunityStatus
LEAD_STATUSES = frozenset({S.NEW_LEAD, S.LEAD_IN_PROGRESS, S.OPPORTUNITY})
_UNPRICED_STATUSES = LEAD_STATUSES | {S.BAD_LEAD}
_PROGRESSION = {
    S.NEW_LEAD: S.LEAD_IN_PROGRESS,
    S.LEAD_IN_PROGRESS: S.OPPORTUNITY,
    S.OPPORTUNITY: S.BOOKED,
    S.BOOKED: S.COMPLETED,
    S.COMPLETED: S.CLOSED,
}
_STATUS_WEIGHTS = {
    S.NEW_LEAD: 5,
    S.LEAD_IN_PROGRESS: 4,
    S.OPPORTUNITY: 7,
    S.BOOKED: 62,
    S.COMPLETED: 8,
    S.CLOSED: 5,
    S.CANCELLED: 4,
    S.LOST: 4,
    S.BAD_LEAD: 1,
}
_JOB_TYPE_WEIGHTS = {
    JobType.MOVING: 60,
    JobType.MOVING_AND_PACKING: 15,
    JobType.COMMERCIAL: 5,
    JobType.LOAD_ONLY: 4,
    JobType.LABOR_ONLY: 4,
    JobType.UNLOAD_ONLY: 3,
    JobType.JUNK_REMOVAL: 3,
    JobType.INNER_HOUSE: 2,
    JobType.STORAGE_IN_BOUND: 2,
    JobType.STORAGE_OUT_BOUND: 2,
}
_SINGLE_ADDRESS_TYPES = frozenset(
    {JobType.PACKING, JobType.JUNK_REMOVAL, JobType.INNER_HOUSE, JobType.LABOR_ONLY, JobType.LOAD_ONLY}
)
# Job fields served only by /opportunities/{id}/jobs, not inside opportunity details.
TIMELINE_FIELDS = ("startTimeUtc", "endTimeUtc", "completedAtUtc", "confirmedAtUtc", "closedAtUtc")
_UNKNOWN_BRANCH_SHARE = 0.01
_LEADS_PER_CUSTOMER = 0.4  # new enquiries a day per customer served a day
_REPEAT_LEAD_SHARE = 0.05
_REPEAT_LEAD_DAYS = 30  # a repeat enquiry comes within the month
_LEAD_NOTES = (
    "Call after 5pm",
    "piano + 2 bikes",
    "needs storage 2 weeks",
    "3rd floor, no elevator",
    "  wants quote by email  ",
    "Elevator booked 9-12",
    "",
)
_LEAD_STATUS_WEIGHTS = {0: 80, 1: 17, 50: 3}
# Rarer oddities seen in the live account. Each draws from its own Random keyed by the record's id,
# never from the day's generator, so adding one leaves every other generated record as it was.
_TBD_SHARE = 0.02  # a storage delivery booked with its date still to be decided (jobDate null)
_TBD_OPPORTUNITY_TYPES = frozenset({JobType.MOVING, JobType.MOVING_AND_PACKING, JobType.STORAGE_IN_BOUND})
_TBD_STATUSES = frozenset({S.BOOKED, S.COMPLETED, S.CLOSED})
_CUSTOM_TYPE_SHARE = 0.005
_CUSTOM_TYPES = (101, 102)  # a company's own Custom01/Custom02
_UNDOCUMENTED_TYPE_SHARE = 0.003
_UNDOCUMENTED_TYPE = 13  # served by the live API, absent from the vendor's enum
_CLOSE_SHARE = 0.7  # completed work the office closes on a given later day
_ORDINAL_1970 = dt.date(1970, 1, 1).toordinal()
_ADDED_QUOTE_BASE = 900_000_000


class NotFound(KeyError):
    """An id the world does not hold; the message is the API's wording."""

    def __str__(self) -> str:
        return str(self.args[0])


def to_int_date(day: dt.date) -> int:
    return day.year * 10000 + day.month * 100 + day.day


def from_int_date(value: int) -> dt.date:
    return dt.date(value // 10000, value // 100 % 100, value % 100)


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: float) -> float:
    return round(value + 0.0, 2)  # + 0.0 turns -0.0 into 0.0


def _postal_code(rng: random.Random, city: City) -> str:
    return (
        f"{rng.choice(city.postal_prefixes)} {rng.randint(0, 9)}{rng.choice('ABCEGHJKLMNPRSTVXY')}{rng.randint(0, 9)}"
    )


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _weighted(rng: random.Random, weights: dict[Any, int]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _public(record: Record, exclude: Iterable[str] = ()) -> Record:
    skip = set(exclude)
    return {k: copy.deepcopy(v) for k, v in record.items() if not k.startswith("_") and k not in skip}


def default_branch_names() -> list[str]:
    tenants = load_tenants()
    lgm = [t for t in tenants if t.key == "lgm"] or list(tenants)
    names = [b.smartmoving_branch_name for t in lgm for b in t.branches]
    return [*names, DEFAULT_UNKNOWN_BRANCH]


class World:
    """All simulated data plus the operations that change it; every public method takes the lock."""

    def __init__(self, config: SimulatorConfig | None = None) -> None:
        self.config = config or SimulatorConfig()
        self._lock = threading.RLock()
        self.branch_names = list(self.config.branch_names or default_branch_names())
        self._branch_weights = self._weigh_branches(self.branch_names)
        self.customers: dict[str, Record] = {}
        self.opportunities: dict[str, Record] = {}
        self._customer_opps: dict[str, list[str]] = {}
        self._job_opp: dict[str, str] = {}
        self._dates_of: dict[str, set[int]] = {}
        # Two indexes, one per reading of the customers date filter (config.date_filter).
        self._by_date: dict[int, set[str]] = {}
        self._service_date_of: dict[str, int | None] = {}
        self._by_service_date: dict[int, set[str]] = {}
        self.date_filter = check_date_filter(self.config.date_filter)
        self._generated: set[int] = set()
        self.evolution_steps = 0
        self._added_quotes = 0
        self._admin_adds = 0
        reps = random.Random(f"reps:{self.config.seed}")
        self._reps = [{"id": _uuid(reps), "name": name} for name in SALES_REPS]
        self._branches = self._make_branches()
        # Leads, by the UTC date of their creation (the API's From/To filter reads that date).
        self.leads: dict[str, Record] = {}
        self._leads_by_date: dict[int, list[str]] = {}
        self._lead_days: set[int] = set()
        self._lead_contacts: dict[int, list[Record]] = {}
        # Called with each change's webhook payload, in order, with the world's lock held: a callback
        # must only queue (WebhookSender.submit does). Empty, no payload is even built.
        self.on_change: list[Callable[[Event], None]] = []

    @staticmethod
    def _weigh_branches(names: list[str]) -> list[float]:
        # Names no tenant configures (the default Kelowna) get ~1% of the work between them, as
        # in the real account where an unmapped branch shows up only now and then.
        try:
            default = default_branch_names()[:-1]
        except TenantConfigError:  # explicit branch names need no tenants file
            default = []
        known = [n for n in names if n in default]
        if not known:
            return [1.0] * len(names)
        unknown_count = len(names) - len(known)
        unknown_weight = _UNKNOWN_BRANCH_SHARE / unknown_count if unknown_count else 0.0
        known_weight = (1 - _UNKNOWN_BRANCH_SHARE) / len(known) if unknown_count else 1 / len(known)
        return [known_weight if n in default else unknown_weight for n in names]

    def _make_branches(self) -> list[Record]:
        rng = random.Random(f"branches:{self.config.seed}")
        branches = []
        for i, name in enumerate(self.branch_names):
            city = city_for_branch(name)
            street = f"{rng.randint(100, 9999)} {rng.choice(city.streets)}"
            postal = _postal_code(rng, city)
            branches.append(
                {
                    "id": _uuid(rng),
                    "name": name,
                    "phoneNumber": f"({city.area_codes[0]}) 555-01{i:02d}",
                    "dispatchLocation": {
                        "fullAddress": f"{street}, {city.name}, {city.province} {postal}",
                        "street": street,
                        "city": city.name,
                        "state": city.province,
                        "zip": postal,
                        "lat": round(city.lat + rng.uniform(-0.03, 0.03), 6),
                        "lng": round(city.lng + rng.uniform(-0.03, 0.03), 6),
                    },
                    "isPrimary": i == 0,
                }
            )
        return branches

    # ---- generation -------------------------------------------------------------------------

    def _quote_stride(self) -> int:
        per_day = max(1, self.config.customers_per_day) * 2.2
        return 1000 * max(1, -(-int(per_day) // 1000))

    def ensure_dates(self, first: dt.date, last: dt.date) -> None:
        """Generate every date a [first, last] query can see (including the day before)."""
        with self._lock:
            day = first - dt.timedelta(days=1)
            while day <= last:
                if day.toordinal() not in self._generated:
                    self._generate_day(day)
                day += dt.timedelta(days=1)

    def _generate_day(self, day: dt.date) -> None:
        self._generated.add(day.toordinal())
        rng = random.Random(f"day:{self.config.seed}:{day.toordinal()}")
        count = round(self.config.customers_per_day * rng.uniform(0.95, 1.05))
        quote = (day.toordinal() - _ORDINAL_1970) * self._quote_stride() + 100_001
        for _ in range(count):
            branch = rng.choices(self.branch_names, weights=self._branch_weights)[0]
            customer = self._new_customer(rng, city_for_branch(branch))
            status = _weighted(rng, _STATUS_WEIGHTS)
            self._new_opportunity(rng, customer, branch, day, quote, status)
            quote += 1
            if rng.random() < 0.1:
                # A second quote for the same household: storage out the next day, or a packing
                # visit booked separately on the same day.
                second_day = day + dt.timedelta(days=rng.choice((0, 1)))
                self._new_opportunity(rng, customer, branch, second_day, quote, _weighted(rng, _STATUS_WEIGHTS))
                quote += 1

    def _phone(self, rng: random.Random, city: City) -> str:
        area = rng.choice(city.area_codes)
        line = f"01{rng.randint(0, 99):02d}"
        style = rng.random()
        if style < 0.60:
            return f"({area}) 555-{line}"
        if style < 0.75:
            return f"{area}-555-{line}"
        if style < 0.85:
            return f"{area}555{line}"
        if style < 0.91:
            return f"+1 {area}.555.{line}"
        if style < 0.95:
            return f"{area}-555-{line} ext {rng.randint(1, 99)}"
        if style < 0.98:
            return f"555-{line}"
        return f"+1 ({area}) 555-{line}"

    def _email(self, rng: random.Random, name: str) -> str:
        ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
        parts = ["".join(ch for ch in p if ch.isalnum()).lower() for p in ascii_name.split()]
        local = ".".join(p for p in parts if p) or f"customer{rng.randint(100, 99999)}"
        style = rng.random()
        if style < 0.05:
            local = local.upper()
        elif style < 0.25:
            local = f"{local}{rng.randint(1, 99)}"
        email = f"{local}@{rng.choice(EMAIL_DOMAINS)}"
        return f" {email}" if rng.random() < 0.02 else email

    def _address(self, rng: random.Random, city: City) -> str:
        number = rng.randint(10, 9999)
        street = f"{number} {rng.choice(city.streets)}"
        if rng.random() < 0.25:
            street = (
                f"{rng.randint(101, 2505)}-{street}" if rng.random() < 0.6 else f"{street} Unit {rng.randint(1, 40)}"
            )
        postal = _postal_code(rng, city)
        if rng.random() < 0.03:
            return f"{street}, {city.name}"
        return f"{street}, {city.name}, {city.province} {postal}"

    def _new_customer(self, rng: random.Random, city: City) -> Record:
        name = rng.choice(ODD_NAMES) if rng.random() < 0.04 else f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        phone: str | None = self._phone(rng, city)
        if rng.random() < 0.03:
            phone = None if rng.random() < 0.7 else ""
        email: str | None = self._email(rng, name)
        if rng.random() < 0.05:
            email = None if rng.random() < 0.7 else ""
        secondary = []
        if rng.random() < 0.15:
            secondary.append({"phoneNumber": self._phone(rng, city), "phoneType": int(rng.choice(list(PhoneType)))})
        customer: Record = {
            "id": _uuid(rng),
            "name": name,
            "phoneNumber": phone,
            "phoneType": int(PhoneType.MOBILE if rng.random() < 0.8 else rng.choice(list(PhoneType))),
            "emailAddress": email,
            "address": self._address(rng, city),
            "secondaryPhoneNumbers": secondary,
        }
        self.customers[customer["id"]] = customer
        self._customer_opps[customer["id"]] = []
        return customer

    def _charges(self, rng: random.Random, job_type: int, move_volume: int, province: str) -> list[Record]:
        crew = 2 if move_volume < 600 else rng.choice((3, 4))
        hours = round(max(2.0, move_volume / 150 + rng.uniform(-1, 2)) * 4) / 4
        rate = {2: 139.0, 3: 189.0, 4: 229.0}[crew] + rng.choice((0, 10, 20))
        labour = _money(hours * rate)
        discount = _money(labour * 0.1) if rng.random() < 0.12 else 0.0
        charges = [
            {
                "name": f"{crew} Movers & Truck",
                "chargeCategory": "Labor",
                "description": f"{hours:g} hours at ${rate:.2f}/hour",
                "subtotal": labour,
                "discountAmount": discount,
                "totalCost": _money(labour - discount),
            },
            self._flat_charge("Travel Time", "Travel", "Truck travel to and from the job", rate * 0.5),
            self._flat_charge("Fuel Surcharge", "Fuel", f"{province} fuel surcharge", rng.choice((25.0, 35.0, 45.0))),
        ]
        if job_type in (JobType.MOVING_AND_PACKING, JobType.PACKING) or rng.random() < 0.2:
            materials = _money(rng.uniform(40, 400))
            charges.append(self._flat_charge("Packing Materials", "Materials", "Boxes, tape, paper", materials))
        return charges

    @staticmethod
    def _flat_charge(name: str, category: str, description: str, amount: float) -> Record:
        amount = _money(amount)
        return {
            "name": name,
            "chargeCategory": category,
            "description": description,
            "subtotal": amount,
            "discountAmount": 0.0,
            "totalCost": amount,
        }

    def _price(self, rng: random.Random, opp: Record, jobs: list[Record] | None = None) -> None:
        """Give a quoted opportunity its estimate, as happens when a lead is booked.

        ``jobs`` prices only those (a job added to a priced opportunity); the total covers all.
        """
        province = city_for_branch(_branch_name(opp)).province
        volume = int(opp["moveSize"]["volume"]) if isinstance(opp.get("moveSize"), dict) else 500
        for job in opp["jobs"] if jobs is None else jobs:
            job["estimatedCharges"] = self._charges(rng, job["type"], volume, province)
        subtotal = 0.0
        for job in opp["jobs"]:
            subtotal += sum(c["totalCost"] for c in job["estimatedCharges"])
        subtotal = _money(subtotal)
        tax = _money(subtotal * TAX_RATES.get(province, 0.13))
        opp["estimatedTotal"] = {
            "subtotal": subtotal,
            "taxableAmount": subtotal,
            "tax": tax,
            "finalTotal": _money(subtotal + tax),
        }

    @staticmethod
    def _settle(rng: random.Random, opp: Record) -> None:
        """Record what the crew actually charged: the estimate, give or take an hour.

        A job without a date (storage delivery TBD) has not been worked, so it is not charged.
        """
        for job in opp["jobs"]:
            if not _dated(job):
                continue
            actual = copy.deepcopy(job["estimatedCharges"])
            for charge in actual[:1]:
                factor = rng.uniform(0.85, 1.25)
                charge["subtotal"] = _money(charge["subtotal"] * factor)
                charge["totalCost"] = _money(charge["subtotal"] - charge["discountAmount"])
            job["actualCharges"] = actual
            job["confirmed"] = True

    def _new_opportunity(
        self, rng: random.Random, customer: Record, branch_name: str, day: dt.date, quote: int, status: int
    ) -> Record:
        city = city_for_branch(branch_name)
        branch = next((b for b in self._branches if b["name"] == branch_name), None)
        job_type = _weighted(rng, _JOB_TYPE_WEIGHTS)
        size_name, size_desc, volume = MOVE_SIZES[-1] if job_type == JobType.COMMERCIAL else rng.choice(MOVE_SIZES[:-1])
        destination_city = city
        opportunity_type = OpportunityType.LOCAL
        if job_type in (JobType.MOVING, JobType.MOVING_AND_PACKING) and rng.random() < 0.12:
            destination_city = rng.choice([c for c in CITIES.values() if c.name != city.name])
            same_province = destination_city.province == city.province
            opportunity_type = OpportunityType.INTRASTATE if same_province else OpportunityType.INTERSTATE
        created = dt.datetime.combine(
            day - dt.timedelta(days=rng.randint(1, 75)), dt.time(rng.randint(13, 23), rng.randint(0, 59)), dt.UTC
        )
        opp: Record = {
            "id": _uuid(rng),
            "quoteNumber": quote,
            "customer": None,  # rendered from the customer record, keeping this key's position
            "branch": {"name": branch_name, "phoneNumber": branch["phoneNumber"] if branch else None},
            "type": int(job_type),
            "opportunityType": int(opportunity_type),
            "serviceDate": to_int_date(day),
            "status": int(status),
            "leadStatus": int(status) if status in LEAD_STATUSES else None,
            "moveSize": {"name": size_name, "description": size_desc, "volume": volume},
            "volume": volume,
            "weight": volume * 7,
            "estimatedTotal": None,
            "salesAssignee": None if status == S.NEW_LEAD and rng.random() < 0.5 else dict(rng.choice(self._reps)),
            "referralSource": rng.choice(REFERRAL_SOURCES) if rng.random() < 0.9 else None,
            "createdAtUtc": _iso(created),
            "_created": created,
            "jobs": [],
            "_customer_id": customer["id"],
            "_tz": city.timezone,
        }
        job_days = [(day, job_type)]
        if rng.random() < 0.07:
            # A multi-day move: packing (or loading) the first day, the move itself the next.
            first_type = JobType.PACKING if rng.random() < 0.6 else JobType.LOAD_ONLY
            job_days = [(day, first_type), (day + dt.timedelta(days=1), job_type)]
        origin = customer["address"] if rng.random() < 0.8 else self._address(rng, city)
        destination = self._address(rng, destination_city)
        booked = status in (S.BOOKED, S.COMPLETED, S.CLOSED)
        for n, (job_day, jtype) in enumerate(job_days, start=1):
            if rng.random() < 0.015:
                addresses: list[str] = []
            elif jtype in _SINGLE_ADDRESS_TYPES:
                addresses = [origin]
            elif jtype == JobType.UNLOAD_ONLY:
                addresses = [destination]
            elif rng.random() < 0.05:
                addresses = [origin, self._address(rng, city), destination]
            else:
                addresses = [origin, destination]
            self._add_job(
                rng, opp, f"{quote}-{n}", to_int_date(job_day), jtype, addresses, lambda: booked and rng.random() < 0.85
            )
        if status not in _UNPRICED_STATUSES:
            self._price(rng, opp)
        if status in (S.COMPLETED, S.CLOSED):
            self._settle(rng, opp)
        self._add_oddities(opp, destination)
        for job in opp["jobs"]:
            self._stamp(opp, job)
        self.opportunities[opp["id"]] = opp
        self._customer_opps[customer["id"]].append(opp["id"])
        self._reindex(opp["id"])
        return opp

    def _add_job(
        self,
        rng: random.Random,
        opp: Record,
        number: str,
        job_date: int | None,
        job_type: int,
        addresses: list[str],
        confirmed: Callable[[], bool],
    ) -> Record:
        """A job of ``opp``; ``confirmed`` is drawn after the id, as generated worlds always did."""
        job: Record = {
            "id": _uuid(rng),
            "jobNumber": number,
            "jobDate": job_date,
            "type": int(job_type),
            "confirmed": confirmed(),
            "jobAddresses": addresses,
            "estimatedCharges": [],
            "actualCharges": [],
            "_start_minute": rng.choice(range(7 * 60, 13 * 60 + 1, 30)),
            "_minutes": rng.choice(range(180, 600, 15)),
        }
        opp["jobs"].append(job)
        self._job_opp[job["id"]] = opp["id"]
        return job

    def _add_oddities(self, opp: Record, destination: str) -> None:
        """Odd job types and a TBD storage delivery, drawn after the day's generator is done with
        ``opp``; the type of a job changes only now because pricing and addresses depend on it."""
        seed = self.config.seed
        for job in opp["jobs"]:
            draw = random.Random(f"jobtype:{seed}:{job['id']}")
            roll = draw.random()
            if roll < _CUSTOM_TYPE_SHARE:
                job["type"] = draw.choice(_CUSTOM_TYPES)
            elif roll < _CUSTOM_TYPE_SHARE + _UNDOCUMENTED_TYPE_SHARE:
                job["type"] = _UNDOCUMENTED_TYPE
        if opp["type"] not in _TBD_OPPORTUNITY_TYPES or opp["status"] not in _TBD_STATUSES:
            return
        rng = random.Random(f"tbd:{seed}:{opp['id']}")
        if rng.random() >= _TBD_SHARE:
            return
        number = f"{opp['quoteNumber']}-{len(opp['jobs']) + 1}"
        job = self._add_job(rng, opp, number, None, JobType.STORAGE_OUT_BOUND, [destination], lambda: False)
        if opp.get("estimatedTotal") is not None:
            self._price(rng, opp, [job])

    @staticmethod
    def _stamp(opp: Record, job: Record) -> None:
        """(Re)derive the job's timeline from its date and the opportunity's status."""
        job_date = job.get("jobDate")
        if not isinstance(job_date, int):
            return
        try:
            start_local = dt.datetime.combine(from_int_date(job_date), dt.time()) + dt.timedelta(
                minutes=job.get("_start_minute", 480)
            )
        except ValueError:
            return
        start = start_local.replace(tzinfo=zone(opp.get("_tz", "America/Toronto")))
        end = start + dt.timedelta(minutes=job.get("_minutes", 240))
        created = opp["_created"]
        status = opp.get("status")
        job["startTimeUtc"] = _iso(start)
        job["endTimeUtc"] = _iso(end)
        job["confirmedAtUtc"] = _iso(min(created + dt.timedelta(days=1), start)) if job.get("confirmed") else None
        job["completedAtUtc"] = _iso(end) if status in (S.COMPLETED, S.CLOSED) else None
        job["closedAtUtc"] = _iso(end + dt.timedelta(days=1, hours=2)) if status == S.CLOSED else None

    def _reindex(self, opp_id: str) -> None:
        opp = self.opportunities[opp_id]
        dates = {opp.get("serviceDate")} | {j.get("jobDate") for j in opp.get("jobs", []) if isinstance(j, dict)}
        new = {d for d in dates if _is_int_date(d)}
        old = self._dates_of.get(opp_id, set())
        for d in old - new:
            self._by_date[d].discard(opp_id)
        for d in new - old:
            self._by_date.setdefault(d, set()).add(opp_id)
        self._dates_of[opp_id] = new
        service_date = opp.get("serviceDate")
        new_service = service_date if _is_int_date(service_date) else None
        old_service = self._service_date_of.get(opp_id)
        if old_service != new_service:
            if old_service is not None:
                self._by_service_date[old_service].discard(opp_id)
            if new_service is not None:
                self._by_service_date.setdefault(new_service, set()).add(opp_id)
        self._service_date_of[opp_id] = new_service

    def _date_index(self) -> dict[int, set[str]]:
        return self._by_service_date if self.date_filter == "service_date" else self._by_date

    def set_date_filter(self, value: str) -> None:
        """Switch the customers date filter's reading at run time (see SimulatorConfig.date_filter)."""
        with self._lock:
            self.date_filter = check_date_filter(value)

    # ---- reads ------------------------------------------------------------------------------

    def branches(self) -> list[Record]:
        with self._lock:
            return copy.deepcopy(self._branches)

    def opportunity_ids_on(self, day: dt.date) -> list[str]:
        with self._lock:
            self.ensure_dates(day, day)
            ids = self._date_index().get(to_int_date(day), set())
            return [i for i in self.opportunities if i in ids]

    def list_customers(
        self,
        first: int | None,
        last: int | None,
        include_opportunities: bool,
        offset: int = 0,
        limit: int | None = None,
    ) -> tuple[int, list[Record]]:
        """(total, rows[offset:offset+limit]) of the customers with an opportunity touching
        [first, last] (yyyyMMdd; None = open), ordered by name then id. "Touching" follows
        ``date_filter``: any of its dates ("job_date") or its serviceDate alone ("service_date").

        Only the requested slice is rendered, so paging a year-long range stays cheap.
        """
        with self._lock:
            if first is None and last is None:
                touching = {cid: list(opps) for cid, opps in self._customer_opps.items()}
            else:
                lo = first if first is not None else 0
                hi = last if last is not None else 99_999_999
                opp_ids = set().union(*(ids for d, ids in self._date_index().items() if lo <= d <= hi))
                touching = {}
                for opp_id in self.opportunities:
                    if opp_id in opp_ids:
                        touching.setdefault(self.opportunities[opp_id]["_customer_id"], []).append(opp_id)
            order = sorted(touching, key=lambda cid: (_sort_name(self.customers[cid].get("name")), cid))
            rows = []
            for cid in order[offset : None if limit is None else offset + limit]:
                row = _public(self.customers[cid])
                if include_opportunities:
                    row["opportunities"] = [self._summary(self.opportunities[o]) for o in touching[cid]]
                rows.append(row)
            return len(order), rows

    @staticmethod
    def _summary(opp: Record) -> Record:
        quote = opp.get("quoteNumber")
        jobs = [j for j in opp.get("jobs", []) if isinstance(j, dict)]
        return {
            "id": opp.get("id"),
            "quoteNumber": None if quote is None else str(quote),
            "status": opp.get("status"),
            "jobs": [
                {
                    "id": j.get("id"),
                    "jobNumber": j.get("jobNumber"),
                    "serviceDate": j.get("jobDate"),
                    "type": j.get("type"),
                }
                for j in jobs
            ],
        }

    def _opportunity(self, opp_id: str) -> Record:
        opp = self.opportunities.get(opp_id)
        if opp is None:
            raise NotFound("Opportunity not found")
        return opp

    def opportunity_detail(self, opp_id: str) -> Record:
        with self._lock:
            opp = self._opportunity(opp_id)
            detail = _public(opp)
            customer = self.customers[opp["_customer_id"]]
            detail["customer"] = {
                k: copy.deepcopy(customer.get(k)) for k in ("id", "name", "emailAddress", "phoneNumber", "phoneType")
            }
            detail["jobs"] = [
                _public(j, exclude=TIMELINE_FIELDS) if isinstance(j, dict) else j for j in opp.get("jobs", [])
            ]
            return detail

    def opportunity_jobs(self, opp_id: str) -> list[Record]:
        with self._lock:
            opp = self._opportunity(opp_id)
            fields = ("id", "type", "jobNumber", "jobDate", *TIMELINE_FIELDS)
            return [{k: copy.deepcopy(j.get(k)) for k in fields} for j in opp.get("jobs", []) if isinstance(j, dict)]

    # ---- mutations --------------------------------------------------------------------------

    def _job(self, job_id: str) -> tuple[Record, Record]:
        opp_id = self._job_opp.get(job_id)
        if opp_id is None:
            raise NotFound("Job not found")
        opp = self.opportunities[opp_id]
        return opp, next(j for j in opp["jobs"] if isinstance(j, dict) and j.get("id") == job_id)

    def _customer(self, customer_id: str) -> Record:
        customer = self.customers.get(customer_id)
        if customer is None:
            raise NotFound("Customer not found")
        return customer

    def reschedule_job(self, job_id: str, to_date: dt.date) -> None:
        """Move a job; the opportunity's service date follows its first job."""
        with self._lock:
            opp, job = self._job(job_id)
            job["jobDate"] = to_int_date(to_date)
            if opp["jobs"] and opp["jobs"][0] is job:
                opp["serviceDate"] = job["jobDate"]
            self._stamp(opp, job)
            self._reindex(opp["id"])
            self._emit("opportunity-changed", opp)

    def cancel_opportunity(self, opportunity_id: str) -> None:
        with self._lock:
            opp = self._opportunity(opportunity_id)
            self._set_status(opp, S.CANCELLED)

    def delete_opportunity(self, opportunity_id: str) -> None:
        """Gone from SmartMoving: off every list, and its details answer 400 "Opportunity not found"."""
        with self._lock:
            opp = self._opportunity(opportunity_id)
            opp["serviceDate"] = None
            opp["jobs"] = []  # no date left: _reindex takes it out of both date indexes
            self._reindex(opportunity_id)
            del self.opportunities[opportunity_id]
            self._customer_opps[opp["_customer_id"]].remove(opportunity_id)
            for job_id in [j for j, o in self._job_opp.items() if o == opportunity_id]:
                del self._job_opp[job_id]
            if self.on_change:
                self._notify({"event-type": "opportunity-deleted", "opportunity-id": opportunity_id})

    def rename_customer(self, customer_id: str, name: str) -> None:
        with self._lock:
            self._customer(customer_id)["name"] = name
            self._emit_customer("customer-updated", customer_id)

    def add_booking(
        self, service_date: dt.date, branch_name: str | None = None, status: int = S.BOOKED
    ) -> dict[str, Any]:
        """A new customer with one opportunity on ``service_date``; returns the new ids."""
        with self._lock:
            self.ensure_dates(service_date, service_date)
            self._admin_adds += 1
            rng = random.Random(f"add:{self.config.seed}:{self._admin_adds}")
            return self._book(rng, service_date, branch_name, status)

    def _book(self, rng: random.Random, day: dt.date, branch_name: str | None, status: int) -> dict[str, Any]:
        branch = branch_name or rng.choices(self.branch_names, weights=self._branch_weights)[0]
        self._added_quotes += 1
        customer = self._new_customer(rng, city_for_branch(branch))
        opp = self._new_opportunity(rng, customer, branch, day, _ADDED_QUOTE_BASE + self._added_quotes, status)
        # The customer is always new here; a booking for a known customer would send opportunity-created alone.
        self._emit_customer("customer-created", customer["id"])
        self._emit("opportunity-created", opp, with_status=True)
        return {"customer_id": customer["id"], "opportunity_id": opp["id"], "job_ids": [j["id"] for j in opp["jobs"]]}

    def patch(
        self,
        opportunity_id: str,
        opportunity: dict[str, Any] | None = None,
        customer: dict[str, Any] | None = None,
        job: dict[str, Any] | None = None,
    ) -> None:
        """Shallow-merge raw values, unchecked, so tests can serve hostile data."""
        with self._lock:
            opp = self._opportunity(opportunity_id)
            if job is not None:
                if "id" not in job:
                    raise ValueError("job patch needs the job's id")
                owner, target = self._job(str(job["id"]))
                if owner is not opp:
                    raise NotFound("Job not found")
            opp.update(copy.deepcopy({k: v for k, v in (opportunity or {}).items() if k not in ("id", "jobs")}))
            self.customers[opp["_customer_id"]].update(
                copy.deepcopy({k: v for k, v in (customer or {}).items() if k != "id"})
            )
            if job is not None:
                target.update(copy.deepcopy({k: v for k, v in job.items() if k != "id"}))
            self._reindex(opportunity_id)
            self._emit("opportunity-changed", opp)
            if customer:
                self._emit_customer("customer-updated", opp["_customer_id"])

    def _set_status(self, opp: Record, status: int, rng: random.Random | None = None) -> None:
        rng = rng or random.Random(f"status:{self.config.seed}:{opp['id']}:{status}")
        if status == S.BOOKED and opp.get("estimatedTotal") is None:
            self._price(rng, opp)
        if status == S.COMPLETED:
            self._settle(rng, opp)
        if status == S.BOOKED:
            for job in opp["jobs"]:
                job["confirmed"] = rng.random() < 0.5
        if status in (S.CANCELLED, S.LOST):
            for job in opp["jobs"]:
                job["confirmed"] = False
        before = opp.get("status")
        opp["status"] = int(status)
        opp["leadStatus"] = int(status) if status in LEAD_STATUSES else None
        for job in opp["jobs"]:
            self._stamp(opp, job)
        if before != opp["status"]:
            self._emit("opportunity-status-changed", opp)

    def close_day(self, day: dt.date) -> list[str]:
        """The office's end of ``day``: booked work done by then is Completed (and settled), and
        completed work finished before it is Closed with probability 0.7.

        Only opportunities with at least one dated job count; a TBD job neither holds one open
        nor closes it. Statuses are read before any change, so work completed now is closed at
        the earliest by the next day's close. Returns a line per change.
        """
        log: list[str] = []
        with self._lock:
            self.ensure_dates(day, day)
            today = to_int_date(day)
            before = [(opp, opp.get("status")) for opp in self.opportunities.values()]
            for opp, status in before:
                dates = [j["jobDate"] for j in opp.get("jobs", []) if isinstance(j, dict) and _dated(j)]
                if not dates:
                    continue
                if status == S.BOOKED and max(dates) <= today:
                    self._set_status(opp, S.COMPLETED)
                    log.append(f"status {opp['id']} {int(S.BOOKED)}->{int(S.COMPLETED)}")
                elif status == S.COMPLETED and max(dates) < today and self._closes(opp["id"], today):
                    self._set_status(opp, S.CLOSED)
                    log.append(f"status {opp['id']} {int(S.COMPLETED)}->{int(S.CLOSED)}")
        return log

    def _closes(self, opp_id: str, today: int) -> bool:
        return random.Random(f"close:{self.config.seed}:{opp_id}:{today}").random() < _CLOSE_SHARE

    # ---- leads --------------------------------------------------------------------------------

    def ensure_lead_dates(self, first: dt.date, last: dt.date) -> None:
        with self._lock:
            day = first
            while day <= last:
                if day.toordinal() not in self._lead_days:
                    self._generate_leads(day)
                day += dt.timedelta(days=1)

    def _generate_leads(self, day: dt.date) -> None:
        """A day's leads, from their own generators: generating them changes no other record.

        About 5% repeat the phone or email of a lead of the same day or up to 30 days before (a household
        enquiring again). They copy that lead's contact as first generated, re-derived from its day's seed,
        so a day's leads are the same whatever was generated, patched or asked for before.
        """
        self._lead_days.add(day.toordinal())
        leads = self._base_leads(day)
        repeats = random.Random(f"lead-repeats:{self.config.seed}:{day.toordinal()}")
        for lead in leads:
            if repeats.random() >= _REPEAT_LEAD_SHARE:
                continue
            back = repeats.randint(0, _REPEAT_LEAD_DAYS)
            source_day = day - dt.timedelta(days=back)
            pool = [
                contact
                for contact in self._base_lead_contacts(source_day)
                if back or contact["createdAtUtc"] < lead["createdAtUtc"]
            ]
            key = repeats.choice(("phoneNumber", "emailAddress"))
            if pool:
                lead[key] = repeats.choice(pool)[key]
        for lead in leads:
            self.leads[lead["id"]] = lead
        self._leads_by_date[to_int_date(day)] = [lead["id"] for lead in leads]

    def _base_lead_contacts(self, day: dt.date) -> list[Record]:
        # Cached: a repeat looks up to 30 days back, and every day would otherwise regenerate its month.
        cached = self._lead_contacts.get(day.toordinal())
        if cached is None:
            keys = ("createdAtUtc", "phoneNumber", "emailAddress")
            cached = [{k: lead[k] for k in keys} for lead in self._base_leads(day)]
            self._lead_contacts[day.toordinal()] = cached
        return cached

    def _base_leads(self, day: dt.date) -> list[Record]:
        """The day's leads before repeats, from ``seed`` and the date alone."""
        rng = random.Random(f"leads:{self.config.seed}:{day.toordinal()}")
        count = round(self.config.customers_per_day * _LEADS_PER_CUSTOMER * rng.uniform(0.95, 1.05))
        leads: list[Record] = []
        for _ in range(count):
            branch = rng.choices(self.branch_names, weights=self._branch_weights)[0]
            city = city_for_branch(branch)
            name = (
                rng.choice(ODD_NAMES) if rng.random() < 0.04 else f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            )
            created = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(seconds=rng.randint(0, 86399))
            leads.append(
                {
                    "id": _uuid(rng),
                    "createdAtUtc": _iso(created),
                    "name": name,
                    "phoneNumber": self._phone(rng, city) if rng.random() > 0.08 else rng.choice((None, "")),
                    "phoneType": int(PhoneType.MOBILE if rng.random() < 0.8 else rng.choice(list(PhoneType))),
                    "emailAddress": self._email(rng, name) if rng.random() > 0.1 else rng.choice((None, "")),
                    "referralSource": rng.choice(REFERRAL_SOURCES) if rng.random() < 0.9 else None,
                    "branch": {"name": branch} if rng.random() < 0.95 else None,
                    "moveDate": (
                        to_int_date(day + dt.timedelta(days=rng.randint(1, 90))) if rng.random() < 0.9 else None
                    ),
                    "moveSize": rng.choice(MOVE_SIZES)[0] if rng.random() < 0.85 else None,
                    "originAddress": self._address(rng, city),
                    "destinationAddress": self._address(rng, city) if rng.random() < 0.7 else None,
                    "status": int(_weighted(rng, _LEAD_STATUS_WEIGHTS)),
                    "opportunityId": None,
                    "notes": rng.choice(_LEAD_NOTES) if rng.random() < 0.25 else None,
                }
            )
        return leads

    def list_leads(
        self, first: int | None, last: int | None, offset: int = 0, limit: int | None = None
    ) -> tuple[int, list[Record]]:
        """(total, rows[offset:offset+limit]) of the leads created (UTC date) in [first, last]."""
        with self._lock:
            lo = first if first is not None else 0
            hi = last if last is not None else 99_999_999
            matching = [self.leads[i] for d, ids in sorted(self._leads_by_date.items()) if lo <= d <= hi for i in ids]
            matching.sort(key=lambda lead: (str(lead.get("createdAtUtc")), lead["id"]))
            rows = matching[offset : None if limit is None else offset + limit]
            return len(matching), [copy.deepcopy(r) for r in rows]

    def lead_detail(self, lead_id: str) -> Record:
        with self._lock:
            lead = self.leads.get(lead_id)
            if lead is None:
                raise NotFound("Lead not found")
            return copy.deepcopy(lead)

    def lead_ids_on(self, day: dt.date) -> list[str]:
        """The leads created on ``day`` (UTC date, as the API's filter reads it)."""
        with self._lock:
            self.ensure_lead_dates(day, day)
            return list(self._leads_by_date.get(to_int_date(day), []))

    def convert_lead(self, lead_id: str) -> str:
        """Sales turns the lead into a booked opportunity; the lead then names it. Returns its id."""
        with self._lock:
            lead = self.leads.get(lead_id)
            if lead is None:
                raise NotFound("Lead not found")
            if lead.get("opportunityId"):
                return str(lead["opportunityId"])
            created = dt.datetime.fromisoformat(str(lead["createdAtUtc"]).replace("Z", "+00:00")).date()
            move = lead.get("moveDate")
            day = from_int_date(move) if isinstance(move, int) else created + dt.timedelta(days=14)
            branch = lead["branch"]["name"] if isinstance(lead.get("branch"), dict) else None
            rng = random.Random(f"convert:{self.config.seed}:{lead_id}")
            self.ensure_dates(day, day)
            booked = self._book(rng, day, branch if branch in self.branch_names else None, S.BOOKED)
            lead["opportunityId"] = booked["opportunity_id"]
            lead["status"] = 1
            return str(booked["opportunity_id"])

    def patch_lead(self, lead_id: str, fields: dict[str, Any]) -> None:
        """Shallow-merge raw values, unchecked, so tests can serve hostile lead data."""
        with self._lock:
            lead = self.leads.get(lead_id)
            if lead is None:
                raise NotFound("Lead not found")
            lead.update(copy.deepcopy({k: v for k, v in fields.items() if k != "id"}))

    def evolve(self, steps: int = 1) -> list[str]:
        """Let time pass: each step mutates ``churn`` x (opportunities) opportunities.

        Returns a line per mutation, for logs and tests.
        """
        log: list[str] = []
        with self._lock:
            for _ in range(steps):
                self.evolution_steps += 1
                rng = random.Random(f"evolve:{self.config.seed}:{self.evolution_steps}")
                ids = list(self.opportunities)
                if self.config.churn <= 0:
                    continue
                if ids:
                    count = min(len(ids), max(1, round(self.config.churn * len(ids))))
                    for opp_id in rng.sample(ids, count):
                        log.append(self._mutate(rng, self.opportunities[opp_id]))
                log.extend(self._convert_some_leads())
        return log

    def _convert_some_leads(self) -> list[str]:
        """Some open leads turn into bookings; their own generator leaves the opportunities' mutations as they were."""
        open_leads = [i for i, lead in self.leads.items() if not lead.get("opportunityId") and lead.get("status") != 50]
        if not open_leads:
            return []
        rng = random.Random(f"lead-evolve:{self.config.seed}:{self.evolution_steps}")
        count = min(len(open_leads), max(1, round(self.config.churn * len(open_leads))))
        return [f"convert {i} -> {self.convert_lead(i)}" for i in rng.sample(open_leads, count)]

    def _mutate(self, rng: random.Random, opp: Record) -> str:
        kind = rng.choices(("progress", "reschedule", "cancel", "contact", "book"), weights=(40, 15, 10, 20, 15))[0]
        status = opp.get("status")
        if kind == "progress" and status in _PROGRESSION:
            new = _PROGRESSION[status]
            self._set_status(opp, new, rng)
            return f"status {opp['id']} {status}->{int(new)}"
        if kind == "cancel" and status in (*LEAD_STATUSES, S.BOOKED):
            self._set_status(opp, S.CANCELLED, rng)
            return f"cancel {opp['id']}"
        jobs = [j for j in opp.get("jobs", []) if isinstance(j, dict) and isinstance(j.get("jobDate"), int)]
        if kind == "reschedule" and jobs:
            job = rng.choice(jobs)
            to_date = from_int_date(job["jobDate"]) + dt.timedelta(days=rng.choice((-1, 1)))
            self.reschedule_job(job["id"], to_date)
            return f"reschedule {job['id']} -> {to_int_date(to_date)}"
        if kind == "book" and isinstance(opp.get("serviceDate"), int):
            ids = self._book(rng, from_int_date(opp["serviceDate"]), None, S.BOOKED)
            return f"book {ids['opportunity_id']} on {opp['serviceDate']}"
        customer = self.customers[opp["_customer_id"]]
        city = city_for_branch(_branch_name(opp))
        if rng.random() < 0.5:
            customer["emailAddress"] = self._email(rng, str(customer.get("name", "")))
            self._emit_customer("customer-updated", customer["id"])
            return f"email {customer['id']}"
        customer["phoneNumber"] = self._phone(rng, city)
        self._emit_customer("customer-updated", customer["id"])
        return f"phone {customer['id']}"

    # ---- webhooks -----------------------------------------------------------------------------

    def _emit(self, event_type: str, opp: Record, with_status: bool = False) -> None:
        """An opportunity's event; status changes and creations carry its (raw, maybe patched) status."""
        if not self.on_change:
            return
        event: Event = {"event-type": event_type, "opportunity-id": opp["id"]}
        if with_status or event_type == "opportunity-status-changed":
            event["opportunity-status"] = opp.get("status")
        event["customer-id"] = opp["_customer_id"]
        self._notify(event)

    def _emit_customer(self, event_type: str, customer_id: str) -> None:
        if self.on_change:
            self._notify({"event-type": event_type, "customer-id": customer_id})

    def _notify(self, event: Event) -> None:
        for callback in list(self.on_change):
            callback(dict(event))


def _is_int_date(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _dated(job: Record) -> bool:
    return _is_int_date(job.get("jobDate"))


def _branch_name(opp: Record) -> str:
    # Tolerates a branch patched to something hostile: evolution must keep working on it.
    branch = opp.get("branch")
    return str(branch.get("name") or "") if isinstance(branch, dict) else ""


def _sort_name(name: object) -> str:
    # SmartMoving sorts like SQL Server's case- and accent-insensitive collation: "Émilie" near "Emma".
    text = name if isinstance(name, str) else "" if name is None else str(name)
    decomposed = unicodedata.normalize("NFKD", text.strip().casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
