import stat

from sophia.shared.files import write_private


def test_private_files_are_owner_only_from_the_start_and_replaced_whole(tmp_path):
    target = tmp_path / "nested" / "secret"
    write_private(target, "one")
    write_private(target, b"two")
    assert target.read_text() == "two"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert [path.name for path in target.parent.iterdir()] == ["secret"]
