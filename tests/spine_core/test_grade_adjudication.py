"""Grade disputes, pure: who disagrees by a grade or more, how grade votes are checked and
tallied, what the final grade of a level is and where it came from."""

from __future__ import annotations

import pytest

from spine_core import adjudication as adj
from spine_core.adjudication import DisputeKind, GradeVote
from spine_core.errors import InputError, VoteRejected


def test_readers_a_grade_apart_and_a_reader_against_the_dataset_are_disputes() -> None:
    readers = {"r1": {"L1": (3, "crush"), "L2": (0, None), "L3": (1, "wedge")},
               "r2": {"L1": (1, "wedge"), "L2": (0, None), "L3": (1, "biconcave")}}
    dataset = {"L2": (2, "wedge"), "L3": 1}
    found = adj.find_grade_disputes(readers, dataset)
    assert [(f.level, f.kind) for f in found] == [("L2", DisputeKind.grades_vs_dataset),
                                                  ("L1", DisputeKind.grades_disagree)]
    l1 = found[1].details
    assert l1["grades"] == {"r1": 3, "r2": 1} and l1["spread"] == 2
    assert l1["morphologies"] == {"r1": "crush", "r2": "wedge"}
    assert found[0].details["dataset"] == 2 and found[0].details["dataset_morphology"] == "wedge"
    # morphology alone is no dispute (L3); a two-grade tolerance leaves L2 (0 vs 2) and L1 (3 vs 1)
    assert {f.level for f in adj.find_grade_disputes(readers, dataset, min_difference=3)} == set()
    with pytest.raises(InputError, match="is not one of 0, 1, 2, 3"):
        adj.find_grade_disputes({"r1": {"L1": 4}})


def test_grade_choices_round_trip_and_refuse_bad_grades() -> None:
    assert adj.grade_choice(2, "Wedge") == "grade_2_wedge"
    assert adj.grade_choice(0) == "grade_0" and adj.grade_choice(None) == "cannot_tell"
    assert adj.parse_grade_choice("grade_2_wedge") == (2, "wedge")
    assert adj.parse_grade_choice("cannot_tell") is None
    with pytest.raises(InputError, match="grade-0"):
        adj.grade_choice(0, "crush")
    with pytest.raises(InputError, match="not a grade vote"):
        adj.parse_grade_choice("fractured")


def _state(kind: DisputeKind = DisputeKind.grades_disagree, votes: tuple[GradeVote, ...] = ()
           ) -> adj.DisputeState:
    return adj.DisputeState("L1", kind, grade_votes=votes)


def test_grade_votes_are_checked_like_fracture_votes() -> None:
    state = _state(votes=(GradeVote("a1", 2, "wedge", "looks like 2"),))
    ok = adj.validate_grade_vote(state, GradeVote("a2", 3, "CRUSH", " flat "), study_readers={"r1"})
    assert (ok.morphology, ok.rationale, ok.round) == ("crush", "flat", 1)
    for vote, readers, said in (
            (GradeVote("a1", 1, "wedge", "again"), set(), "already voted in round 1"),
            (GradeVote("r1", 1, "wedge", "mine"), {"r1"}, "read this study"),
            (GradeVote("a3", 1, "wedge", "  "), set(), "has no rationale")):
        with pytest.raises(VoteRejected, match=said):
            adj.validate_grade_vote(state, vote, study_readers=readers)
    with pytest.raises(VoteRejected, match="about fracture calls"):
        adj.validate_grade_vote(_state(DisputeKind.readers_disagree), GradeVote("a2", 1, None, "x"),
                                study_readers=set())
    with pytest.raises(VoteRejected, match="about a Genant grade"):
        adj.validate_vote(state, adj.Vote("a2", adj.VoteChoice.fractured, "x"), study_readers=set())


def test_tally_majority_chair_and_quorum() -> None:
    votes = [GradeVote("a1", 2, "wedge"), GradeVote("a2", 2, "biconcave"), GradeVote("a3", 3, "crush"),
             GradeVote("a4", 2, "wedge")]
    out = adj.tally_grades(votes, 3, None)
    assert (out.decided, out.grade, out.morphology, out.source) == (True, 2, "wedge", "majority")
    assert out.counts == {"grade_2_wedge": 2, "grade_2_biconcave": 1, "grade_3_crush": 1}
    pending = adj.tally_grades(votes[:2], 3, None)
    assert not pending.decided and "2 of 3 votes" in pending.reason
    tie = [GradeVote("a1", 1, "wedge"), GradeVote("chair", 3, "crush")]
    by_chair = adj.tally_grades(tie, 2, "chair")
    assert (by_chair.decided, by_chair.grade, by_chair.morphology, by_chair.source) == (
        True, 3, "crush", "chair")
    assert "waiting for the chair" in adj.tally_grades(tie[:1] + [GradeVote("a2", 2)], 2, "chair").reason
    cannot = adj.tally_grades([GradeVote("a1", None), GradeVote("a2", None)], 2, None)
    assert cannot.decided and cannot.grade is None
    with pytest.raises(VoteRejected, match="more than once"):
        adj.tally_grades([GradeVote("a1", 1), GradeVote("a1", 2)], 1, None)


def test_settle_and_reopen_a_grade_dispute() -> None:
    state = _state(votes=(GradeVote("a1", 1, "wedge"),))
    closed, outcome = adj.settle_grades(state, 1, None, decided_by="a1")
    assert closed.status is adj.DisputeStatus.decided and closed.decision is not None
    assert (closed.decision.grade, closed.decision.morphology) == (1, "wedge")
    again = adj.reopen(closed, reason="new images", by="a2")
    assert again.round == 2 and again.decision is None and again.current_grade_votes == ()


def test_final_grades_and_their_sources() -> None:
    readers = {"r1": {"T12": (2, "wedge"), "L1": (3, "crush"), "L2": (1, "wedge")},
               "r2": {"T12": (2, "biconcave"), "L1": (1, "wedge"), "L2": (1, "wedge")}}
    dataset = {"T12": (2, "biconcave"), "L1": (2, "wedge"), "L3": (0, None)}
    decided = adj.Decision(1, None, adj.Policy.COMMITTEE_DECIDES, "majority", "a1", "majority",
                           grade=3, morphology="crush")
    final = adj.final_grades(readers, dataset, {"L1": decided})
    assert final == {"T12": (2, "biconcave", "readers"), "L1": (3, "crush", "decision"),
                     "L2": (1, "wedge", "readers"), "L3": (0, None, "dataset")}
    pending = adj.final_grades(readers, dataset, {}, open_levels={"L1"})
    assert "L1" not in pending
    # readers agreeing against the dataset: theirs until a refresh opens the dispute
    assert adj.final_grades({"r1": {"L4": 1}, "r2": {"L4": 1}}, {"L4": 2})["L4"] == (1, None, "readers")
    assert "L4" not in adj.final_grades({"r1": {"L4": 1}}, {"L4": 2}, open_levels={"L4"})
    cannot = adj.Decision(1, None, adj.Policy.COMMITTEE_DECIDES, "cannot tell", "a1", "majority")
    assert adj.final_grades(readers, dataset, {"L1": cannot})["L1"] == (2, "wedge", "dataset")
