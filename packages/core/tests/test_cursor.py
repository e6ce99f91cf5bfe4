import base64
from uuid import UUID

import pytest

from sophia.core.cursor import decode_cursor, encode_cursor, filter_fingerprint, split_page
from sophia.core.errors import Invalid

SOME_ID = UUID("01a211bd-bbc5-7af1-9d97-be433a21b0ea")


def test_cursor_round_trips_the_last_id_for_the_same_filter():
    fingerprint = filter_fingerprint("hubspot", "deal")
    assert decode_cursor(encode_cursor(SOME_ID, fingerprint), fingerprint) == SOME_ID


def test_cursor_is_opaque_url_safe_text():
    cursor = encode_cursor(SOME_ID, filter_fingerprint())
    assert SOME_ID.hex not in cursor
    assert all(c.isalnum() or c in "-_" for c in cursor)


def test_cursor_from_another_filter_is_rejected():
    cursor = encode_cursor(SOME_ID, filter_fingerprint("hubspot"))
    with pytest.raises(Invalid) as caught:
        decode_cursor(cursor, filter_fingerprint("gong"))
    assert caught.value.errors[0].location == ("query", "cursor")


@pytest.mark.parametrize("damaged", ["", "!!!", "bm90LWEtY3Vyc29y", "MS56enoudw", "Mi4wMWEy"])
def test_damaged_cursor_is_invalid_not_a_crash(damaged):
    with pytest.raises(Invalid):
        decode_cursor(damaged, filter_fingerprint())


def test_only_the_spelling_issued_is_accepted_not_one_with_junk_or_padding_the_decoder_skips():
    fingerprint = filter_fingerprint("hubspot")
    cursor = encode_cursor(SOME_ID, fingerprint)
    for respelled in (
        cursor + "==",
        cursor[:4] + "!" + cursor[4:],
        cursor[:4] + "\n" + cursor[4:],
        cursor + "%",
    ):
        with pytest.raises(Invalid):
            decode_cursor(respelled, fingerprint)
    upper = base64.urlsafe_b64encode(f"1.{SOME_ID.hex.upper()}.{fingerprint}".encode()).decode().rstrip("=")
    with pytest.raises(Invalid):  # the same id, spelled another way: another cache key
        decode_cursor(upper, fingerprint)
    assert decode_cursor(cursor, fingerprint) == SOME_ID


def test_fingerprint_is_stable_and_distinguishes_filters():
    assert filter_fingerprint("a", 1) == filter_fingerprint("a", 1)
    assert filter_fingerprint("a", 1) != filter_fingerprint("a", 2)


def test_split_page_keeps_limit_rows_and_points_the_cursor_after_the_last():
    ids = [UUID(int=n) for n in range(1, 5)]
    page, cursor = split_page(ids, 3, lambda row: row, "f")
    assert list(page) == ids[:3]
    assert decode_cursor(cursor, "f") == ids[2]
    assert split_page(ids[:3], 3, lambda row: row, "f") == (ids[:3], None)
