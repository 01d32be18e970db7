"""The docker runtime image is named by everything that goes into it."""
def test_the_runtime_images_tag_changes_with_any_runtime_source(tmp_path, monkeypatch):
    """A change to runtime/process/*.py (say, the sandbox environment the image bakes in) must
    make a new image, not reuse the stale one under the same tag."""
    import shutil

    from runtime.docker import image

    root = tmp_path / "proj"
    shutil.copytree(image.PROJECT_ROOT / "runtime", root / "runtime",
                    ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(image, "PROJECT_ROOT", root)
    before = image._fingerprint()
    (root / "runtime" / "process" / "isolation.py").write_text("# changed\n", encoding="utf-8")
    assert image._fingerprint() != before
