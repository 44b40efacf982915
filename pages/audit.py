"""Audit log (admins): every change with who, when, before and after; filter and export CSV.

The query and the CSV live in ``db.audit_search``; this page only collects the filters.
"""

from __future__ import annotations

import datetime as dt
import io

import streamlit as st

from db import audit_search
from pages.parts.common import error_boundary, require_permission, workspace
from spine_core.roles import Permission

ANY = "(any)"
PAGE_SIZE = 200


def _filters(facets: dict[str, list[str]]) -> audit_search.AuditFilter:
    c1, c2, c3 = st.columns(3)
    actor = c1.selectbox("Who", [ANY, *facets["actor"]], key="audit_actor")
    groups = sorted({a.split(".")[0] + "." for a in facets["action"] if "." in a})
    action = c2.selectbox("Action", [ANY, *groups, *facets["action"]], key="audit_action",
                          help="'vote.' keeps every vote action; 'vote.cast' only that one")
    entity = c3.selectbox("Entity", [ANY, *facets["entity"]], key="audit_entity")
    c4, c5 = st.columns(2)
    entity_id = c4.text_input("Record id (exact)", key="audit_entity_id").strip()
    days = c5.date_input("Days (UTC)", value=(), key="audit_days")
    first, last = (tuple(days) + (None, None))[:2] if isinstance(days, (tuple, list)) else (days, days)
    since, until = audit_search.day_range(first, last or first)
    return audit_search.AuditFilter(
        actor=None if actor == ANY else actor, action=None if action == ANY else action,
        entity=None if entity == ANY else entity, entity_id=entity_id or None,
        since=since, until=until,
    )


def main() -> None:
    user = require_permission(Permission.read_audit)
    st.title("Audit log")
    ws = workspace()
    with ws.sessions() as session:
        facets = audit_search.audit_facets(session, user)
    chosen = _filters(facets)
    page = int(st.number_input("Page", min_value=1, value=1, step=1, key="audit_page"))
    with ws.sessions() as session:
        entries, total = audit_search.search_audit(session, user, chosen, limit=PAGE_SIZE,
                                                 offset=(page - 1) * PAGE_SIZE)
        rows = [audit_search.audit_row(e) for e in entries]
    st.caption(f"{total} matching entr{'y' if total == 1 else 'ies'}, newest first; "
               f"page {page} of {max(1, -(-total // PAGE_SIZE))}.")
    if rows:
        st.dataframe(rows, hide_index=True, key="audit_table")
    if total:
        if total > audit_search.MAX_LIMIT:
            st.warning(f"The CSV holds the newest {audit_search.MAX_LIMIT} of {total} entries; "
                       "narrow the filters for the rest.")
        with ws.sessions() as session:
            everything, _ = audit_search.search_audit(session, user, chosen,
                                                    limit=audit_search.MAX_LIMIT)
            buffer = io.StringIO()
            audit_search.write_audit_csv(everything, buffer)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%MZ")
        st.download_button("Export CSV", buffer.getvalue().encode(), f"audit-{stamp}.csv",
                           "text/csv", key="audit_csv")


with error_boundary("The audit log"):
    main()
