"""API keys: a scope outside the known ones is refused before anything is written."""

import pytest

from sophia.database import keys


async def test_creating_a_key_with_an_unknown_scope_is_refused_and_writes_nothing(database):
    async with database.connection() as connection:
        before = len(await keys.list_all(connection))
        with pytest.raises(ValueError, match="scope must be one of read, write, admin"):
            await keys.create(connection, "intruder", "root")
        assert len(await keys.list_all(connection)) == before
