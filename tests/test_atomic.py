"""Atomic writes: ordinary permissions, and a crash before the rename leaves nothing."""

import os
import stat

import pytest

from relu_regions.atomic import atomic_write_text


class Crash(Exception):
    pass


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    """A new file gets 0o666 minus the umask (not mkstemp's private 0o600); a replaced file keeps
    its mode."""
    old = os.umask(0o022)
    try:
        new = tmp_path / "new.json"
        atomic_write_text(new, "{}")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        kept = tmp_path / "kept.json"
        kept.write_text("old")
        kept.chmod(0o640)
        atomic_write_text(kept, "new")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_text() == "new"
    finally:
        os.umask(old)


def test_a_crash_before_the_rename_leaves_nothing_new(tmp_path, monkeypatch):
    """A crash after the data is written but before os.replace: no file under the final name,
    no temporary file left."""
    def crash(*a, **k):
        raise Crash

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(Crash):
        atomic_write_text(tmp_path / "metrics.json", "{}")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []

