"""Account administration, for admins only: add users, change roles and the committee chair,
deactivate / reactivate, reset passwords, unlink a hospital (OpenID Connect) identity.

Every function first loads the acting user as stored now and refuses unless it is an active admin
(a page's own role check is not trusted alone), checks the request, then hands the change to
:mod:`db.users`, which writes it with its audit entry in the caller's transaction.

Two guards keep the installation manageable: the last active admin can be neither deactivated
nor demoted, and nobody deactivates their own account.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import users
from db.access import check_permission
from db.adjudication_inputs import ActorLike, load_actor
from db.models import User
from spine_core.errors import InputError, NotFound
from spine_core.roles import Permission, Role, can

#: Only adjudicators vote, so only an adjudicator can chair the committee.


@dataclass(frozen=True)
class UserRow:
    """One account as the Administration page lists it (never the password hash)."""

    username: str
    display_name: str
    role: str
    active: bool
    is_chair: bool
    has_password: bool
    hospital_sign_in: bool
    created_at: dt.datetime


def _admin(session: Session, actor: ActorLike) -> User:
    user = load_actor(session, actor)
    check_permission(user, Permission.manage_users)
    return user


def _same_twice(password: str, password_again: str) -> None:
    if password != password_again:
        raise InputError("the two passwords differ; type the same password in both fields")


def _target(session: Session, username: str) -> User:
    user = users.get_user(session, username)
    if user is None:
        raise NotFound(f"no user named {username!r}; pick one from the list of users")
    return user


def _keep_an_admin(session: Session, user: User, what: str) -> None:
    """Refuse when ``user`` is the only active admin. The active admins' rows are locked (``FOR
    UPDATE`` on PostgreSQL; SQLite writers are serialised anyway), so two admins demoting each
    other at once cannot both pass."""
    if user.role != Role.admin.value or not user.active:
        return
    admins = session.scalars(
        select(User.id).where(User.role == Role.admin.value, User.active.is_(True))
        .with_for_update()
    ).all()
    if len(admins) <= 1:
        raise InputError(
            f"{user.username!r} is the only active admin, so you cannot {what}; make another "
            "user admin first"
        )


def user_rows(session: Session, actor: ActorLike) -> list[UserRow]:
    """Every account, by user name, inactive ones included."""
    _admin(session, actor)
    return [
        UserRow(u.username, u.display_name, u.role, bool(u.active), bool(u.is_chair),
                bool(u.password_hash), u.oidc_subject is not None, u.created_at)
        for u in users.list_users(session)
    ]


def add_user(
    session: Session,
    actor: ActorLike,
    username: str,
    password: str,
    password_again: str,
    role: Role | str,
    *,
    display_name: str = "",
    is_chair: bool = False,
) -> User:
    """Create an active account (audited ``user.create``).

    Raises:
        PermissionDenied: the actor is not an active admin.
        InputError: bad or taken user name, passwords that differ or are too short, unknown
            role, or a chair who is not an adjudicator.
    """
    admin = _admin(session, actor)
    _same_twice(password, password_again)
    role_value = role.value if isinstance(role, Role) else str(role)
    if is_chair and not can(role_value, Permission.chair_committee):
        raise InputError("only an adjudicator can chair the committee; choose the adjudicator "
                         "role or leave 'committee chair' unticked")
    try:
        with session.begin_nested():
            return users.create_user(session, username, password, role, actor=admin.username,
                                     display_name=display_name.strip(), is_chair=is_chair)
    except IntegrityError:  # another admin added the same name a moment ago
        raise InputError(
            f"user {username.strip().lower()!r} already exists; choose another name"
        ) from None


def change_role(session: Session, actor: ActorLike, username: str, role: Role | str) -> User:
    """Give a user another role (audited ``user.set_role``). A chair who stops being an
    adjudicator stops chairing (in the same audited change).

    Raises:
        PermissionDenied: the actor is not an active admin.
        NotFound: no such user.  InputError: unknown role, or the last active admin.
    """
    admin = _admin(session, actor)
    user = _target(session, username)
    role_value = role.value if isinstance(role, Role) else str(role)
    if role_value != Role.admin.value:
        _keep_an_admin(session, user, "change their role")
    chair = False if not can(role_value, Permission.chair_committee) and user.is_chair else None
    return users.set_role(session, user.username, role, actor=admin.username, is_chair=chair)


def set_chair(session: Session, actor: ActorLike, username: str, is_chair: bool) -> User:
    """Make an adjudicator committee chair, or not (audited ``user.set_role``).

    Raises:
        PermissionDenied: the actor is not an active admin.
        NotFound: no such user.  InputError: making a non-adjudicator chair.
    """
    admin = _admin(session, actor)
    user = _target(session, username)
    if is_chair and not can(user.role, Permission.chair_committee):
        raise InputError(f"{user.username!r} is {user.role}; only an adjudicator can chair the "
                         "committee (change the role first)")
    return users.set_role(session, user.username, user.role, actor=admin.username,
                          is_chair=bool(is_chair))


def set_account_active(session: Session, actor: ActorLike, username: str, active: bool) -> User:
    """Deactivate (the user can no longer sign in, and is signed out at their next click) or
    reactivate an account (audited ``user.set_active``).

    Raises:
        PermissionDenied: the actor is not an active admin.
        NotFound: no such user.  InputError: your own account, or the last active admin.
    """
    admin = _admin(session, actor)
    user = _target(session, username)
    if not active:
        if user.id == admin.id:
            raise InputError("you cannot deactivate your own account; ask another admin")
        _keep_an_admin(session, user, "deactivate them")
    return users.set_active(session, user.username, bool(active), actor=admin.username)


def reset_password(
    session: Session, actor: ActorLike, username: str, password: str, password_again: str
) -> User:
    """Give a user a new password (audited ``user.set_password``, the hash never logged).

    Raises:
        PermissionDenied: the actor is not an active admin.
        NotFound: no such user.  InputError: passwords that differ or are too short.
    """
    admin = _admin(session, actor)
    _same_twice(password, password_again)
    user = _target(session, username)
    return users.set_password(session, user.username, password, actor=admin.username)


def unlink_hospital_identity(session: Session, actor: ActorLike, username: str) -> User:
    """Forget the OpenID Connect identity linked to an account (audited ``user.unlink_oidc``);
    the next hospital sign-in with the account's e-mail address links it again.

    Raises:
        PermissionDenied: the actor is not an active admin.  NotFound: no such user.
    """
    admin = _admin(session, actor)
    user = _target(session, username)
    return users.unlink_oidc(session, user.username, actor=admin.username)
