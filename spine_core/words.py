"""Codes in words: the one place that says what a stored code means to a person.

Pages, messages and the demonstration show these words; exports and the CLI's machine output keep
the codes. Each vocabulary is a plain dict (code -> words) with a function that also takes an
unknown code (it is shown with its underscores as spaces, never dropped), so a code added later
still reads as words until it gets its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from spine_core.adjudication import parse_grade_choice
from spine_core.errors import InputError

#: Dispute kinds (``spine_core.adjudication.DisputeKind``).
DISPUTE_KINDS: dict[str, str] = {
    "readers_vs_report": "Readers vs report",
    "readers_disagree": "Readers disagree",
    "model_vs_final": "Model vs final label",
    "grades_vs_dataset": "Reader's grade vs dataset",
    "grades_disagree": "Readers' grades disagree",
    "labelling": "Vertebra labels shifted",
}
#: Readers' calls and the committee's votes on a level.
CALLS: dict[str, str] = {
    "fractured": "Fractured",
    "not_fractured": "Not fractured",
    "cannot_tell": "Cannot tell",
    "unsure": "Unsure",
}
#: Genant grades, as the committee's grade form shows them.
GRADE_WORDS: dict[int, str] = {0: "0 normal", 1: "1 mild", 2: "2 moderate", 3: "3 severe"}
#: Adjudication policies (``Settings.adjudication_policy``).
POLICIES: dict[str, str] = {
    "report": "The report decides unless overridden",
    "committee": "The committee votes",
}
#: Dispute statuses.
DISPUTE_STATUSES: dict[str, str] = {"open": "Open", "decided": "Decided",
                                    "withdrawn": "Withdrawn"}
#: Where a final label came from (``final_labels.source``), and a level still waiting.
FINAL_LABEL_SOURCES: dict[str, str] = {
    "report": "from the report",
    "readers": "the readers agreed",
    "decision": "decided by the committee",
    "pending": "pending: the committee has not decided yet",
}
#: How a decision was reached (``decisions`` / ``Outcome.source``).
DECISION_SOURCES: dict[str, str] = {
    "majority": "majority of the committee",
    "chair": "the chair's casting vote",
    "report": "the report (report policy)",
    "override": "an override of the report",
    "pending": "not decided yet",
}
#: Where a report came from (``reports.source``; free text otherwise, shown as it is).
REPORT_SOURCES: dict[str, str] = {
    "train.csv": "the dataset's labels (train.csv)",
    "reports.csv": "the dataset's report text (reports.csv)",
    "manual entry": "entered by hand",
}
#: A reader's assignment.
ASSIGNMENT_STATUSES: dict[str, str] = {
    "assigned": "Assigned, not opened yet",
    "in_progress": "Being read",
    "submitted": "Submitted",
}
#: A study's place in the workflow.
STUDY_STATUSES: dict[str, str] = {
    "new": "New",
    "in_reading": "Being read",
    "read": "Read",
    "in_adjudication": "In adjudication",
    "final": "Final",
}
#: Roles.
ROLES: dict[str, str] = {"annotator": "Reader", "adjudicator": "Committee member",
                         "admin": "Administrator", "viewer": "Viewer"}


def _plain(code: object) -> str:
    text = str(code).replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def in_words(vocabulary: Mapping[str, str], code: object) -> str:
    """``code``'s words in ``vocabulary``; an unknown code with its underscores as spaces."""
    return vocabulary.get(str(code), _plain(code))


def kind_words(code: str) -> str:
    """A dispute kind: "Readers disagree"."""
    return in_words(DISPUTE_KINDS, code)


def call_words(code: str) -> str:
    """A call or a vote: "Not fractured", or a grade vote "Grade 2 moderate, wedge"."""
    if code in CALLS:
        return CALLS[code]
    if str(code).startswith("grade_"):
        return vote_words(code)
    return _plain(code)


def grade_words(grade: int | None, morphology: str | None = None) -> str:
    """"grade 2 moderate, wedge"; "cannot tell" for None."""
    if grade is None:
        return "cannot tell"
    text = f"grade {GRADE_WORDS.get(int(grade), grade)}"
    return f"{text}, {morphology}" if morphology else text


def vote_words(code: str) -> str:
    """A stored vote (``grade_2_wedge``, ``cannot_tell``, ``fractured``) in words, capitalised."""
    if code in CALLS:
        return CALLS[code]
    try:
        parsed = parse_grade_choice(code)
    except InputError:
        return _plain(code)
    return _plain(grade_words(*parsed) if parsed else "cannot tell")


def policy_words(code: str) -> str:
    return in_words(POLICIES, code)


def role_words(code: str) -> str:
    """A role: "Reader", "Committee member", "Administrator", "Viewer"."""
    return in_words(ROLES, code)


def status_words(code: str) -> str:
    """A dispute's status: "Open", "Decided", "Withdrawn"."""
    return in_words(DISPUTE_STATUSES, code)


def final_source_words(code: str | None) -> str:
    """Where a final label came from; None: pending."""
    return in_words(FINAL_LABEL_SOURCES, code or "pending")


def report_source_words(source: str | None) -> str:
    """A report's source; a free-text one (a RIS name) as it is."""
    if not source:
        return "no source given"
    return REPORT_SOURCES.get(source, source)


def label_words(fractured: bool | None, *, none: str = "not labelled") -> str:
    """A level's label: "fractured", "not fractured", or ``none``."""
    if fractured is None:
        return none
    return "fractured" if fractured else "not fractured"


def probability_words(p: float | None, threshold: float = 0.5) -> str:
    """The model's probability of a fracture with what it means at ``threshold``:
    "likely fracture, 96 %", "unlikely fracture, 4 %"; "no probability" when missing."""
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "no probability"
    word = "likely fracture" if p >= threshold else "unlikely fracture"
    return f"{word}, {100 * p:.0f} %"
