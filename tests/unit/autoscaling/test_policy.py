"""Target tracking as a pure function of signals, bounds, cooldowns and ``now``."""
from gateway.autoscaling.policy import (
    BACKLOG_PER_INSTANCE,
    INVOCATIONS_PER_INSTANCE,
    Signals,
    Target,
    TargetTracking,
    bounded,
    decide,
)

INV = TargetTracking(INVOCATIONS_PER_INSTANCE, 100.0, scale_out_cooldown_s=60, scale_in_cooldown_s=300)
BACKLOG = TargetTracking(BACKLOG_PER_INSTANCE, 5.0, scale_out_cooldown_s=0, scale_in_cooldown_s=120)


def test_proportional_scale_out_within_bounds():
    assert decide([INV], Signals(invocations_per_minute=300), Target(1, 10, 2), now=0) == 3    # 2 x 150/100
    assert decide([INV], Signals(invocations_per_minute=200), Target(1, 10, 2), now=0) is None  # on target
    assert decide([INV], Signals(invocations_per_minute=5000), Target(1, 4, 2), now=0) == 4     # max bound


def test_scale_out_cooldown_counts_from_the_last_scale_out():
    t = Target(1, 10, 2, last_scale_out=100.0)
    assert decide([INV], Signals(invocations_per_minute=600), t, now=150.0) is None
    assert decide([INV], Signals(invocations_per_minute=600), t, now=160.0) == 6


def test_scale_in_waits_for_its_cooldown_after_either_activity_and_can_be_disabled():
    quiet = Signals(invocations_per_minute=10)
    assert decide([INV], quiet, Target(1, 10, 4, last_scale_out=0.0), now=200.0) is None   # capacity just added
    assert decide([INV], quiet, Target(1, 10, 4, last_scale_out=0.0), now=300.0) == 1
    assert decide([INV], quiet, Target(1, 10, 4, last_scale_in=250.0), now=300.0) is None
    off = TargetTracking(INVOCATIONS_PER_INSTANCE, 100.0, disable_scale_in=True)
    assert decide([off], quiet, Target(1, 10, 4), now=1e6) is None


def test_zero_instances_wake_on_a_backlog_and_go_back_to_zero_when_it_is_gone():
    assert decide([BACKLOG], Signals(backlog=1), Target(0, 5, 0), now=0) == 1             # HasBacklogWithoutCapacity
    assert decide([BACKLOG], Signals(backlog=12), Target(0, 5, 0), now=0) == 3            # ceil(12 / 5)
    assert decide([BACKLOG], Signals(backlog=1), Target(0, 5, 0, last_scale_out=0.0), now=0.1) == 1   # no wait
    assert decide([BACKLOG], Signals(backlog=0), Target(0, 5, 0), now=0) is None
    assert decide([BACKLOG], Signals(backlog=0), Target(0, 5, 2, last_scale_out=0.0), now=60) is None
    assert decide([BACKLOG], Signals(backlog=0), Target(0, 5, 2, last_scale_out=0.0), now=121) == 0


def test_several_policies_largest_wins_out_and_all_must_agree_to_scale_in():
    busy_queue = Signals(invocations_per_minute=10, backlog=20)          # 10 a piece against 5: twice as many
    assert decide([INV, BACKLOG], busy_queue, Target(1, 10, 2), now=1e6) == 4
    assert decide([INV, BACKLOG], Signals(invocations_per_minute=10, backlog=40), Target(1, 10, 2), now=1e6) == 8
    assert decide([INV, BACKLOG], Signals(invocations_per_minute=10, backlog=10), Target(1, 10, 2), now=1e6) is None
    assert decide([INV, BACKLOG], Signals(invocations_per_minute=10, backlog=0), Target(1, 10, 2), now=1e6) == 1


def test_bounds_move_a_count_outside_them():
    assert bounded(Target(2, 5, 1)) == 2 and bounded(Target(0, 1, 3)) == 1 and bounded(Target(0, 3, 2)) is None


def test_a_backlog_wakes_zero_instances_whatever_metric_the_policy_tracks():
    assert decide([INV], Signals(invocations_per_minute=0, backlog=7), Target(0, 3, 0), now=0) == 1
