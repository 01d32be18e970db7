"""Where a multi-model request runs, and which target paths may be looked up (pure)."""
import pytest

from gateway.errors import Invalid
from gateway.multimodel import placement, targets
from gateway.multimodel.placement import Choice, Loaded, SandboxView

MB = 1 << 20
CAP = 1024 * MB


def view(sid, used_mb, *models):
    return SandboxView(sid, CAP, used_mb * MB, tuple(Loaded(k, t, mb * MB) for k, t, mb in models))


def test_a_loaded_model_is_a_hit_on_the_sandbox_that_used_it_last():
    idle = [view("a", 300, ("m1", 5.0, 10)), view("b", 300, ("m1", 9.0, 10)), view("c", 100)]
    assert placement.choose(idle, "m1", 10 * MB) == Choice("b", hit=True)


def test_a_new_model_goes_where_it_fits_best_without_unloading_anything():
    # headroom is 102 MB at 1 GB: "a" has 22 MB free, "b" 222 MB, "c" 622 MB
    idle = [view("a", 900), view("b", 700), view("c", 300)]
    assert placement.choose(idle, "m9", 200 * MB) == Choice("b")
    assert placement.choose(idle, "m9", 500 * MB) == Choice("c")


def test_when_nothing_fits_the_least_recently_used_models_are_unloaded_first():
    idle = [view("a", 900, ("old", 1.0, 300), ("new", 50.0, 300)),
            view("b", 900, ("x", 20.0, 300), ("y", 30.0, 300))]
    assert placement.choose(idle, "m9", 250 * MB) == Choice("a", evict=("old",))
    assert placement.choose(idle, "m9", 550 * MB) == Choice("b", evict=("x", "y"))


def test_no_idle_sandbox_or_no_room_anywhere_starts_a_new_one():
    assert placement.choose([], "m1", MB) == Choice(None)
    assert placement.choose([view("a", 900, ("m2", 1.0, 100))], "m1", 2000 * MB) == Choice(None)


def test_the_estimate_is_the_measured_size_once_there_is_one():
    assert placement.estimate(3 * MB, None) == 6 * MB
    assert placement.estimate(3 * MB, 40 * MB) == 40 * MB


@pytest.mark.parametrize("path", ["a.pkl", "states/ny/model.tar.gz", "dir/", "models/fraud"])
def test_relative_paths_inside_the_prefix_are_targets(path):
    assert targets.check(path) == path.rstrip("/")


@pytest.mark.parametrize("path, word", [
    ("", "name a model"), ("../x.pkl", "inside"), ("a/../../b.pkl", "inside"), ("/etc/passwd", "not absolute"),
    ("a//b.pkl", "inside"), ("./a.pkl", "inside"), ("x" * 2000, "at most 1024"), ("a\\b.pkl", "backslash"),
    ("a\x00.pkl", "printable"), (" a.pkl", "printable"), ("a\nb", "printable")])
def test_paths_that_could_leave_the_prefix_are_refused(path, word):
    with pytest.raises(Invalid, match=word):
        targets.check(path)
