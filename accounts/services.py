"""Account writes: registration, login, sessions, profile changes, API keys."""

from __future__ import annotations

import re
import secrets
import uuid
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from accounts.authentication import api_key_digest
from accounts.models import ApiKey, User, UserSession
from whisper_site.errors import ApplicationError

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{3,20}")
USERNAME_MESSAGE = (
    "Invalid username. Must be 3-20 characters and contain only alphanumeric characters, underscores, or hyphens"
)
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 128
USER_AGENT_MAX_LENGTH = 512
TOKEN_NAME_MESSAGE = "Token name must be between 1 and 255 characters"


def username_validate(*, username: str) -> None:
    """3-20 characters of ``A-Z a-z 0-9 _ -``."""
    if not USERNAME_PATTERN.fullmatch(username):
        raise ApplicationError(USERNAME_MESSAGE, 400)


def password_validate(*, password: str) -> None:
    """12-128 characters with an uppercase and a lowercase letter, a digit and a special character."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise ApplicationError(f"Password must be at least {PASSWORD_MIN_LENGTH} characters long", 400)
    if len(password) > PASSWORD_MAX_LENGTH:
        raise ApplicationError(f"Password must be at most {PASSWORD_MAX_LENGTH} characters long", 400)
    rules = (
        (str.isupper, "uppercase letter(s)"),
        (str.islower, "lowercase letter(s)"),
        (str.isdigit, "digit(s)"),
        (lambda c: not c.isalnum() and not c.isspace(), "special character(s)"),
    )
    for predicate, name in rules:
        if not any(predicate(char) for char in password):
            raise ApplicationError(f"Password must contain at least 1 {name}", 400)


def session_create(*, user: User, user_agent: str) -> UserSession:
    """Open a 24-hour session that records the client's User-Agent."""
    return UserSession.objects.create(user=user, user_agent=user_agent[:USER_AGENT_MAX_LENGTH])


@transaction.atomic
def user_register(*, username: str, password: str, user_agent: str) -> tuple[User, UserSession]:
    """Create an account with the starting balance and open its first session."""
    username_validate(username=username)
    password_validate(password=password)
    if User.objects.filter(username__iexact=username).exists():
        raise ApplicationError("Username already exists", 409)
    try:
        # A concurrent registration of the same name is caught by the
        # case-insensitive unique constraint.
        with transaction.atomic():
            user = User.objects.create_user(username=username, password=password)
    except IntegrityError:
        raise ApplicationError("Username already exists", 409) from None
    return user, session_create(user=user, user_agent=user_agent)


def _failure_keys(username: str, client_ip: str) -> list[str]:
    return [f"login-failures:user:{username.lower()[:64]}", f"login-failures:ip:{client_ip[:64]}"]


def _record_failure(keys: list[str]) -> None:
    window = settings.LOGIN_FAILURE_WINDOW_SECONDS
    for key in keys:
        if not cache.add(key, 1, timeout=window):
            try:
                cache.incr(key)
            except ValueError:
                cache.set(key, 1, timeout=window)


def user_login(*, username: str, password: str, user_agent: str, client_ip: str) -> tuple[User, UserSession]:
    """Check credentials and open a session; repeated failures are throttled (429)."""
    keys = _failure_keys(username, client_ip)
    if any((cache.get(key) or 0) >= settings.LOGIN_MAX_FAILURES for key in keys):
        raise ApplicationError("Too many failed login attempts. Try again later", 429)
    user = User.objects.filter(username__iexact=username).first()
    if user is None or not user.is_active or len(password) > PASSWORD_MAX_LENGTH:
        # Hash anyway so that a missing user takes as long as a wrong password.
        User().set_password(password[:PASSWORD_MAX_LENGTH])
        _record_failure(keys)
        raise ApplicationError("Authentication failed", 401)
    if not user.check_password(password):
        _record_failure(keys)
        raise ApplicationError("Authentication failed", 401)
    cache.delete(keys[0])
    User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    return user, session_create(user=user, user_agent=user_agent)


def session_end(*, user: User, current: UserSession, session_id: uuid.UUID | None) -> UserSession:
    """End the current session, or another active session of the same user."""
    if session_id is None or session_id == current.id:
        target = current
    else:
        found = UserSession.objects.filter(id=session_id).first()
        if found is None or not found.is_active():
            raise ApplicationError("Session not found or already ended", 404)
        if found.user_id != user.id:
            raise ApplicationError("Cannot logout from another user's session", 403)
        target = found
    # Conditional UPDATE: a concurrent logout of the same session ends it once.
    ended = UserSession.objects.filter(id=target.id, ended_at__isnull=True).update(ended_at=timezone.now())
    if not ended:
        raise ApplicationError("Session not found or already ended", 404)
    return target


@dataclass
class ProfileChange:
    username: str | None = None
    password: str | None = None
    old_password: str | None = None
    avatar: UploadedFile | None = None
    fields: list[str] = field(default_factory=list)


def user_update(*, user: User, change: ProfileChange, current_session: UserSession | None) -> list[str]:
    """Change username, password and/or avatar; returns the updated field names.

    Everything is validated before anything is written. A password change ends
    the user's other sessions (the one making the change stays open).
    """
    from files.services import avatar_replace, avatar_validate  # files depends on accounts, not the reverse

    updated: list[str] = []
    if change.username is None and change.password is None and change.avatar is None:
        raise ApplicationError("No fields to update. Provide username, password or avatar", 400)
    if change.username is not None:
        username_validate(username=change.username)
        if User.objects.filter(username__iexact=change.username).exclude(pk=user.pk).exists():
            raise ApplicationError("Username already taken", 409)
    if change.password is not None:
        if not change.old_password:
            raise ApplicationError("old_password is required to update password", 400)
        password_validate(password=change.password)
        if not user.check_password(change.old_password):
            raise ApplicationError("Incorrect old password", 401)
    if change.avatar is not None:
        avatar_validate(upload=change.avatar)

    with transaction.atomic():
        if change.username is not None:
            user.username = change.username
            updated.append("username")
        if change.password is not None:
            user.set_password(change.password)
            others = UserSession.objects.filter(user=user, ended_at__isnull=True)
            if current_session is not None:
                others = others.exclude(pk=current_session.pk)
            others.update(ended_at=timezone.now())
            updated.append("password")
        try:
            with transaction.atomic():
                user.save(update_fields=["username", "password"])
        except IntegrityError:
            raise ApplicationError("Username already taken", 409) from None
    if change.avatar is not None:
        avatar_replace(user=user, upload=change.avatar)
        updated.append("avatar")
    return updated


def user_delete(*, user: User, password: str) -> None:
    """Delete the account with its files (and their stored objects), jobs, sessions and keys."""
    from files.services import file_delete_all_for_user

    if not user.check_password(password):
        raise ApplicationError("Incorrect password", 401)
    with transaction.atomic():
        file_delete_all_for_user(user=user)
        user.delete()


def api_key_create(*, user: User, name: str) -> tuple[ApiKey, str]:
    """Issue an API key; the raw key is returned once and only its digest is stored."""
    if not 1 <= len(name) <= 255:
        raise ApplicationError(TOKEN_NAME_MESSAGE, 400)
    with transaction.atomic():
        # Lock the user row so that concurrent requests cannot pass the cap together.
        User.objects.select_for_update().filter(pk=user.pk).first()
        if ApiKey.objects.filter(user=user).count() >= settings.MAX_API_KEYS_PER_USER:
            raise ApplicationError(f"Maximum number of API tokens reached ({settings.MAX_API_KEYS_PER_USER})", 400)
        raw = secrets.token_hex(16)
        api_key = ApiKey.objects.create(
            user=user, name=name, key_digest=api_key_digest(raw), prefix=raw[:4], suffix=raw[-4:]
        )
    return api_key, raw


def api_key_revoke(*, user: User, key_id: uuid.UUID) -> ApiKey:
    """Revoke (delete) one of the user's API keys."""
    api_key = ApiKey.objects.filter(id=key_id, user=user).first()
    if api_key is None:
        raise ApplicationError("Token not found or access denied", 404)
    api_key.delete()
    return api_key


# --- The token balance ---------------------------------------------------------------
# Every change of a balance goes through these functions: each is one conditional
# UPDATE computed in the database (F()), so concurrent changes never lose one another.


class InsufficientBalance(Exception):
    """The balance does not cover a charge; nothing was taken."""

    def __init__(self, *, required: int, available: int) -> None:
        super().__init__(f"Insufficient token balance. Required: {required}, Available: {available}")
        self.required = required
        self.available = available


def balance_charge(*, user_id: uuid.UUID, amount: int) -> None:
    """Take ``amount`` tokens from the user's balance, or raise :class:`InsufficientBalance`.

    Race: two jobs of one user charged at once by different workers. The UPDATE only
    succeeds while the balance covers the amount, and the database serialises the two
    UPDATEs of the user's row, so the second sees the first one's result: the balance
    can never go below zero (the CHECK constraint is the backstop).
    """
    if amount <= 0:
        return
    charged = User.objects.filter(pk=user_id, token_balance__gte=amount).update(
        token_balance=F("token_balance") - amount
    )
    if not charged:
        available = User.objects.values_list("token_balance", flat=True).filter(pk=user_id).first() or 0
        raise InsufficientBalance(required=amount, available=available)


def balance_refund(*, user_id: uuid.UUID, amount: int) -> None:
    """Give back ``amount`` tokens taken by :func:`balance_charge`."""
    if amount > 0:
        User.objects.filter(pk=user_id).update(token_balance=F("token_balance") + amount)
