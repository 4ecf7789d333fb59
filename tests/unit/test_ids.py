"""Ids: the form of a DataRobot id, in creation order within a process, never repeated."""

from __future__ import annotations

import time

from strongroom.services.credentials import is_id
from strongroom.store.models import new_id


def test_ids_of_one_process_sort_in_creation_order_within_a_second() -> None:
    """Random ids within a second put each new row on a different index page; ordered ones append."""
    while True:  # all made within one second, so only the counter orders them
        second = int(time.time())
        ids = [new_id() for _ in range(1000)]
        if int(time.time()) == second:
            break
    assert all(is_id(i) for i in ids)
    assert len(set(ids)) == 1000
    assert ids == sorted(ids)
    assert {i[:8] for i in ids} == {second.to_bytes(4, "big").hex()}
    assert len({i[14:] for i in ids}) == 1000  # each carries its own random tail
