"""Operators' view of users, sessions and API keys."""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import ApiKey, User, UserSession


@admin.register(User)
class UserAdmin(admin.ModelAdmin):
    list_display = ("username", "is_admin", "is_active", "token_balance", "price_multiplier", "registered_at")
    list_filter = ("is_admin", "is_active")
    search_fields = ("username",)
    ordering = ("-registered_at",)
    readonly_fields = ("id", "registered_at", "last_login", "password")
    fields = (
        "id",
        "username",
        "password",
        "is_admin",
        "is_active",
        "token_balance",
        "price_multiplier",
        "avatar",
        "registered_at",
        "last_login",
    )
    raw_id_fields = ("avatar",)
    show_full_result_count = False


@admin.register(UserSession)
class UserSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "user_agent", "created_at", "ended_at")
    list_filter = ("ended_at",)
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
    readonly_fields = ("id", "user", "user_agent", "created_at")
    actions = ["end_sessions"]
    list_select_related = ("user",)
    show_full_result_count = False

    @admin.action(description="End selected sessions")
    def end_sessions(self, request: HttpRequest, queryset: QuerySet[UserSession]) -> None:
        ended = queryset.filter(ended_at__isnull=True).update(ended_at=timezone.now())
        self.message_user(request, f"Ended {ended} session(s).")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "masked", "user", "created_at", "last_used_at")
    search_fields = ("name", "user__username", "prefix")
    raw_id_fields = ("user",)
    readonly_fields = ("id", "masked", "created_at", "last_used_at")
    fields = ("id", "user", "name", "masked", "created_at", "last_used_at")
    actions = ["revoke_keys"]
    list_select_related = ("user",)
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A key is only worth anything when its owner sees it once: issue keys through the API.
        return False

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        count, _ = queryset.delete()
        self.message_user(request, f"Revoked {count} API key(s).")
