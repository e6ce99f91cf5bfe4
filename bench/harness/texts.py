"""Realistic business texts for the ML benchmarks: CRM notes, tickets and reviews of 10-30 words."""

from __future__ import annotations

import random

MIN_WORDS, MAX_WORDS = 10, 30
TEMPLATES = (
    "{person} from {company} asked for a {percent}% discount on the {product} renewal before signing "
    "in {quarter}.",
    "The {region} team closed the {company} {product} deal at {amount}, {percent}% above the first "
    "quote sent in {month}.",
    "Support ticket from {company}: the {feature} has failed every night since {date} and {count} "
    "users cannot work.",
    "{company} is evaluating {competitor} because our {feature} falls short; {person} wants a call "
    "with product this week.",
    "Churn risk at {company}: active seats fell from {count} to {small} after the {product} price "
    "change in {quarter}.",
    "Pipeline review for {region}: {small} deals in {stage} worth {amount} in total, most of them "
    "slipping to {quarter}.",
    "{person} confirmed that {company} will expand to {count} seats of the {product} if legal "
    "approves the data processing addendum.",
    "Invoice INV-{invoice} for {company} is {days} days overdue, so finance paused the {product} "
    "onboarding until {date}.",
    "During the demo {person} said the {feature} loads too slowly for the {count} regional managers "
    "at {company}.",
    "Marketing attributed {percent}% of {region} leads in {quarter} to the webinar on the {feature}, "
    "up from {small}% last quarter.",
    "{company} signed a {years}-year {product} contract worth {amount}, with quarterly business "
    "reviews led by {person}.",
    "The net promoter score from {company} dropped to {nps} after two outages of the {feature} in "
    "{month}; {person} owns the follow-up.",
)
COMPANIES = (
    "Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises",
    "Soylent", "Tyrell", "Cyberdyne", "Vandelay", "Pied Piper", "Massive Dynamic", "Dunder Mifflin",
    "Aperture", "Nakatomi", "Blue Sun", "Oceanic", "Wonka", "Gringotts",
)  # fmt: skip
FIRST_NAMES = ("Maria", "James", "Aisha", "Chen", "Lukas", "Priya", "Tom", "Sofia", "Kenji", "Fatima")
LAST_NAMES = ("Lopez", "Smith", "Khan", "Wei", "Weber", "Patel", "Brown", "Rossi", "Tanaka", "Dubois")
PRODUCTS = (
    "analytics platform", "support plan", "data connector", "premium tier", "CRM sync add-on",
    "reporting suite", "API bundle", "onboarding package",
)  # fmt: skip
FEATURES = (
    "pipeline forecast", "CSV export", "single sign-on", "audit log", "sales dashboard", "webhook",
    "role-based access", "warehouse sync", "mobile app", "invoice reminder",
)  # fmt: skip
COMPETITORS = ("Salesforce", "HubSpot", "Zoho", "Pipedrive", "Freshworks", "Microsoft Dynamics")
REGIONS = ("EMEA", "North America", "APAC", "LATAM", "DACH", "Nordics", "UK and Ireland")
STAGES = ("discovery", "proposal", "negotiation", "legal review", "contract sent")
MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip


class BusinessTexts:
    """Distinct business sentences of 10-30 words, in the same order for the same seed."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._seen: set[str] = set()

    def take(self, count: int) -> list[str]:
        texts: list[str] = []
        while len(texts) < count:
            text = self._sentence()
            if text not in self._seen and MIN_WORDS <= len(text.split()) <= MAX_WORDS:
                self._seen.add(text)
                texts.append(text)
        return texts

    def _sentence(self) -> str:
        rng = self._rng
        month = rng.choice(MONTHS)
        return rng.choice(TEMPLATES).format(
            person=f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}",
            company=rng.choice(COMPANIES),
            product=rng.choice(PRODUCTS),
            feature=rng.choice(FEATURES),
            competitor=rng.choice(COMPETITORS),
            region=rng.choice(REGIONS),
            stage=rng.choice(STAGES),
            month=month,
            date=f"{month} {rng.randint(1, 28)}",
            quarter=f"Q{rng.randint(1, 4)} {rng.choice((2026, 2027))}",
            amount=f"€{rng.randint(12, 4_800) * 250:,}",
            percent=rng.randint(3, 45),
            count=rng.randint(40, 5_000),
            small=rng.randint(2, 39),
            days=rng.randint(15, 120),
            invoice=rng.randint(10_000, 99_999),
            years=rng.randint(1, 5),
            nps=rng.randint(-20, 40),
        )
