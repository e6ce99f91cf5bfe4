"""Deterministic synthetic catalog lines: HubSpot CRM objects, Gong calls, Slack messages.

The stream is chronological: `created_at` rises from a year before `now` to `now` (sorted
uniform draws), so every reference points back in time: a deal names a company and a contact
that appeared earlier in the same output, a call its deal, a thread reply its parent message.
Names are derived from indexes (see `demo_words`) rather than stored, so memory stays a few
bytes per entity.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, date, datetime
from random import Random
from typing import Any

import orjson

from sophia.cli import demo_words as words

REFERENCE_NOW = datetime(2026, 11, 1, tzinfo=UTC)
"""Default `now`. Fixed, not the clock, so that one seed is one dataset on any day: tests,
benchmarks and demos reproduce byte for byte. Pass `now` to make the data look recent."""

YEAR_S = 365 * 86_400
DAY_S = 86_400
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

SOURCE_SYSTEMS = {
    "deal": "hubspot",
    "contact": "hubspot",
    "company": "hubspot",
    "call": "gong",
    "message": "slack",
}

KIND_DRAWS = ("deal",) * 5 + ("contact",) * 4 + ("company",) * 2 + ("call",) * 4 + ("message",) * 5
"""One draw per record: 25% deals, 20% contacts, 10% companies, 20% calls, 25% messages."""


def participant(name: str, domain: str, affiliation: str) -> dict[str, str]:
    """One attendee of a Gong call."""
    return {"name": name, "email": words.email_address(name, domain), "affiliation": affiliation}


def iso_date(epoch_s: int) -> str:
    """The UTC calendar date of a Unix time, as `YYYY-MM-DD`."""
    return date.fromordinal(EPOCH_ORDINAL + epoch_s // DAY_S).isoformat()


class DemoCatalog:
    """What has been generated so far, and the builders of the next record of each kind.

    Links are kept as compact arrays of indexes (a contact's company, a deal's company,
    contact and owner) so that later records can point back at earlier ones.
    """

    def __init__(self, rng: Random, now_s: int) -> None:
        self.rng = rng
        self.now_s = now_s
        self.companies = 0
        self.contact_company = array("I")
        self.deal_company = array("I")
        self.deal_contact = array("i")  # -1: the deal has no contact yet
        self.deal_owner = array("B")
        self.calls = 0
        self.messages = 0
        self.thread_parents: dict[str, str] = {}
        self.builders: dict[str, Callable[[int, str], tuple[str, dict[str, Any]]]] = {
            "deal": self.deal,
            "contact": self.contact,
            "company": self.company,
            "call": self.call,
            "message": self.message,
        }

    def company(self, epoch_s: int, created_at: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        self.companies += 1
        name, domain, industry, (city, country, _) = words.company_profile(self.companies - 1)
        employees = int(rng.lognormvariate(5.0, 1.4)) + 5
        revenue = employees * rng.randrange(60, 400) * 1000
        return f"company-{self.companies:06d}", {
            "name": name,
            "domain": domain,
            "industry": industry,
            "numberofemployees": str(employees),
            "annualrevenue": str(revenue),
            "city": city,
            "country": country,
            "createdate": created_at,
        }

    def contact(self, epoch_s: int, created_at: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        company = rng.randrange(self.companies)
        self.contact_company.append(company)
        index = len(self.contact_company)
        first, last = words.person_name(index - 1)
        name, domain, _, (_, _, calling_code) = words.company_profile(company)
        return f"contact-{index:06d}", {
            "firstname": first,
            "lastname": last,
            "email": words.email_address(f"{first} {last}", domain),
            "company": name,
            "jobtitle": rng.choice(words.JOB_TITLES),
            "phone": f"+{calling_code} 555 {rng.randrange(1000):03d} {rng.randrange(10000):04d}",
            "lifecyclestage": rng.choice(words.LIFECYCLE_STAGES),
            "associated_company_id": f"company-{company + 1:06d}",
            "createdate": created_at,
        }

    def deal(self, epoch_s: int, created_at: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        contacts = len(self.contact_company)
        if contacts and rng.random() < 0.9:
            contact = rng.randrange(contacts)
            company = self.contact_company[contact]
        else:
            contact, company = -1, rng.randrange(self.companies)
        owner = rng.randrange(len(words.REPS))
        self.deal_company.append(company)
        self.deal_contact.append(contact)
        self.deal_owner.append(owner)
        stage = rng.choice(words.DEAL_STAGES)
        if stage in words.CLOSED_STAGES:
            close_s = min(epoch_s + rng.randint(7, 150) * DAY_S, self.now_s)
        else:
            close_s = epoch_s + rng.randint(14, 180) * DAY_S  # expected close: may be ahead
        amount = max(500, round(rng.lognormvariate(9.5, 0.8) / 50) * 50)
        name = words.company_profile(company)[0]
        return f"deal-{len(self.deal_company):06d}", {
            "dealname": f"{name} - {rng.choice(words.PRODUCTS)} ({rng.choice(words.DEAL_TYPES)})",
            "amount": f"{amount:.2f}",
            "dealstage": stage,
            "pipeline": "default",
            "closedate": iso_date(close_s),
            "hubspot_owner_id": words.REPS[owner][0],
            "associated_company_id": f"company-{company + 1:06d}",
            "associated_contact_ids": [f"contact-{contact + 1:06d}"] if contact >= 0 else [],
            "createdate": created_at,
        }

    def call(self, epoch_s: int, created_at: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        self.calls += 1
        deal = -1
        if self.deal_company and rng.random() < 0.75:
            deal = rng.randrange(len(self.deal_company))
            company, contact = self.deal_company[deal], self.deal_contact[deal]
            owner = self.deal_owner[deal]
        else:
            company, contact = rng.randrange(self.companies), -1
            owner = rng.randrange(len(words.REPS))
        company_name, domain, _, _ = words.company_profile(company)
        internal = [words.REPS[owner][2]]
        if rng.random() < 0.4:
            internal.append(rng.choice(words.ENGINEERS))
        external = [" ".join(words.person_name(contact if contact >= 0 else rng.randrange(words.NAME_SPACE)))]
        if rng.random() < 0.35:
            external.append(" ".join(words.person_name(rng.randrange(words.NAME_SPACE))))
        participants = [participant(name, words.VENDOR_DOMAIN, "internal") for name in internal]
        participants += [participant(name, domain, "external") for name in external]
        duration_s = rng.randint(15, 60) * 60 + rng.randrange(60)
        data: dict[str, Any] = {
            "title": f"{company_name} / {words.VENDOR}: {rng.choice(words.CALL_TOPICS)}",
            "started": created_at,
            "duration_s": duration_s,
            "participants": participants,
            "transcript": self.transcript(company_name, internal, external, duration_s),
        }
        if deal >= 0:
            data["deal_id"] = f"deal-{deal + 1:06d}"
        return f"call-{self.calls:06d}", data

    def transcript(
        self, company: str, internal: list[str], external: list[str], duration_s: int
    ) -> list[dict[str, Any]]:
        """4 to 12 turns: the seller opens and closes, seller and customer alternate between."""
        rng = self.rng
        values = self.template_values(company)
        turns = rng.randint(4, 12)
        step_s = duration_s // turns
        lines = []
        for turn in range(turns):
            if turn == 0 or turn == turns - 1:
                speaker = internal[0]
                template = rng.choice(words.OPENINGS if turn == 0 else words.CLOSINGS)
            elif turn % 2:
                speaker, template = rng.choice(external), rng.choice(words.CUSTOMER_LINES)
            else:
                speaker, template = rng.choice(internal), rng.choice(words.REP_LINES)
            start_s = turn * step_s + (rng.randrange(step_s // 2) if turn else 0)
            lines.append({"speaker": speaker, "start_s": start_s, "text": template.format_map(values)})
        return lines

    def message(self, epoch_s: int, created_at: str) -> tuple[str, dict[str, Any]]:
        rng = self.rng
        self.messages += 1
        channel = rng.choice(words.CHANNELS)
        mood = rng.random()
        sentiment = "positive" if mood < 0.45 else "negative" if mood < 0.75 else "neutral"
        values = self.template_values(words.company_profile(rng.randrange(self.companies))[0])
        # Slack's ts is a Unix time; a sequence number as the fraction keeps it unique.
        ts = f"{epoch_s}.{self.messages % 1_000_000:06d}"
        data: dict[str, Any] = {
            "channel": channel,
            "user": rng.choice(words.REPS)[1],
            "text": rng.choice(words.MESSAGES[sentiment]).format_map(values),
            "ts": ts,
        }
        parent = self.thread_parents.get(channel)
        if parent is not None and rng.random() < 0.3:
            data["thread_ts"] = parent
        else:
            self.thread_parents[channel] = ts
        if rng.random() < 0.4:
            reaction = rng.choice(words.REACTIONS[sentiment])
            data["reactions"] = [{"name": reaction, "count": rng.randint(1, 8)}]
        return f"message-{self.messages:06d}", data

    def template_values(self, company: str) -> dict[str, str]:
        """What fills the placeholders of one call or message."""
        rng = self.rng
        return {
            "company": company,
            "competitor": rng.choice(words.COMPETITORS),
            "amount": f"{rng.randrange(8, 240) * 500:,}",
            "weeks": str(rng.randint(2, 8)),
            "product": rng.choice(words.PRODUCTS),
            "month": rng.choice(words.MONTHS),
            "feature": rng.choice(words.FEATURES),
            "issue": rng.choice(words.ISSUES),
            "person": rng.choice(words.REPS)[2].split(" ", 1)[0],
        }


def generate(records: int, seed: int = 42, now: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Yield `records` catalog lines: {"source_system", "kind", "external_id", "data", "created_at"}.

    The same (records, seed, now) always yields the same lines. `now` must be timezone-aware;
    `created_at` falls in the year before it, in UTC. The first line is always a company so
    that every later reference has a target.
    """
    if records < 0:
        raise ValueError(f"records must be >= 0, not {records}")
    now = REFERENCE_NOW if now is None else now
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    now_s = int(now.timestamp())
    rng = Random(seed)
    catalog = DemoCatalog(rng, now_s)
    # The largest of n uniforms is U ** (1/n); multiplying down gives the order statistics in
    # descending order without sorting, i.e. ascending times over the year before now.
    fraction_before_now = 1.0
    for left in range(records, 0, -1):
        fraction_before_now *= rng.random() ** (1.0 / left)
        epoch_s = now_s - int(fraction_before_now * YEAR_S)
        created_at = datetime.fromtimestamp(epoch_s, UTC).isoformat()
        kind = rng.choice(KIND_DRAWS) if catalog.companies else "company"
        external_id, data = catalog.builders[kind](epoch_s, created_at)
        yield {
            "source_system": SOURCE_SYSTEMS[kind],
            "kind": kind,
            "external_id": external_id,
            "data": data,
            "created_at": created_at,
        }


def to_ndjson(lines: Iterable[dict[str, Any]], batch_lines: int = 5000) -> Iterator[bytes]:
    """NDJSON bytes chunks, serialized with orjson.

    Each chunk holds up to `batch_lines` lines; every line ends with `\\n`.
    """
    if batch_lines < 1:
        raise ValueError(f"batch_lines must be >= 1, not {batch_lines}")
    batch: list[bytes] = []
    for line in lines:
        batch.append(orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE))
        if len(batch) == batch_lines:
            yield b"".join(batch)
            batch.clear()
    if batch:
        yield b"".join(batch)
