"""The bench's SMTP floor (tools/bench/smtp_floor.py) sends real mail to a real sink process.

Not a timing test: every mail must reach the sink's record, and both processes must have spent CPU
on them, or the floor the performance docs quote would be measuring nothing."""

from __future__ import annotations

from tools.bench import smtp_floor


def test_every_floor_mail_reaches_the_sink_and_costs_both_sides_cpu() -> None:
    with smtp_floor.own_sink() as (port, pid, record):
        floor = smtp_floor.measure(port, pid, mails=250, lanes=4, run="test")
        lines = record.read_bytes().splitlines()

    assert len(lines) == 250
    # One recipient per lane, each mail its own Message-ID.
    assert {line.split()[1] for line in lines} == {
        f"floor-test-{lane}@bench.test".encode() for lane in range(4)
    }
    assert len({line.split()[2] for line in lines}) == 250
    assert floor.client_ms > 0 and floor.sink_ms > 0, floor
    assert floor.rate > 0
