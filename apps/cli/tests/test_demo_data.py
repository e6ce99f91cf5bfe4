from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from sophia.cli.demo_data import REFERENCE_NOW, generate, to_ndjson
from sophia.core.records import EXTERNAL_ID_MAX_LENGTH, is_identifier

LINE_KEYS = {"source_system", "kind", "external_id", "data", "created_at"}
OPEN_STAGES = {
    "appointmentscheduled",
    "qualifiedtobuy",
    "presentationscheduled",
    "decisionmakerboughtin",
    "contractsent",
}


@pytest.fixture(scope="module")
def sample():
    return list(generate(10_000, seed=7))


def of_kind(lines, kind):
    return [line for line in lines if line["kind"] == kind]


def test_generate_is_deterministic_for_the_same_seed():
    assert list(generate(500, seed=3)) == list(generate(500, seed=3))


def test_different_seeds_give_different_records():
    assert list(generate(500, seed=3)) != list(generate(500, seed=4))


def test_now_defaults_to_a_fixed_reference_not_the_clock():
    assert list(generate(200)) == list(generate(200, seed=42, now=REFERENCE_NOW))


@pytest.mark.parametrize("records", [0, 1, 2, 17, 1000])
def test_generate_yields_exactly_the_requested_count(records):
    assert sum(1 for _ in generate(records)) == records


def test_generate_rejects_a_negative_count_and_a_naive_now():
    with pytest.raises(ValueError, match="records"):
        list(generate(-1))
    with pytest.raises(ValueError, match="timezone"):
        list(generate(10, now=datetime(2026, 1, 1)))


def test_kinds_are_mixed_in_the_documented_proportions(sample):
    shares = {kind: count / len(sample) for kind, count in Counter(line["kind"] for line in sample).items()}
    expected = {"deal": 0.25, "contact": 0.20, "company": 0.10, "call": 0.20, "message": 0.25}
    assert shares.keys() == expected.keys()
    for kind, share in expected.items():
        assert share - 0.025 <= shares[kind] <= share + 0.025, kind


def test_each_kind_comes_from_its_source_system(sample):
    systems = {(line["kind"], line["source_system"]) for line in sample}
    assert systems == {
        ("deal", "hubspot"),
        ("contact", "hubspot"),
        ("company", "hubspot"),
        ("call", "gong"),
        ("message", "slack"),
    }


def test_natural_keys_are_unique(sample):
    keys = [(line["source_system"], line["kind"], line["external_id"]) for line in sample]
    assert len(set(keys)) == len(keys)


def test_every_line_passes_catalog_line_validation(sample):
    for line in sample:
        assert set(line) <= LINE_KEYS
        assert is_identifier(line["source_system"])
        assert is_identifier(line["kind"])
        assert 1 <= len(line["external_id"]) <= EXTERNAL_ID_MAX_LENGTH
        assert isinstance(line["data"], dict)
        assert datetime.fromisoformat(line["created_at"]).tzinfo is not None


def test_created_at_is_timezone_aware_and_within_the_year_before_now():
    now = datetime(2025, 6, 15, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    created = [datetime.fromisoformat(line["created_at"]) for line in generate(5000, now=now)]
    assert all(moment.utcoffset() == timedelta(0) for moment in created)
    assert all(now - timedelta(days=365) <= moment <= now for moment in created)
    assert min(created) < now - timedelta(days=350)
    assert max(created) > now - timedelta(days=15)


def test_records_come_in_chronological_order(sample):
    created = [datetime.fromisoformat(line["created_at"]) for line in sample]
    assert created == sorted(created)


def test_source_timestamps_agree_with_created_at(sample):
    for line in sample:
        data, created_at = line["data"], line["created_at"]
        if line["source_system"] == "hubspot":
            assert data["createdate"] == created_at
        elif line["kind"] == "call":
            assert data["started"] == created_at
        else:
            seconds = int(data["ts"].split(".")[0])
            assert datetime.fromtimestamp(seconds, UTC) == datetime.fromisoformat(created_at)


def test_deals_look_like_hubspot_deals_and_about_sixty_percent_are_open(sample):
    deals = [line["data"] for line in of_kind(sample, "deal")]
    for deal in deals:
        assert Decimal(deal["amount"]) > 0
        assert deal["amount"].endswith(".00")
        assert deal["pipeline"] == "default"
        assert deal["closedate"] >= deal["createdate"][:10]
    open_share = sum(deal["dealstage"] in OPEN_STAGES for deal in deals) / len(deals)
    assert 0.55 <= open_share <= 0.65


def test_deals_reference_companies_and_contacts_that_appear_earlier(sample):
    seen: set[str] = set()
    for line in sample:
        data = line["data"]
        if line["kind"] in ("deal", "contact"):
            assert data["associated_company_id"] in seen
        if line["kind"] == "deal":
            assert all(contact in seen for contact in data["associated_contact_ids"])
        seen.add(line["external_id"])
    deals = [line["data"] for line in of_kind(sample, "deal")]
    assert sum(bool(deal["associated_contact_ids"]) for deal in deals) > 0.8 * len(deals)


def test_contacts_work_at_the_company_they_name(sample):
    companies = {line["external_id"]: line["data"] for line in of_kind(sample, "company")}
    for line in of_kind(sample, "contact"):
        company = companies[line["data"]["associated_company_id"]]
        assert line["data"]["company"] == company["name"]
        assert line["data"]["email"].endswith("@" + company["domain"])


def test_calls_name_deals_that_exist(sample):
    deal_ids = {line["external_id"] for line in of_kind(sample, "deal")}
    calls = [line["data"] for line in of_kind(sample, "call")]
    with_deal = [call for call in calls if "deal_id" in call]
    assert 0.5 * len(calls) < len(with_deal) < len(calls)
    assert all(call["deal_id"] in deal_ids for call in with_deal)


def test_call_transcripts_have_several_turns_with_speakers(sample):
    for line in of_kind(sample, "call"):
        call = line["data"]
        names = {participant["name"] for participant in call["participants"]}
        affiliations = {participant["affiliation"] for participant in call["participants"]}
        assert affiliations == {"internal", "external"}
        assert 4 <= len(call["transcript"]) <= 12
        starts = [turn["start_s"] for turn in call["transcript"]]
        assert starts == sorted(starts)
        assert starts[-1] < call["duration_s"]
        for turn in call["transcript"]:
            assert turn["speaker"] in names
            assert turn["text"]
            assert "{" not in turn["text"]


def test_slack_messages_have_threads_reactions_and_filled_templates(sample):
    messages = [line["data"] for line in of_kind(sample, "message")]
    earlier_ts: set[tuple[str, str]] = set()
    for message in messages:
        assert message["text"]
        assert "{" not in message["text"]
        if "thread_ts" in message:
            assert (message["channel"], message["thread_ts"]) in earlier_ts
        earlier_ts.add((message["channel"], message["ts"]))
    assert any("thread_ts" in message for message in messages)
    assert any("reactions" in message for message in messages)
    assert len({message["ts"] for message in messages}) == len(messages)


def test_to_ndjson_lines_parse_back_with_orjson_to_the_same_records(sample):
    body = b"".join(to_ndjson(sample))
    assert body.endswith(b"\n")
    assert [orjson.loads(line) for line in body.splitlines()] == sample


def test_to_ndjson_chunks_hold_at_most_batch_lines_whole_lines():
    lines = list(generate(25))
    chunks = list(to_ndjson(lines, batch_lines=10))
    assert [chunk.count(b"\n") for chunk in chunks] == [10, 10, 5]
    assert all(chunk.endswith(b"\n") for chunk in chunks)
    assert b"".join(chunks) == b"".join(to_ndjson(lines))


def test_to_ndjson_of_nothing_yields_no_chunks():
    assert list(to_ndjson([])) == []


def test_to_ndjson_rejects_batches_of_less_than_one_line():
    with pytest.raises(ValueError, match="batch_lines"):
        list(to_ndjson([], batch_lines=0))
