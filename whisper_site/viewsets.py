"""ViewSet behaviour shared by the apps."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from rest_framework import permissions
from rest_framework.request import Request


class PublicReadMixin:
    """Reading one resource by its uuid needs no credentials (``GET``/``HEAD`` on the detail route).

    DRF picks the authenticators before it knows the action, so the decision is
    made from the method and the path's ``public_lookup`` argument: such a read
    reads no credentials at all, and even a stale Authorization header cannot
    turn it into a 401. Every other request authenticates as usual.
    """

    public_lookup: str = ""
    public_read: bool = False

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        self.public_read = request.method in ("GET", "HEAD") and self.public_lookup in kwargs
        return super().initialize_request(request, *args, **kwargs)  # type: ignore[misc]

    def get_authenticators(self) -> list[Any]:
        if self.public_read:
            return []
        return super().get_authenticators()  # type: ignore[misc]

    def get_permissions(self) -> list[Any]:
        if self.public_read:
            return [permissions.AllowAny()]
        return super().get_permissions()  # type: ignore[misc]
