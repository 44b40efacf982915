"""User accounts: scrypt password hashes, sign-in, roles, demo accounts. Every change is audited.

Password hashes are self-describing strings ``scrypt$n=32768,r=8,p=1$<salt>$<key>`` (salt and key
in URL-safe base64), so the cost can be raised later without invalidating old hashes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from db import audit
from db.models import User
from spine_core.errors import InputError, NotFound, PermissionDenied
from spine_core.roles import Role, role_names

#: scrypt cost: about 0.1 s and 32 MiB per hash on a current CPU.
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16
KEY_BYTES = 32
_MAX_N = 2**20  # refuse stored hashes that would take absurd time or memory to check

MIN_PASSWORD_LENGTH = 4
MAX_PASSWORD_LENGTH = 1024
USERNAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")


# --- demo accounts -------------------------------------------------------------------------------
# The embedded demo (SQLite, no identity provider) signs in with these. Each password equals the
# user name. Change them, or use real accounts, before the app is reachable by anyone else.
DEMO_PASSWORD_ADMIN = "admin"
DEMO_PASSWORD_READER1 = "reader1"
DEMO_PASSWORD_READER2 = "reader2"
DEMO_PASSWORD_READER3 = "reader3"
DEMO_PASSWORD_ADJUDICATOR1 = "adjudicator1"
DEMO_PASSWORD_ADJUDICATOR2 = "adjudicator2"
DEMO_PASSWORD_VIEWER = "viewer"


@dataclass(frozen=True)
class DemoUser:
    username: str
    password: str
    role: Role
    display_name: str
    is_chair: bool = False


DEMO_USERS: tuple[DemoUser, ...] = (
    DemoUser("admin", DEMO_PASSWORD_ADMIN, Role.admin, "Administrator"),
    DemoUser("reader1", DEMO_PASSWORD_READER1, Role.annotator, "Reader 1"),
    DemoUser("reader2", DEMO_PASSWORD_READER2, Role.annotator, "Reader 2"),
    DemoUser("reader3", DEMO_PASSWORD_READER3, Role.annotator, "Reader 3"),
    DemoUser("adjudicator1", DEMO_PASSWORD_ADJUDICATOR1, Role.adjudicator, "Adjudicator 1"),
    DemoUser("adjudicator2", DEMO_PASSWORD_ADJUDICATOR2, Role.adjudicator, "Adjudicator 2 (chair)",
             is_chair=True),
    DemoUser("viewer", DEMO_PASSWORD_VIEWER, Role.viewer, "Viewer"),
)


# --- password hashing ----------------------------------------------------------------------------
def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password`` with its parameters, as one string."""
    _check_password(password)
    salt = secrets.token_bytes(SALT_BYTES)
    key = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, KEY_BYTES)
    params = f"n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}"
    return f"scrypt${params}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches ``stored`` (a :func:`hash_password` string); constant time.

    A malformed ``stored`` string never matches.
    """
    parsed = _parse_hash(stored)
    if parsed is None:
        return False
    n, r, p, salt, key = parsed
    candidate = _scrypt(password, salt, n, r, p, len(key))
    return hmac.compare_digest(candidate, key)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
        maxmem=256 * r * n * p + 2**20,
    )


def _parse_hash(stored: str) -> tuple[int, int, int, bytes, bytes] | None:
    try:
        scheme, params, salt_text, key_text = stored.split("$")
        if scheme != "scrypt":
            return None
        values = dict(item.split("=", 1) for item in params.split(","))
        n, r, p = int(values["n"]), int(values["r"]), int(values["p"])
        salt, key = _unb64(salt_text), _unb64(key_text)
    except (ValueError, KeyError):
        return None
    if not (1 < n <= _MAX_N and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
        return None
    if len(salt) < 8 or not 16 <= len(key) <= 64:
        return None
    return n, r, p, salt, key


def _dummy_hash() -> str:
    """Checked when there is no real hash to check, so the attempt costs one scrypt all the same.

    Its key is all zeros: no password can be found that matches it.
    """
    params = f"n={SCRYPT_N},r={SCRYPT_R},p={SCRYPT_P}"
    return f"scrypt${params}${_b64(bytes(SALT_BYTES))}${_b64(bytes(KEY_BYTES))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _check_password(password: str) -> None:
    if not isinstance(password, str) or not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InputError(
            f"a password must be {MIN_PASSWORD_LENGTH}–{MAX_PASSWORD_LENGTH} characters long"
        )


# --- accounts ------------------------------------------------------------------------------------
def normalize_username(username: str) -> str:
    """User names are case-insensitive: stored and looked up in lower case, without spaces around.

    Raises:
        InputError: when the name has characters other than letters, digits and ``. _ @ -``.
    """
    name = username.strip().lower() if isinstance(username, str) else ""
    if not USERNAME_PATTERN.match(name):
        raise InputError(
            f"user name {username!r} is not allowed: use 1–64 letters, digits, '.', '_', '@' or "
            "'-', starting with a letter or digit"
        )
    return name


def _check_role(role: Role | str) -> str:
    value = role.value if isinstance(role, Role) else str(role)
    if value not in role_names():
        raise InputError(f"unknown role {role!r}; choose one of {', '.join(role_names())}")
    return value


def get_user(session: Session, username: str) -> User | None:
    """The user with this name (case-insensitive), or None."""
    try:
        name = normalize_username(username)
    except InputError:
        return None
    return session.scalars(select(User).where(User.username == name)).one_or_none()


#: Accounts the system owns (the dataset's reference boxes): never signed in, never given a role,
#: a password or an active state.
SYSTEM_ACCOUNTS: frozenset[str] = frozenset({"dataset"})


def _require_user(session: Session, username: str) -> User:
    user = get_user(session, username)
    if user is None:
        raise NotFound(f"no user named {username!r}; see the list of users")
    return user


def _require_person(session: Session, username: str) -> User:
    """The user to change, refusing the system's own accounts."""
    user = _require_user(session, username)
    if user.username in SYSTEM_ACCOUNTS:
        raise PermissionDenied(f"{user.username!r} is a system account (it owns the dataset's "
                               "reference boxes): it cannot sign in, so it has no role, password "
                               "or active state to change")
    return user


def create_user(
    session: Session,
    username: str,
    password: str,
    role: Role | str,
    *,
    actor: str,
    display_name: str = "",
    is_chair: bool = False,
) -> User:
    """Add an account; the change is audited as ``user.create`` by ``actor``.

    Raises:
        InputError: bad user name, password or role, or the name is taken.
    """
    name = normalize_username(username)
    role_value = _check_role(role)
    if get_user(session, name) is not None:
        raise InputError(f"user {name!r} already exists; choose another name or change its role")
    user = User(
        username=name,
        display_name=display_name or name,
        password_hash=hash_password(password),
        role=role_value,
        is_chair=is_chair,
        active=True,
    )
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.create", "user", user.id, after=audit.snapshot(user))
    return user


def set_role(
    session: Session,
    username: str,
    role: Role | str,
    *,
    actor: str,
    is_chair: bool | None = None,
) -> User:
    """Change a user's role (and chair flag when given); audited as ``user.set_role``.

    Raises:
        NotFound: no such user.  InputError: unknown role.
    """
    role_value = _check_role(role)
    user = _require_person(session, username)
    before = audit.snapshot(user, ["role", "is_chair"])
    user.role = role_value
    if is_chair is not None:
        user.is_chair = is_chair
    session.flush()
    audit.record(session, actor, "user.set_role", "user", user.id, before=before,
                 after=audit.snapshot(user, ["role", "is_chair"]))
    return user


def set_password(session: Session, username: str, password: str, *, actor: str) -> User:
    """Replace a user's password; audited as ``user.set_password`` (the hash is never logged)."""
    user = _require_person(session, username)
    user.password_hash = hash_password(password)
    session.flush()
    audit.record(session, actor, "user.set_password", "user", user.id)
    return user


def set_active(session: Session, username: str, active: bool, *, actor: str) -> User:
    """Enable or disable an account (disabled users cannot sign in); audited."""
    user = _require_person(session, username)
    before = audit.snapshot(user, ["active"])
    user.active = active
    session.flush()
    audit.record(session, actor, "user.set_active", "user", user.id, before=before,
                 after=audit.snapshot(user, ["active"]))
    return user


def list_users(session: Session, *, include_inactive: bool = True) -> list[User]:
    """All users, by user name."""
    query = select(User).order_by(User.username)
    if not include_inactive:
        query = query.where(User.active.is_(True))
    return list(session.scalars(query))


def authenticate(session: Session, username: str, password: str) -> User | None:
    """The active user with this name and password, or None.

    Every attempt runs one scrypt check with the same cost, whether the user exists, is disabled,
    has no password (single sign-on only) or typed a wrong password, so neither the answer nor
    the time it takes tells whether a user name exists.
    """
    user = get_user(session, username) if isinstance(username, str) else None
    stored = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    ok = verify_password(password if isinstance(password, str) else "", stored)
    if user is None or not user.password_hash or not user.active or not ok:
        return None
    if user.username in SYSTEM_ACCOUNTS:
        return None
    return user


def ensure_demo_users(session: Session, *, actor: str = "system") -> list[str]:
    """Create the demo accounts of :data:`DEMO_USERS` that do not exist yet; returns their names.

    Existing accounts (even with a changed password or role) are left untouched.
    """
    created: list[str] = []
    for demo in DEMO_USERS:
        if get_user(session, demo.username) is None:
            create_user(session, demo.username, demo.password, demo.role, actor=actor,
                        display_name=demo.display_name, is_chair=demo.is_chair)
            created.append(demo.username)
    return created


# --- authorisation -------------------------------------------------------------------------------
def require_role(user: User | None, *roles: Role | str) -> User:
    """Return ``user`` when it is active and has one of ``roles``.

    Raises:
        PermissionDenied: nobody signed in, the account is disabled, or the role does not allow it.
    """
    if not roles:
        raise ValueError("require_role needs at least one role")
    allowed = [_check_role(r) for r in roles]
    if user is None:
        raise PermissionDenied("sign in first")
    if not user.active:
        raise PermissionDenied(f"the account {user.username!r} is disabled; ask an admin")
    if user.role not in allowed:
        raise PermissionDenied(
            f"this needs the role {' or '.join(allowed)}; {user.username!r} is {user.role}"
        )
    return user


def has_role(user: User | None, *roles: Role | str) -> bool:
    """Whether :func:`require_role` would let ``user`` through."""
    try:
        require_role(user, *roles)
    except PermissionDenied:
        return False
    return True


# --- the signed-in account, re-read on every run ------------------------------------------------
def active_user(session: Session, user_id: int) -> User | None:
    """The account with this id when it still exists and is active, else None (one primary-key
    read: the app calls it on every run to notice deactivation and role changes)."""
    user = session.get(User, int(user_id))
    return user if user is not None and user.active else None


# --- OpenID Connect identities -------------------------------------------------------------------
_NOT_IN_USERNAME = re.compile(r"[^a-z0-9._@-]+")
_OIDC_SUBJECT_MAX = 256


def oidc_username(email: str, subject: str) -> str:
    """The local user name an identity maps onto when no account is linked to it yet.

    The e-mail address in lower case, with characters a user name cannot hold replaced by ``-``
    and cut to 64 characters (``Alice.Smith+ct@Hospital.org`` -> ``alice.smith-ct@hospital.org``);
    without a usable address (text without ``@``, such as ``admin``, is none), ``oidc-`` and 16
    hex digits of the subject's SHA-256, so a provider's claim never names a local account such
    as ``admin``.
    """
    text = email.strip().lower() if isinstance(email, str) else ""
    local, at, domain = text.rpartition("@")
    if at and local and domain:  # only an address can name an account ("admin" never does)
        name = _NOT_IN_USERNAME.sub("-", text).lstrip("._@-")[:64]
        if "@" in name and USERNAME_PATTERN.match(name):
            return name
    return "oidc-" + hashlib.sha256(subject.encode("utf-8")).hexdigest()[:16]


def user_for_oidc(
    session: Session,
    *,
    subject: str,
    email: str,
    display_name: str = "",
    email_verified: bool | None = None,
) -> User:
    """The local account of an identity signed in through OpenID Connect.

    1. The account already linked to ``subject`` (the provider's stable ``sub`` claim), whatever
       its name: role, chair and active flag are the ones admins set locally.
    2. Else the account an admin created in advance under :func:`oidc_username` of ``email``
       (e.g. ``alice@hospital.org``): it is linked to ``subject`` (audited ``user.link_oidc``)
       and keeps its role.
    3. Else a new active ``viewer`` account without password (hospital sign-in only), audited
       ``user.create``; an admin raises its role on the Administration page.

    ``email_verified=False`` (the provider says the address is not confirmed) skips step 2 and
    names a new account after the subject, so nobody takes over an account by typing someone
    else's address at the provider.

    Raises:
        InputError: no subject.
        PermissionDenied: the account is deactivated, or the account named after ``email`` is
            already linked to another identity (an admin must sort it out).
    """
    sub = subject.strip() if isinstance(subject, str) else ""
    if not sub or len(sub) > _OIDC_SUBJECT_MAX:
        raise InputError(
            "the identity provider sent no usable subject ('sub' claim, 1–256 characters); "
            "check the provider's OpenID Connect settings"
        )
    user = _user_by_subject(session, sub)
    if user is None:
        trusted_email = email if email_verified is not False else ""
        name = oidc_username(trusted_email, sub)
        user = get_user(session, name)
        if user is None:
            user = _create_oidc_user(session, name, sub, display_name or trusted_email or name)
        elif user.oidc_subject is not None:
            raise PermissionDenied(
                f"the account {name!r} is linked to another hospital identity; ask an "
                "administrator to check the account"
            )
        else:
            before = audit.snapshot(user, ["oidc_subject"])
            user.oidc_subject = sub
            session.flush()
            audit.record(session, name, "user.link_oidc", "user", user.id, before=before,
                         after=audit.snapshot(user, ["oidc_subject"]))
    if not user.active:
        raise PermissionDenied(
            f"the account {user.username!r} is deactivated; ask an administrator to reactivate it"
        )
    return user


def unlink_oidc(session: Session, username: str, *, actor: str) -> User:
    """Forget the hospital identity linked to an account (audited ``user.unlink_oidc``): its next
    hospital sign-in links it again through the e-mail address (:func:`user_for_oidc`), e.g.
    after the hospital moved to another identity provider, whose subjects differ.

    Raises:
        NotFound: no such user.
    """
    user = _require_user(session, username)
    if user.oidc_subject is None:
        return user
    before = audit.snapshot(user, ["oidc_subject"])
    user.oidc_subject = None
    session.flush()
    audit.record(session, actor, "user.unlink_oidc", "user", user.id, before=before,
                 after=audit.snapshot(user, ["oidc_subject"]))
    return user


def _user_by_subject(session: Session, subject: str) -> User | None:
    return session.scalars(select(User).where(User.oidc_subject == subject)).one_or_none()


def _create_oidc_user(session: Session, name: str, subject: str, display_name: str) -> User:
    """A new viewer account for ``subject``; when another session created it a moment earlier
    (a second tab signing in at once), that account is returned instead."""
    user = User(username=name, display_name=display_name[:128], password_hash="",
                role=Role.viewer.value, is_chair=False, active=True, oidc_subject=subject)
    try:
        with session.begin_nested():
            session.add(user)
            session.flush()
    except IntegrityError:
        existing = _user_by_subject(session, subject)
        if existing is None:
            raise PermissionDenied(
                f"the account {name!r} was just created for another identity; ask an "
                "administrator to check the account"
            ) from None
        return existing
    audit.record(session, name, "user.create", "user", user.id, after=audit.snapshot(user))
    return user
