"""The audit hash chain on the real database: idempotent, poison-tolerant, tamper-evident."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from click.testing import CliRunner
from sqlalchemy import delete, select, update

from cli import main
from domain.events.audit import GENESIS, POISON, record_events, verify_chain
from domain.events.models import AuditRecord, OutboxEvent
from domain.events.outbox import META_CREATE_REFUSED, add_event
from domain.platform.database import unit_of_work


def _events(count: int, **payload: object) -> list[int]:
    with unit_of_work() as session:
        return [add_event(session, META_CREATE_REFUSED, {"api_key_id": None, "meta_key": f"k{i}", **payload},
                          request_id=f"req-{i}", outcome_code=100) for i in range(count)]


def _record(ids: list[int]):
    with unit_of_work() as session:
        return record_events(session, ids)


def _clear_chain() -> None:
    with unit_of_work() as session:
        session.execute(delete(AuditRecord))


@pytest.fixture(autouse=True)
def empty_chain(settings):
    _clear_chain()
    yield
    _clear_chain()


def _verify():
    with unit_of_work() as session:
        return verify_chain(session)


def test_records_each_event_once_even_when_rung_twice() -> None:
    ids = _events(5)
    first = _record(ids)
    again = _record(ids + ids[:2])
    assert (first.appended, again.appended, again.already_done) == (5, 0, 5)
    with unit_of_work() as session:
        rows = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
        assert [r.event_id for r in rows] == ids
        assert rows[0].prev_hash == GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(rows))
        assert all(e.audited_at is not None for e in session.scalars(
            select(OutboxEvent).where(OutboxEvent.id.in_(ids))))
    assert _verify() == (5, None)


def test_unknown_event_ids_are_dropped_not_recorded() -> None:
    outcome = _record([987654321])
    assert (outcome.appended, outcome.unknown) == (0, 1)
    assert _verify() == (0, None)


def test_poison_event_is_recorded_as_failed_and_the_chain_moves_on() -> None:
    good = _events(1)
    with unit_of_work() as session:
        poison_id = add_event(session, META_CREATE_REFUSED, {"api_key_id": "not-a-number"})
    later = _events(1)
    outcome = _record([*good, poison_id, *later])
    assert (outcome.appended, outcome.poison) == (3, 1)
    with unit_of_work() as session:
        statuses = [r.status for r in session.scalars(select(AuditRecord).order_by(AuditRecord.seq))]
    assert statuses == ["ok", POISON, "ok"]
    assert _verify() == (3, None)


@pytest.mark.parametrize("tamper", ["alter", "remove", "reorder"])
def test_verify_names_the_first_broken_record(tamper: str) -> None:
    _record(_events(5))
    with unit_of_work() as session:
        rows = session.scalars(select(AuditRecord).order_by(AuditRecord.seq)).all()
        third, fourth = rows[2], rows[3]
        if tamper == "alter":
            session.execute(update(AuditRecord).where(AuditRecord.id == third.id).values(meta_key="forged"))
        elif tamper == "remove":
            session.execute(delete(AuditRecord).where(AuditRecord.id == third.id))
        else:  # swap the contents of records 3 and 4, hashes and all
            session.execute(update(AuditRecord).where(AuditRecord.id == third.id).values(seq=-1))
            session.execute(update(AuditRecord).where(AuditRecord.id == fourth.id).values(seq=3))
            session.execute(update(AuditRecord).where(AuditRecord.id == third.id).values(seq=4))
    checked, broken = _verify()
    assert broken is not None and broken.seq == 3 and checked == 2

    result = CliRunner().invoke(main, ["audit", "verify"])
    assert result.exit_code == 1
    assert "broken at seq 3" in result.output


def test_audit_list_and_verify_cli() -> None:
    _record(_events(3))
    runner = CliRunner()
    listed = runner.invoke(main, ["audit", "list", "--json", "--limit", "2"])
    assert listed.exit_code == 0, listed.output
    assert '"seq": 2' in listed.output and '"seq": 3' in listed.output and '"seq": 1,' not in listed.output
    since = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert '"records": []' in runner.invoke(main, ["audit", "list", "--json", "--since", since]).output
    verified = runner.invoke(main, ["audit", "verify", "--json"])
    assert verified.exit_code == 0 and '"verified": 3' in verified.output
