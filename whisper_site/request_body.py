"""Reading request bodies that must be objects."""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request

from whisper_site.errors import ApplicationError


def body_object(request: Request) -> dict[str, Any]:
    """The request body as a mapping; a JSON array or scalar is a 400.

    An empty body is an empty object, so that optional bodies stay optional.
    """
    data = request.data
    if hasattr(data, "dict") and hasattr(data, "getlist"):
        # QueryDict from a form body: one value per field.
        return {key: data.get(key) for key in data}
    if isinstance(data, dict):
        return data
    raise ApplicationError("Request body must be a JSON object", 400)
