"""Demonstration (read-only, for clinicians): a curated list of cases shown one by one.

Each case: its title and note; the study large in the reading workstation at the slice that
matters, the dataset's truth or the model's prediction each with its legend; the model's
probability per level as bars with the threshold marked and in words; where each final label came
from. Presenter keys (listed on the page, :data:`KEYS`): → next case, ← previous case, F presenter
mode (the whole demonstration full screen: no sidebar, large text; Esc leaves it), P truth or
prediction; inside the images the viewer's own keys hold (F there: the images alone full screen).
The list is the one an admin builds (``db.demo_cases``, edited below by admins only); without one,
the studies with predictions, a true positive, a miss and a false alarm first.

Nothing here writes except the admin's list editor; the database refuses any other role's write.
"""

from __future__ import annotations

import streamlit as st

from db import models as m
from db.demo_cases import (
    DemoCaseRow,
    TruthBox,
    demonstration_cases,
    final_label_sources,
    truth_boxes,
)
from db.session import unit_of_work
from pages.parts import demo_view as dv
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from pages.parts.prediction_panel import ShownPrediction, load_prediction, predicted_mask
from pages.parts.viewer_parts import StudyView, load_study
from pages.parts.viewer_workstation import browser_limit, browser_refusal
from spine_core import words
from spine_core.errors import MaskError
from spine_core.roles import Permission, can

CASE_KEY = "demo_case"
SHOW_KEY = "demo_show"
SHOW = {"truth": "Truth (the dataset)", "model": "Prediction (the model)"}
PRESENTER_KEY = "demo_presenter"
#: The presenter keys, as the page lists them (the buttons carry the same shortcuts).
KEYS = (("→", "next case"), ("←", "previous case"),
        ("F", "presenter mode: the whole demonstration full screen, large text"),
        ("Esc", "leave presenter mode"), ("P", "truth or prediction"))
PRESENTER_CSS = """<style>
section[data-testid="stSidebar"], header[data-testid="stHeader"],
[data-testid="stSidebarCollapsedControl"], [data-testid="stToolbar"] {display: none !important;}
.block-container, [data-testid="stMainBlockContainer"] {padding: 1rem 2rem !important;
  max-width: 100% !important;}
.stMarkdown p, .stMarkdown li, [data-testid="stCaptionContainer"]
  {font-size: 1.5rem !important; line-height: 1.35 !important;}
.demo-keys {font-size: 1.05rem !important;}
[data-testid="stMain"]::before {box-shadow: none !important;}
h2 {font-size: 3.2rem !important;}
h3 {font-size: 2.3rem !important;}
.demo-legend {font-size: 1.5rem !important;}
[data-testid="stTable"] td, [data-testid="stTable"] th {font-size: 1.35rem !important;}
.stButton button p, [data-testid="stButtonGroup"] button, [data-testid="stButtonGroup"] button *,
[data-baseweb="select"] div, [data-testid="stWidgetLabel"] p {font-size: 1.3rem !important;}
</style>"""
#: Puts the page itself in the browser's full screen while presenter mode is on (the key press
#: that turned it on lets the browser do it; refused, the page stays presenter-sized in its
#: window) and leaves presenter mode when the browser's full screen ends (Esc, the browser's own
#: control); the button that leaves presenter mode leaves the browser's full screen too.
FULL_SCREEN_JS = """<script>
(() => {
  const on = %s;
  const doc = document, root = doc.documentElement;
  const button = (label) => [...doc.querySelectorAll("button")].find(
    (b) => b.innerText.trim().startsWith(label));
  const enter = () => {
    if (doc.fullscreenElement || !root.requestFullscreen) return;
    root.requestFullscreen().catch(() => undefined);
  };
  // leave presenter mode: click its button, again while a run replaces the page's elements
  const leave = (tries) => {
    const b = button("Leave presenter mode");
    if (b) b.click();
    else if (tries > 0) setTimeout(() => leave(tries - 1), 250);
  };
  if (!window.__demoFullScreen) {
    window.__demoFullScreen = true;
    // within the key press or click itself, where the browser allows full screen for sure
    doc.addEventListener("keydown", (e) => {
      if (e.key !== "f" && e.key !== "F") return;
      if (e.ctrlKey || e.metaKey || e.altKey || e.target.closest("input, textarea")) return;
      if (button("Presenter mode")) { window.__demoLeaving = false; enter(); }
    });
    doc.addEventListener("click", (e) => {
      const b = e.target.closest && e.target.closest("button");
      if (b && b.innerText.trim().startsWith("Presenter mode")) {
        window.__demoLeaving = false;
        enter();
      }
    });
    doc.addEventListener("fullscreenchange", () => {
      if (doc.fullscreenElement === root) { window.__demoPageFull = true; return; }
      if (doc.fullscreenElement === null && window.__demoPageFull) {
        window.__demoPageFull = false;
        window.__demoLeaving = true;
        leave(20);
      }
    });
  }
  if (on && window.__demoLeaving) leave(20);  // the full screen ended before this run
  else if (on) enter();  // within the key press's grace, or refused: presenter-sized anyway
  else {
    window.__demoLeaving = false;
    if (doc.fullscreenElement === root) {
      window.__demoPageFull = false;
      doc.exitFullscreen().catch(() => undefined);
    }
  }
})();
</script>"""


# --- data ---------------------------------------------------------------------------------------


def _cases() -> tuple[list[DemoCaseRow], bool]:
    with unit_of_work(workspace().sessions, readonly=True) as session:
        return demonstration_cases(session, dv.THRESHOLD)


def _labels(study_id: int) -> tuple[dict[str, tuple[bool | None, str]], dict[str, bool], str,
                                     list[TruthBox]]:
    """Final labels with their sources, the report's labels, the report's source, truth boxes."""
    from db.adjudication_inputs import report_labels
    from db.reports import report_of

    with unit_of_work(workspace().sessions, readonly=True) as session:
        report = report_of(session, study_id)
        return (final_label_sources(session, study_id), report_labels(session, study_id),
                report.source if report is not None else "", truth_boxes(session, study_id))


def _card_line(prediction: ShownPrediction | None) -> str:
    """The first line of the model card (its intended use), "" when it has none."""
    if prediction is None:
        return ""
    from db.predictions import latest_prediction

    with unit_of_work(workspace().sessions, readonly=True) as session:
        row = latest_prediction(session, prediction.study_id)
        version = session.get(m.ModelVersion, row.model_version_id) if row is not None else None
        card = dict(version.card or {}) if version is not None else {}
    return str(card.get("intended_use") or "").strip()


# --- presenter bar ------------------------------------------------------------------------------


def presenting() -> bool:
    return bool(st.session_state.get(PRESENTER_KEY))


def _present(on: bool) -> None:
    st.session_state[PRESENTER_KEY] = on


def _step(n: int, count: int) -> None:
    st.session_state[CASE_KEY] = max(0, min(count - 1, int(st.session_state.get(CASE_KEY, 0)) + n))


def _presenter_bar(cases: list[DemoCaseRow]) -> DemoCaseRow:
    count = len(cases)
    if int(st.session_state.get(CASE_KEY, 0)) >= count:
        st.session_state[CASE_KEY] = 0
    bar = st.container(horizontal=True, vertical_alignment="bottom", gap="small")
    index = int(st.session_state.get(CASE_KEY, 0))
    bar.button("Previous case", key="demo_prev", icon=":material/arrow_back:", shortcut="Left",
               on_click=_step, args=(-1, count), disabled=index == 0)
    bar.selectbox("Case", range(count), key=CASE_KEY, label_visibility="collapsed",
                  format_func=lambda i: f"{i + 1} of {count} · {cases[i].title} · "
                                        f"{cases[i].short_name}", width=620)
    bar.button("Next case", key="demo_next", icon=":material/arrow_forward:", shortcut="Right",
               on_click=_step, args=(1, count), disabled=index >= count - 1)
    if presenting():
        bar.button("Leave presenter mode", key="demo_presenter_off", shortcut="Escape",
                   icon=":material/fullscreen_exit:", on_click=_present, args=(False,))
    else:
        bar.button("Presenter mode", key="demo_presenter_on", shortcut="F",
                   icon=":material/fullscreen:", on_click=_present, args=(True,),
                   help="The whole demonstration full screen, large text, no sidebar; Esc "
                        "leaves it")
    st.html("<div class='demo-keys' style='color:#9aa0a6'>Keys: " + " · ".join(
        f"<b>{key}</b> {what}" for key, what in KEYS) + ". Click beside the images first: "
        "inside them the viewer's own keys hold (F there: the images alone full screen).</div>")
    return cases[int(st.session_state.get(CASE_KEY, 0))]


# --- one case -----------------------------------------------------------------------------------


def _switch() -> None:
    st.session_state[SHOW_KEY] = "truth" if st.session_state.get(SHOW_KEY) == "model" else "model"


def _open(study_id: int) -> StudyView | None:
    try:
        return load_study(study_id)
    except MaskError as exc:
        st.warning(f"The dataset's mask cannot be shown ({exc}); showing the images alone.")
        return load_study(study_id, with_mask=False)


def _viewer(view: StudyView, case: DemoCaseRow, truth: list[TruthBox],
            prediction: ShownPrediction | None) -> None:
    from spine_viewer import ViewerSource, VolumeTooLargeError, workstation

    mask, problem = predicted_mask(view, prediction)
    options = ["truth", "model"] if prediction is not None else ["truth"]
    if st.session_state.get(SHOW_KEY) not in (*options, None):
        st.session_state[SHOW_KEY] = "truth"
    row = st.container(horizontal=True, vertical_alignment="bottom", gap="small")
    showing = row.segmented_control("Show", options, default="truth", key=SHOW_KEY,
                                    format_func=SHOW.__getitem__) or "truth"
    if prediction is not None:
        row.button("Truth or prediction", key="demo_switch", shortcut="P", type="tertiary",
                   icon=":material/swap_horiz:", on_click=_switch,
                   help="Shows the prediction in place of the truth, or back")
    if showing == "model" and prediction is not None:
        shown_mask = mask.volume if mask is not None else None
        boxes = dv.model_viewer_boxes(prediction.boxes)
        st.markdown(dv.legend_html("model", has_mask=shown_mask is not None,
                                   n_boxes=len(prediction.boxes)), unsafe_allow_html=True)
        if problem:
            st.warning(f"The predicted mask cannot be shown: {problem}.")
    else:
        shown_mask = view.mask
        boxes = dv.truth_viewer_boxes(truth)
        st.markdown(dv.legend_html("truth", has_mask=view.mask is not None, n_boxes=len(truth)),
                    unsafe_allow_html=True)
    cursor = dv.level_cursor(view, case.level, truth,
                             prediction.boxes if prediction is not None else (),
                             mask.volume if mask is not None else None)
    refusal = browser_refusal(view, shown_mask is not None)
    if refusal is not None:
        st.info(f"{refusal}. Open the study on the Viewer page instead.")
        return
    volume_id = f"{view.info.series_uid}:{view.fingerprint}:{view.mask_id}"
    if showing == "model":  # the predicted mask, or none: never the dataset's under the model
        volume_id = (f"{volume_id}:prediction{mask.prediction_id}" if mask is not None
                     else f"{volume_id}:no-mask")
    try:
        workstation(volume_id, lambda: ViewerSource(view.image, shown_mask), key="demo_viewer",
                    layout="three", cursor=cursor, window="bone", boxes=boxes, editable=False,
                    large_labels=True, height=600 if presenting() else 640,
                    max_browser_bytes=browser_limit(),
                    go_to=int(st.session_state.get(CASE_KEY, 0)))
    except VolumeTooLargeError as exc:
        st.info(f"{exc}. Open the study on the Viewer page instead.")


def _summary(labels: dict[str, tuple[bool | None, str]], report: dict[str, bool], source: str,
             prediction: ShownPrediction | None) -> None:
    fractured = [lvl for lvl, (f, _) in labels.items() if f]
    pending = [lvl for lvl, (_, s) in labels.items() if s == "pending"]
    if fractured:
        truth = f"Truth: fractured at {', '.join(fractured)}"
    elif pending and len(pending) < len(labels):
        truth = "Truth: no fracture so far, " + ", ".join(pending) + " pending"
    elif pending:
        truth = "Truth: not known yet"
    elif labels:
        truth = "Truth: no fracture"
    else:
        truth = "Truth: no label for this study yet"
    st.markdown(f"### {truth}")
    if pending:
        st.markdown(f"**{', '.join(pending)}: pending** — the readers disagree (with each other "
                    "or with the report) and the committee has not decided yet, so there is no "
                    "final label.")
    sources = sorted({s for _, s in labels.values() if s != "pending"})
    if sources:
        st.markdown("Where the final labels came from: "
                    + "; ".join(words.final_source_words(s) for s in sources)
                    + "." + (f" The report is {words.report_source_words(source)}." if "report" in sources
                             else ""))
    if prediction is None:
        st.markdown("### Model: no prediction for this study")
        return
    p = prediction.patient_probability
    if p is None and prediction.level_probabilities:
        p = max(prediction.level_probabilities.values())
    st.markdown(f"### Model: {words.probability_words(p, dv.THRESHOLD)}")
    st.caption(f"{prediction.model}, run {prediction.created_at:%Y-%m-%d %H:%M} UTC. The model "
               f"calls a level fractured from {100 * dv.THRESHOLD:.0f} %.")


def _title(case: DemoCaseRow) -> None:
    st.header(case.title)
    if case.note:
        st.markdown(case.note)
    st.caption(f"Study {case.short_name}" + (f" · the case is about {case.level}"
                                             if case.level else ""))


def show_case(case: DemoCaseRow) -> None:
    prediction = load_prediction(case.study_id)
    card = _card_line(prediction)
    if card:
        st.warning(f"**Model card:** {card}", icon=":material/science:")
    if not presenting():
        _title(case)
    view = _open(case.study_id)
    if view is None:
        if presenting():
            _title(case)
        return
    labels, report, source, truth = _labels(case.study_id)
    left, right = st.columns([3, 2], gap="medium")
    with left:
        _viewer(view, case, truth, prediction)
    with right:
        if presenting():  # beside the images, so that they start high enough to fit the screen
            _title(case)
        _summary(labels, report, source, prediction)
        if prediction is not None and prediction.level_probabilities:
            st.plotly_chart(dv.probability_figure(prediction.level_probabilities, labels,
                                                  font_size=22 if presenting() else 16),
                            key="demo_bars", config={"displayModeBar": False})
        if not presenting():
            _levels(labels, report, prediction)
    if presenting():  # the whole width: every column readable in large text
        _levels(labels, report, prediction)


def _levels(labels: dict[str, tuple[bool | None, str]], report: dict[str, bool],
            prediction: ShownPrediction | None) -> None:
    rows = dv.level_rows(labels, report,
                         prediction.level_probabilities if prediction is not None else {})
    if presenting():
        st.table(rows, hide_index=True)  # HTML: its text grows with the presenter's
    else:
        st.dataframe(rows, hide_index=True, width="stretch", key="demo_levels")
    st.caption("Pending: the committee has not decided the level yet. Not labelled: the "
               "report says nothing about the level.")


# --- the admin's list editor --------------------------------------------------------------------


def _editor(user: SignedInUser, cases: list[DemoCaseRow], curated: bool) -> None:
    from pages.parts.demo_editor import case_list_editor

    with st.expander("Build the case list (administrators)", expanded=not curated):
        case_list_editor(user, cases if curated else [])


def main(user: SignedInUser) -> None:
    if presenting():
        st.html(PRESENTER_CSS)
    if not presenting():  # the case's title is the presenter's headline
        st.title("Demonstration")
    cases, curated = _cases()
    if not cases:
        st.info("No case to show yet: an administrator builds the list below, or a model run "
                "(Models page, or `spine predict`) adds the studies it predicted.")
    else:
        case = _presenter_bar(cases)
        if not curated:
            st.caption("No curated list yet: the studies with predictions are shown, a fracture "
                       "the model found, one it missed and a false alarm first.")
        show_case(case)
    if can(user.role, Permission.curate_demonstration) and not presenting():
        _editor(user, cases, curated)
    st.html(FULL_SCREEN_JS % ("true" if presenting() else "false"), unsafe_allow_javascript=True)


signed_in = require_permission(Permission.demonstration)
with error_boundary("The demonstration"):
    main(signed_in)
