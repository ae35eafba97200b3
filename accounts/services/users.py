"""Users: registration, login, profile changes, deletion."""

from __future__ import annotations

import re

from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import User, UserSession
from accounts.services.sessions import session_create
from accounts.services.throttles import (
    LOGIN_BLOCKED_MESSAGE,
    PASSWORD_BLOCKED_MESSAGE,
    password_attempt_begin,
    registration_reserve,
)
from whisper_site.errors import ApplicationError

USERNAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{3,20}")
USERNAME_MESSAGE = (
    "Invalid username. Must be 3-20 characters and contain only alphanumeric characters, underscores, or hyphens"
)
PASSWORD_MIN_LENGTH = 12
PASSWORD_MAX_LENGTH = 128


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


def user_register(
    *, username: str, password: str, user_agent: str, client_address: str | None = None
) -> tuple[User, UserSession]:
    """Create an account with the starting balance and open its first session.

    A registration from ``client_address`` (the API's) counts against
    ``REGISTRATIONS_PER_ADDRESS_PER_HOUR`` and is refused (429) past it; ``None``
    (tests, operators' tools) is not counted.
    """
    username_validate(username=username)
    password_validate(password=password)
    reservation = registration_reserve(address=client_address) if client_address is not None else None
    try:
        return _user_create(username=username, password=password, user_agent=user_agent)
    except BaseException:
        # Only registrations that created an account count.
        if reservation is not None:
            reservation.release()
        raise


@transaction.atomic
def _user_create(*, username: str, password: str, user_agent: str) -> tuple[User, UserSession]:
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


def user_login(*, username: str, password: str, user_agent: str, client_address: str) -> tuple[User, UserSession]:
    """Check credentials and open a session.

    Failures are counted per (account, ``client_address``) and per address by the
    password guard (:mod:`accounts.services.throttles`); past either limit the
    answer is 429, even for the right password, until its window ends.
    """
    user = User.objects.filter(username__iexact=username).first()
    attempt = password_attempt_begin(
        user=user, username=username, address=client_address, blocked_message=LOGIN_BLOCKED_MESSAGE
    )
    if user is None or not user.is_active or len(password) > PASSWORD_MAX_LENGTH:
        # Hash anyway so that a missing user takes as long as a wrong password.
        User().set_password(password[:PASSWORD_MAX_LENGTH])
        raise ApplicationError("Authentication failed", 401)
    if not user.check_password(password):
        raise ApplicationError("Authentication failed", 401)
    attempt.succeeded()
    User.objects.filter(pk=user.pk).update(last_login=timezone.now())
    return user, session_create(user=user, user_agent=user_agent)


def password_confirm(*, user: User, password: str, client_address: str, wrong_message: str) -> None:
    """Check the password a signed-in user confirms a change with; wrong is 401 ``wrong_message``.

    Counted by the same guard as logins, so a stolen session cannot guess the
    password either: past the limit the answer is 429 even for the right one.
    """
    attempt = password_attempt_begin(
        user=user, username=user.username, address=client_address, blocked_message=PASSWORD_BLOCKED_MESSAGE
    )
    if not user.check_password(password):
        raise ApplicationError(wrong_message, 401)
    attempt.succeeded()


def user_update(
    *,
    user: User,
    username: str | None = None,
    password: str | None = None,
    old_password: str | None = None,
    avatar: UploadedFile | None = None,
    current_session: UserSession | None = None,
    client_address: str,
) -> list[str]:
    """Change username, password and/or avatar; returns the updated field names.

    ``None`` leaves a field as it is. Everything is validated before anything
    is written. A password change needs ``old_password`` and ends the user's
    other sessions (``current_session``, the one making the change, stays open).
    ``old_password`` is checked by :func:`password_confirm` from ``client_address``.
    """
    from files.services import avatar_replace, avatar_validate  # files depends on accounts, not the reverse

    updated: list[str] = []
    if username is None and password is None and avatar is None:
        raise ApplicationError("No fields to update. Provide username, password or avatar", 400)
    if username is not None:
        username_validate(username=username)
        if User.objects.filter(username__iexact=username).exclude(pk=user.pk).exists():
            raise ApplicationError("Username already taken", 409)
    if password is not None:
        if not old_password:
            raise ApplicationError("old_password is required to update password", 400)
        password_validate(password=password)
        password_confirm(
            user=user, password=old_password, client_address=client_address, wrong_message="Incorrect old password"
        )
    if avatar is not None:
        avatar_validate(upload=avatar)

    with transaction.atomic():
        if username is not None:
            user.username = username
            updated.append("username")
        if password is not None:
            user.set_password(password)
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
    if avatar is not None:
        avatar_replace(user=user, upload=avatar)
        updated.append("avatar")
    return updated


def user_delete(*, user: User, password: str, client_address: str) -> None:
    """Delete the account with its files (and their stored objects), jobs, sessions and keys.

    ``password`` is checked by :func:`password_confirm` from ``client_address``.
    """
    from files.services import file_delete_all_for_user

    password_confirm(user=user, password=password, client_address=client_address, wrong_message="Incorrect password")
    with transaction.atomic():
        file_delete_all_for_user(user=user)
        user.delete()


def user_get_by_username(*, username: str) -> User:
    """The user of that name, matched case-insensitively as at login."""
    user = User.objects.filter(username__iexact=username).first()
    if user is None:
        raise ApplicationError(f"User not found: {username}", 404)
    return user
