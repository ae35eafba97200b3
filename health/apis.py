"""``GET /health/ready``: whether the service can take work now, check by check."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from health import selectors


class ReadinessOutputSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok", "unavailable"])
    checks = serializers.DictField(
        child=serializers.CharField(),
        help_text="Each check by name (`database`, `broker`, `queue:<name>`): `ok`, or why not in plain words.",
    )


READY_EXAMPLE = {
    "status": "ok",
    "checks": {
        "database": "ok",
        "broker": "ok",
        "queue:celery": "ok",
        "queue:conversion": "ok",
        "queue:webhooks": "ok",
    },
}
UNAVAILABLE_EXAMPLE = {
    "status": "unavailable",
    "checks": {
        "database": "ok",
        "broker": "ok",
        "queue:celery": "no live consumer: the last heartbeat came 94 s ago from transcription@host",
        "queue:conversion": "ok",
        "queue:webhooks": "ok",
    },
}


class ReadinessApi(APIView):
    """``GET /health/ready``: 200 when the database, the broker and a consumer of every queue answer, else 503.

    The 503 is the same JSON report, not a line of text: a probe or an operator reads
    which check failed. An APIView: one operation on no resource.
    """

    authentication_classes: list[type] = []
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        operation_id="health_ready",
        summary="Check that the service can take work: database, broker and workers",
        description=(
            "No authentication. 200 when the database and the broker answer and every queue the "
            "service sends work to (transcriptions, conversions, webhook deliveries and the default "
            "queue) has a worker whose heartbeat is recent; otherwise 503 with the same body, "
            "`status` `unavailable` and the reason beside each failing check. "
            "`GET /health` says only that the server and its database answer."
        ),
        tags=["health"],
        auth=[],
        responses={
            200: OpenApiResponse(
                ReadinessOutputSerializer,
                description="Ready",
                examples=[OpenApiExample("Ready", value=READY_EXAMPLE, status_codes=["200"], response_only=True)],
            ),
            503: OpenApiResponse(
                ReadinessOutputSerializer,
                description="Not ready: the failing checks say why",
                examples=[
                    OpenApiExample("Unavailable", value=UNAVAILABLE_EXAMPLE, status_codes=["503"], response_only=True)
                ],
            ),
        },
    )
    def get(self, request: Request) -> Response:
        readiness = selectors.readiness_get()
        body = ReadinessOutputSerializer(
            {"status": "ok" if readiness.ready else "unavailable", "checks": readiness.checks}
        ).data
        # A probe must see the state of now, never a cached answer.
        return Response(body, status=200 if readiness.ready else 503, headers={"Cache-Control": "no-store"})
