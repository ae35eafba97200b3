"""Who may use the admin API."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.request import Request

ADMIN_REQUIRED = "Access denied. Admin privileges required"


class IsAdmin(permissions.BasePermission):
    """Authenticated users with ``is_admin``; others get 403 (401 without credentials)."""

    message = ADMIN_REQUIRED

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user is not None and user.is_authenticated and user.is_admin)
