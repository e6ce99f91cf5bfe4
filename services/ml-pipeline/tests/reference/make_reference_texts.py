# ruff: noqa: E501  (a list of texts: each stays on one line, as it is embedded)
"""Write reference_texts.json: ~200 hand-written business sentences plus edge cases.

The texts mimic what Sophia embeds (sales-call notes, chat messages, CRM notes,
support tickets, finance/ops remarks) and add edge cases that stress the
tokenizer path: empty, whitespace, punctuation-only, non-ASCII, emoji, and
inputs far beyond the 256-token truncation limit.
"""

from __future__ import annotations

import json
from pathlib import Path

SALES_CALLS = [
    "Customer asked for a discount on the annual plan if they commit to fifty seats before the end of the quarter.",
    "Prospect is evaluating us against two competitors and wants a side-by-side feature comparison by Friday.",
    "The CFO joined the call and raised concerns about implementation costs and the timeline for onboarding.",
    "They currently use spreadsheets for forecasting and are frustrated by version conflicts between regional teams.",
    "Follow up next Tuesday with a revised quote that includes premium support and two training sessions.",
    "Decision maker is the VP of Operations; procurement needs a security questionnaire completed first.",
    "Call went well, they liked the dashboard demo but want to see how custom metrics are defined.",
    "Budget is approved for next fiscal year, so the deal will likely slip to January.",
    "Champion is leaving the company next month, we need to find a new sponsor quickly.",
    "They asked whether the platform can connect to their on-premise SQL Server without opening firewall ports.",
    "Pricing objection: the per-user model does not work for them because many users only log in monthly.",
    "Customer wants a pilot with three departments for sixty days before signing a multi-year contract.",
    "Legal flagged the data processing addendum; they require EU data residency for all customer records.",
    "Prospect mentioned their renewal with the incumbent vendor is due in April, good window to displace them.",
    "Discovery call: 400 employees, retail sector, pain point is inventory visibility across twelve warehouses.",
    "The team was impressed by the natural language queries but skeptical about accuracy on their messy data.",
    "Sent the proposal, awaiting signature; they verbally agreed to the three year term at the quoted price.",
    "Lost the deal to a cheaper competitor, main reason cited was price, not functionality.",
    "They need SSO with Okta and SCIM provisioning as hard requirements before any rollout.",
    "Upsell opportunity: marketing team wants access to the attribution reports currently limited to sales.",
    "Customer complained that the last invoice charged for seats that were deactivated in March.",
    "Good rapport with the head of finance; she wants monthly board reports generated automatically.",
    "They are consolidating tools after the merger and want to replace four reporting products with one.",
    "Asked for references from other manufacturing customers of similar size in Germany.",
    "Negotiation stalled over payment terms; they insist on net 90, we offered net 45.",
    "Demo scheduled with the regional sales managers for next Wednesday at 10am Eastern.",
    "The prospect's IT team is small and worried about maintenance burden after go-live.",
    "Competitor offered a free first year; we should emphasize total cost of ownership over three years.",
    "They are hiring a data analyst and would like the tool to be usable without SQL knowledge.",
    "Customer confirmed expansion to the APAC subsidiaries, adding roughly 120 seats in Q2.",
    "Quick check-in call, nothing new, they are still waiting on internal budget approval.",
    "The buyer wants everything in writing, including the roadmap commitments discussed verbally.",
    "Their churn rate has doubled this year and leadership wants early warning signals per account.",
    "Procurement requested a W-9, insurance certificate, and a copy of our SOC 2 Type II report.",
    "Trial usage is low; only two of the twenty invited users have logged in this week.",
    "Big win: signed the enterprise agreement worth 240k ARR with a two year price lock.",
    "They want to embed our charts into their customer portal under their own branding.",
    "Meeting rescheduled twice already; the account may be losing interest.",
    "Prospect is price sensitive but values the local support team and German-language documentation.",
    "We agreed on a phased rollout: finance first, then sales operations, then customer success.",
]

CHAT_MESSAGES = [
    "hey can you send me the latest numbers for the west region?",
    "Thanks, got it!",
    "is the dashboard down for anyone else? getting a 502",
    "Can we push the sync to 3pm? I'm stuck in another meeting.",
    "lol that forecast is way off again",
    "Who owns the Acme account now that Jenna moved to partnerships?",
    "just pinged legal about the NDA, should hear back today",
    "Reminder: quarterly business review slides are due tomorrow morning.",
    "pls review my PR when you get a chance, it fixes the currency rounding bug",
    "Great job on closing the Northwind deal team!",
    "anyone know why revenue dropped on the 14th? looks like a data gap",
    "I'll be OOO Friday, Mark is covering my accounts.",
    "can u export that table to csv",
    "The client wants to move the kickoff to next week, is that ok?",
    "Heads up, the pricing page changes go live tonight at midnight.",
    "ok",
    "sounds good, let's do it",
    "where's the onboarding checklist doc?",
    "Our NPS survey closed with 312 responses, summary coming shortly.",
    "Do we support exporting reports to PowerPoint or just PDF?",
    "Server costs spiked 40% this month, we should look at the query cache.",
    "FYI the customer replied, they're happy with the fix.",
    "Can someone approve my expense report before payroll closes?",
    "New lead from the webinar: mid-size logistics company, wants a demo ASAP.",
    "the login page is super slow on mobile",
    "Who can help me with a pivot table that groups by week instead of day?",
    "brb grabbing coffee",
    "We hit 1M rows in the events table, do we need to partition?",
    "The CEO wants a one-pager on churn drivers by Monday.",
    "Please don't share the draft contract outside the deal team.",
    "did the nightly ETL job fail again? the numbers look stale",
    "Congrats on the promotion, well deserved!",
    "Is there a template for the renewal email?",
    "Customer success call in 5, joining from my phone.",
    "I think the conversion funnel chart double counts trial signups.",
    "Can you add me to the revenue ops channel?",
    "Happy Friday everyone, weekly metrics are in the shared folder.",
    "hmm not sure, let me check with the data team and get back to you",
    "The integration with HubSpot is throwing auth errors since this morning.",
    "Let's table this until the budget is finalized.",
]

CRM_NOTES = [
    "Account status changed from prospect to customer after contract signature on 2024-03-12.",
    "Left voicemail, no answer. Will try again Thursday.",
    "Contact prefers email over phone; do not call before 9am Pacific.",
    "Key stakeholder: Maria Lopez, Director of Finance, strong advocate for the product.",
    "Renewal risk: high. Usage dropped 60% over the last two months and the main admin left.",
    "Sent case study and pricing sheet per request.",
    "Customer reported duplicate records after the CSV import; ticket escalated to support tier 2.",
    "Meeting notes: discussed Q3 goals, identified reporting gaps in the supply chain module.",
    "Opportunity stage moved to negotiation; expected close date end of next month.",
    "Billing contact updated. New address: 45 Harbor Street, Suite 300, Boston, MA.",
    "Customer requested cancellation effective at the end of the current term.",
    "Health score improved after the training workshop; weekly active users up to 85.",
    "Partner referral from a systems integrator in Toronto, qualified as a medium priority lead.",
    "Executive sponsor asked for a quarterly roadmap briefing with our product team.",
    "Do not contact: customer opted out of marketing communications.",
    "Account merged with duplicate entry created by the web form.",
    "Invoice 10472 overdue by 35 days, reminder sent, finance to follow up.",
    "Customer is piloting the anomaly detection feature on their payments data.",
    "Note: they use a fiscal year starting in July, align renewal conversations accordingly.",
    "Lead source: trade show booth, spoke with two operations managers about warehouse analytics.",
    "Signed order form for additional 25 seats, prorated to the current term.",
    "Contact bounced; email address no longer valid, need a new point of contact.",
    "Implementation completed on schedule, handoff to customer success done.",
    "Asked about HIPAA compliance; routed to security team for a formal answer.",
    "Disqualified: company too small, fewer than ten employees and no budget.",
    "Customer wants to expand usage to their Brazilian subsidiary, Portuguese UI required.",
    "Sentiment on the last call was negative due to repeated outages in October.",
    "Upsold to premium tier, includes dedicated CSM and 99.9% uptime SLA.",
    "Competitive intel: they were quoted 18 dollars per user per month by the other vendor.",
    "Scheduled executive business review for the second week of November.",
    "Lead nurturing sequence completed with no engagement; moving to recycled status.",
    "Customer asked for an API rate limit increase for their nightly data pulls.",
    "Annual contract value 96,000 USD; payment terms net 30; auto-renew enabled.",
    "Note from support: the customer is frustrated with response times on weekend tickets.",
    "Champion promoted to COO, great opportunity to expand across departments.",
    "Trial extended by 14 days at the prospect's request due to holiday schedule.",
    "They plan to migrate from the legacy ERP next year, which will affect the data connectors.",
    "Customer success plan updated with three adoption milestones for the next quarter.",
    "Closed lost: project put on hold indefinitely because of a hiring freeze.",
    "Reference customer: agreed to speak with prospects in the healthcare vertical.",
]

OPS_FINANCE_SUPPORT = [
    "Quarterly revenue grew 12 percent year over year, driven mainly by enterprise renewals.",
    "Gross margin declined slightly due to higher cloud infrastructure costs.",
    "The board approved a budget increase for the customer support team.",
    "Operating expenses are tracking 3 percent under plan for the first half.",
    "Days sales outstanding increased to 52, collections need attention.",
    "Headcount plan includes four new account executives in EMEA by June.",
    "Inventory turnover improved after we reduced safety stock at the Dallas warehouse.",
    "Shipping delays at the port caused a backlog of 300 orders last week.",
    "Ticket: user cannot reset password, the reset email never arrives.",
    "Bug report: exported PDF cuts off the last column of wide tables.",
    "Feature request: allow scheduling reports to be sent to Slack channels.",
    "The refund was processed and should appear on the statement within five business days.",
    "Our average handle time for support chats dropped to six minutes.",
    "Supplier raised prices by 8 percent citing raw material costs.",
    "Cash runway is 28 months at the current burn rate.",
    "Customer acquisition cost rose in Q2 because paid search got more expensive.",
    "Monthly recurring revenue reached 1.4 million dollars for the first time.",
    "We missed the SLA on three priority one incidents this month.",
    "The audit found no material weaknesses in revenue recognition controls.",
    "Marketing qualified leads increased but conversion to opportunities stayed flat.",
    "The warehouse management system will be offline Saturday night for maintenance.",
    "Employee engagement survey shows concerns about workload in the sales team.",
    "Net revenue retention is 118 percent, strongest in the mid-market segment.",
    "Accounts payable backlog cleared after hiring a temporary clerk.",
    "Forecast accuracy improved to within 5 percent of actuals for three consecutive months.",
    "The new pricing tier cannibalized some premium upgrades, need to review packaging.",
    "Support escalation: enterprise customer data sync has been failing for 48 hours.",
    "Payroll run completed; two contractors were paid late due to missing bank details.",
    "Travel expenses exceeded the policy limit for the sales kickoff event.",
    "The churned customers were mostly small businesses on monthly plans.",
    "Product usage analytics show the forecasting module is rarely opened after week one.",
    "We renegotiated the office lease and saved 15 percent annually.",
    "A customer requested deletion of all personal data under GDPR article 17.",
    "Average deal size grew from 22k to 31k after introducing bundles.",
    "Sales cycle length for enterprise deals is now about 140 days.",
    "Chargebacks increased, mostly from one payment processor in Southeast Asia.",
    "Please reconcile the March bank statement with the general ledger by Wednesday.",
    "The data warehouse migration is 70 percent complete and on budget.",
    "Win rate against the main competitor dropped from 45 to 33 percent.",
    "Customer satisfaction scores are highest for accounts with a dedicated manager.",
]

LONGER = [
    "During the quarterly business review the customer explained that their finance team spends almost two full days each month reconciling sales figures from three different systems, and they would like our platform to become the single source of truth for revenue reporting across all regions.",
    "The prospect's operations director walked us through their current process: orders arrive by email, are typed manually into the ERP, and weekly reports are assembled in Excel, which causes frequent errors, delays, and arguments between the sales and logistics teams about which numbers are correct.",
    "After reviewing the pilot results, the steering committee agreed that the anomaly alerts saved time, but they asked for more control over thresholds, better explanations of why an alert fired, and an audit trail that their compliance officers can export for regulators once per quarter.",
    "Our renewal conversation was tense: the customer feels that promised features around multi-currency consolidation were delayed twice, their admin spent weeks on workarounds, and they expect either a meaningful discount or a firm delivery date with penalties written into the contract.",
    "The new regional manager wants weekly pipeline reviews to focus on deals stuck in the same stage for more than thirty days, with automatic summaries of recent customer emails and call notes so that reps spend less time preparing slides and more time talking to buyers.",
    "Support analysis shows that most tickets in the last month relate to the new permissions model, particularly users who belong to several teams and suddenly lost access to shared dashboards, so we should publish a guide and consider a migration tool for existing customers.",
    "Leadership asked for a clear view of profitability by customer segment, including support costs, infrastructure usage, discounts, and the time our solutions engineers spend on each account, because the current margin numbers hide large differences between small and enterprise customers.",
    "The customer is expanding into three new countries next year and needs localized invoices, support for local tax rules, reports in multiple currencies with consistent exchange rates, and dashboards that regional managers can read in their own language without manual translation.",
    "In the call the buyer repeatedly emphasized that they had been burned by a previous analytics vendor that overpromised during the sales process, so they want a written success plan, named contacts, measurable adoption targets, and the right to exit after six months if targets are missed.",
    "Marketing and sales disagree about lead quality: marketing reports record numbers of qualified leads from the spring campaign, while sales says most of those contacts were students or competitors downloading the whitepaper, so we need a shared definition and better enrichment data.",
]

EDGE_CASES = [
    "",
    "   ",
    "!!!",
    "?!?!... ---",
    "$$$ %%% ###",
    "N/A",
    "Q3",
    "Café in München: Umsatz stieg um 12 % gegenüber dem Vorjahr, Kunden sind sehr zufrieden.",
    "Le client souhaite une remise de 10 % sur le renouvellement annuel et une réunion la semaine prochaine.",
    "El cliente pidió una demostración del módulo de previsión de ventas para el próximo lunes.",
    "Клиент просит перенести встречу на следующую неделю из-за отпуска финансового директора.",
    "顧客は来週の会議でダッシュボードのデモを見たいと言っています。",
    "客户要求在季度末之前提供新的报价单。",
    "العميل يطلب خصمًا على العقد السنوي",
    "Deal closed!!! 🎉🚀 Huge thanks to the whole team 🙌",
    "Ticket #4821 — customer says “the export button does nothing” on Safari 17.",
    "naïve résumé façade coöperate — ångström Øresund",
    "ARR: $1.2M → $1.5M (+25%) YoY; NRR 118%; GRR 92%.",
    "email: jane.doe@example.com | phone: +1 (555) 010-2345 | ext. 77",
    "https://example.com/reports/q3?region=emea&segment=enterprise",
    "SELECT customer_id, SUM(amount) FROM invoices GROUP BY customer_id;",
    "\t\nnew line\tand tab separated\nnotes\n",
    "ALL CAPS URGENT: CUSTOMER THREATENING TO CANCEL IF OUTAGE NOT FIXED TODAY",
    "supercalifragilisticexpialidocious antidisestablishmentarianism pneumonoultramicroscopicsilicovolcanoconiosis",
]


def _long_texts() -> list[str]:
    """Inputs well over 256 word pieces, to exercise truncation identically in every runtime."""
    meeting = " ".join(LONGER[:6])
    transcript = " ".join(f"Speaker {i % 3 + 1}: {CHAT_MESSAGES[i]} {SALES_CALLS[i]}" for i in range(25))
    numbers = " ".join(f"order {n} shipped to warehouse {n % 7} for {n * 13} EUR;" for n in range(1000, 1080))
    return [meeting, transcript, numbers]


def build_texts() -> list[str]:
    """Return the full reference set in a fixed order."""
    return SALES_CALLS + CHAT_MESSAGES + CRM_NOTES + OPS_FINANCE_SUPPORT + LONGER + EDGE_CASES + _long_texts()


if __name__ == "__main__":
    texts = build_texts()
    Path(__file__).with_name("reference_texts.json").write_text(
        json.dumps(texts, ensure_ascii=False, indent=1), encoding="utf-8"
    )
    print(f"wrote {len(texts)} texts")
