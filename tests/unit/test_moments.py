"""Moments in UTC: what the API, the CLI and the audit filters store and compare."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from strongroom.representation import in_utc


def test_a_moment_is_converted_to_utc_and_a_naive_one_is_taken_as_utc() -> None:
    plus_two = timezone(timedelta(hours=2))
    assert in_utc(datetime(2027, 1, 31, 12, 0, tzinfo=plus_two)) == datetime(2027, 1, 31, 10, 0, tzinfo=UTC)
    assert in_utc(datetime(2027, 1, 31, 12, 0)) == datetime(2027, 1, 31, 12, 0, tzinfo=UTC)


def test_beyond_either_end_of_the_calendar_in_utc_is_that_end() -> None:
    ahead, behind = timezone(timedelta(minutes=2)), timezone(timedelta(minutes=-2))
    assert in_utc(datetime(1, 1, 1, 0, 0, tzinfo=ahead)) == datetime.min.replace(tzinfo=UTC)
    assert in_utc(datetime(9999, 12, 31, 23, 59, tzinfo=behind)) == datetime.max.replace(tzinfo=UTC)


def test_sqlite_stores_a_moment_as_sqlalchemy_datetime_text_in_utc() -> None:
    from hypothesis import given
    from hypothesis import strategies as st
    from sqlalchemy import DateTime
    from sqlalchemy.dialects import sqlite

    from strongroom.store.models import UTCDateTime

    dialect = sqlite.dialect()
    ours = UTCDateTime().bind_processor(dialect)
    theirs = DateTime().dialect_impl(dialect).bind_processor(dialect)
    assert ours is not None and theirs is not None

    @given(st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 1, 1), timezones=st.sampled_from(ZONES)))
    def same(moment: datetime) -> None:
        assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None))

    same()
    assert ours(datetime(2027, 1, 31, 12, 0, tzinfo=UTC)) == "2027-01-31 12:00:00.000000"  # the fraction always


ZONES = [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(timedelta(hours=-8))]
