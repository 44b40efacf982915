"""Who may do what: the four roles and the one permission table that pages, the CLI and ``db`` use.

Annotators read and annotate the studies assigned to them and are blinded to each other's work;
adjudicators vote on disputes and see every reader's work; admins run the installation; viewers
(clinicians) look at studies, models and the demonstration, read-only.
"""

from __future__ import annotations

from enum import Enum

__all__ = ["PERMISSIONS", "Permission", "Role", "can", "role_names", "roles_with"]


class Role(str, Enum):
    """A user's role; the value is what the database stores."""

    annotator = "annotator"
    adjudicator = "adjudicator"
    admin = "admin"
    viewer = "viewer"


class Permission(str, Enum):
    """One thing a role may do; the value completes "only … users may <value>"."""

    open_studies = "open studies"
    annotate = "draw boxes and mark levels"
    predict_study = "predict a study"
    see_all_readers = "see every reader's work"
    read_disputes = "see disputes (they show every reader's work)"
    vote = "vote on disputes"
    override_report = "override the report"
    decide = "decide disputes"
    reopen_disputes = "reopen disputes"
    chair_committee = "chair the committee"
    edit_reports = "enter or edit reports"
    dispute_dashboard = "see the dispute dashboard"
    see_models = "see the models"
    run_predictions = "predict all studies"
    demonstration = "see the demonstration"
    manage_users = "manage user accounts"
    assign_readers = "assign studies to readers"
    read_audit = "read the audit log"
    import_studies = "import studies (from the PACS)"
    curate_demonstration = "build the demonstration's case list"
    set_film_view = "set a radiograph's view"


_P = Permission
#: The one permission table.
PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.annotator: frozenset({_P.open_studies, _P.annotate, _P.predict_study, _P.set_film_view}),
    Role.adjudicator: frozenset({
        _P.open_studies, _P.predict_study, _P.see_all_readers, _P.read_disputes, _P.vote,
        _P.override_report, _P.decide, _P.reopen_disputes, _P.chair_committee,
        _P.dispute_dashboard, _P.see_models, _P.run_predictions, _P.demonstration,
        _P.set_film_view,
    }),
    Role.admin: frozenset({
        _P.open_studies, _P.predict_study, _P.see_all_readers, _P.read_disputes, _P.decide,
        _P.reopen_disputes, _P.edit_reports, _P.dispute_dashboard, _P.see_models,
        _P.run_predictions, _P.demonstration, _P.manage_users, _P.assign_readers, _P.read_audit,
        _P.import_studies, _P.curate_demonstration, _P.set_film_view,
    }),
    Role.viewer: frozenset({_P.open_studies, _P.dispute_dashboard, _P.see_models, _P.demonstration}),
}


def can(role: Role | str, permission: Permission) -> bool:
    """Whether ``role`` (a member or its stored value) has ``permission``; unknown roles have none."""
    try:
        return permission in PERMISSIONS[Role(role)]
    except ValueError:
        return False


def roles_with(permission: Permission) -> tuple[Role, ...]:
    """The roles that have ``permission``, in declaration order."""
    return tuple(role for role in Role if permission in PERMISSIONS[role])


def role_names() -> tuple[str, ...]:
    """Every role's stored value, in declaration order (for pickers and the CLI)."""
    return tuple(role.value for role in Role)
