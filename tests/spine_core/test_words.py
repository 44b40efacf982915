"""spine_core.words: every code of the vocabularies people see has words, unknown codes still read
as words, and the model's probability says what it means at the threshold."""

from __future__ import annotations

from spine_core import words
from spine_core.adjudication import DisputeKind, DisputeStatus, LevelCall, Policy, VoteChoice
from spine_core.roles import Role


def test_every_code_of_the_enums_has_its_own_words() -> None:
    for kind in DisputeKind:
        assert kind.value in words.DISPUTE_KINDS and "_" not in words.kind_words(kind.value)
    for call in (*LevelCall, *VoteChoice):
        assert "_" not in words.call_words(call.value)
    for policy in Policy:
        assert policy.value in words.POLICIES
    for status in DisputeStatus:
        assert status.value in words.DISPUTE_STATUSES
    for role in Role:
        assert role.value in words.ROLES
    assert words.kind_words("grades_disagree") == "Readers' grades disagree"
    assert words.call_words("not_fractured") == "Not fractured"


def test_grade_votes_sources_and_unknown_codes_read_as_words() -> None:
    assert words.vote_words("grade_2_wedge") == "Grade 2 moderate, wedge"
    assert words.vote_words("cannot_tell") == "Cannot tell"
    assert words.call_words("grade_0") == "Grade 0 normal"
    assert words.final_source_words(None).startswith("pending")
    assert words.final_source_words("decision") == "decided by the committee"
    assert words.report_source_words("RIS") == "RIS"
    assert words.in_words(words.DISPUTE_KINDS, "brand_new_kind") == "Brand new kind"


def test_probability_words_at_the_threshold() -> None:
    assert words.probability_words(0.96) == "likely fracture, 96 %"
    assert words.probability_words(0.04) == "unlikely fracture, 4 %"
    assert words.probability_words(0.5, 0.5) == "likely fracture, 50 %"
    assert words.probability_words(None) == "no probability"
    assert words.label_words(None) == "not labelled" and words.label_words(False) == "not fractured"
