"""The vocabulary of the demo data: word lists, sentence templates, and names built from them.

Every company, person and competitor is fictional; domains end in `.example` (reserved by
RFC 2606) so no real company or inbox is ever named. Placeholders in templates are filled
from one dict per record: {company} {competitor} {amount} {weeks} {product} {month}
{feature} {issue} {person}.
"""

from __future__ import annotations

from math import gcd

VENDOR = "Brightwave"
VENDOR_DOMAIN = "brightwave.example"

COMPANY_PREFIXES = (
    "North", "Blue", "Silver", "Bright", "Iron", "Cedar", "Summit", "Harbor", "Atlas",
    "Pioneer", "Granite", "Evergreen", "Lakeside", "Redwood", "Polar", "Vertex", "Crescent",
    "Meridian", "Sterling", "Beacon", "Falcon", "Orbit", "Prairie", "Keystone", "Horizon",
    "Nimbus", "Copper", "Maple", "Oakridge", "Riverbend", "Solstice", "Tidewater", "Westfield",
    "Aurora", "Bluestone", "Clearwater", "Driftwood", "Emberly", "Foxglove", "Goldcrest",
)  # fmt: skip

COMPANY_CORES = (
    ("Logistics", "LOGISTICS_AND_SUPPLY_CHAIN"), ("Freight", "LOGISTICS_AND_SUPPLY_CHAIN"),
    ("Foods", "FOOD_PRODUCTION"), ("Health", "HOSPITAL_HEALTH_CARE"),
    ("Clinics", "HOSPITAL_HEALTH_CARE"), ("Robotics", "INDUSTRIAL_AUTOMATION"),
    ("Analytics", "COMPUTER_SOFTWARE"), ("Software", "COMPUTER_SOFTWARE"),
    ("Systems", "INFORMATION_TECHNOLOGY_AND_SERVICES"), ("Bank", "BANKING"),
    ("Capital", "FINANCIAL_SERVICES"), ("Insurance", "INSURANCE"), ("Energy", "OIL_ENERGY"),
    ("Solar", "RENEWABLES_ENVIRONMENT"), ("Retail", "RETAIL"), ("Outfitters", "APPAREL_FASHION"),
    ("Media", "MEDIA_PRODUCTION"), ("Labs", "BIOTECHNOLOGY"), ("Pharma", "PHARMACEUTICALS"),
    ("Telecom", "TELECOMMUNICATIONS"), ("Motors", "AUTOMOTIVE"), ("Builders", "CONSTRUCTION"),
    ("Hotels", "HOSPITALITY"), ("Learning", "E_LEARNING"), ("Markets", "CONSUMER_GOODS"),
)  # fmt: skip

COMPANY_SUFFIXES = ("Inc", "Group", "Co", "Ltd", "Partners", "Holdings")

CITIES = (
    ("Boston", "United States", 1), ("Austin", "United States", 1),
    ("Chicago", "United States", 1), ("Denver", "United States", 1),
    ("Seattle", "United States", 1), ("Atlanta", "United States", 1),
    ("Toronto", "Canada", 1), ("Vancouver", "Canada", 1), ("London", "United Kingdom", 44),
    ("Manchester", "United Kingdom", 44), ("Dublin", "Ireland", 353), ("Berlin", "Germany", 49),
    ("Munich", "Germany", 49), ("Paris", "France", 33), ("Lyon", "France", 33),
    ("Amsterdam", "Netherlands", 31), ("Madrid", "Spain", 34), ("Stockholm", "Sweden", 46),
    ("Zurich", "Switzerland", 41), ("Sydney", "Australia", 61), ("Singapore", "Singapore", 65),
)  # fmt: skip

FIRST_NAMES = (
    "Olivia", "Liam", "Emma", "Noah", "Ava", "Elijah", "Sophia", "James", "Isabella", "Lucas",
    "Mia", "Mateo", "Amelia", "Ethan", "Harper", "Aiden", "Priya", "Arjun", "Mei", "Wei",
    "Fatima", "Omar", "Chloe", "Hugo", "Lena", "Jonas", "Sofia", "Diego", "Yuki", "Kenji",
    "Grace", "Samuel", "Nora", "Leo", "Zoe", "Daniel", "Aisha", "Kwame", "Ingrid", "Lars",
    "Camille", "Julien", "Elena", "Marco", "Hannah", "Ben", "Maya", "Ravi", "Clara", "Tomas",
)  # fmt: skip

LAST_NAMES = (
    "Smith", "Johnson", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Lee", "Walker",
    "Hall", "Young", "King", "Wright", "Lopez", "Hill", "Scott", "Green", "Adams", "Baker",
    "Nelson", "Patel", "Shah", "Chen", "Wang", "Kim", "Nguyen", "Okafor", "Mensah", "Meyer",
    "Schmidt", "Dubois", "Moreau", "Rossi", "Bianchi", "Jansen", "Larsen", "Nilsson", "Tanaka",
    "Sato", "O'Brien", "Murphy", "Kowalski", "Novak", "Silva", "Costa", "Fischer", "Weber",
    "Hughes", "Turner", "Reed",
)  # fmt: skip

JOB_TITLES = (
    "VP of Sales", "Head of Revenue Operations", "Chief Financial Officer", "Data Analyst",
    "Director of Analytics", "CTO", "IT Manager", "Procurement Manager", "Head of Marketing",
    "Operations Director", "BI Engineer", "Chief Operating Officer", "Customer Success Lead",
    "Finance Manager", "Product Manager", "Head of Data",
)  # fmt: skip

LIFECYCLE_STAGES = (
    ("subscriber",) * 1
    + ("lead",) * 5
    + ("marketingqualifiedlead",) * 4
    + ("salesqualifiedlead",) * 3
    + ("opportunity",) * 3
    + ("customer",) * 3
    + ("evangelist",)
)
"""Weighted by repetition: most contacts are leads, few are evangelists."""

DEAL_STAGES = (
    ("appointmentscheduled",) * 14
    + ("qualifiedtobuy",) * 14
    + ("presentationscheduled",) * 12
    + ("decisionmakerboughtin",) * 10
    + ("contractsent",) * 10
    + ("closedwon",) * 18
    + ("closedlost",) * 22
)
"""100 entries, weighted by repetition: 60 open, 40 closed."""

CLOSED_STAGES = frozenset({"closedwon", "closedlost"})

PRODUCTS = (
    "Starter plan", "Growth plan", "Enterprise plan", "Analytics add-on", "Premium support",
    "Data connectors pack", "Embedded dashboards", "Forecasting module",
)  # fmt: skip

DEAL_TYPES = ("New business", "Renewal", "Expansion")

REPS = (
    ("71023456", "U04B7K2LQ", "Alex Morgan"), ("71023457", "U04B7K2LR", "Jordan Blake"),
    ("71023458", "U04B7K2LS", "Taylor Reyes"), ("71023459", "U04B7K2LT", "Casey Lin"),
    ("71023460", "U04B7K2LU", "Morgan Fisher"), ("71023461", "U04B7K2LV", "Riley Ortiz"),
    ("71023462", "U04B7K2LW", "Sam Whitaker"), ("71023463", "U04B7K2LX", "Jamie Sullivan"),
)  # fmt: skip
"""Internal sellers: (HubSpot owner id, Slack user id, name)."""

ENGINEERS = ("Dana Kowal", "Chris Ibarra", "Pat Nakamura", "Robin Achebe")
"""Internal solutions engineers who join some calls."""

COMPETITORS = ("Datastream", "InsightHub", "Clearmetric", "Quantiva", "Graphly", "Metricon")

FEATURES = (
    "dashboard sharing", "row-level security", "Salesforce sync", "scheduled exports",
    "SSO", "the forecasting view", "the API rate limits", "custom metrics", "the Slack alerts",
)  # fmt: skip

ISSUES = (
    "dashboards timing out", "a failed nightly sync", "duplicate contacts after import",
    "wrong currency totals", "the export job hanging", "login loops with SSO",
    "missing data since Tuesday", "slow queries on the revenue report",
)  # fmt: skip

MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip

CALL_TOPICS = (
    "Discovery call", "Product demo", "Pricing review", "Technical deep dive",
    "Security review", "Renewal check-in", "Support escalation", "Quarterly business review",
)  # fmt: skip

OPENINGS = (
    "Thanks for making the time today. Is everyone able to hear me okay?",
    "Great to see you again. I'd love to start with what changed since we last spoke.",
    "Hi all, thanks for joining. The plan is a quick agenda, then we dig into the {product}.",
    "Appreciate you fitting this in before the end of the quarter.",
)

REP_LINES = (
    "For a team your size the {product} usually comes in around ${amount} a year.",
    "Can you walk me through how you report on pipeline today?",
    "A lot of teams that moved from {competitor} saw their reporting time drop by half.",
    "What would need to be true for you to go live by {month}?",
    "Who else needs to sign off before a contract goes out?",
    "We can include {feature} in the pilot so your analysts can try it first hand.",
    "If we get the paperwork done in {weeks} weeks, I can hold the current pricing.",
    "Let me share my screen and show how {feature} works with your data.",
    "I hear you on {issue}; our support team has a fix rolling out this week.",
    "Is budget already allocated for this, or does it go into next year's plan?",
)

CUSTOMER_LINES = (
    "Honestly the price is the sticking point; ${amount} is above what we budgeted.",
    "We're also evaluating {competitor}, and their quote came in lower.",
    "Our main problem right now is {issue}, and it's costing us hours every week.",
    "Finance wants a decision by {month}, so the timeline is tight.",
    "Does {feature} work with our existing data warehouse?",
    "I'll need our security team to review before we can move forward.",
    "The team loved the demo, especially {feature}.",
    "We had a rough experience with {competitor}; support took days to respond.",
    "Can you send over a proposal for the {product}? I'll take it to our CFO.",
    "Realistically we can't start the rollout for another {weeks} weeks.",
    "If you can do a multi-year discount, I think we can get this approved.",
)

CLOSINGS = (
    "Great, I'll send a recap and the proposal by end of day.",
    "Next step: a technical session with your data team in {weeks} weeks.",
    "I'll loop in our support lead about {issue} and follow up tomorrow.",
    "Thanks everyone. I'll put time on the calendar to review the contract.",
)

CHANNELS = (
    "sales", "deals", "customer-success", "support", "product-feedback", "revenue-ops",
    "general", "leadership",
)  # fmt: skip

MESSAGES = {
    "positive": (
        "Huge win: {company} just signed the {product} for ${amount}! :tada:",
        "{company} renewed early and added seats. Great work {person}!",
        "Call with {company} went really well, they want a proposal by {month}.",
        "Shout-out to {person} for turning {company} around after the {issue} mess.",
        "{company} is moving off {competitor} to us. Contract goes out this week.",
        'Customer quote from {company}: "{feature} saved our analysts a day a week."',
    ),
    "negative": (
        "{company} is complaining about {issue} again. Can someone from support jump in?",
        "Lost {company} to {competitor} on price. They said we were 30% higher.",
        "Heads up: {company} is threatening to churn over {issue}.",
        "Escalation from {company}: {feature} has been broken since the last release.",
        "{company} pushed the decision to {month}; budget got frozen.",
        "Third ticket this week from {company} about {issue}. This is getting painful.",
    ),
    "neutral": (
        "Does anyone have the latest pricing deck? Meeting {company} tomorrow.",
        "Who owns the {company} account now that {person} moved teams?",
        "Reminder: pipeline review at 3pm, please update your deals in HubSpot.",
        "Is {feature} on the roadmap for this quarter? {company} keeps asking.",
        "Can someone share the security questionnaire we sent {company}?",
    ),
}
"""Slack message templates by sentiment."""

REACTIONS = {
    "positive": ("tada", "raised_hands", "fire", "rocket", "clap"),
    "negative": ("eyes", "sob", "rotating_light", "face_with_spiral_eyes"),
    "neutral": ("eyes", "+1", "white_check_mark"),
}

NAME_SPACE = len(FIRST_NAMES) * len(LAST_NAMES)
COMPANY_SPACE = len(COMPANY_PREFIXES) * len(COMPANY_CORES)
COMPANY_NAMES = COMPANY_SPACE * len(COMPANY_SUFFIXES)


def golden_stride(space: int) -> int:
    """A multiplier coprime to `space`, near `space / phi`.

    `index * stride % space` is then a bijection on range(space) that sends neighbouring
    indexes far apart: consecutive contacts get unrelated names, and no name repeats before
    every combination has been used.
    """
    stride = int(space * 0.6180339887)
    while gcd(stride, space) != 1:
        stride += 1
    return stride


NAME_STRIDE = golden_stride(NAME_SPACE)
COMPANY_STRIDE = golden_stride(COMPANY_NAMES)


def company_profile(index: int) -> tuple[str, str, str, tuple[str, str, int]]:
    """(name, domain, industry, (city, country, calling code)) of the company at `index`."""
    scattered = index * COMPANY_STRIDE % COMPANY_NAMES
    prefix = COMPANY_PREFIXES[scattered % len(COMPANY_PREFIXES)]
    core_index = scattered // len(COMPANY_PREFIXES) % len(COMPANY_CORES)
    core, industry = COMPANY_CORES[core_index]
    suffix = COMPANY_SUFFIXES[scattered // COMPANY_SPACE]
    # Past every (prefix, core, suffix) combination a number keeps names and domains distinct.
    series = index // COMPANY_NAMES
    number = f" {series + 1}" if series else ""
    domain = f"{prefix}{core}{suffix}{number.strip()}.example".lower()
    city = CITIES[index % len(CITIES)]
    return f"{prefix} {core} {suffix}{number}", domain, industry, city


def person_name(index: int) -> tuple[str, str]:
    """(first name, last name) of the contact at `index`."""
    scattered = index * NAME_STRIDE % NAME_SPACE
    first = FIRST_NAMES[scattered % len(FIRST_NAMES)]
    return first, LAST_NAMES[scattered // len(FIRST_NAMES)]


def email_address(name: str, domain: str) -> str:
    """`first.last@domain` for "First Last", lowercase, apostrophes dropped."""
    local = name.lower().replace("'", "").replace(" ", ".", 1)
    return f"{local}@{domain}"
