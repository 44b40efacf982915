"""Values a session remembers for the rest of the transaction that read them.

A box save asks several times for the same facts (the reader's assignment, locked; the study's
series); each is read once per transaction and recalled afterwards. A value is kept with the
innermost transaction open when it was read (the root transaction, or a savepoint) and is
forgotten as soon as that transaction ends: after a commit or rollback, or after the savepoint
is released or rolled back (a row lock taken inside a savepoint that is rolled back is released
on PostgreSQL, so such a value must not outlive it). A recalled ORM object must still belong to
the session.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TypeVar

from sqlalchemy.orm import Session, SessionTransaction

from db import models as m

T = TypeVar("T")

_INFO = "spine.unit_memo"


def recall(session: Session, key: Hashable, kind: type[T]) -> T | None:
    """The value kept under ``key`` in this transaction (None: none, or its transaction ended)."""
    memo: dict[Hashable, tuple[SessionTransaction, object]] = session.info.get(_INFO) or {}
    found = memo.get(key)
    if found is None:
        return None
    txn, value = found
    if (not txn.is_active or not isinstance(value, kind)
            or (isinstance(value, m.Base) and value not in session)):
        del memo[key]
        return None
    return value


def keep(session: Session, key: Hashable, value: T) -> T:
    """Remember ``value`` under ``key`` until the current transaction ends; returns ``value``.
    Outside a transaction nothing is kept."""
    txn = session.get_nested_transaction() or session.get_transaction()
    if txn is not None:
        session.info.setdefault(_INFO, {})[key] = (txn, value)
    return value
