"""Dispute detection, votes, both policies, reopening and final labels."""

from __future__ import annotations

import pytest

from spine_core.adjudication import (
    Decision,
    DisputeKind,
    DisputeRules,
    DisputeState,
    DisputeStatus,
    LevelCall,
    Outcome,
    Override,
    Policy,
    Vote,
    VoteChoice,
    cast_vote,
    craniocaudal_key,
    final_labels,
    find_disputes,
    majority_call,
    record_decision,
    reopen,
    settle,
    tally,
)
from spine_core.errors import InputError, VoteRejected

F, N, U = LevelCall.fractured, LevelCall.not_fractured, LevelCall.unsure
COMMITTEE, REPORT = Policy.COMMITTEE_DECIDES, Policy.REPORT_DECIDES


def vote(voter: str, choice: str, why: str = "cortical break on sagittal") -> Vote:
    return Vote(voter, VoteChoice(choice), why)


# ---------------------------------------------------------------- enums and helpers


def test_policy_parse() -> None:
    assert Policy.parse("report") is REPORT
    assert Policy.parse("Committee") is COMMITTEE
    with pytest.raises(InputError, match="'report'.*'committee'"):
        Policy.parse("vote")


def test_majority_call() -> None:
    assert majority_call([F, F, U]) is F
    assert majority_call([F, U]) is None
    assert majority_call([F, N]) is None
    assert majority_call(["not_fractured"]) is N
    assert majority_call([]) is None


def test_craniocaudal_order() -> None:
    levels = ["L1", "C2", "T13", "T12", "C10x", "T1"]
    assert sorted(levels, key=craniocaudal_key) == ["C2", "T1", "T12", "T13", "L1", "C10x"]


# ---------------------------------------------------------------- dispute detection


def test_unanimous_readers_agreeing_with_report_raise_nothing() -> None:
    calls = {"r1": {"C1": N, "C2": F}, "r2": {"C1": N, "C2": F}}
    assert find_disputes(calls, {"C1": False, "C2": True}) == []


def test_readers_vs_report() -> None:
    calls = {"r1": {"C2": F}, "r2": {"C2": F}}
    (finding,) = find_disputes(calls, {"C2": False})
    assert finding.kind is DisputeKind.readers_vs_report
    assert finding.level == "C2"
    assert finding.details["majority"] == "fractured"
    assert finding.details["report"] is False
    assert finding.details["calls"] == {"r1": "fractured", "r2": "fractured"}


def test_split_readers_without_majority_only_disagree() -> None:
    calls = {"r1": {"C3": F}, "r2": {"C3": N}}
    (finding,) = find_disputes(calls, {"C3": True})
    assert finding.kind is DisputeKind.readers_disagree
    assert finding.details["fractured"] == ["r1"]
    assert finding.details["not_fractured"] == ["r2"]


def test_any_unsure_is_a_disagreement_and_majority_still_checked() -> None:
    calls = {"r1": {"C4": F}, "r2": {"C4": F}, "r3": {"C4": U}}
    kinds = {f.kind for f in find_disputes(calls, {"C4": False})}
    assert kinds == {DisputeKind.readers_disagree, DisputeKind.readers_vs_report}


def test_priority_report_conflicts_first_then_head_to_feet() -> None:
    calls = {
        "r1": {"C1": F, "C3": F, "C5": F, "L1": N},
        "r2": {"C1": N, "C3": N, "C5": F, "L1": N},
    }
    findings = find_disputes(calls, {"C5": False, "L1": True})
    assert [(f.kind.value, f.level) for f in findings] == [
        ("readers_vs_report", "C5"),
        ("readers_vs_report", "L1"),
        ("readers_disagree", "C1"),
        ("readers_disagree", "C3"),
    ]
    assert [f.priority for f in findings] == sorted(f.priority for f in findings)


def test_model_vs_final_only_when_enabled() -> None:
    calls = {"r1": {"C1": N, "C2": F, "C3": N}}
    probs = {"C1": 0.95, "C2": 0.05, "C3": 0.5}
    final = {"C1": False, "C2": True, "C3": False}
    assert find_disputes(calls, None, probs, final) == []
    findings = find_disputes(calls, None, probs, final, DisputeRules(model_vs_final=True))
    assert [(f.kind, f.level) for f in findings] == [
        (DisputeKind.model_vs_final, "C1"),
        (DisputeKind.model_vs_final, "C2"),
    ]
    assert findings[0].details == {"model_probability": 0.95, "final": False, "threshold": 0.9}


def test_bad_inputs_are_named() -> None:
    with pytest.raises(InputError, match="'maybe' is not a level call"):
        find_disputes({"r1": {"C1": "maybe"}})
    with pytest.raises(InputError, match="not a probability"):
        find_disputes({}, None, {"C1": 1.5}, {"C1": True}, DisputeRules(model_vs_final=True))
    with pytest.raises(InputError, match="model_threshold"):
        DisputeRules(model_threshold=0)


# ---------------------------------------------------------------- committee tally


def test_quorum_not_reached_is_undecided() -> None:
    outcome = tally([vote("a1", "fractured")], COMMITTEE, quorum=2, chair="chair")
    assert not outcome.decided
    assert outcome.fractured is None
    assert "1 of 2 votes" in outcome.reason
    assert outcome.policy is COMMITTEE


def test_majority_decides() -> None:
    votes = [vote("a1", "fractured"), vote("a2", "fractured"), vote("a3", "not_fractured")]
    outcome = tally(votes, COMMITTEE, quorum=3, chair="a3")
    assert (outcome.decided, outcome.fractured, outcome.source) == (True, True, "majority")
    assert outcome.counts == {"fractured": 2, "not_fractured": 1, "cannot_tell": 0}


def test_tie_goes_to_the_chair() -> None:
    votes = [vote("a1", "fractured"), vote("chair", "not_fractured")]
    outcome = tally(votes, COMMITTEE, quorum=2, chair="chair")
    assert (outcome.decided, outcome.fractured, outcome.source) == (True, False, "chair")
    assert "chair" in outcome.reason


def test_tie_without_chair_vote_is_undecided() -> None:
    votes = [vote("a1", "fractured"), vote("a2", "not_fractured")]
    outcome = tally(votes, COMMITTEE, quorum=2, chair="chair")
    assert not outcome.decided
    assert "waiting for the chair's (chair) vote" in outcome.reason
    assert not tally(votes, COMMITTEE, quorum=2, chair=None).decided


def test_chair_vote_outside_the_tie_does_not_decide() -> None:
    votes = [
        vote("a1", "fractured"), vote("a2", "fractured"),
        vote("a3", "not_fractured"), vote("a4", "not_fractured"), vote("chair", "cannot_tell"),
    ]
    outcome = tally(votes, COMMITTEE, quorum=2, chair="chair")
    assert not outcome.decided
    assert "not one of the tied" in outcome.reason


def test_cannot_tell_majority_is_a_decision_without_label() -> None:
    votes = [vote("a1", "cannot_tell"), vote("a2", "cannot_tell"), vote("a3", "fractured")]
    outcome = tally(votes, COMMITTEE, quorum=2, chair=None)
    assert outcome.decided and outcome.fractured is None


def test_tally_refuses_double_votes_overrides_and_bad_quorum() -> None:
    with pytest.raises(VoteRejected, match="a1 voted more than once"):
        tally([vote("a1", "fractured"), vote("a1", "not_fractured")], COMMITTEE, 1, None)
    with pytest.raises(VoteRejected, match="committee policy"):
        tally([], COMMITTEE, 1, None, override=Override("a1", True, "seen on sagittal"))
    with pytest.raises(InputError, match="quorum 0"):
        tally([], COMMITTEE, 0, None)


# ---------------------------------------------------------------- report-decides policy


def test_report_decides_without_override() -> None:
    outcome = tally([vote("a1", "fractured")], REPORT, quorum=1, chair=None, report=False)
    assert (outcome.decided, outcome.fractured, outcome.source) == (True, False, "report")
    assert outcome.policy is REPORT


def test_override_with_reason_replaces_the_report() -> None:
    override = Override("a1", True, "  lamina fracture missed by the report ")
    outcome = tally([], REPORT, quorum=1, chair=None, report=False, override=override)
    assert (outcome.decided, outcome.fractured, outcome.source) == (True, True, "override")
    assert outcome.reason.endswith("lamina fracture missed by the report")


def test_override_without_reason_refused() -> None:
    with pytest.raises(VoteRejected, match="override by a1 has no reason"):
        tally([], REPORT, 1, None, report=False, override=Override("a1", True, "  "))


def test_report_policy_without_report_label_uses_committee_rules() -> None:
    outcome = tally([vote("a1", "fractured")], REPORT, quorum=1, chair=None, report=None)
    assert outcome.decided and outcome.fractured is True and outcome.source == "majority"
    assert outcome.reason.startswith("no report label")


# ---------------------------------------------------------------- votes on a dispute


def open_dispute() -> DisputeState:
    return DisputeState(level="C2", kind=DisputeKind.readers_disagree)


def test_vote_rules() -> None:
    state = open_dispute()
    with pytest.raises(VoteRejected, match="no rationale"):
        cast_vote(state, vote("a1", "fractured", why=" "), study_readers={"r1", "r2"})
    with pytest.raises(VoteRejected, match="r1 read this study"):
        cast_vote(state, vote("r1", "fractured"), study_readers={"r1", "r2"})
    state = cast_vote(state, vote("a1", "fractured"), study_readers={"r1", "r2"})
    with pytest.raises(VoteRejected, match="a1 already voted in round 1"):
        cast_vote(state, vote("a1", "not_fractured"), study_readers={"r1", "r2"})
    relaxed = cast_vote(
        state, vote("a2", "not_fractured", why=""), study_readers={"r1"}, require_rationale=False
    )
    assert [v.voter for v in relaxed.current_votes] == ["a1", "a2"]


def test_reader_ids_compare_across_int_and_str() -> None:
    with pytest.raises(VoteRejected, match="read this study"):
        cast_vote(open_dispute(), vote("7", "fractured"), study_readers={7})


def test_decided_dispute_refuses_votes_and_decisions() -> None:
    state = cast_vote(open_dispute(), vote("a1", "fractured"), study_readers=set())
    state, outcome = settle(state, COMMITTEE, quorum=1, chair=None, decided_by="a1")
    assert outcome.decided and state.status is DisputeStatus.decided
    assert state.decision is not None and state.decision.fractured is True
    with pytest.raises(VoteRejected, match="already decided"):
        cast_vote(state, vote("a2", "not_fractured"), study_readers=set())
    with pytest.raises(VoteRejected, match="already decided"):
        record_decision(state, outcome, decided_by="a2")
    with pytest.raises(VoteRejected, match="already decided"):
        settle(state, COMMITTEE, 1, None, decided_by="a2")


def test_undecided_tally_leaves_the_dispute_open() -> None:
    state = cast_vote(open_dispute(), vote("a1", "fractured"), study_readers=set())
    state, outcome = settle(state, COMMITTEE, quorum=2, chair=None, decided_by="a1")
    assert not outcome.decided and state.status is DisputeStatus.open and state.decision is None
    with pytest.raises(VoteRejected, match="cannot be closed yet"):
        record_decision(state, outcome, decided_by="a1")


def test_reopen_starts_a_new_round() -> None:
    readers = {"r1", "r2"}
    state = cast_vote(open_dispute(), vote("a1", "fractured"), study_readers=readers)
    state = cast_vote(state, vote("a2", "fractured"), study_readers=readers)
    state, _ = settle(state, COMMITTEE, quorum=2, chair=None, decided_by="a1")

    with pytest.raises(VoteRejected, match="needs a reason"):
        reopen(state, reason="", by="chair")
    state = reopen(state, reason="new MR shows no oedema", by="chair")
    assert (state.status, state.round, state.decision) == (DisputeStatus.open, 2, None)
    assert state.decisions[0].superseded
    assert state.reopen_reasons == ("chair: new MR shows no oedema",)
    assert state.current_votes == ()
    with pytest.raises(VoteRejected, match="still open"):
        reopen(state, reason="again", by="chair")

    # the same people vote again; round 1 votes no longer count
    state = cast_vote(state, vote("a1", "not_fractured"), study_readers=readers)
    state = cast_vote(state, vote("a2", "not_fractured"), study_readers=readers)
    state, outcome = settle(state, COMMITTEE, quorum=2, chair=None, decided_by="a1")
    assert outcome.fractured is False
    assert state.decision is not None and state.decision.round == 2
    assert len(state.votes) == 4


# ---------------------------------------------------------------- final labels


def test_final_unanimous_readers_agreeing_with_report() -> None:
    calls = {"r1": {"C1": N, "C2": F}, "r2": {"C1": N, "C2": F}}
    for policy in Policy:
        assert final_labels({"C1": False, "C2": True}, calls, {}, policy) == {
            "C1": (False, "readers"),
            "C2": (True, "readers"),
        }


def test_final_readers_vs_report_by_policy() -> None:
    calls = {"r1": {"C2": F}, "r2": {"C2": F}}
    report = {"C2": False}
    assert final_labels(report, calls, {}, REPORT) == {"C2": (False, "report")}
    assert final_labels(report, calls, {}, COMMITTEE) == {}  # pending
    decided = Decision(1, True, COMMITTEE, "majority fractured", "a1", "majority")
    assert final_labels(report, calls, {"C2": decided}, COMMITTEE) == {"C2": (True, "decision")}


def test_final_split_readers_by_policy() -> None:
    calls = {"r1": {"C3": F}, "r2": {"C3": N}}
    assert final_labels({"C3": True}, calls, None, REPORT) == {"C3": (True, "report")}
    assert final_labels({"C3": True}, calls, None, COMMITTEE) == {}
    assert final_labels(None, calls, None, REPORT) == {}


def test_final_override_and_report_decision_sources() -> None:
    calls = {"r1": {"C2": F}, "r2": {"C2": F}}
    override = tally([], REPORT, 1, None, report=False, override=Override("a1", True, "missed"))
    assert final_labels({"C2": False}, calls, {"C2": override}, REPORT) == {"C2": (True, "decision")}
    by_report = tally([], REPORT, 1, None, report=False)
    assert final_labels({"C2": False}, calls, {"C2": by_report}, REPORT) == {"C2": (False, "report")}


def test_final_ignores_superseded_and_undecided() -> None:
    calls = {"r1": {"C2": F}, "r2": {"C2": N}}
    old = Decision(1, True, COMMITTEE, "majority", "a1", "majority", superseded=True)
    pending = Outcome(False, None, "1 of 2 votes", COMMITTEE, "pending")
    assert final_labels(None, calls, {"C2": old}, COMMITTEE) == {}
    assert final_labels(None, calls, {"C2": pending}, COMMITTEE) == {}


def test_final_cannot_tell_falls_back_to_report() -> None:
    calls = {"r1": {"C2": F}, "r2": {"C2": N}}
    cannot = Decision(1, None, COMMITTEE, "majority cannot_tell", "a1", "majority")
    assert final_labels({"C2": False}, calls, {"C2": cannot}, COMMITTEE) == {"C2": (False, "report")}
    assert final_labels(None, calls, {"C2": cannot}, COMMITTEE) == {}


def test_final_report_only_levels_and_reader_only_levels() -> None:
    calls = {"r1": {"C5": F}, "r2": {"C5": F}}
    labels = final_labels({"C1": False}, calls, {}, COMMITTEE)
    assert labels == {"C1": (False, "report"), "C5": (True, "readers")}
    assert list(labels) == ["C1", "C5"]


def test_describe_dispute_states_it_in_words() -> None:
    from spine_core.adjudication import describe_dispute

    calls = {"reader1": "fractured", "reader2": F, "reader3": "not_fractured"}
    assert describe_dispute("C5", calls, report=False) == (
        "Readers 2 of 3 call C5 fractured; the report says not fractured.")
    assert describe_dispute("C2", {"r1": U, "r2": N}) == "Readers 0 of 2 call C2 fractured (1 unsure)."
    assert describe_dispute("C6", {}, model_probability=0.91, final=False) == (
        "The model gives C6 a 91% fracture probability against the final label not fractured.")
    assert describe_dispute("C7", {}) == "C7 is in dispute."
