from __future__ import annotations

from django.urls import re_path

from accounts import apis

urlpatterns = [
    re_path(r"^health/?$", apis.HealthView.as_view(), name="health"),
    re_path(r"^user/register/?$", apis.RegisterView.as_view(), name="user-register"),
    re_path(r"^user/login/?$", apis.LoginView.as_view(), name="user-login"),
    re_path(r"^user/logout/?$", apis.UserViewSet.as_view({"post": "logout"}), name="user-logout"),
    re_path(
        r"^user/me/?$",
        apis.UserViewSet.as_view({"get": "me", "patch": "update_me", "delete": "delete_me"}),
        name="user-me",
    ),
    re_path(r"^user/sessions/?$", apis.UserViewSet.as_view({"get": "sessions"}), name="user-sessions"),
    re_path(r"^user/token/?$", apis.ApiTokenViewSet.as_view({"get": "list", "post": "create"}), name="user-token"),
    re_path(
        r"^user/token/(?P<token_id>[^/]+)/?$",
        apis.ApiTokenViewSet.as_view({"delete": "destroy"}),
        name="user-token-detail",
    ),
]
