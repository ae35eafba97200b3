"""Users, their login sessions and their API keys."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone

from whisper_site.identifiers import new_uuid7


def default_token_balance() -> int:
    return settings.NEW_USER_TOKEN_BALANCE


class UserManager(BaseUserManager["User"]):
    def get_by_natural_key(self, username: str | None) -> User:
        # Usernames are unique case-insensitively: log in the same way.
        return self.get(username__iexact=username)

    def create_user(self, username: str, password: str | None = None, **extra: Any) -> User:
        user = self.model(username=username, **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, username: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_admin", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(username, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """An account: credentials, token balance and price multiplier."""

    id = models.UUIDField(primary_key=True, default=new_uuid7, editable=False)
    username = models.CharField(max_length=150, unique=True)
    is_admin = models.BooleanField(default=False, help_text="May use the admin API and this admin site.")
    is_active = models.BooleanField(default=True)
    registered_at = models.DateTimeField(default=timezone.now, editable=False)
    token_balance = models.BigIntegerField(default=default_token_balance)
    price_multiplier = models.DecimalField(max_digits=9, decimal_places=4, default=Decimal("1.0"))
    avatar = models.ForeignKey("files.File", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    objects = UserManager()

    USERNAME_FIELD = "username"
    REQUIRED_FIELDS: list[str] = []

    class Meta:
        ordering = ["-registered_at"]
        constraints = [
            models.UniqueConstraint(Lower("username"), name="user_username_ci_unique"),
            models.CheckConstraint(condition=models.Q(token_balance__gte=0), name="user_token_balance_gte_0"),
            models.CheckConstraint(
                condition=models.Q(price_multiplier__gte=0) & models.Q(price_multiplier__lte=1000),
                name="user_price_multiplier_range",
            ),
        ]

    def __str__(self) -> str:
        return self.username

    @property
    def is_staff(self) -> bool:
        # Django's admin site asks for is_staff: API admins are its operators.
        return self.is_admin


class UserSession(models.Model):
    """A login session: ``Authorization: Basic <id>`` for 24 hours after creation."""

    id = models.UUIDField(primary_key=True, default=new_uuid7, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="sessions")
    user_agent = models.CharField(max_length=512, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "session"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.id.hex

    @staticmethod
    def lifetime() -> dt.timedelta:
        return dt.timedelta(hours=settings.SESSION_LIFETIME_HOURS)

    @property
    def expires_at(self) -> dt.datetime:
        return self.created_at + self.lifetime()

    def is_active(self, now: dt.datetime | None = None) -> bool:
        now = now or timezone.now()
        return self.ended_at is None and self.expires_at > now

    @classmethod
    def active_q(cls, now: dt.datetime | None = None) -> models.Q:
        """:meth:`is_active` as a filter: not ended and within the lifetime at ``now``."""
        now = now or timezone.now()
        return models.Q(ended_at__isnull=True, created_at__gt=now - cls.lifetime())


class ApiKey(models.Model):
    """An API key. Only its SHA-256 digest is stored, beside 4+4 characters for listings."""

    id = models.UUIDField(primary_key=True, default=new_uuid7, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=255)
    key_digest = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=4, editable=False)
    suffix = models.CharField(max_length=4, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.masked})"

    @property
    def masked(self) -> str:
        return f"{self.prefix}...{self.suffix}"
