"""Model archives are unpacked only inside the bundle: no path, link or special file gets out."""
import io
import tarfile

import pytest


def _tar_with(tmp_path, name, add):
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        add(tar)
    return path


def _file(tar, arcname, data=b"x"):
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def test_archives_cannot_write_outside_the_bundle(tmp_path):
    from gateway.serving.bundles import BundleRejected, unpack

    outside = tmp_path / "outside"

    def link_then_write(tar):                      # a symlink out of the bundle, then a file through it
        info = tarfile.TarInfo("escape")
        info.type, info.linkname = tarfile.SYMTYPE, str(outside.parent)
        tar.addfile(info)
        _file(tar, "escape/outside/PWNED")

    def hardlink(tar):
        info = tarfile.TarInfo("h")
        info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        tar.addfile(info)

    cases = {"dotdot": lambda tar: _file(tar, "../outside/PWNED"),
             "absolute": lambda tar: _file(tar, str(outside / "PWNED")),
             "symlink": link_then_write, "hardlink": hardlink}
    for name, add in cases.items():
        archive = _tar_with(tmp_path, f"{name}.tar.gz", add)
        dest = tmp_path / f"bundle-{name}"
        with pytest.raises(BundleRejected, match="outside the bundle|link or special file"):
            unpack(archive, dest)
        assert not dest.exists(), name                      # nothing half-written is left
    assert not outside.exists() and not (tmp_path / "PWNED").exists()
