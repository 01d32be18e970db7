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


def _zeros(tar, arcname, size):
    info = tarfile.TarInfo(arcname)
    info.size = size
    tar.addfile(info, io.BytesIO(bytes(size)))


def test_an_archive_that_expands_past_the_limit_stops_at_it(tmp_path):
    from gateway.serving.bundles import BundleRejected, Limits, unpack

    archive = _tar_with(tmp_path, "bomb.tar.gz", lambda tar: [_zeros(tar, f"part{i}", 4 << 20) for i in range(8)])
    assert archive.stat().st_size < 1 << 20                     # 32 MB of zeros in well under 1 MB
    dest = tmp_path / "bundle"
    with pytest.raises(BundleRejected, match="larger than 10 MB unpacked"):
        unpack(archive, dest, Limits(max_bytes=10 << 20))
    assert not dest.exists()                                     # what was written before the cap is gone


def test_an_archive_of_too_many_entries_is_refused(tmp_path):
    from gateway.serving.bundles import BundleRejected, Limits, unpack

    archive = _tar_with(tmp_path, "many.tar.gz", lambda tar: [_file(tar, f"f{i}", b"") for i in range(60)])
    with pytest.raises(BundleRejected, match="more than 50 files and directories"):
        unpack(archive, tmp_path / "b", Limits(max_entries=50))


def test_a_model_directory_or_file_over_the_limit_is_refused_before_copying(tmp_path):
    from gateway.serving.bundles import BundleRejected, Limits, install

    big = tmp_path / "model"
    big.mkdir()
    (big / "model.pkl").write_bytes(bytes(3 << 20))
    for source in (big, big / "model.pkl"):
        dest = tmp_path / f"copy-{source.name}"
        with pytest.raises(BundleRejected, match="larger than 2 MB unpacked"):
            install(source, dest, Limits(max_bytes=2 << 20))
        assert not dest.exists()


def test_the_default_limit_is_the_variants_memory_and_the_flag_overrides_it(tmp_path):
    from gateway.config import Settings
    from gateway.domain import VariantSpec
    from gateway.serving.endpoints import EndpointService

    v = VariantSpec(memory_mb=3072)
    assert EndpointService(Settings(state_dir=tmp_path), None, None).bundle_limits(v).max_bytes == 3072 << 20
    flagged = EndpointService(Settings(state_dir=tmp_path, max_bundle_mb=100), None, None)
    assert flagged.bundle_limits(v).max_bytes == 100 << 20


def test_an_extended_header_is_refused_before_it_is_read(tmp_path):
    """A small archive can announce a huge GNU long name or PAX header, which tarfile would
    read whole into memory; past 64 KiB it is refused unread."""
    from gateway.serving.bundles import BundleRejected, Limits, unpack

    path = tmp_path / "longname.tar.gz"
    with tarfile.open(path, "w:gz", format=tarfile.GNU_FORMAT) as tar:
        _file(tar, "a" * (200 << 10))
    with pytest.raises(BundleRejected, match="extended header"):
        unpack(path, tmp_path / "b", Limits(max_bytes=1 << 20))


def test_the_directories_an_archive_makes_count_and_depth_is_bounded(tmp_path):
    from gateway.serving.bundles import BundleRejected, Limits, unpack

    many = _tar_with(tmp_path, "dirs.tar.gz", lambda tar: [_file(tar, f"d{i}/e{i}/f", b"") for i in range(40)])
    with pytest.raises(BundleRejected, match="more than 100 files and directories"):    # 40 files, 80 dirs
        unpack(many, tmp_path / "b1", Limits(max_entries=100))
    deep = _tar_with(tmp_path, "deep.tar.gz", lambda tar: _file(tar, "/".join(["d"] * 150) + "/f", b""))
    with pytest.raises(BundleRejected, match="directories deep"):
        unpack(deep, tmp_path / "b2", Limits())


def _model_archive(tmp_path, name="model.tar.gz", size=300_000):
    import os

    from gateway.client import pickle_model

    return _tar_with(tmp_path, name, lambda tar: (_file(tar, "model.pkl", pickle_model(len)),
                                                  _file(tar, "weights.bin", os.urandom(size))))


@pytest.mark.parametrize("cut", [1, 8, 20, 1000, 100_000])
def test_a_model_archive_cut_short_anywhere_is_refused_by_the_check_and_the_unpack(tmp_path, cut):
    from gateway.serving.bundles import NO_LIMITS, BundleRejected, unpack, verify_model_data

    whole = _model_archive(tmp_path)
    verify_model_data(whole, NO_LIMITS)                       # the whole archive passes
    cut_path = tmp_path / "cut.tar.gz"
    cut_path.write_bytes(whole.read_bytes()[:-cut])
    with pytest.raises(BundleRejected, match="truncated or corrupt"):
        verify_model_data(cut_path, NO_LIMITS)
    with pytest.raises(BundleRejected, match="cannot unpack"):
        unpack(cut_path, tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_flipped_byte_fails_the_gzip_checksum(tmp_path):
    from gateway.serving.bundles import NO_LIMITS, BundleRejected, verify_model_data

    data = bytearray(_model_archive(tmp_path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(bytes(data))
    with pytest.raises(BundleRejected):
        verify_model_data(bad, NO_LIMITS)


def test_model_data_checks_pickles_and_lets_raw_container_data_through_only_with_an_image(tmp_path):
    from gateway.serving.bundles import NO_LIMITS, BundleRejected, Limits, verify_model_data

    good = tmp_path / "m.pkl"
    good.write_bytes(b"\x80\x04N.")
    verify_model_data(good, NO_LIMITS)
    broken = tmp_path / "broken.pkl"
    broken.write_bytes(b"\x80\x04(((")
    with pytest.raises(BundleRejected, match="ends before its STOP"):
        verify_model_data(broken, NO_LIMITS)
    raw = tmp_path / "weights.onnx"
    raw.write_bytes(b"ONNX" * 100)
    with pytest.raises(BundleRejected, match="neither a pickle"):
        verify_model_data(raw, NO_LIMITS)
    verify_model_data(raw, NO_LIMITS, raw_ok=True)            # a container that brings its own server reads it
    with pytest.raises(BundleRejected, match="larger than"):
        verify_model_data(_model_archive(tmp_path, "big.tar.gz"), Limits(max_bytes=100_000))


def test_sagemaker_submit_directory_and_program_make_a_bundle_of_a_model_without_code(tmp_path):
    from gateway.serving.bundles import BundleRejected, install
    from runtime import bundle as rb

    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.txt").write_text("42")
    src = tmp_path / "src"
    src.mkdir()
    (src / "serve.py").write_text("def model_fn(model_dir):\n    return open(model_dir + '/weights.txt').read()\n"
                                  "def predict_fn(data, model):\n    return [model, data]\n")
    code = _tar_with(tmp_path, "sourcedir.tar.gz", lambda tar: tar.add(src / "serve.py", arcname="serve.py"))
    dest = tmp_path / "bundle"
    assert install(model, dest, code=code, program="serve.py") == rb.SAGEMAKER
    assert (dest / "code" / "serve.py").exists() and (dest / "weights.txt").read_text() == "42"
    import sys

    sys.path.insert(0, str(dest / "code"))
    try:
        handler = rb.load(dest, rb.SAGEMAKER)                      # the generated inference.py takes serve's handlers
        body, _ = handler.invoke(b'"x"', rb.InvocationContext(content_type="application/json"))
        assert body == b'["42", "x"]'
    finally:
        sys.path.remove(str(dest / "code"))
        sys.modules.pop("serve", None)
        sys.modules.pop("inference", None)
    for program, message in (("missing.py", "not in the model's code/"), ("../x.py", "must name a Python file"),
                             ("serve.sh", "must name a Python file")):
        with pytest.raises(BundleRejected, match=message):
            install(model, tmp_path / f"b-{len(message)}", code=code, program=program)
    both = tmp_path / "both"
    (both / "code").mkdir(parents=True)
    (both / "code" / "inference.py").write_text("def model_fn(d):\n    return 1\n")
    (both / "code" / "serve.py").write_text("def model_fn(d):\n    return 2\n")
    with pytest.raises(BundleRejected, match="code/inference.py exists too"):
        install(both, tmp_path / "b-both", program="serve.py")
    assert install(both, tmp_path / "b-same", program="inference.py") == rb.SAGEMAKER



def test_pickle_and_script_checks_cost_the_gateway_a_line_of_memory_whatever_the_file(tmp_path):
    import pickle
    import tracemalloc

    from gateway.serving.bundles import MAX_SCRIPT_BYTES, NO_LIMITS, BundleRejected, check, verify_model_data

    big = tmp_path / "big.pkl"                         # a real pickle with 64 MB of bytes in it passes ...
    big.write_bytes(pickle.dumps({"weights": b"\0" * (64 << 20)}, protocol=5))
    tracemalloc.start()
    verify_model_data(big, NO_LIMITS)
    assert tracemalloc.get_traced_memory()[1] < 4 << 20  # ... without its bytes being read into memory
    tracemalloc.stop()
    line = tmp_path / "line.pkl"                       # protocol-0 INT of 8 MB digits, no newline
    with open(line, "wb") as fh:
        fh.write(b"\x80\x04I" + b"1" * (8 << 20))
    with pytest.raises(BundleRejected, match="text argument longer"):
        verify_model_data(line, NO_LIMITS)
    cut = tmp_path / "cut.pkl"
    cut.write_bytes(big.read_bytes()[: 1 << 20])
    with pytest.raises(BundleRejected, match="truncated"):
        verify_model_data(cut, NO_LIMITS)
    bundle = tmp_path / "bundle"
    (bundle / "code").mkdir(parents=True)
    (bundle / "code" / "inference.py").write_bytes(b"x=1\n" * (MAX_SCRIPT_BYTES // 4 + 1))
    with pytest.raises(BundleRejected, match="larger than"):
        check(bundle)


def test_a_gzip_bomb_after_the_tars_end_is_refused_quickly(tmp_path):
    import gzip

    from gateway.serving.bundles import NO_LIMITS, BundleRejected, verify_model_data

    good = _model_archive(tmp_path, size=1000).read_bytes()
    bomb = tmp_path / "bomb.tar.gz"
    with open(bomb, "wb") as fh:
        fh.write(good)
        for _ in range(4):                              # 4 more gzip members of 256 MB of zeros each
            fh.write(gzip.compress(b"\0" * (256 << 20), compresslevel=1))
    with pytest.raises(BundleRejected, match="after the end of its tar"):   # after 1 MB of it, not 1 GB
        verify_model_data(bomb, NO_LIMITS)
