from concurrent.futures import ThreadPoolExecutor

import pytest

from guard.files import write_atomically


def test_writers_of_one_path_at_once_each_leave_a_whole_file(tmp_path):
    path = tmp_path / "cache" / "shared.bin"
    payloads = [bytes([i]) * 200_000 for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: write_atomically(path, lambda tmp: tmp.write_bytes(p)), payloads))
    assert path.read_bytes() in payloads
    assert [f.name for f in path.parent.iterdir()] == ["shared.bin"]  # no temporary file left behind


def test_a_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text("previous")

    def fail(tmp):
        tmp.write_text("half")
        raise OSError("disk full")
    with pytest.raises(OSError):
        write_atomically(path, fail)
    assert path.read_text() == "previous" and [f.name for f in tmp_path.iterdir()] == ["state.json"]
