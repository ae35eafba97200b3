"""Operators' view of users, sessions and API keys."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import authenticate
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.contrib.auth.forms import AdminPasswordChangeForm, BaseUserCreationForm, UserChangeForm
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from accounts.client_address import client_address
from accounts.models import ApiKey, User, UserSession
from accounts.selectors import user_stats_get
from accounts.services import LOGIN_BLOCKED_MESSAGE, password_attempt_begin, password_validate, username_validate
from whisper_site.admin_changelist import LargeTablePaginator, search_by_id_or_owner
from whisper_site.errors import ApplicationError
from whisper_site.search_text import search_text_clean


class GuardedAdminLoginForm(AdminAuthenticationForm):
    """The admin's login form, behind the password guard of the API's login.

    A failure counts against the (account, address) pair and the address as a
    failed ``POST /user/login`` does, and while either is at its limit the form
    says so and refuses even the right password.
    """

    def clean(self) -> dict[str, Any]:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password:
            return self.cleaned_data
        user = User.objects.filter(username__iexact=username).first()
        try:
            attempt = password_attempt_begin(
                user=user,
                username=username,
                address=client_address(self.request),
                blocked_message=LOGIN_BLOCKED_MESSAGE,
            )
        except ApplicationError as error:
            raise ValidationError(error.message, code="too_many_attempts") from None
        self.user_cache = authenticate(self.request, username=username, password=password)
        if self.user_cache is None:
            raise self.get_invalid_login_error()
        attempt.succeeded()
        self.confirm_login_allowed(self.user_cache)
        return self.cleaned_data


admin.site.login_form = GuardedAdminLoginForm


class PasswordRulesMixin:
    """A new password must pass the API's rules (``password_validate``), with the API's messages.

    Goes first among a Django password form's bases: it runs before Django's own
    ``AUTH_PASSWORD_VALIDATORS``, and not when the operator disables password logins.
    """

    def validate_password_for_user(self, user: User, password_field_name: str = "password2", **kwargs: Any) -> None:
        password = self.cleaned_data.get(password_field_name)
        if password and self.cleaned_data.get("set_usable_password", True):
            try:
                password_validate(password=password)
            except ApplicationError as error:
                self.add_error(password_field_name, error.message)
        super().validate_password_for_user(user, password_field_name=password_field_name, **kwargs)


class UserAddForm(PasswordRulesMixin, BaseUserCreationForm):
    """The "Add user" page: a username and a password typed twice, checked as registration checks them."""

    class Meta(BaseUserCreationForm.Meta):
        model = User

    def clean_username(self) -> str:
        username = self.cleaned_data["username"]
        try:
            username_validate(username=username)
        except ApplicationError as error:
            raise ValidationError(error.message) from None
        if User.objects.filter(username__iexact=username).exists():
            raise ValidationError("Username already exists")
        return username


class UserEditForm(UserChangeForm):
    """The change page: the password as Django's read-only hash summary, with a link to change it."""

    class Meta(UserChangeForm.Meta):
        model = User


class UserPasswordForm(PasswordRulesMixin, AdminPasswordChangeForm):
    """The change-password page (``<id>/password/``); the password is hashed by ``PASSWORD_HASHERS``."""

    def save(self, commit: bool = True) -> User:
        with transaction.atomic():
            user = super().save(commit=commit)
            if commit:
                # As a password change through PATCH /user/me ends the user's other
                # sessions: whoever logged in with the old password is logged out.
                # API keys stay (revoke them on the API keys page).
                UserSession.objects.filter(user=user, ended_at__isnull=True).update(ended_at=timezone.now())
        return user


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    # Django's UserAdmin brings the add form's template, the change-password view
    # and the refusal of lookups on the password hash.
    form = UserEditForm
    add_form = UserAddForm
    change_password_form = UserPasswordForm
    list_display = ("username", "is_admin", "is_active", "token_balance", "price_multiplier", "registered_at")
    list_filter = ("is_admin", "is_active")
    search_fields = ("username",)

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[User], search_term: str) -> Any:
        # The autocomplete of other models' owner field searches here: PostgreSQL refuses NUL.
        return super().get_search_results(request, queryset, search_text_clean(search_term))

    ordering = ("-registered_at",)
    filter_horizontal = ()
    readonly_fields = ("id", "registered_at", "last_login", "statistics")
    fieldsets = (
        (
            None,
            {
                "fields": (
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
                    "statistics",
                )
            },
        ),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("username", "password1", "password2")}),)
    raw_id_fields = ("avatar",)
    show_full_result_count = False

    @admin.display(description="statistics")
    def statistics(self, obj: User) -> str:
        # The figures of GET /admin/users, from the same selector.
        if obj.pk is None or obj._state.adding:
            return "-"
        stats = user_stats_get(user=obj)
        rows = [
            ("Completed transcriptions, last 30 days", stats.transcriptions_count),
            ("Audio seconds transcribed, last 30 days", stats.total_audio_seconds),
            ("Files uploaded, last 30 days", stats.files_uploaded),
            ("Storage used (bytes)", stats.total_storage_bytes),
            ("Active sessions", stats.active_sessions),
            ("API keys", stats.api_keys_count),
        ]
        body = format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows)
        return format_html('<table class="user-statistics">{}</table>', body)

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        self.delete_queryset(request, User.objects.filter(pk=obj.pk))

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        # As DELETE /user/me: the stored media go too, not only the rows.
        from files.services import file_delete_all_for_user

        for user in queryset:
            file_delete_all_for_user(user=user)
            user.delete()


class SessionStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "Active"), ("ended", "Ended"), ("expired", "Expired")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[UserSession]) -> QuerySet[UserSession]:
        now = timezone.now()
        cutoff = now - UserSession.lifetime()
        if self.value() == "active":
            return queryset.filter(UserSession.active_q(now))
        if self.value() == "ended":
            return queryset.filter(ended_at__isnull=False)
        if self.value() == "expired":
            return queryset.filter(ended_at__isnull=True, created_at__lte=cutoff)
        return queryset


@admin.register(UserSession)
class UserSessionAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "user_agent", "created_at", "ended_at")
    list_filter = (SessionStateFilter,)
    search_fields = ("user__username",)
    search_help_text = "A session id, or part of the username."
    ordering = ("-created_at",)
    paginator = LargeTablePaginator
    raw_id_fields = ("user",)
    readonly_fields = ("id", "user", "user_agent", "created_at")
    actions = ["end_sessions"]
    list_select_related = ("user",)
    show_full_result_count = False

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[UserSession], search_term: str
    ) -> tuple[QuerySet[UserSession], bool]:
        # An id or an owner, both indexed, instead of a joined substring scan.
        return search_by_id_or_owner(queryset, search_term, owner_field="user"), False

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
