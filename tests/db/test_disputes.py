"""The adjudication store on real SQLite and PostgreSQL databases: every policy path, refusals
that leave the database untouched, the audit trail, and what the exports read.

Readers' work goes through ``db.annotations`` (assign, mark levels, submit) as the app does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from db import annotations
from db import disputes as store
from db import models as m
from db.audit import snapshot
from db.reports import set_report
from db.session import unit_of_work
from spine_cli.dispute_list import disputes_list_csv, disputes_list_table
from spine_core.config import Settings
from spine_core.errors import InputError, NotFound, PermissionDenied, VoteRejected

COMMITTEE = Settings(adjudication_policy="committee", quorum=2)
REPORT = Settings(adjudication_policy="report", quorum=2)
WHY = "cortical break of the anterior arch on two slices"


# --------------------------------------------------------------------------------------------
# Fixtures and helpers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def sessions(db_sessions: sessionmaker[Session]) -> Iterator[sessionmaker[Session]]:
    """A migrated database (both backends) with the cast: admin, readers, adjudicators, chair."""
    with unit_of_work(db_sessions) as s:
        for name, role, chair in [
            ("admin", "admin", False), ("r1", "annotator", False), ("r2", "annotator", False),
            ("r3", "annotator", False), ("adj1", "adjudicator", False),
            ("adj2", "adjudicator", False), ("chair", "adjudicator", True),
            ("viewer", "viewer", False),
        ]:
            s.add(m.User(username=name, display_name=name, role=role, is_chair=chair,
                         password_hash="!"))
    yield db_sessions


def user(s: Session, name: str) -> m.User:
    found = s.scalars(select(m.User).where(m.User.username == name)).one()
    return found


def add_study(sessions: sessionmaker[Session], uid: str, report: dict[str, Any] | None,
              reads: dict[str, list[str]], *, dataset: str = "rsna") -> int:
    """A study with a report (level -> bool) and readers who marked ``reads[reader]`` fractured
    and submitted."""
    with unit_of_work(sessions) as s:
        study = m.Study(study_uid=uid, dataset=dataset)
        s.add(study)
        s.flush()
        if report is not None:
            set_report(s, user(s, "admin"), study.id, report, "CT C-spine: see labels",
                             "train.csv")
        admin = user(s, "admin")
        annotations.assign(s, admin, study.id, [user(s, r).id for r in reads])
        for reader, fractured in reads.items():
            for level in fractured:
                annotations.set_level_call(s, user(s, reader), study.id, level, "fractured")
            annotations.submit(s, user(s, reader), study.id)
        return study.id


def refresh(sessions: sessionmaker[Session], study_id: int,
            settings: Settings = COMMITTEE) -> store.RefreshResult:
    with unit_of_work(sessions) as s:
        return store.refresh_disputes(s, study_id, settings)


def disputes(sessions: sessionmaker[Session], study_id: int) -> list[m.Dispute]:
    with unit_of_work(sessions, readonly=True) as s:
        return list(s.scalars(select(m.Dispute).where(m.Dispute.study_id == study_id)
                              .order_by(m.Dispute.id)))


def final(sessions: sessionmaker[Session], study_id: int) -> dict[str, tuple[bool, str]]:
    with unit_of_work(sessions, readonly=True) as s:
        rows = s.scalars(select(m.FinalLabel).where(m.FinalLabel.study_id == study_id))
        return {r.level: (r.fractured, r.source) for r in rows}


def status(sessions: sessionmaker[Session], study_id: int) -> str:
    with unit_of_work(sessions, readonly=True) as s:
        return s.get(m.Study, study_id).status  # type: ignore[union-attr]


def vote(sessions: sessionmaker[Session], voter: str, dispute_id: int, choice: str,
         why: str = WHY, settings: Settings = COMMITTEE) -> store.VoteResult:
    with unit_of_work(sessions) as s:
        return store.cast_vote(s, user(s, voter), dispute_id, choice, why, settings=settings)


def audit(sessions: sessionmaker[Session], action: str) -> list[m.AuditEntry]:
    with unit_of_work(sessions, readonly=True) as s:
        return list(s.scalars(select(m.AuditEntry).where(m.AuditEntry.action == action)
                              .order_by(m.AuditEntry.id)))


def db_state(sessions: sessionmaker[Session]) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables adjudication writes, to compare before and after a refusal."""
    tables = (m.Study, m.Report, m.Dispute, m.Vote, m.Decision, m.FinalLabel, m.AuditEntry)
    with unit_of_work(sessions, readonly=True) as s:
        return {t.__tablename__: [snapshot(r) for r in s.scalars(select(t).order_by(t.id))]
                for t in tables}


def refused_without_change(sessions: sessionmaker[Session], exc: type[Exception], match: str,
                           action: Any) -> None:
    """``action(session)`` raises ``exc``; the session is then COMMITTED and nothing changed."""
    before = db_state(sessions)
    with unit_of_work(sessions) as s:
        with pytest.raises(exc, match=match):
            action(s)
        assert not s.new and not s.dirty and not s.deleted
    assert db_state(sessions) == before


# --------------------------------------------------------------------------------------------
# Detection and final labels
# --------------------------------------------------------------------------------------------


def test_unanimous_readers_agreeing_with_the_report_make_the_study_final(sessions) -> None:
    sid = add_study(sessions, "1.1", {"C2": True, **{f"C{i}": False for i in (1, 3, 4, 5, 6, 7)}},
                    {"r1": ["C2"], "r2": ["C2"]})
    result = refresh(sessions, sid)
    assert result.opened == [] and result.open_disputes == 0
    labels = final(sessions, sid)
    assert labels["C2"] == (True, "readers")
    assert labels["C5"] == (False, "readers")
    assert set(labels) == {f"C{i}" for i in range(1, 8)}
    assert status(sessions, sid) == "final"
    assert [e.entity_id for e in audit(sessions, "final_label.set")][:1] == ["1.1:C1"]


def test_readers_vs_report_is_decided_by_committee_majority(sessions) -> None:
    sid = add_study(sessions, "1.2", {"C2": True}, {"r1": [], "r2": []})
    result = refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    assert result.opened == [d.id]
    assert (d.level, d.kind, d.status) == ("C2", "readers_vs_report", "open")
    assert d.details["majority"] == "not_fractured" and d.details["report"] is True
    assert d.details["calls"] == {"r1": "not_fractured", "r2": "not_fractured"}
    assert d.details["implicit"] == ["r1", "r2"]  # nobody marked C2: intact by omission
    assert status(sessions, sid) == "in_adjudication"
    assert "C2" not in final(sessions, sid)  # waits for the committee
    assert final(sessions, sid)["C3"] == (False, "readers")

    first = vote(sessions, "adj1", d.id, "not_fractured")
    assert not first.outcome.decided and "1 of 2 votes" in first.outcome.reason
    assert status(sessions, sid) == "in_adjudication"
    second = vote(sessions, "adj2", d.id, "not_fractured")
    assert second.outcome.decided and second.outcome.source == "majority"
    assert second.decision_id is not None

    (d,) = disputes(sessions, sid)
    assert d.status == "decided" and d.closed_at is not None
    with unit_of_work(sessions, readonly=True) as s:
        decision = s.get(m.Decision, second.decision_id)
        assert decision is not None
        assert (decision.fractured, decision.policy, decision.decided_by) == (False, "committee", "adj2")
    assert final(sessions, sid)["C2"] == (False, "decision")
    assert status(sessions, sid) == "final"
    (entry,) = audit(sessions, "decision.record")
    assert entry.actor == "adj2" and entry.after["policy"] == "committee"
    assert [e.actor for e in audit(sessions, "vote.cast")] == ["adj1", "adj2"]
    assert audit(sessions, "study.status")[-1].after["status"] == "final"


def test_split_readers_open_a_readers_disagree_dispute(sessions) -> None:
    sid = add_study(sessions, "1.3", {"C5": False}, {"r1": ["C5"], "r2": []})
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    assert (d.level, d.kind) == ("C5", "readers_disagree")
    assert d.details["fractured"] == ["r1"] and d.details["not_fractured"] == ["r2"]
    assert d.details["kinds"] == ["readers_disagree"]
    vote(sessions, "adj1", d.id, "fractured")
    vote(sessions, "adj2", d.id, "fractured")
    assert final(sessions, sid)["C5"] == (True, "decision")


def test_a_tie_goes_to_the_chair(sessions) -> None:
    sid = add_study(sessions, "1.4", None, {"r1": ["C6"], "r2": []})
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    assert not vote(sessions, "adj1", d.id, "fractured").outcome.decided  # below quorum
    result = vote(sessions, "chair", d.id, "not_fractured")
    assert result.outcome.decided and result.outcome.source == "chair"
    assert "chair" in result.outcome.reason
    assert final(sessions, sid)["C6"] == (False, "decision")


def test_a_tie_without_the_chair_stays_open(sessions) -> None:
    sid = add_study(sessions, "1.5", None, {"r1": ["C6"], "r2": []})
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    vote(sessions, "adj1", d.id, "fractured")
    result = vote(sessions, "adj2", d.id, "not_fractured")
    assert not result.outcome.decided and "waiting for the chair's (chair) vote" in result.outcome.reason
    with unit_of_work(sessions) as s:
        assert not store.try_decide(s, user(s, "admin"), d.id, COMMITTEE).decided
    assert disputes(sessions, sid)[0].status == "open"
    assert vote(sessions, "chair", d.id, "fractured").outcome.source == "majority"  # 2 to 1


# --------------------------------------------------------------------------------------------
# Report policy
# --------------------------------------------------------------------------------------------


def test_report_policy_report_label_is_final_until_overridden_with_a_reason(sessions) -> None:
    sid = add_study(sessions, "2.1", {"C2": True}, {"r1": [], "r2": []})
    refresh(sessions, sid, REPORT)
    (d,) = disputes(sessions, sid)
    assert final(sessions, sid)["C2"] == (True, "report")  # the report decides meanwhile

    refused_without_change(
        sessions, VoteRejected, "no reason",
        lambda s: store.override(s, user(s, "adj1"), d.id, False, "  ", settings=REPORT))
    refused_without_change(
        sessions, VoteRejected, "committee policy",
        lambda s: store.override(s, user(s, "adj1"), d.id, False, WHY, settings=COMMITTEE))
    refused_without_change(
        sessions, PermissionDenied, "adjudicator",
        lambda s: store.override(s, user(s, "admin"), d.id, False, WHY, settings=REPORT))

    with unit_of_work(sessions) as s:
        decision = store.override(s, user(s, "adj1"), d.id, False, "  " + WHY, settings=REPORT)
        decision_id = decision.id
    with unit_of_work(sessions, readonly=True) as s:
        decision = s.get(m.Decision, decision_id)
        assert decision is not None
        assert (decision.fractured, decision.policy) == (False, "report")
        assert decision.reason.endswith(WHY)
    assert final(sessions, sid)["C2"] == (False, "decision")
    assert status(sessions, sid) == "final"
    (entry,) = audit(sessions, "decision.override")
    assert entry.before == {"report": True} and entry.after == {"fractured": False, "reason": WHY}


def test_report_policy_votes_advise_and_decide_accepts_the_report(sessions) -> None:
    sid = add_study(sessions, "2.2", {"C2": True}, {"r1": [], "r2": []})
    refresh(sessions, sid, REPORT)
    (d,) = disputes(sessions, sid)
    advice = vote(sessions, "adj2", d.id, "not_fractured", settings=REPORT)
    assert not advice.outcome.decided and "report's label (fractured) stands" in advice.outcome.reason
    assert disputes(sessions, sid)[0].status == "open"
    with unit_of_work(sessions) as s:
        outcome = store.try_decide(s, user(s, "adj1"), d.id, REPORT)
    assert outcome.decided and outcome.source == "report"
    assert final(sessions, sid)["C2"] == (True, "report")
    with unit_of_work(sessions, readonly=True) as s:
        (decision,) = s.scalars(select(m.Decision).where(m.Decision.dispute_id == d.id))
        assert decision.policy == "report" and decision.fractured is True


def test_report_policy_falls_back_to_the_committee_where_the_report_is_silent(sessions) -> None:
    sid = add_study(sessions, "2.3", None, {"r1": ["C5"], "r2": []})
    refresh(sessions, sid, REPORT)
    (d,) = disputes(sessions, sid)
    assert "C5" not in final(sessions, sid)  # no report label to stand meanwhile
    vote(sessions, "adj1", d.id, "fractured", settings=REPORT)
    result = vote(sessions, "adj2", d.id, "fractured", settings=REPORT)
    assert result.outcome.decided and result.outcome.source == "majority"
    assert "no report label for this level" in result.outcome.reason
    with unit_of_work(sessions, readonly=True) as s:
        decision = s.get(m.Decision, result.decision_id)
        assert decision is not None and decision.policy == "report"
    assert final(sessions, sid)["C5"] == (True, "decision")


# --------------------------------------------------------------------------------------------
# Reopening
# --------------------------------------------------------------------------------------------


def test_reopen_starts_a_new_round_and_keeps_the_old_decision(sessions) -> None:
    sid = add_study(sessions, "3.1", {"C2": True}, {"r1": [], "r2": []})
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    first = vote(sessions, "adj1", d.id, "not_fractured")
    vote(sessions, "adj2", d.id, "not_fractured")
    assert first.vote_id

    refused_without_change(sessions, VoteRejected, "needs a reason",
                           lambda s: store.reopen(s, user(s, "adj1"), d.id, "", settings=COMMITTEE))
    refused_without_change(sessions, PermissionDenied, "reopen",
                           lambda s: store.reopen(s, user(s, "r1"), d.id, WHY, settings=COMMITTEE))
    with unit_of_work(sessions) as s:
        store.reopen(s, user(s, "admin"), d.id, "new sagittal reformat shows a lucent line",
                     settings=COMMITTEE)
    (d,) = disputes(sessions, sid)
    assert (d.status, d.round, d.closed_at) == ("open", 2, None)
    assert d.details["reopened"][0]["reason"] == "new sagittal reformat shows a lucent line"
    assert "C2" not in final(sessions, sid) and status(sessions, sid) == "in_adjudication"
    refused_without_change(sessions, VoteRejected, "still open",
                           lambda s: store.reopen(s, user(s, "adj1"), d.id, WHY, settings=COMMITTEE))

    vote(sessions, "adj1", d.id, "fractured")  # the same adjudicator votes again in round 2
    result = vote(sessions, "adj2", d.id, "fractured")
    assert result.outcome.decided
    with unit_of_work(sessions, readonly=True) as s:
        decisions = list(s.scalars(select(m.Decision).where(m.Decision.dispute_id == d.id)
                                   .order_by(m.Decision.id)))
    assert [(x.round, x.fractured, x.superseded) for x in decisions] == [
        (1, False, True), (2, True, False)]
    assert final(sessions, sid)["C2"] == (True, "decision")
    (entry,) = audit(sessions, "dispute.reopen")
    assert entry.actor == "admin" and entry.before["status"] == "decided"
    assert entry.after["superseded"] == [decisions[0].id]


# --------------------------------------------------------------------------------------------
# Refusals leave the database as it was
# --------------------------------------------------------------------------------------------


def test_bad_votes_are_refused_and_change_nothing(sessions) -> None:
    sid = add_study(sessions, "4.1", {"C2": True}, {"r1": [], "r2": []})
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    with unit_of_work(sessions) as s:  # a former reader who became an adjudicator
        turncoat = user(s, "r3")
        annotations.assign(s, user(s, "admin"), sid, [turncoat.id])
        turncoat.role = "adjudicator"

    def cast(voter: str, choice: str = "fractured", why: str = WHY) -> Any:
        return lambda s: store.cast_vote(s, user(s, voter), d.id, choice, why, settings=COMMITTEE)

    refused_without_change(sessions, VoteRejected, "no rationale", cast("adj1", why=" \n"))
    refused_without_change(sessions, VoteRejected, "read this study", cast("r3"))
    refused_without_change(sessions, PermissionDenied, "only adjudicator", cast("admin"))
    refused_without_change(sessions, PermissionDenied, "only adjudicator", cast("r1"))
    refused_without_change(sessions, PermissionDenied, "only adjudicator", cast("viewer"))
    refused_without_change(sessions, InputError, "not a vote", cast("adj1", choice="maybe"))
    refused_without_change(sessions, VoteRejected, "cannot decide",
                           lambda s: store.try_decide(s, user(s, "r3"), d.id, COMMITTEE))
    refused_without_change(sessions, NotFound, "does not exist",
                           lambda s: store.cast_vote(s, user(s, "adj1"), 999_999, "fractured", WHY,
                                                     settings=COMMITTEE))
    vote(sessions, "adj1", d.id, "fractured")
    refused_without_change(sessions, VoteRejected, "already voted in round 1", cast("adj1"))
    vote(sessions, "adj2", d.id, "fractured")
    refused_without_change(sessions, VoteRejected, "already decided", cast("chair"))
    refused_without_change(sessions, VoteRejected, "already decided",
                           lambda s: store.try_decide(s, user(s, "adj1"), d.id, COMMITTEE))


def test_deactivated_adjudicator_cannot_vote(sessions) -> None:
    sid = add_study(sessions, "4.2", {"C2": True}, {"r1": []})
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    with unit_of_work(sessions) as s:
        user(s, "adj1").active = False
    refused_without_change(sessions, PermissionDenied, "deactivated",
                           lambda s: store.cast_vote(s, user(s, "adj1"), d.id, "fractured", WHY,
                                                     settings=COMMITTEE))


# --------------------------------------------------------------------------------------------
# Refresh: idempotence, updates, withdrawal, model disputes, only submitted readers
# --------------------------------------------------------------------------------------------


def test_refresh_is_idempotent(sessions) -> None:
    sid = add_study(sessions, "5.1", {"C2": True, "C5": False}, {"r1": ["C5"], "r2": []})
    first = refresh(sessions, sid)
    assert len(first.opened) == 2
    before = db_state(sessions)
    again = refresh(sessions, sid)
    assert (again.opened, again.updated, again.withdrawn) == ([], [], [])
    assert db_state(sessions) == before


def test_only_submitted_readers_count_and_late_readers_update_open_disputes(sessions) -> None:
    sid = add_study(sessions, "5.2", {"C5": False}, {"r1": ["C5"], "r2": []})
    with unit_of_work(sessions) as s:
        annotations.assign(s, user(s, "admin"), sid, [user(s, "r3").id])
        annotations.set_level_call(s, user(s, "r3"), sid, "C5", "fractured")  # not submitted
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    assert d.kind == "readers_disagree" and "r3" not in d.details["calls"]

    with unit_of_work(sessions) as s:
        annotations.submit(s, user(s, "r3"), sid)
    result = refresh(sessions, sid)
    # 2 of 3 now say fractured against a report saying intact: the report question comes first;
    # the unvoted readers_disagree dispute is withdrawn rather than asked twice.
    (new,) = disputes(sessions, sid)
    assert result.withdrawn == [d.id] and result.opened == [new.id]
    assert new.kind == "readers_vs_report"
    assert new.details["kinds"] == ["readers_vs_report", "readers_disagree"]
    assert new.details["calls"]["r3"] == "fractured"
    (entry,) = audit(sessions, "dispute.withdraw")
    assert entry.before["kind"] == "readers_disagree"


def test_open_dispute_details_are_updated_and_votes_are_never_discarded(sessions) -> None:
    sid = add_study(sessions, "5.3", {"C5": False}, {"r1": ["C5"], "r2": []})
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    vote(sessions, "adj1", d.id, "fractured")
    with unit_of_work(sessions) as s:  # a third reader joins late and is unsure
        annotations.assign(s, user(s, "admin"), sid, [user(s, "r3").id])
        annotations.set_level_call(s, user(s, "r3"), sid, "C5", "unsure")
        annotations.submit(s, user(s, "r3"), sid)
    result = refresh(sessions, sid)
    (kept,) = disputes(sessions, sid)
    assert result.updated == [d.id] and result.opened == []
    assert kept.details["calls"] == {"r1": "fractured", "r2": "not_fractured", "r3": "unsure"}
    (entry,) = audit(sessions, "dispute.update")
    assert "r3" not in entry.before["details"]["calls"] and entry.after["details"]["calls"]["r3"]

    with unit_of_work(sessions) as s:  # second looks: everybody now agrees with the report...
        for reader in ("r1", "r3"):
            assignment = annotations.assignment_for(s, sid, user(s, reader).id)
            assert assignment is not None
            assignment.status = "in_progress"
            s.flush()
            annotations.set_level_call(s, user(s, reader), sid, "C5", "not_fractured")
            annotations.submit(s, user(s, reader), sid)
    result = refresh(sessions, sid)
    (kept,) = disputes(sessions, sid)
    # ...but a vote was cast on the dispute: it stays open, flagged, for the committee to close
    assert result.updated == [kept.id] and result.withdrawn == []
    assert kept.status == "open" and kept.details["no_longer_disputed"] is True
    assert kept.details["calls"]["r1"] == "fractured"  # the details the vote was cast on
    assert status(sessions, sid) == "in_adjudication"


def test_model_disagreeing_with_a_final_label_opens_a_dispute_when_enabled(sessions) -> None:
    sid = add_study(sessions, "5.4", {"C1": False}, {"r1": [], "r2": []})
    with unit_of_work(sessions) as s:
        version = m.ModelVersion(name="fracture-net", version="1")
        s.add(version)
        s.flush()
        s.add(m.Prediction(study_id=sid, model_version_id=version.id,
                           level_probabilities={"C1": 0.97, "C2": 0.5, "C3": 0.02}))
    assert refresh(sessions, sid).opened == []  # off by default
    result = refresh(sessions, sid, replace(COMMITTEE, model_dispute_threshold=0.9))
    (d,) = disputes(sessions, sid)
    assert result.opened == [d.id]
    assert (d.level, d.kind) == ("C1", "model_vs_final")
    assert d.details["model_probability"] == 0.97 and d.details["final"] is False
    assert d.details["model"] == "fracture-net 1"
    assert final(sessions, sid)["C1"] == (False, "readers")  # stays until decided
    vote(sessions, "adj1", d.id, "fractured")
    vote(sessions, "adj2", d.id, "fractured")
    assert final(sessions, sid)["C1"] == (True, "decision")
    again = refresh(sessions, sid, replace(COMMITTEE, model_dispute_threshold=0.9))
    assert again.opened == [] and again.withdrawn == []


# --------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------


def test_set_report_is_admin_only_checked_and_audited(sessions) -> None:
    with unit_of_work(sessions) as s:
        study = m.Study(study_uid="6.1", dataset="dicom")
        s.add(study)
        s.flush()
        sid = study.id
    refused_without_change(sessions, PermissionDenied, "admin",
                           lambda s: set_report(s, user(s, "adj1"), sid, {}, "", "x"))
    refused_without_change(sessions, InputError, "not a vertebra level",
                           lambda s: set_report(s, user(s, "admin"), sid, {"C9": 1}, "", "x"))
    refused_without_change(sessions, InputError, "yes/no",
                           lambda s: set_report(s, user(s, "admin"), sid, {"C2": 2}, "", "x"))
    refused_without_change(
        sessions, InputError, "patient_overall is 0",
        lambda s: set_report(s, user(s, "admin"), sid, {"C2": 1, "patient_overall": 0}, "", "x"))
    with unit_of_work(sessions) as s:
        set_report(s, user(s, "admin"), sid, {"c2": 1, "T4": False, "C3": None},
                         "Fracture of C2.", "radiology system")
    with unit_of_work(sessions) as s:
        report = set_report(s, user(s, "admin"), sid, {"C2": False}, "No fracture.", "addendum")
        assert (report.labels, report.patient_overall) == ({"C2": False}, False)
    entries = audit(sessions, "report.set")
    assert [e.actor for e in entries] == ["admin", "admin"]
    assert entries[0].before is None
    assert entries[0].after["labels"] == {"C2": True, "T4": False}
    assert entries[1].before["text"] == "Fracture of C2." and entries[1].after["text"] == "No fracture."


def test_audit_log_refuses_updates(sessions) -> None:
    sid = add_study(sessions, "6.2", {"C2": True}, {"r1": []})
    refresh(sessions, sid)
    with pytest.raises(DBAPIError, match="append-only"):
        with unit_of_work(sessions) as s:
            s.execute(text("UPDATE audit_log SET actor = 'mallory'"))


# --------------------------------------------------------------------------------------------
# Exports and the CLI listing
# --------------------------------------------------------------------------------------------


def test_decisions_and_final_labels_reach_the_exports(sessions, migrated_db_url: str,
                                                      tmp_path: Path) -> None:
    from db import exporter

    decided = add_study(sessions, "7.1", {"C2": True}, {"r1": [], "r2": []})
    pending = add_study(sessions, "7.2", {"C3": True}, {"r1": [], "r2": []})
    refresh(sessions, decided)
    refresh(sessions, pending)
    (d,) = disputes(sessions, decided)
    vote(sessions, "adj1", d.id, "not_fractured", why="old healed deformity, no acute line")
    vote(sessions, "adj2", d.id, "not_fractured")
    settings = Settings(data_dir=tmp_path / "var", db_url=migrated_db_url)

    (path,) = exporter.export_decisions(settings, tmp_path / "out")
    rows = list(csv.DictReader(path.open()))
    by_uid = {r["StudyInstanceUID"]: r for r in rows}
    assert by_uid["7.1"]["decision"] == "not_fractured"
    assert by_uid["7.1"]["policy"] == "committee" and by_uid["7.1"]["decided_by"] == "adj2"
    assert "adj1: not_fractured" in by_uid["7.1"]["votes"]
    assert by_uid["7.2"]["status"] == "open" and by_uid["7.2"]["decision"] == ""

    rsna = exporter.export_rsna(settings, tmp_path / "rsna")
    labels = {r["StudyInstanceUID"]: r for r in csv.DictReader(rsna.paths[0].open())}
    assert labels["7.1"]["C2"] == "0"  # the committee overruled the report
    assert labels["7.1"]["patient_overall"] == "0"
    assert "7.2" not in labels  # pending: left out, neither the report's 1 nor a silent 0
    assert [(u.study_uid, u.levels) for u in rsna.undecided] == [("7.2", ("C3",))]

    out = io.StringIO()
    assert disputes_list_csv(settings, out, status="all") == 2
    listed = {r["StudyInstanceUID"]: r for r in csv.DictReader(io.StringIO(out.getvalue()))}
    assert listed["7.1"]["status"] == "decided" and listed["7.1"]["policy"] == "committee"
    assert listed["7.2"]["votes"] == "0"
    out = io.StringIO()
    assert disputes_list_table(settings, out, status="open") == 1
    assert "7.2" in out.getvalue() and "7.1" not in out.getvalue()
    with pytest.raises(InputError, match="open, decided, all"):
        disputes_list_csv(settings, io.StringIO(), status="closed")


# --------------------------------------------------------------------------------------------
# Two adjudicators at once; dashboard numbers
# --------------------------------------------------------------------------------------------


def test_two_votes_at_once_are_tallied_one_after_the_other(sessions) -> None:
    import threading

    sid = add_study(sessions, "8.1", {"C2": True}, {"r1": []})
    refresh(sessions, sid)
    (d,) = disputes(sessions, sid)
    second: dict[str, store.VoteResult] = {}

    def other_adjudicator() -> None:
        with unit_of_work(sessions) as b:
            second["result"] = store.cast_vote(b, user(b, "adj2"), d.id, "not_fractured", WHY,
                                               settings=COMMITTEE)

    with unit_of_work(sessions) as a:
        first = store.cast_vote(a, user(a, "adj1"), d.id, "not_fractured", WHY, settings=COMMITTEE)
        assert not first.outcome.decided
        thread = threading.Thread(target=other_adjudicator)
        thread.start()
        thread.join(timeout=0.5)  # the second vote waits for the first transaction
    thread.join(timeout=30)
    assert not thread.is_alive()
    # had both tallies run side by side, each would have seen one vote and nobody would decide
    assert second["result"].outcome.decided
    assert disputes(sessions, sid)[0].status == "decided"


def test_dashboard_numbers(sessions) -> None:
    import datetime as dt

    from db import dispute_stats as stats

    a = add_study(sessions, "9.1", {"C2": True}, {"r1": ["C2"], "r2": ["C2", "C5"]})
    b = add_study(sessions, "9.2", {"C2": False}, {"r1": [], "r2": []})
    with unit_of_work(sessions) as s:  # study b was finished three weeks ago
        for assignment in s.scalars(select(m.Assignment).where(m.Assignment.study_id == b)):
            assignment.submitted_at = dt.datetime.now(dt.UTC) - dt.timedelta(weeks=3)
    refresh(sessions, a)
    refresh(sessions, b)
    (d,) = disputes(sessions, a)  # C5: r2 alone calls it fractured
    vote(sessions, "adj1", d.id, "fractured")
    vote(sessions, "adj2", d.id, "fractured")
    with unit_of_work(sessions) as s:
        store.reopen(s, user(s, "adj1"), d.id, "check the pedicle", settings=COMMITTEE)
    vote(sessions, "adj1", d.id, "not_fractured")
    vote(sessions, "adj2", d.id, "not_fractured")

    with unit_of_work(sessions, readonly=True) as s:
        counts = stats.dispute_counts(s)
        times = stats.decision_times(s)
        points = stats.agreement_over_time(s, period="week")
        reopened_at = s.get(m.Dispute, d.id).details["reopened"][0]["at"]  # type: ignore[union-attr]
        with pytest.raises(InputError, match="day, week or month"):
            stats.agreement_over_time(s, period="year")
    assert counts == [stats.CountRow("C5", "readers_disagree", "decided", 1)]
    assert [(t.round, t.superseded) for t in times] == [(1, True), (2, False)]
    assert times[1].started_at == dt.datetime.fromisoformat(reopened_at)
    assert all(t.hours >= 0 for t in times)
    # b: 7 levels, both readers agree on all; a: 7 levels, 6 agree (C5 does not)
    assert [(p.studies, p.units) for p in points] == [(1, 7), (1, 7)]
    assert points[0].period_start < points[1].period_start
    assert points[0].percent_agreement == 1.0
    assert points[1].percent_agreement == pytest.approx(6 / 7)
