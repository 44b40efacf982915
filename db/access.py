"""Permission checks on stored accounts, from the one table in :mod:`spine_core.roles`."""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from spine_core.errors import PermissionDenied
from spine_core.roles import Permission, Role, can, roles_with


class HasRole(Protocol):
    @property
    def role(self) -> str: ...


class ReaderScope(str, Enum):
    """Whose readings a user may see: everyone's, their own (blinded annotators) or nobody's."""

    everyone = "everyone"
    own = "own"
    nobody = "nobody"


def check_permission(user: HasRole, permission: Permission) -> None:
    """Raise PermissionDenied (saying who may do it) unless ``user``'s role has ``permission``."""
    if not can(user.role, permission):
        allowed = " or ".join(sorted(r.value for r in roles_with(permission)))
        raise PermissionDenied(
            f"only {allowed} users may {permission.value}; you are signed in as {user.role}"
        )


def reader_scope(user: HasRole) -> ReaderScope:
    """Annotators are blinded to each other: they see only their own boxes and calls."""
    if can(user.role, Permission.see_all_readers):
        return ReaderScope.everyone
    if can(user.role, Permission.annotate):
        return ReaderScope.own
    return ReaderScope.nobody


def is_annotator(user: HasRole) -> bool:
    """Whether ``user`` reads studies as a (blinded) annotator."""
    return user.role == Role.annotator.value
