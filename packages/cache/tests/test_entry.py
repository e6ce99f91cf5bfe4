from sophia.cache import TtlClass
from sophia.cache.entry import decode, encode, make_entry


def test_encoding_round_trips_value_etag_tags_and_times_across_clocks() -> None:
    entry = make_entry(b"\x00payload", TtlClass(60, 10, 300), now=50.0, tags=("record:1", "list:é"))
    blob = encode(entry, now=50.0, wall=lambda: 1_000_000.0)
    # another process: its monotonic clock reads 7.0 when the wall clock has moved on by 1 s
    decoded = decode(blob, now=7.0, wall=lambda: 1_000_001.0)
    assert decoded is not None
    assert decoded.value == b"\x00payload"
    assert decoded.etag == entry.etag
    assert decoded.tags == ("record:1", "list:é")
    assert decoded.fresh_until == 7.0 + 59.0
    assert decoded.revalidate_until == 7.0 + 69.0
    assert decoded.stale_until == 7.0 + 359.0
    assert not decoded.missing


def test_a_negative_entry_keeps_its_flag_and_garbage_decodes_to_none() -> None:
    entry = make_entry(b"no such record", TtlClass(5), now=0.0, missing=True)
    decoded = decode(encode(entry, 0.0), 0.0)
    assert decoded is not None
    assert decoded.missing
    assert decode(b"not an entry", 0.0) is None
    assert decode(b"", 0.0) is None


def test_the_etag_depends_only_on_the_value() -> None:
    first = make_entry(b"same", TtlClass(1), now=0.0)
    second = make_entry(b"same", TtlClass(9), now=5.0, tags=("x",))
    assert first.etag == second.etag
    assert make_entry(b"other", TtlClass(1), now=0.0).etag != first.etag
