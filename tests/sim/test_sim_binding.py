"""Binding at arrival (`sllm.experiments.binding`): the same copies, one queue a model."""

from __future__ import annotations

from sllm.experiments.binding import Served, binding, copy_windows, shared_queue_waits


def _served(
    worker: str, arrival: float, first_token: float, end: float, cold: bool = False
) -> Served:
    return Served(
        model="m",
        worker=worker,
        arrival_s=arrival,
        first_token_s=first_token,
        end_s=end,
        cold_start=cold,
    )


# One slot a copy. Copy "a" is ready at 10 and serves until 52; copy "b" at 100. Two
# requests bound to "b" wait about 100 s there, while "a" is free from 12.
EARLY = _served("a", 0.0, 10.0, 12.0, cold=True)
LATE_COPY = _served("b", 1.0, 100.0, 102.0, cold=True)
BEHIND_LATE_COPY = _served("b", 2.0, 102.0, 104.0)
LATER = _served("a", 50.0, 50.0, 52.0)
RUN = [EARLY, LATE_COPY, BEHIND_LATE_COPY, LATER]


def test_a_copy_lasts_from_its_load_to_its_last_request_before_the_next_load() -> None:
    # The load's first batch is cold too: the same copy. A cold start after every
    # request there ended is a new one.
    same_batch = _served("a", 0.5, 10.5, 13.0, cold=True)
    reloaded = _served("a", 80.0, 90.0, 95.0, cold=True)
    windows = copy_windows([EARLY, same_batch, LATER, reloaded])
    assert sorted(windows) == [(10.0, 52.0), (90.0, 95.0)]


def test_a_shared_queue_serves_the_requests_bound_to_a_late_copy_on_the_early_one() -> None:
    # As bound: 10, 99, 100, 0 s. From one queue, the two requests bound to "b" take
    # "a"'s slot in turn, each for as long as it ran there (2 s).
    assert shared_queue_waits(RUN, slots=1) == [10.0, 11.0, 12.0, 0.0]


def test_a_copy_gone_takes_no_more_requests() -> None:
    # "a" is gone at 12: the requests bound to "b" wait for "b" as they did.
    short = [EARLY, LATE_COPY, BEHIND_LATE_COPY]
    assert shared_queue_waits(short, slots=1) == [10.0, 99.0, 100.0]


def test_binding_counts_the_requests_over_the_target_both_ways() -> None:
    found = binding([RUN, RUN], target_s=30.0, slots=1)
    assert (found.completed, found.over_target, found.over_target_shared) == (8, 4, 0)
    assert found.allowed == 0
