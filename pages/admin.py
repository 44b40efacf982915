"""Administration (admins): user accounts and study reports.

Thin: the list and every change go through ``db.user_admin`` (accounts) and ``db.reports`` via
``db.disputes`` (reports), which check that the acting user is an active admin, validate the
input and write the audit trail. This page checks the role too, collects the input and shows the
core's messages. A refused action keeps what was typed, so it can be corrected.
"""

from __future__ import annotations

from collections.abc import Iterable

import streamlit as st

from db import disputes, user_admin
from db.report_form import ReportForm, derived_overall, report_form
from db.session import unit_of_work
from pages.parts.common import SignedInUser, error_boundary, require_permission, workspace
from spine_core import words
from spine_core.roles import Permission, Role, role_names

ROLES = role_names()

FLASH = "admin_flash"
LABEL_CHOICES: tuple[bool | None, ...] = (None, True, False)
LABEL_NAMES = {None: "not labelled", True: "fractured", False: "not fractured"}
ADD_KEYS = ("admin_new_username", "admin_new_display", "admin_new_role", "admin_new_chair",
            "admin_new_password", "admin_new_password2")


def _done(message: str, forget: Iterable[str] = ()) -> None:
    """Show ``message`` after a rerun; the widgets named in ``forget`` start afresh."""
    for key in forget:
        st.session_state.pop(key, None)
    st.session_state[FLASH] = message
    st.rerun()


# --- users --------------------------------------------------------------------------------------


def _user_table(user: SignedInUser) -> list[user_admin.UserRow]:
    with workspace().sessions() as session:
        rows = user_admin.user_rows(session, user)
    st.dataframe(
        [{"User name": r.username, "Display name": r.display_name, "Role": words.role_words(r.role),
          "Active": r.active, "Committee chair": r.is_chair, "Password": r.has_password,
          "Hospital sign-in": r.hospital_sign_in,
          "Created (UTC)": r.created_at.strftime("%Y-%m-%d %H:%M")} for r in rows],
        hide_index=True, key="admin_users_table",
    )
    return rows


def _add_user(user: SignedInUser) -> None:
    with st.expander("Add a user"), st.form("admin_add_user"):
        c1, c2 = st.columns(2)
        username = c1.text_input("User name", key="admin_new_username",
                                 help="letters, digits, '.', '_', '@' or '-'; case does not matter")
        display = c2.text_input("Display name", key="admin_new_display")
        c3, c4 = st.columns(2)
        role = c3.selectbox("Role", ROLES, index=ROLES.index(Role.annotator.value),
                            format_func=words.role_words,
                            key="admin_new_role")
        chair = c4.checkbox("Committee chair (adjudicators only)", key="admin_new_chair")
        c5, c6 = st.columns(2)
        password = c5.text_input("Password", type="password", key="admin_new_password")
        again = c6.text_input("Password again", type="password", key="admin_new_password2")
        if st.form_submit_button("Add the user"):
            with error_boundary("Adding the user"):
                with unit_of_work(workspace().sessions) as session:
                    created = user_admin.add_user(session, user, username, password, again, role,
                                                  display_name=display, is_chair=chair)
                    name = created.username
                _done(f"User {name!r} added as {words.role_words(role)}.", ADD_KEYS)


def _role_and_chair(user: SignedInUser, row: user_admin.UserRow) -> None:
    keys = (f"admin_role_{row.username}", f"admin_chair_{row.username}")
    with st.form(f"admin_role_form_{row.username}"):
        c1, c2 = st.columns(2)
        role = c1.selectbox("Role", ROLES, index=ROLES.index(row.role), key=keys[0],
                            format_func=words.role_words)
        chair = c2.checkbox("Committee chair (adjudicators only)", value=row.is_chair, key=keys[1])
        if st.form_submit_button("Save role and chair"):
            with error_boundary("Changing the role"):
                saved = (row.role, row.is_chair)
                with unit_of_work(workspace().sessions) as session:
                    if role != row.role:  # a chair who stops adjudicating stops chairing
                        changed = user_admin.change_role(session, user, row.username, role)
                        saved = (changed.role, bool(changed.is_chair))
                    if chair != row.is_chair:
                        changed = user_admin.set_chair(session, user, row.username, chair)
                        saved = (changed.role, bool(changed.is_chair))
                chair_text = ", committee chair" if saved[1] else ""
                _done(f"{row.username} is now {saved[0]}{chair_text}.", keys)


def _active(user: SignedInUser, row: user_admin.UserRow) -> None:
    label = "Deactivate the account" if row.active else "Reactivate the account"
    if st.button(label, key=f"admin_active_{row.username}",
                 help="A deactivated user cannot sign in and is signed out at their next click"):
        with error_boundary("Changing the account"):
            with unit_of_work(workspace().sessions) as session:
                user_admin.set_account_active(session, user, row.username, not row.active)
            _done(f"{row.username} is {'deactivated' if row.active else 'active again'}.")


def _unlink(user: SignedInUser, row: user_admin.UserRow) -> None:
    if not row.hospital_sign_in:
        return
    if st.button("Unlink the hospital identity", key=f"admin_unlink_{row.username}",
                 help="The next hospital sign-in with this account's e-mail address links it "
                      "again (e.g. after a change of identity provider)"):
        with error_boundary("Unlinking the hospital identity"):
            with unit_of_work(workspace().sessions) as session:
                user_admin.unlink_hospital_identity(session, user, row.username)
            _done(f"{row.username} is no longer linked to a hospital identity.")


def _reset_password(user: SignedInUser, row: user_admin.UserRow) -> None:
    keys = (f"admin_reset_{row.username}", f"admin_reset2_{row.username}")
    with st.form(f"admin_reset_form_{row.username}"):
        c1, c2 = st.columns(2)
        password = c1.text_input("New password", type="password", key=keys[0])
        again = c2.text_input("New password again", type="password", key=keys[1])
        if st.form_submit_button("Reset the password"):
            with error_boundary("Resetting the password"):
                with unit_of_work(workspace().sessions) as session:
                    user_admin.reset_password(session, user, row.username, password, again)
                _done(f"The password of {row.username} was reset.", keys)


def _edit_user(user: SignedInUser, rows: list[user_admin.UserRow]) -> None:
    by_name = {r.username: r for r in rows}
    name = st.selectbox("Change a user", list(by_name), index=None, placeholder="Choose a user",
                        key="admin_user")
    if name is None:
        return
    row = by_name[name]
    st.markdown(f"**{row.display_name}** · {words.role_words(row.role)}"
                f"{' · committee chair' if row.is_chair else ''}"
                f"{'' if row.active else ' · deactivated'}")
    _role_and_chair(user, row)
    _active(user, row)
    _unlink(user, row)
    _reset_password(user, row)


# --- reports ------------------------------------------------------------------------------------


def _report_editor(user: SignedInUser) -> None:
    st.subheader("Study report")
    uid = st.text_input("Study Instance UID", key="admin_report_uid",
                        help="Copy it from the case list").strip()
    if not uid:
        return
    with workspace().sessions() as session:
        form = report_form(session, user, uid)
    _report_fields(user, form)


def _report_fields(user: SignedInUser, form: ReportForm) -> None:
    on_file = (f"report on file, source: {form.source or 'unknown'}" if form.exists
               else "no report yet")
    st.caption(f"{form.dataset} study · {on_file}")
    prefix = f"admin_report_{form.study_id}"
    chosen: dict[str, bool | None] = {}
    columns = st.columns(7)
    for n, level in enumerate(form.levels):
        current = form.labels.get(level)
        chosen[level] = columns[n % 7].selectbox(
            level, LABEL_CHOICES, index=LABEL_CHOICES.index(current),
            format_func=LABEL_NAMES.__getitem__, key=f"{prefix}_{level}")
    overall = derived_overall(chosen)
    st.markdown(f"Patient overall (derived from the levels): **{LABEL_NAMES[overall]}**")
    text = st.text_area("Report text", form.text, key=f"{prefix}_text")
    source = st.text_input("Source", form.source or "manual entry", key=f"{prefix}_source")
    if st.button("Save the report and re-check the study", key=f"{prefix}_save"):
        with error_boundary("Saving the report"):
            ws = workspace()
            with unit_of_work(ws.sessions) as session:
                result = disputes.save_report(session, user, form.study_id, chosen, text, source,
                                              ws.settings)
            _done(f"Report of {form.study_uid} saved. {len(result.opened)} dispute(s) opened, "
                  f"{len(result.withdrawn)} withdrawn, {result.open_disputes} open on this study.")


def _minutes(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds / 60.0, 1)


def _reading_times(user: SignedInUser) -> None:
    """Each reader's active reading time (what a reading study reports), and per study."""
    from db import models as m
    from db.reading_time import reader_summaries, reading_times

    st.subheader("Reading times")
    ws = workspace()
    with ws.sessions() as session:
        me = session.get(m.User, user.id)
        rows = reading_times(session, me) if me is not None else []
    if not rows:
        st.caption("No study is assigned to a reader yet.")
        return
    st.caption("Active time counts while the Annotate page is open and the reader works (at most a "
               "minute between two signs of activity); `spine export readers` writes it to "
               "readers_studies.csv.")
    st.dataframe([{"Reader": s.reader, "Assigned": s.assigned, "Opened": s.opened,
                   "Submitted": s.submitted, "Median active min (submitted)": _minutes(s.median_active_s),
                   "Total active min": _minutes(s.total_active_s)} for s in reader_summaries(rows)],
                 hide_index=True, key="admin_reading_summary")
    with st.expander(f"Per study ({len(rows)} readings)"):
        st.dataframe([{"Study": r.study_uid, "Reader": r.reader,
                       "Status": words.in_words(words.ASSIGNMENT_STATUSES, r.status),
                       "Opened (UTC)": r.opened_at, "Submitted (UTC)": r.submitted_at,
                       "Active min": _minutes(r.active_s)} for r in rows],
                     hide_index=True, key="admin_reading_rows")


def main() -> None:
    user = require_permission(Permission.manage_users)
    st.title("Administration")
    message = st.session_state.pop(FLASH, None)
    if message:
        st.success(message)
    st.subheader("Users")
    rows = _user_table(user)
    _add_user(user)
    _edit_user(user, rows)
    st.divider()
    with error_boundary("The reading times"):
        _reading_times(user)
    st.divider()
    with error_boundary("The report editor"):
        _report_editor(user)


with error_boundary("Administration"):
    main()
