"""Log lines as CloudWatch events, and CloudWatch's filter patterns for plain text."""
from gateway.logs.events import events, matches, stamp


def test_stamped_lines_give_their_time_and_unstamped_ones_carry_it():
    t = 1_790_000_000.25
    lines = [b"printed before any stamp", f"{stamp(t)} the gateway's line".encode(), b"a model's line",
             f"{stamp(t + 2)} later".encode()]
    got = events(lines, mtime=5.0)
    assert [(e.index, e.timestamp, e.message) for e in got] == [
        (0, 1_790_000_000_250, "printed before any stamp"), (1, 1_790_000_000_250, "the gateway's line"),
        (2, 1_790_000_000_250, "a model's line"), (3, 1_790_000_002_250, "later")]
    assert [e.timestamp for e in events([b"x", b"y"], mtime=7.5)] == [7500, 7500]


def test_filter_patterns():
    assert matches("job failed: boom", None) and matches("anything", "  ")
    assert matches("job failed: boom", "job boom") and not matches("job failed", "job boom")
    assert matches("job failed: boom", '"job failed"') and not matches("failed job", '"job failed"')
    assert matches("a b", "?x ?b") and not matches("a c", "?x ?b")
    assert matches("a b", "a -z") and not matches("a z", "a -z")
