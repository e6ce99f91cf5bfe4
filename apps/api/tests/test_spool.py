"""Spooled bulk rows share one memory budget per process; past it, a body continues in a file."""

from __future__ import annotations

import pytest

from sophia.api.records.spool import FILE_WRITE_BYTES, Spools
from sophia.core.errors import Unavailable


async def test_a_spool_stays_in_memory_while_the_budget_allows():
    spools = Spools(max_uploads=2, memory_bytes=100)
    with spools.spool() as spool:
        await spool.write(b"a" * 60)
        await spool.write(b"b" * 40)
        assert not spool.in_file
        assert spools.in_memory == 100
        assert (await spool.finish()).read() == b"a" * 60 + b"b" * 40
    assert spools.in_memory == 0
    assert spools.uploads == 0


async def test_the_budget_is_shared_so_a_second_body_goes_to_a_file_whole():
    spools = Spools(max_uploads=2, memory_bytes=100)
    with spools.spool() as first, spools.spool() as second:
        await first.write(b"1" * 80)
        await second.write(b"2" * 10)
        await second.write(b"3" * 30)  # 80 + 10 + 30 > 100: the second body moves to a file
        assert not first.in_file
        assert second.in_file
        assert spools.in_memory == 80  # what the second held in memory was given back
        big = b"4" * (FILE_WRITE_BYTES + 7)
        await second.write(big)
        assert (await second.finish()).read() == b"2" * 10 + b"3" * 30 + big
        assert (await first.finish()).read() == b"1" * 80
    assert spools.in_memory == 0


async def test_one_upload_past_the_most_at_once_is_refused_until_one_ends():
    spools = Spools(max_uploads=1, memory_bytes=100)
    with (
        spools.spool(),
        pytest.raises(Unavailable, match="1 bulk uploads are in progress"),
        spools.spool(),
    ):
        pass
    with spools.spool() as spool:
        await spool.write(b"x")
    assert spools.uploads == 0
