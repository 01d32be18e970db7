"""Local model data is copied from the model root's descriptor without following any link, so
a directory swapped for a link after the check is refused, never read through."""
import os

import pytest

from gateway.data.snapshot import Budget, snapshot
from gateway.errors import BundleRejected


def _tree(tmp_path):
    root = tmp_path / "root"
    (root / "m" / "code").mkdir(parents=True)
    (root / "m" / "code" / "inference.py").write_text("def model_fn(d):\n    return 1\n")
    (root / "m" / "w.bin").write_bytes(b"x" * 1000)
    secret = tmp_path / "secret"
    secret.mkdir()
    (secret / "key").write_text("hunter2")
    return root, secret


def test_a_directory_and_a_file_are_copied_as_they_are(tmp_path):
    root, _ = _tree(tmp_path)
    out = snapshot(root, root / "m", tmp_path / "copy", Budget(None, 100))
    assert (out / "code" / "inference.py").read_text().startswith("def model_fn")
    assert (out / "w.bin").read_bytes() == b"x" * 1000
    one = snapshot(root, root / "m" / "w.bin", tmp_path / "copy2", Budget(None, 100))
    assert one.name == "w.bin" and one.read_bytes() == b"x" * 1000


def test_links_swapped_in_anywhere_and_special_files_are_refused(tmp_path):
    root, secret = _tree(tmp_path)
    os.rename(root / "m" / "code", root / "m" / "code.real")
    os.symlink(secret, root / "m" / "code")                       # a directory became a link after the check
    with pytest.raises(BundleRejected, match="symbolic link"):
        snapshot(root, root / "m", tmp_path / "c1", Budget(None, 100))
    with pytest.raises(BundleRejected, match="not a directory that may be followed"):
        snapshot(root, root / "m" / "code" / "key", tmp_path / "c2", Budget(None, 100))
    os.remove(root / "m" / "code")
    os.rename(root / "m" / "code.real", root / "m" / "code")
    os.mkfifo(root / "m" / "pipe")                               # would block a reader forever
    with pytest.raises(BundleRejected, match="not a regular file"):
        snapshot(root, root / "m", tmp_path / "c3", Budget(None, 100))
    os.remove(root / "m" / "pipe")
    with pytest.raises(BundleRejected, match="larger than"):
        snapshot(root, root / "m", tmp_path / "c4", Budget(500, 100))
    with pytest.raises(BundleRejected, match="too many"):
        snapshot(root, root / "m", tmp_path / "c5", Budget(None, 2))
