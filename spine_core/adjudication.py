"""Adjudication rules: which levels are disputed, how votes decide, what the final label is.

Pure functions over small frozen dataclasses; the database stores the string values of the enums
defined here (``db.models`` mirrors them) and pages call these functions with what they loaded.

Vocabulary
----------
* A **reader** reads a study and makes one *call* per vertebra level: fractured, not fractured or
  unsure (:class:`LevelCall`).
* An **adjudicator** votes on a *dispute*: fractured, not fractured or cannot tell
  (:class:`VoteChoice`), with a written rationale. A reader of the study never votes on it.
* The **policy** says who has the last word (:class:`Policy`):

  - ``REPORT_DECIDES``: the radiology report's label is final unless an adjudicator overrides it
    with a written reason (:class:`Override`). A level the report does not label falls back to
    the committee rules below.
  - ``COMMITTEE_DECIDES``: the adjudicators vote. Nothing is decided before ``quorum`` votes are
    in; then the choice with the most votes wins (relative majority). A tie at the top goes to
    the committee chair's vote when the chair voted for one of the tied choices; otherwise the
    dispute stays undecided (more votes or the chair's vote are needed).

* A decided dispute can be **reopened** with a reason: its decision is superseded and a new voting
  round starts (everyone may vote again; earlier rounds stay in the history).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any

from spine_core.errors import InputError, LabelVocabularyError, VoteRejected
from spine_core.genant import Morphology, check_grade, parse_morphology
from spine_core.labels import CRANIOCAUDAL_ORDER, level_id

#: A reader, by user name.
Reader = str
Level = str


class LevelCall(str, Enum):
    """A reader's call on one vertebra level (the stored value)."""

    fractured = "fractured"
    not_fractured = "not_fractured"
    unsure = "unsure"


class VoteChoice(str, Enum):
    """An adjudicator's vote on a dispute (the stored value)."""

    fractured = "fractured"
    not_fractured = "not_fractured"
    cannot_tell = "cannot_tell"


class DisputeKind(str, Enum):
    readers_disagree = "readers_disagree"
    readers_vs_report = "readers_vs_report"
    model_vs_final = "model_vs_final"
    #: Genant studies: submitted readers' grades differ by at least one grade
    grades_disagree = "grades_disagree"
    #: Genant studies: a submitted reader's grade differs from the dataset's grade
    grades_vs_dataset = "grades_vs_dataset"
    #: Radiographs: one reader's vertebra labels are shifted by one level against another's
    #: (one dispute for the whole film, ``spine_core.film_labels``); decided by choosing a labelling
    labelling = "labelling"


#: Kinds about Genant grades (a grade dispute is voted on with grades, not fracture calls).
GRADE_KINDS: frozenset[DisputeKind] = frozenset(
    {DisputeKind.grades_disagree, DisputeKind.grades_vs_dataset})


class DisputeStatus(str, Enum):
    open = "open"
    decided = "decided"


class Policy(str, Enum):
    """Who has the last word; the values are those of ``Settings.adjudication_policy``."""

    REPORT_DECIDES = "report"
    COMMITTEE_DECIDES = "committee"

    @classmethod
    def parse(cls, value: Policy | str) -> Policy:
        """The policy named by ``value`` ('report', 'committee' or a member)."""
        if isinstance(value, Policy):
            return value
        text = str(value).strip().lower()
        for member in cls:
            if text in (member.value, member.name.lower()):
                return member
        raise InputError(
            f"unknown adjudication policy '{value}': use 'report' (the report decides unless "
            "overridden) or 'committee' (adjudicators vote)"
        )


# --------------------------------------------------------------------------------------------
# Parsing and ordering helpers
# --------------------------------------------------------------------------------------------


def parse_call(value: LevelCall | str) -> LevelCall:
    """A :class:`LevelCall` from its value ('fractured', 'not_fractured', 'unsure')."""
    try:
        return LevelCall(value)
    except ValueError:
        raise InputError(
            f"'{value}' is not a level call: use one of "
            + ", ".join(c.value for c in LevelCall)
        ) from None


def parse_choice(value: VoteChoice | str) -> VoteChoice:
    """A :class:`VoteChoice` from its value ('fractured', 'not_fractured', 'cannot_tell')."""
    try:
        return VoteChoice(value)
    except ValueError:
        raise InputError(
            f"'{value}' is not a vote: use one of " + ", ".join(c.value for c in VoteChoice)
        ) from None


def craniocaudal_key(level: Hashable) -> tuple[int, str]:
    """Sort key putting levels in head-to-feet order (C1 first); unknown names sort last."""
    try:
        lid = int(level) if isinstance(level, int) else level_id(str(level))
        return (CRANIOCAUDAL_ORDER.index(lid), str(level))
    except (LabelVocabularyError, ValueError):
        return (len(CRANIOCAUDAL_ORDER), str(level))


def _call_label(call: LevelCall) -> bool | None:
    return {LevelCall.fractured: True, LevelCall.not_fractured: False}.get(call)


def majority_call(calls: Iterable[LevelCall | str]) -> LevelCall | None:
    """The definite call made by more than half of the readers, or None.

    An unsure call counts as a reader who did not side with either label, so 1 fractured + 1 unsure
    has no majority while 2 fractured + 1 unsure does.
    """
    parsed = [parse_call(c) for c in calls]
    if not parsed:
        return None
    call, count = Counter(parsed).most_common(1)[0]
    if call is LevelCall.unsure or 2 * count <= len(parsed):
        return None
    return call


# --------------------------------------------------------------------------------------------
# Dispute detection
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DisputeRules:
    """Which disputes :func:`find_disputes` looks for beyond the reader/report ones.

    ``model_vs_final``: also flag levels where the model's probability is far from the final label:
    ``|p - final| >= model_threshold`` (0.9: p >= 0.9 with a negative final label, or p <= 0.1
    with a positive one).
    """

    model_vs_final: bool = False
    model_threshold: float = 0.9

    def __post_init__(self) -> None:
        if not (0.0 < self.model_threshold <= 1.0):
            raise InputError(
                f"model_threshold {self.model_threshold} must lie in (0, 1]: it is the distance "
                "|p - final label| that counts as the model contradicting the final label"
            )


#: Order in which dispute kinds are worked on (smaller first).
KIND_RANK: dict[DisputeKind, int] = {
    DisputeKind.readers_vs_report: 0,
    DisputeKind.readers_disagree: 1,
    DisputeKind.model_vs_final: 2,
    DisputeKind.grades_vs_dataset: 0,
    DisputeKind.grades_disagree: 1,
    DisputeKind.labelling: 0,
}


@dataclass(frozen=True)
class DisputeFinding:
    """One disputed level: what kind of dispute, what each side said, and its priority.

    ``priority``: smaller is handled first: readers-vs-report before readers-disagree before
    model-vs-final, then head to feet (``100 * kind rank + craniocaudal position``).
    ``details`` is JSON-ready (reader ids as strings).
    """

    level: Level
    kind: DisputeKind
    details: dict[str, Any] = field(compare=False)
    priority: int


def _priority(kind: DisputeKind, level: Level) -> int:
    return 100 * KIND_RANK[kind] + min(craniocaudal_key(level)[0], 99)


def _reader_details(calls: Mapping[Reader, LevelCall]) -> dict[str, Any]:
    ordered = sorted(calls.items(), key=lambda item: str(item[0]))
    return {
        "calls": {str(r): c.value for r, c in ordered},
        **{call.value: [str(r) for r, c in ordered if c is call] for call in LevelCall},
    }


def _check_probability(level: Level, p: float) -> float:
    value = float(p)
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise InputError(f"model probability {p!r} for {level} is not a probability in [0, 1]")
    return value


def _calls_by_level(
    reader_calls: Mapping[Reader, Mapping[Level, LevelCall | str]],
) -> dict[Level, dict[Reader, LevelCall]]:
    by_level: dict[Level, dict[Reader, LevelCall]] = {}
    for reader, calls in reader_calls.items():
        for level, call in calls.items():
            by_level.setdefault(level, {})[reader] = parse_call(call)
    return by_level


def find_disputes(
    reader_calls: Mapping[Reader, Mapping[Level, LevelCall | str]],
    report: Mapping[Level, bool | None] | None = None,
    model_probs: Mapping[Level, float] | None = None,
    final: Mapping[Level, bool] | None = None,
    settings: DisputeRules | None = None,
) -> list[DisputeFinding]:
    """Every disputed level of one study, most urgent first.

    Kinds, per level:

    * ``readers_disagree``: the readers' definite calls differ, or any reader is unsure.
    * ``readers_vs_report``: the readers' majority (:func:`majority_call`) differs from the
      report's label. A split without majority is only a readers_disagree dispute.
    * ``model_vs_final`` (only when ``settings.model_vs_final``): ``|p - final| >= threshold``.

    A level missing from a reader's mapping means that reader made no call on it (callers give
    explicit ``not_fractured`` calls for levels the reader looked at and found intact).
    """
    rules = settings or DisputeRules()
    report = report or {}
    by_level = _calls_by_level(reader_calls)
    findings: list[DisputeFinding] = []

    for level, calls in by_level.items():
        definite = {c for c in calls.values() if c is not LevelCall.unsure}
        details = _reader_details(calls)
        if len(definite) > 1 or LevelCall.unsure in calls.values():
            kind = DisputeKind.readers_disagree
            findings.append(DisputeFinding(level, kind, details, _priority(kind, level)))
        majority = majority_call(calls.values())
        reported = report.get(level)
        if majority is not None and reported is not None and _call_label(majority) != bool(reported):
            kind = DisputeKind.readers_vs_report
            findings.append(
                DisputeFinding(
                    level,
                    kind,
                    {**details, "majority": majority.value, "report": bool(reported)},
                    _priority(kind, level),
                )
            )

    if rules.model_vs_final and model_probs and final:
        for level, p in model_probs.items():
            if level not in final or final[level] is None:
                continue
            prob = _check_probability(level, p)
            label = bool(final[level])
            if abs(prob - float(label)) >= rules.model_threshold:
                kind = DisputeKind.model_vs_final
                details = {
                    "model_probability": prob,
                    "final": label,
                    "threshold": rules.model_threshold,
                }
                findings.append(DisputeFinding(level, kind, details, _priority(kind, level)))

    return sorted(findings, key=lambda f: (f.priority, craniocaudal_key(f.level), f.kind.value))


def describe_dispute(
    level: Level,
    calls: Mapping[Reader, LevelCall | str],
    report: bool | None = None,
    model_probability: float | None = None,
    final: bool | None = None,
) -> str:
    """The dispute in one sentence, for the committee's first line, e.g. "Readers 2 of 3 call C5
    fractured; the report says not fractured."."""
    parts: list[str] = []
    if calls:
        parsed = [parse_call(c) for c in calls.values()]
        fractured = sum(c is LevelCall.fractured for c in parsed)
        unsure = sum(c is LevelCall.unsure for c in parsed)
        part = f"readers {fractured} of {len(parsed)} call {level} fractured"
        if unsure:
            part += f" ({unsure} unsure)"
        parts.append(part)
    if report is not None:
        parts.append(f"the report says {'fractured' if report else 'not fractured'}")
    if model_probability is not None:
        said = f"the model gives {level} a {model_probability:.0%} fracture probability"
        if final is not None:
            said += f" against the final label {'fractured' if final else 'not fractured'}"
        parts.append(said)
    if not parts:
        return f"{level} is in dispute."
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


# --------------------------------------------------------------------------------------------
# Votes, tally, decisions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Vote:
    """One adjudicator's vote in one round of a dispute."""

    voter: Reader
    choice: VoteChoice
    rationale: str = ""
    round: int = 1


@dataclass(frozen=True)
class GradeVote:
    """One adjudicator's vote in one round of a grade dispute: a Genant grade (0-3) with its
    morphology, or ``grade`` None for *cannot tell*."""

    voter: Reader
    grade: int | None
    morphology: str | None = None
    rationale: str = ""
    round: int = 1

    @property
    def choice(self) -> str:
        """The stored value: ``grade_2_wedge``, ``grade_0``, ``cannot_tell``."""
        return grade_choice(self.grade, self.morphology)


@dataclass(frozen=True)
class Override:
    """An adjudicator replacing the report's label (report-decides policy); the reason is required."""

    by: Reader
    fractured: bool
    reason: str


@dataclass(frozen=True)
class Outcome:
    """Result of a tally: whether it is decided, the label, why, and under which policy.

    ``fractured`` is None when undecided, or when the committee decided it *cannot tell*
    (``decided`` tells the two apart). ``source``: 'majority', 'chair', 'report', 'override' or
    'pending'. ``counts``: votes per choice.
    """

    decided: bool
    fractured: bool | None
    reason: str
    policy: Policy
    source: str
    counts: dict[str, int] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Decision:
    """A recorded decision of one round (superseded when the dispute is reopened)."""

    round: int
    fractured: bool | None
    policy: Policy
    reason: str
    decided_by: Reader
    source: str
    superseded: bool = False
    #: grade disputes: the grade decided (None: cannot tell) and its morphology
    grade: int | None = None
    morphology: str | None = None


@dataclass(frozen=True)
class DisputeState:
    """The adjudication history of one dispute: rounds, votes, decisions."""

    level: Level
    kind: DisputeKind
    status: DisputeStatus = DisputeStatus.open
    round: int = 1
    votes: tuple[Vote, ...] = ()
    decisions: tuple[Decision, ...] = ()
    reopen_reasons: tuple[str, ...] = ()
    #: grade disputes (:data:`GRADE_KINDS`) hold their votes here, never in ``votes``
    grade_votes: tuple[GradeVote, ...] = ()

    @property
    def current_votes(self) -> tuple[Vote, ...]:
        """Votes of the current round."""
        return tuple(v for v in self.votes if v.round == self.round)

    @property
    def current_grade_votes(self) -> tuple[GradeVote, ...]:
        """Grade votes of the current round (grade disputes)."""
        return tuple(v for v in self.grade_votes if v.round == self.round)

    @property
    def decision(self) -> Decision | None:
        """The decision in force (the latest one not superseded), if any."""
        live = [d for d in self.decisions if not d.superseded]
        return live[-1] if live else None

    def describe(self) -> str:
        return f"{self.kind.value} dispute on {self.level} (round {self.round})"


def _blank(text: str | None) -> bool:
    return text is None or not str(text).strip()


def validate_override(override: Override) -> Override:
    """Check that an override carries a label and a written reason.

    Raises:
        VoteRejected: no reason, or a label that is not True/False.
    """
    if not isinstance(override.fractured, bool):
        raise VoteRejected(
            f"override by {override.by}: the label must be fractured (True) or not fractured "
            f"(False), got {override.fractured!r}"
        )
    if _blank(override.reason):
        raise VoteRejected(
            f"override by {override.by} has no reason: overriding the report needs a written "
            "reason (what in the images contradicts the report)"
        )
    return override


def validate_vote(
    state: DisputeState,
    vote: Vote,
    *,
    study_readers: Collection[Reader],
    require_rationale: bool = True,
) -> Vote:
    """The vote as it will be recorded (choice parsed, round set to the current one).

    Raises:
        VoteRejected: the dispute is decided, the rationale is missing, the voter read the study,
            or the voter already voted in this round.
    """
    choice = parse_choice(vote.choice)
    if state.kind in GRADE_KINDS:
        raise VoteRejected(f"{state.describe()} is about a Genant grade: vote with a grade (0-3) "
                           "and morphology, or cannot tell")
    _check_voter(state, str(vote.voter), vote.rationale, choice.value, study_readers,
                 require_rationale, [str(v.voter) for v in state.current_votes])
    return replace(vote, choice=choice, round=state.round, rationale=str(vote.rationale).strip())


def _check_voter(state: DisputeState, voter: str, rationale: str | None, said: str,
                 study_readers: Collection[Reader], require_rationale: bool,
                 already: Collection[str]) -> None:
    """The refusals every vote shares: a decided dispute, no rationale, a reader of the study,
    a second vote in the round."""
    where = state.describe()
    if state.status is not DisputeStatus.open:
        raise VoteRejected(
            f"{where} is already decided: votes are closed; reopen it with a reason to vote again"
        )
    if require_rationale and _blank(rationale):
        raise VoteRejected(
            f"vote by {voter} on {where} has no rationale: write what you saw that supports "
            f"'{said}'"
        )
    if voter in {str(r) for r in study_readers}:
        raise VoteRejected(
            f"{voter} read this study and cannot vote on its {where}: adjudicators must be "
            "independent of the readers"
        )
    if voter in set(already):
        raise VoteRejected(
            f"{voter} already voted in round {state.round} of this {where}: one vote per "
            "person per round (a reopened dispute starts a new round)"
        )


def cast_vote(
    state: DisputeState,
    vote: Vote,
    *,
    study_readers: Collection[Reader],
    require_rationale: bool = True,
) -> DisputeState:
    """The state with ``vote`` added to the current round (validated by :func:`validate_vote`)."""
    checked = validate_vote(
        state, vote, study_readers=study_readers, require_rationale=require_rationale
    )
    return replace(state, votes=(*state.votes, checked))


def _label_of(choice: VoteChoice) -> bool | None:
    return {VoteChoice.fractured: True, VoteChoice.not_fractured: False}.get(choice)


def _committee_tally(
    votes: list[Vote], policy: Policy, quorum: int, chair: Reader | None, prefix: str = ""
) -> Outcome:
    counts = Counter(v.choice for v in votes)
    shown = {c.value: counts.get(c, 0) for c in VoteChoice}
    summary = ", ".join(f"{n} {c.value.replace('_', ' ')}" for c, n in counts.most_common())
    if len(votes) < quorum:
        return Outcome(
            False, None, f"{prefix}{len(votes)} of {quorum} votes needed for quorum", policy,
            "pending", shown,
        )
    top = max(counts.values())
    leaders = sorted((c for c, n in counts.items() if n == top), key=lambda c: c.value)
    if len(leaders) == 1:
        winner = leaders[0]
        return Outcome(
            True, _label_of(winner), f"{prefix}majority {winner.value} ({summary})", policy,
            "majority", shown,
        )
    tied = " and ".join(c.value for c in leaders)
    chair_vote = next((v for v in votes if chair is not None and str(v.voter) == str(chair)), None)
    if chair_vote is not None and chair_vote.choice in leaders:
        return Outcome(
            True, _label_of(chair_vote.choice),
            f"{prefix}tie between {tied} ({summary}); the chair {chair} voted "
            f"{chair_vote.choice.value}", policy, "chair", shown,
        )
    if chair_vote is not None:
        why = (
            f"the chair {chair} voted {chair_vote.choice.value}, which is not one of the tied "
            "choices: more votes are needed"
        )
    elif chair is None:
        why = "no committee chair is set: name a chair or add votes"
    else:
        why = f"waiting for the chair's ({chair}) vote"
    reason = f"{prefix}tie between {tied} ({summary}); {why}"
    return Outcome(False, None, reason, policy, "pending", shown)


def tally(
    votes: Iterable[Vote],
    policy: Policy | str,
    quorum: int,
    chair: Reader | None,
    *,
    report: bool | None = None,
    override: Override | None = None,
) -> Outcome:
    """Decide a dispute from the votes of its current round under ``policy``.

    Committee rules: fewer than ``quorum`` votes → undecided; the choice with the most votes wins;
    a tie goes to the chair's vote when the chair voted for one of the tied choices, else
    undecided. A 'cannot tell' win is a decision with ``fractured=None``.

    Report-decides: an override (validated: a reason is required) decides; otherwise the report's
    label ``report`` decides; a level without report label falls back to the committee rules.

    Raises:
        InputError: quorum below 1, an unknown policy or vote choice.
        VoteRejected: two votes by one person, an override without reason, or an override under
            the committee policy (there the committee votes).
    """
    rule = Policy.parse(policy)
    if int(quorum) < 1:
        raise InputError(f"quorum {quorum} must be at least 1 vote")
    checked = [replace(v, choice=parse_choice(v.choice)) for v in votes]
    voters = Counter(str(v.voter) for v in checked)
    repeated = sorted(name for name, n in voters.items() if n > 1)
    if repeated:
        raise VoteRejected(
            f"{', '.join(repeated)} voted more than once in this round: keep one vote per person"
        )

    if rule is Policy.COMMITTEE_DECIDES:
        if override is not None:
            raise VoteRejected(
                f"override by {override.by} refused: under the committee policy the label is "
                "decided by the adjudicators' votes, not by overriding the report"
            )
        return _committee_tally(checked, rule, int(quorum), chair)

    if override is not None:
        validate_override(override)
        return Outcome(
            True, override.fractured,
            f"report overridden by {override.by}: {override.reason.strip()}", rule, "override",
        )
    if report is not None:
        word = "fractured" if report else "not fractured"
        return Outcome(True, bool(report), f"the report decides: {word}", rule, "report")
    return _committee_tally(
        checked, rule, int(quorum), chair, prefix="no report label for this level, committee rules: "
    )


def record_decision(state: DisputeState, outcome: Outcome, *, decided_by: Reader) -> DisputeState:
    """The state closed by ``outcome``.

    Raises:
        VoteRejected: the dispute is already decided, or the outcome is undecided.
    """
    if state.status is not DisputeStatus.open:
        raise VoteRejected(
            f"{state.describe()} is already decided: reopen it with a reason before deciding again"
        )
    if not outcome.decided:
        raise VoteRejected(f"{state.describe()} cannot be closed yet: {outcome.reason}")
    decision = Decision(
        state.round, outcome.fractured, outcome.policy, outcome.reason, decided_by, outcome.source
    )
    return replace(state, status=DisputeStatus.decided, decisions=(*state.decisions, decision))


def settle(
    state: DisputeState,
    policy: Policy | str,
    quorum: int,
    chair: Reader | None,
    *,
    decided_by: Reader,
    report: bool | None = None,
    override: Override | None = None,
) -> tuple[DisputeState, Outcome]:
    """Tally the current round and close the dispute when the tally decides.

    Returns the (possibly unchanged) state and the outcome, so the page can show why it is still
    open. Raises VoteRejected when the dispute is already decided.
    """
    if state.status is not DisputeStatus.open:
        raise VoteRejected(
            f"{state.describe()} is already decided: reopen it with a reason before deciding again"
        )
    outcome = tally(state.current_votes, policy, quorum, chair, report=report, override=override)
    if outcome.decided:
        state = record_decision(state, outcome, decided_by=decided_by)
    return state, outcome


def reopen(state: DisputeState, *, reason: str, by: Reader) -> DisputeState:
    """Reopen a decided dispute: its decision is superseded and voting round ``round + 1`` starts.

    Raises:
        VoteRejected: the dispute is not decided, or no reason is given.
    """
    if state.status is not DisputeStatus.decided:
        raise VoteRejected(
            f"{state.describe()} is still open: only a decided dispute can be reopened"
        )
    if _blank(reason):
        raise VoteRejected(
            f"reopening the {state.describe()} needs a reason (e.g. new images, a missed finding)"
        )
    superseded = tuple(replace(d, superseded=True) for d in state.decisions)
    return replace(
        state,
        status=DisputeStatus.open,
        round=state.round + 1,
        decisions=superseded,
        reopen_reasons=(*state.reopen_reasons, f"{by}: {reason.strip()}"),
    )


# --------------------------------------------------------------------------------------------
# Final labels
# --------------------------------------------------------------------------------------------


def final_labels(
    report: Mapping[Level, bool | None] | None,
    reader_calls: Mapping[Reader, Mapping[Level, LevelCall | str]],
    decisions: Mapping[Level, Decision | Outcome] | None,
    policy: Policy | str,
) -> dict[Level, tuple[bool, str]]:
    """The final label of each level that has one: ``level -> (fractured, source)``.

    Rules, in order, per level:

    1. A decision in force with a label → that label (source 'decision'; 'report' when the
       decision was the report deciding). ``decisions`` holds the current decision per level
       (superseded decisions and undecided outcomes are ignored).
    2. Every reader made the same definite call and the report (if any) agrees → that label
       (source 'readers').
    3. Report-decides policy: the report's label (source 'report').
    4. Committee policy: the report's label when no reader called the level, or when the
       committee decided it *cannot tell* (source 'report'); otherwise the level is still pending.

    Levels left out are pending (undecided disputes, or nothing labels them).
    """
    rule = Policy.parse(policy)
    report = report or {}
    decisions = decisions or {}
    by_level = _calls_by_level(reader_calls)
    levels = set(report) | set(by_level) | set(decisions)
    out: dict[Level, tuple[bool, str]] = {}

    for level in sorted(levels, key=craniocaudal_key):
        reported = report.get(level)
        reported = None if reported is None else bool(reported)
        calls = by_level.get(level, {})
        decision = decisions.get(level)
        if isinstance(decision, Decision) and decision.superseded:
            decision = None
        if isinstance(decision, Outcome) and not decision.decided:
            decision = None

        if decision is not None and decision.fractured is not None:
            source = "report" if decision.source == "report" else "decision"
            out[level] = (bool(decision.fractured), source)
            continue
        distinct = set(calls.values())
        if len(distinct) == 1 and LevelCall.unsure not in distinct:
            label = _call_label(next(iter(distinct)))
            assert label is not None
            if reported is None or reported == label:
                out[level] = (label, "readers")
                continue
        if reported is None:
            continue
        if rule is Policy.REPORT_DECIDES or not calls or decision is not None:
            out[level] = (reported, "report")
    return out


# --------------------------------------------------------------------------------------------
# Genant grades: disputes, votes, final grades
# --------------------------------------------------------------------------------------------

#: A grade with its morphology (None at grade 0), as readers and the dataset give it.
GradeCall = tuple[int, str | None]
CANNOT_TELL = VoteChoice.cannot_tell.value


def grade_choice(grade: int | None, morphology: str | None = None) -> str:
    """The stored value of a grade vote: ``grade_2_wedge``, ``grade_0``, ``cannot_tell``.

    Raises:
        GenantError (an InputError): a grade outside 0-3, a morphology on grade 0 or on
            *cannot tell*, an unknown morphology.
    """
    if grade is None:
        if morphology:
            raise InputError("a 'cannot tell' vote has no morphology")
        return CANNOT_TELL
    check_grade(grade, morphology)
    morph = parse_morphology(morphology)
    return f"grade_{grade}" + (f"_{morph.value}" if morph else "")


def parse_grade_choice(value: str) -> GradeCall | None:
    """(grade, morphology) of a stored grade vote, None for *cannot tell*.

    Raises:
        InputError: a value :func:`grade_choice` never writes.
    """
    text = str(value).strip()
    if text == CANNOT_TELL:
        return None
    parts = text.split("_")
    if len(parts) not in (2, 3) or parts[0] != "grade" or not parts[1].isdigit():
        raise InputError(f"'{value}' is not a grade vote: use grade_0 .. grade_3 with a "
                         "morphology (grade_2_wedge), or cannot_tell")
    grade = int(parts[1])
    morph = parts[2] if len(parts) == 3 else None
    check_grade(grade, morph)
    return grade, morph


def _grade_call(value: GradeCall | int) -> GradeCall:
    if isinstance(value, tuple):
        grade, morph = value
    else:
        grade, morph = value, None
    check_grade(grade, morph)
    parsed = parse_morphology(morph)
    return int(grade), parsed.value if parsed else None


def find_grade_disputes(
    reader_grades: Mapping[Reader, Mapping[Level, GradeCall | int]],
    dataset: Mapping[Level, GradeCall | int] | None = None,
    *,
    min_difference: int = 1,
) -> list[DisputeFinding]:
    """Every disputed level of a Genant study, most urgent first.

    * ``grades_disagree``: two readers' grades differ by ``min_difference`` grades or more;
    * ``grades_vs_dataset``: a reader's grade differs from the dataset's by that much.

    A level a reader did not grade is not that reader's call (Genant readers grade each level in
    the field of view explicitly). Morphology alone does not open a dispute; it is in the details.
    ``details``: ``grades`` (reader -> grade), ``morphologies`` (reader -> morphology or None),
    ``spread`` (max - min reader grade) and, with a dataset grade, ``dataset`` and
    ``dataset_morphology``.
    """
    if int(min_difference) < 1:
        raise InputError(f"min_difference {min_difference} must be at least one grade")
    truth = {lvl: _grade_call(v) for lvl, v in (dataset or {}).items()}
    by_level: dict[Level, dict[Reader, GradeCall]] = {}
    for reader, grades in reader_grades.items():
        for level, value in grades.items():
            by_level.setdefault(level, {})[reader] = _grade_call(value)
    findings: list[DisputeFinding] = []
    for level, calls in by_level.items():
        ordered = sorted(calls.items(), key=lambda kv: str(kv[0]))
        values = [g for g, _ in calls.values()]
        details: dict[str, Any] = {
            "grades": {str(r): g for r, (g, _) in ordered},
            "morphologies": {str(r): mo for r, (_, mo) in ordered},
            "spread": max(values) - min(values),
        }
        if max(values) - min(values) >= min_difference:
            kind = DisputeKind.grades_disagree
            findings.append(DisputeFinding(level, kind, dict(details), _priority(kind, level)))
        if level in truth:
            grade, morph = truth[level]
            if any(abs(g - grade) >= min_difference for g in values):
                kind = DisputeKind.grades_vs_dataset
                findings.append(DisputeFinding(
                    level, kind, {**details, "dataset": grade, "dataset_morphology": morph},
                    _priority(kind, level)))
    return sorted(findings, key=lambda f: (f.priority, craniocaudal_key(f.level), f.kind.value))


def describe_grade_dispute(level: Level, grades: Mapping[Reader, int],
                           dataset: int | None = None) -> str:
    """One sentence for the committee, e.g. "Readers grade L1 1 and 3; the dataset says 2."."""
    parts = []
    if grades:
        said = " and ".join(str(g) for g in sorted(int(g) for g in grades.values()))
        parts.append(f"readers grade {level} {said}")
    if dataset is not None:
        parts.append(f"the dataset says {dataset}")
    if not parts:
        return f"The grade of {level} is in dispute."
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


def validate_grade_vote(state: DisputeState, vote: GradeVote, *,
                        study_readers: Collection[Reader],
                        require_rationale: bool = True) -> GradeVote:
    """The grade vote as it will be recorded (checked, round set to the current one).

    Raises:
        VoteRejected: not a grade dispute, the dispute is decided, no rationale, the voter read
            the study, or a second vote in this round.
        GenantError: a grade outside 0-3 or a morphology on grade 0.
    """
    choice = grade_choice(vote.grade, vote.morphology)
    if state.kind not in GRADE_KINDS:
        raise VoteRejected(f"{state.describe()} is about fracture calls: vote fractured, not "
                           "fractured or cannot tell")
    _check_voter(state, str(vote.voter), vote.rationale, choice, study_readers, require_rationale,
                 [str(v.voter) for v in state.current_grade_votes])
    parsed = parse_morphology(vote.morphology)
    return replace(vote, morphology=parsed.value if parsed else None, round=state.round,
                   rationale=str(vote.rationale).strip())


@dataclass(frozen=True)
class GradeOutcome:
    """Result of a grade tally. ``grade`` None with ``decided`` True: the committee cannot tell.
    ``source``: 'majority', 'chair' or 'pending'; ``counts``: votes per grade choice."""

    decided: bool
    grade: int | None
    morphology: str | None
    reason: str
    source: str
    counts: dict[str, int] = field(default_factory=dict, compare=False)
    policy: Policy = Policy.COMMITTEE_DECIDES


def tally_grades(votes: Iterable[GradeVote], quorum: int, chair: Reader | None) -> GradeOutcome:
    """Decide a grade dispute from the votes of its current round, by the committee rules.

    Fewer than ``quorum`` votes: undecided. The grade (or *cannot tell*) with most votes wins; a
    tie goes to the chair's vote when the chair voted for one of the tied grades, else undecided.
    The morphology is the one most of the winning grade's votes gave (the chair's on a tie, else
    the first of wedge, biconcave, crush). The report policy does not apply: a grade dispute is
    always the committee's (the dataset's grade is one side of it).

    Raises:
        InputError: quorum below 1, a bad grade. VoteRejected: two votes by one person.
    """
    if int(quorum) < 1:
        raise InputError(f"quorum {quorum} must be at least 1 vote")
    checked = list(votes)
    for v in checked:
        grade_choice(v.grade, v.morphology)
    voters = Counter(str(v.voter) for v in checked)
    repeated = sorted(name for name, n in voters.items() if n > 1)
    if repeated:
        raise VoteRejected(
            f"{', '.join(repeated)} voted more than once in this round: keep one vote per person")
    shown = dict(Counter(v.choice for v in checked))

    def word(g: int | None) -> str:
        return "cannot tell" if g is None else f"grade {g}"

    if len(checked) < int(quorum):
        return GradeOutcome(False, None, None, f"{len(checked)} of {quorum} votes needed for quorum",
                            "pending", shown)
    counts = Counter(v.grade for v in checked)
    summary = ", ".join(f"{n} {word(g)}" for g, n in sorted(
        counts.items(), key=lambda kv: (-kv[1], -1 if kv[0] is None else kv[0])))
    top = max(counts.values())
    leaders = sorted((g for g, n in counts.items() if n == top), key=lambda g: -1 if g is None else g)
    chair_vote = next((v for v in checked if chair is not None and str(v.voter) == str(chair)), None)
    if len(leaders) == 1:
        winner, source = leaders[0], "majority"
        reason = f"majority {word(winner)} ({summary})"
    elif chair_vote is not None and chair_vote.grade in leaders:
        winner, source = chair_vote.grade, "chair"
        tied = " and ".join(word(g) for g in leaders)
        reason = f"tie between {tied} ({summary}); the chair {chair} voted {word(winner)}"
    else:
        tied = " and ".join(word(g) for g in leaders)
        why = ("no committee chair is set: name a chair or add votes" if chair is None
               else f"waiting for the chair's ({chair}) vote" if chair_vote is None
               else f"the chair {chair} voted {word(chair_vote.grade)}, which is not one of the "
                    "tied grades: more votes are needed")
        return GradeOutcome(False, None, None, f"tie between {tied} ({summary}); {why}", "pending",
                            shown)
    morphology = None
    if winner is not None and winner > 0:
        morphs = Counter(v.morphology for v in checked if v.grade == winner and v.morphology)
        if morphs:
            best = max(morphs.values())
            tied_m = [mo.value for mo in Morphology if morphs.get(mo.value) == best]
            if chair_vote is not None and chair_vote.grade == winner and chair_vote.morphology in tied_m:
                morphology = chair_vote.morphology
            else:
                morphology = tied_m[0]
            reason += f"; morphology {morphology}"
    return GradeOutcome(True, winner, morphology, reason, source, shown)


def settle_grades(state: DisputeState, quorum: int, chair: Reader | None, *,
                  decided_by: Reader) -> tuple[DisputeState, GradeOutcome]:
    """Tally the current round of a grade dispute and close it when the tally decides.

    Raises VoteRejected when the dispute is already decided or not a grade dispute."""
    if state.kind not in GRADE_KINDS:
        raise VoteRejected(f"{state.describe()} is not a grade dispute")
    if state.status is not DisputeStatus.open:
        raise VoteRejected(
            f"{state.describe()} is already decided: reopen it with a reason before deciding again")
    outcome = tally_grades(state.current_grade_votes, quorum, chair)
    if outcome.decided:
        decision = Decision(state.round, None, outcome.policy, outcome.reason, decided_by,
                            outcome.source, grade=outcome.grade, morphology=outcome.morphology)
        state = replace(state, status=DisputeStatus.decided,
                        decisions=(*state.decisions, decision))
    return state, outcome


def final_grades(
    reader_grades: Mapping[Reader, Mapping[Level, GradeCall | int]],
    dataset: Mapping[Level, GradeCall | int] | None,
    decisions: Mapping[Level, Decision | GradeOutcome] | None = None,
    open_levels: Collection[Level] = (),
) -> dict[Level, tuple[int, str | None, str]]:
    """The final grade of each level that has one: ``level -> (grade, morphology, source)``.

    Per level, in order:

    1. a decision in force with a grade -> it (source 'decision');
    2. a level under an open grade dispute (``open_levels``) -> pending (left out);
    3. every reader gave the same grade -> the readers' (source 'readers'; their morphology when
       they agree on it, else the dataset's when it gives that grade, else the most common). A
       dataset grade that differs opens a ``grades_vs_dataset`` dispute (step 2) once the study
       is refreshed;
    4. the dataset's grade (source 'dataset'): no reader graded the level, the readers split
       with no dispute open, or the committee could not tell.
    """
    truth = {lvl: _grade_call(v) for lvl, v in (dataset or {}).items()}
    by_level: dict[Level, list[GradeCall]] = {}
    for own in reader_grades.values():
        for level, value in own.items():
            by_level.setdefault(level, []).append(_grade_call(value))
    decisions = decisions or {}
    out: dict[Level, tuple[int, str | None, str]] = {}
    for level in sorted(set(truth) | set(by_level) | set(decisions), key=craniocaudal_key):
        decision = decisions.get(level)
        if isinstance(decision, Decision) and decision.superseded:
            decision = None
        if isinstance(decision, GradeOutcome) and not decision.decided:
            decision = None
        if decision is not None and decision.grade is not None:
            out[level] = (int(decision.grade), decision.morphology, "decision")
            continue
        if level in open_levels and decision is None:
            continue
        calls = by_level.get(level, [])
        given = {g for g, _ in calls}
        if len(given) == 1:
            grade = next(iter(given))
            morphs = Counter(mo for _, mo in calls)
            if len(morphs) == 1:
                morph = next(iter(morphs))
            elif level in truth and truth[level][0] == grade:
                morph = truth[level][1]
            else:
                morph = morphs.most_common(1)[0][0]
            out[level] = (grade, morph, "readers")
            continue
        if level in truth:
            out[level] = (*truth[level], "dataset")
    return out
