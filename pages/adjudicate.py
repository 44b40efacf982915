"""Committee page: the dispute queue, one dispute in full, and vote / decide / override / reopen.

Thin: what to show comes from ``db.dispute_queries``, every action goes to ``db.disputes`` (which
checks roles and rules and writes the audit trail). The study is shown in the reading workstation
(``spine_viewer``), opened at the slice most readers boxed and zoomed to the disputed region, with
each reader's boxes labelled large and the union; a study too big for the browser falls back to
server-rendered slices (``pages.parts.dispute_slice``).
"""

from __future__ import annotations

import html

import streamlit as st

from db import dispute_queries as views
from db import disputes as store
from db import models as m
from db.session import unit_of_work
from pages.parts import grade_dispute as grades
from pages.parts import labelling_dispute as labelling
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from pages.parts.dispute_slice import render_slice_view
from pages.parts.dispute_viewer import boxed_range, dispute_boxes, dispute_region, opening_slice
from spine_core import adjudication as adj
from spine_core import words
from spine_core.adjudication import craniocaudal_key
from spine_core.colours import UNION_COLOUR
from spine_core.io.radiograph import viewer_options
from spine_core.labels import CERVICAL, CRANIOCAUDAL_ORDER, LEVEL_NAMES
from spine_core.roles import Permission, can

KIND_LABELS = words.DISPUTE_KINDS
CHOICE_LABELS = {c: words.CALLS[c] for c in ("fractured", "not_fractured", "cannot_tell")}
FLASH = "adjudicate_flash"
#: Set when an action closed or reopened the dispute on screen: the next run widens the status
#: filter to "all" so that dispute stays selected (it would leave an "open" queue otherwise).
KEEP_IN_VIEW = "adjudicate_keep_in_view"


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _swatch(rgb: tuple[int, int, int], text: str) -> str:
    return (f"<span style='border:3px solid {_hex(rgb)};padding:0 6px;margin-right:8px'>"
            f"{html.escape(text)}</span>")


def _flash(message: str, kind: str = "success", *, keep_in_view: bool = False,
           where: str = "top") -> None:
    """Show ``message`` after the rerun, at ``where``: "top", or "actions" (beside the vote,
    decide and override controls, where the action was taken)."""
    st.session_state[FLASH] = (kind, message, where)
    if keep_in_view:
        st.session_state[KEEP_IN_VIEW] = True
    st.rerun()


def _show_flash(where: str = "top") -> None:
    flash = st.session_state.get(FLASH)
    if not flash or (flash[2] if len(flash) > 2 else "top") != where:
        return
    kind, message = st.session_state.pop(FLASH)[:2]
    if kind == "success":
        st.success(message)
    elif kind == "info":
        st.info(message)


# --- queue --------------------------------------------------------------------------------------


def _queue(user: SignedInUser) -> int | None:
    ws = workspace()
    c1, c2, c3 = st.columns([2, 2, 1])
    levels = c1.multiselect("Levels", [LEVEL_NAMES[i] for i in CRANIOCAUDAL_ORDER],
                            key="adjudicate_levels")
    kinds = c2.multiselect("Kinds", list(KIND_LABELS), format_func=KIND_LABELS.__getitem__,
                           key="adjudicate_kinds")
    if st.session_state.pop(KEEP_IN_VIEW, False):
        st.session_state["adjudicate_status"] = "all"
    status = c3.radio("Status", ["open", "decided", "all"], horizontal=True,
                      format_func=lambda c: "All" if c == "all" else words.status_words(c),
                      key="adjudicate_status")
    if st.button("Check read studies for disputes", key="adjudicate_refresh",
                 help="Re-checks every study whose readers submitted: disputes, final labels"):
        with unit_of_work(ws.sessions) as session:
            results = store.refresh_all(session, ws.settings, actor=user.username)
        opened = sum(len(r.opened) for r in results)
        _flash(f"{len(results)} studies checked: {opened} new dispute(s), "
               f"{sum(r.open_disputes for r in results)} open in all.", "info")
    with ws.sessions() as session:
        items = views.dispute_queue(session, user, status=status, levels=levels or None,
                                    kinds=kinds or None)
    if not items:
        st.info("No dispute matches. Disputes appear when readers' submitted work is checked "
                "(studies in adjudication) and they disagree with each other or with the report.")
        return None
    st.caption(f"{len(items)} dispute(s), most urgent first: readers vs report, then readers "
               "disagreeing, then model vs final label; head to feet within each.")
    by_id = {i.dispute_id: i for i in items}

    def label(dispute_id: int) -> str:
        # Only what never changes: the browser sends the selection back as this text, and a
        # text that changed since (a vote, a decision) would select the first dispute instead.
        i = by_id[dispute_id]
        return f"{i.level} · {KIND_LABELS.get(i.kind, i.kind)} · {i.study_uid} · #{i.dispute_id}"

    chosen = st.selectbox("Dispute", list(by_id), format_func=label, key="adjudicate_dispute")
    if chosen is not None:
        i = by_id[chosen]
        flag = " · ⚑ no longer disputed" if i.flagged else ""
        st.caption(f"Round {i.round} · {i.votes} vote(s) · {words.status_words(i.status)}{flag}")
    return chosen


# --- one dispute --------------------------------------------------------------------------------


def _workstation(detail: views.DisputeDetail) -> bool:
    """The study in the reading workstation at the disputed region; False when it cannot be
    shown there (no position known, too big for the browser, not an axial stack)."""
    from pages.parts.viewer_parts import load_study
    from pages.parts.viewer_workstation import browser_limit, browser_refusal, slice_caption
    from spine_viewer import ViewerSource, VolumeTooLargeError, workstation
    from spine_viewer.boxes import boxes_drawable

    start = opening_slice(detail)
    if start is None:
        return False
    try:
        view = load_study(detail.study_id)
    except Exception:  # noqa: BLE001 - the server-rendered slices below say what is wrong
        return False
    refusal = browser_refusal(view, view.mask is not None)
    if refusal is not None or not boxes_drawable(view.geometry):
        if refusal is not None:
            st.info(f"{refusal}. The slices are rendered on the server instead.")
        return False
    index = view.geometry.source_to_display((start, 0, 0))[0]
    legend = [_swatch(c, r) for r, c in detail.reader_colours.items()]
    decided = detail.status == "decided"  # the union is ground truth only once a decision makes it final
    legend.append(_swatch(UNION_COLOUR, "final box (union of the readers' boxes)" if decided else "union"))
    st.markdown("".join(legend), unsafe_allow_html=True)
    span = boxed_range(detail)
    where = ("the slice most readers boxed" if detail.all_slices and detail.all_slices[0].boxes
             else f"the centre of {detail.level} (no reader boxed it)")
    extent = ""
    if span is not None:
        lo, hi = (view.geometry.source_to_display((k, 0, 0))[0] + 1 for k in span)
        extent = f" · boxes at {detail.level} on Axial {min(lo, hi)}–{max(lo, hi)}"
    st.caption(f"Opened at **{slice_caption(view, 'axial', index)}**, {where}{extent}. ↑/↓ step, "
               "R shows the whole slice, ? the keys.")
    try:
        workstation(f"{view.info.series_uid}:{view.fingerprint}:{view.mask_id}",
                    lambda: ViewerSource(view.image, view.mask), key="adjudicate_viewer",
                    layout="single", plane="axial", slice=index,
                    boxes=dispute_boxes(detail), focus=dispute_region(detail), large_labels=True,
                    editable=False, height=560, max_browser_bytes=browser_limit(),
                    **viewer_options(view.image))
    except VolumeTooLargeError as exc:
        st.info(f"{exc}. The slices are rendered on the server instead.")
        return False
    return True


def _slices(detail: views.DisputeDetail) -> None:
    from db.studies import open_image

    if detail.series_id is not None and _workstation(detail):
        return
    if detail.series_id is None:
        st.warning("This study has no image series; re-import it to see its slices.")
        return
    if not detail.slices:
        st.info(f"No reader drew a box at {detail.level} and its position is unknown: open the "
                "study in the viewer to look at it.")
        return
    ws = workspace()
    with ws.sessions() as session:
        series = session.get(m.Series, detail.series_id)
        if series is None:
            st.warning("The study's series was removed; reload the page.")
            return
        volume = open_image(ws, series)
    legend = [_swatch(c, r) for r, c in detail.reader_colours.items()]
    decided = detail.status == "decided"  # the union is ground truth only once a decision makes it final
    legend.append(_swatch(UNION_COLOUR, "final box (union of the readers' boxes)" if decided else "union"))
    st.markdown("".join(legend), unsafe_allow_html=True)
    columns = st.columns(min(3, len(detail.slices)))
    for n, view in enumerate(detail.slices):
        where = "level centre" if view.why == "centroid" else f"{len(view.boxes)} box(es)"
        columns[n % len(columns)].image(render_slice_view(volume, view),
                                        caption=f"slice {view.instance_number} · {where}",
                                        width="stretch")
    if detail.other_slices:
        st.caption(f"{detail.other_slices} more slice(s) with boxes at {detail.level} are not "
                   "shown; open the study in the viewer for all of them.")


def _sides(detail: views.DisputeDetail) -> None:
    left, right = st.columns(2)
    with left:
        st.markdown("**Readers**")
        calls = detail.details.get("calls", {})
        implicit = set(detail.details.get("implicit", []))
        if calls:
            st.table([{"reader": r, "call": c.replace("_", " "),
                       "marked": "no (counted not fractured)" if r in implicit else "yes"}
                      for r, c in calls.items()])
        if "model_probability" in detail.details:
            st.write(f"Model {detail.details.get('model', '')}: p = "
                     f"{detail.details['model_probability']:.2f} against final label "
                     f"{'fractured' if detail.details.get('final') else 'not fractured'}")
        if detail.details.get("no_longer_disputed"):
            st.warning("The readers and the report no longer disagree on this level; votes were "
                       "already cast, so the committee closes it.")
    with right:
        st.markdown(f"**Report** ({words.report_source_words(detail.report_source)})")
        label = detail.report_labels.get(detail.level)
        st.write(f"{detail.level}: " + ("not labelled" if label is None
                                         else "fractured" if label else "not fractured"))
        st.text(detail.report_text or "(no report text)")
        if detail.model_probabilities:
            st.markdown(f"**Model** {detail.model_name}")
            st.table([{"level": k, "p(fracture)": round(v, 3)}
                      for k, v in detail.model_probabilities.items()])


def _history(detail: views.DisputeDetail) -> None:
    st.markdown(f"**Votes** (round {detail.round}; policy in force: "
                f"**{words.policy_words(detail.policy)}**)")
    if detail.votes:
        st.table([{"round": v.round, "voter": v.voter, "vote": CHOICE_LABELS.get(v.choice, v.choice),
                   "rationale": v.rationale, "at": f"{v.at:%Y-%m-%d %H:%M} UTC"}
                  for v in detail.votes])
    else:
        st.caption("No votes yet.")
    if detail.tally is not None:
        st.caption(f"Tally now: {detail.tally.reason}")
    for d in detail.decisions:
        state = "superseded" if d.superseded else "in force"
        st.markdown(f"**Decision** round {d.round}: **{d.verdict}** ({state}) — "
                    f"{words.in_words(words.DECISION_SOURCES, d.source)}, policy "
                    f"**{words.policy_words(d.policy)}**, by {d.decided_by} on "
                    f"{d.decided_at:%Y-%m-%d %H:%M} UTC. {d.reason}")
    for r in detail.details.get("reopened", []):
        st.caption(f"Reopened by {r.get('by')} for round {r.get('round')}: {r.get('reason')}")
    if detail.final_label is not None:
        fractured, source = detail.final_label
        st.caption(f"Final label of {detail.level}: {'fractured' if fractured else 'not fractured'}"
                   f" ({words.final_source_words(source)})")


def _actions(user: SignedInUser, detail: views.DisputeDetail) -> None:
    ws = workspace()
    settings = ws.settings
    _show_flash("actions")  # the outcome of a vote, decision or override, where it was taken
    if detail.status == "open" and grades.is_grade_dispute(detail):
        grades.vote_form(user, detail, _flash)
    elif detail.status == "open" and labelling.is_labelling_dispute(detail):
        labelling.decide_form(user, detail, _flash)
    elif detail.status == "open":
        if detail.vote_refusal is None:
            with st.form("vote"):
                choice = st.radio("Your vote", list(CHOICE_LABELS), key="vote_choice",
                                  format_func=CHOICE_LABELS.__getitem__, horizontal=True)
                rationale = st.text_area("Rationale (required)", key="vote_rationale")
                if st.form_submit_button("Cast vote", type="primary"):
                    with error_boundary("Your vote"):
                        with unit_of_work(ws.sessions) as session:
                            result = store.cast_vote(session, user, detail.dispute_id, choice,
                                                     rationale, settings=settings)
                        _flash(f"Vote recorded. {result.outcome.reason}",
                               keep_in_view=result.decision_id is not None, where="actions")
        else:
            st.caption(f"You cannot vote: {detail.vote_refusal}")
        if st.button("Decide now", key="decide",
                     help="Apply the policy in force to the votes so far"):
            with error_boundary("Deciding"):
                with unit_of_work(ws.sessions) as session:
                    outcome = store.try_decide(session, user, detail.dispute_id, settings)
                _flash(("Decided: " if outcome.decided else "Not decided yet: ") + outcome.reason,
                       "success" if outcome.decided else "info", keep_in_view=outcome.decided,
                       where="actions")
        if detail.policy == "report" and can(user.role, Permission.override_report):
            with st.form("override"):
                st.markdown("**Override the report** (report policy)")
                fractured = st.radio("Label", ["fractured", "not fractured"], horizontal=True,
                                     key="override_label")
                reason = st.text_area("Reason (required)", key="override_reason")
                if st.form_submit_button("Override"):
                    with error_boundary("Override"):
                        with unit_of_work(ws.sessions) as session:
                            store.override(session, user, detail.dispute_id,
                                           fractured == "fractured", reason, settings=settings)
                        _flash("The report was overridden; the final label is updated.",
                               keep_in_view=True, where="actions")
    else:
        with st.form("reopen"):
            reason = st.text_area("Reason to reopen (required)", key="reopen_reason")
            if st.form_submit_button("Reopen for a new round"):
                with error_boundary("Reopening"):
                    with unit_of_work(ws.sessions) as session:
                        store.reopen(session, user, detail.dispute_id, reason, settings=settings)
                    _flash("Reopened: a new voting round has started.", keep_in_view=True)


def _report_editor(user: SignedInUser, detail: views.DisputeDetail) -> None:
    ws = workspace()
    levels = sorted({*CERVICAL, *detail.report_labels}, key=craniocaudal_key)
    names = {True: "fractured", False: "not fractured", None: "not labelled"}
    with st.expander("Edit the report (admin)"), st.form("report_edit"):
        columns = st.columns(7)
        chosen: dict[str, object] = {}
        for n, level in enumerate(levels):
            current = detail.report_labels.get(level)
            chosen[level] = columns[n % 7].selectbox(
                level, [None, True, False], index=[None, True, False].index(current),
                format_func=names.__getitem__, key=f"report_{level}")
        text = st.text_area("Report text", detail.report_text, key="report_text")
        source = st.text_input("Source", "manual entry", key="report_source")
        if st.form_submit_button("Save the report and re-check the study"):
            with error_boundary("Saving the report"):
                with unit_of_work(ws.sessions) as session:
                    result = store.save_report(session, user, detail.study_id, chosen, text, source,
                                               ws.settings)
                _flash(f"Report saved. {len(result.opened)} dispute(s) opened, "
                       f"{len(result.withdrawn)} withdrawn, {result.open_disputes} open on this "
                       "study.")


def _in_words(detail: views.DisputeDetail) -> str:
    """The dispute as one sentence: the readers' calls, the report, the model."""
    if grades.is_grade_dispute(detail):
        return grades.in_words(detail)
    if labelling.is_labelling_dispute(detail):
        return labelling.in_words(detail)
    model = detail.details.get("model_probability")
    final = detail.details.get("final")
    return adj.describe_dispute(
        detail.level, detail.details.get("calls") or {}, detail.report_labels.get(detail.level),
        float(model) if model is not None else None, bool(final) if final is not None else None)


def main() -> None:
    user = require_permission(Permission.read_disputes)
    st.title("Adjudication")
    with st.container():  # always there: a message of its own would move the viewer below,
        _show_flash()     # and Streamlit would mount it anew (its volume loaded again)
    dispute_id = _queue(user)
    if dispute_id is None:
        _show_flash("actions")  # the dispute acted on left the queue's filter
        return
    ws = workspace()
    with ws.sessions() as session:
        detail = views.dispute_detail(session, user, dispute_id, ws.settings)
    film = labelling.is_labelling_dispute(detail)
    st.subheader(f"{'Whole film' if film else detail.level} · "
                 f"{KIND_LABELS.get(detail.kind, detail.kind)} · study {detail.study_uid}")
    st.markdown(f"**{_in_words(detail)}**")
    with error_boundary("Showing the slices"):
        if labelling.on_a_film(detail):  # a film's labelling or grades: the film, every box
            labelling.film_view(user, detail)
        else:
            _slices(detail)
    if grades.is_grade_dispute(detail):
        grades.sides(detail)
        grades.history(detail)
    elif film:
        labelling.sides(detail)
        labelling.history(detail)
    else:
        _sides(detail)
        _history(detail)
    _actions(user, detail)
    if can(user.role, Permission.edit_reports) and not grades.is_grade_dispute(detail) and not film:
        _report_editor(user, detail)


with error_boundary("Adjudication"):
    main()
