"""The rate-bounded log lines of the history pipeline, without a clock: time is a number."""

from collections import Counter
from collections.abc import Mapping

from pipeline.reports import Drops, Tally, ThrottledLine

INTERVAL_S = 10.0


def test_a_line_goes_at_once_then_at_most_every_interval_and_no_count_is_lost() -> None:
    told: list[Tally] = []
    line = ThrottledLine(INTERVAL_S, told.append)
    line.add(0.0, {"a": 5}, {"refused": 5})
    assert [t.records for t in told] == [5]  # the first at once
    for n in range(1, 100):  # a refused batch every 0.05 s
        line.add(n * 0.05, {"a": 3, "b": 1}, {"refused": 4})
    assert len(told) == 1
    assert line.due_at() == INTERVAL_S  # what is untold is due when the interval ends...
    line.tick(INTERVAL_S - 0.1)
    assert len(told) == 1
    line.tick(INTERVAL_S)  # ...even if nothing else happens
    assert told[1].storages == Counter({"a": 297, "b": 99})
    assert told[1].causes == Counter({"refused": 396})
    assert line.due_at() is None


class Episodes:
    def __init__(self) -> None:
        self.dropping: list[tuple[Tally, Mapping[str, int]]] = []
        self.ended: list[tuple[str, int]] = []
        self.drops = Drops(
            INTERVAL_S,
            dropping=lambda told, running: self.dropping.append((told, dict(running))),
            ended=lambda key, total, _: self.ended.append((key, total)),
        )


def test_drops_carry_a_running_count_and_end_with_the_whole_count() -> None:
    episodes = Episodes()
    drops = episodes.drops
    drops.add("a", {"a": 100}, now=0.0)
    for n in range(1, 50):  # a storage hovering at its share: drops after every flush
        drops.add("a", {"a": 300}, now=n * 0.1)
        drops.tick(n * 0.1, taking=lambda _: True)
    assert episodes.ended == []  # not quiet yet: one episode, not one per flush
    drops.tick(INTERVAL_S, taking=lambda _: True)
    (first, first_running), (second, second_running) = episodes.dropping
    assert (first.records, first_running) == (100, {"a": 100})
    assert (second.records, second_running) == (49 * 300, {"a": 100 + 49 * 300})
    last_drop_at = 4.9
    assert drops.due_at(INTERVAL_S) == last_drop_at + INTERVAL_S
    drops.tick(last_drop_at + INTERVAL_S, taking=lambda _: False)  # still full: goes on
    assert episodes.ended == []
    drops.tick(last_drop_at + INTERVAL_S + 1, taking=lambda _: True)
    assert episodes.ended == [("a", 100 + 49 * 300)]
    assert len(drops) == 0
    assert drops.due_at(100.0) is None


def test_an_episode_that_ends_tells_its_untold_drops_in_its_last_line() -> None:
    episodes = Episodes()
    drops = episodes.drops
    drops.add("a", {"a": 1}, now=0.0)
    drops.add("a", {"a": 7}, now=1.0)  # within the interval: untold
    drops.add("b", {"b": 2}, now=1.0)
    drops.tick(11.0, taking=lambda key: key == "a")
    assert episodes.ended == [("a", 8)]
    assert [told.storages for told, _ in episodes.dropping] == [
        Counter({"a": 1}),
        Counter({"b": 2}),  # a's 7 are in its last line, not told twice
    ]
