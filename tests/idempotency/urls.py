"""Test-only views for the idempotency tests (``@pytest.mark.urls("tests.idempotency.urls")``).

Each execution of a view body creates an auth ``Group`` named after the request, so a test
counts executions in the database, across threads and processes alike.
"""

from __future__ import annotations

import json
import time
import uuid
from datetime import timedelta

from django.contrib.auth.models import Group
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.template import engines
from django.template.response import SimpleTemplateResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt

from idempotency import idempotent_view

# Outcomes the "flaky" view produces, in order, then "ok"; tests fill it.
FLAKY_SCRIPT: list[str] = []


def _effect(request, label: str) -> str:
    effect_id = uuid.uuid4().hex
    Group.objects.create(name=f"{label}:{effect_id}")
    return effect_id


def _payload(request) -> dict:
    return json.loads(request.body or b"{}")


@csrf_exempt
@idempotent_view(required=True)
def transfers(request):
    effect_id = _effect(request, "transfer")
    body = {"id": effect_id, "amount": _payload(request).get("amount"), "user": request.user.get_username()}
    response = JsonResponse(body, status=201)
    response["Location"] = f"/transfers/{effect_id}"
    response["X-Effect-Id"] = effect_id
    response.set_cookie("not-replayed", "1")
    return response


@csrf_exempt
@idempotent_view(required=True)
def slow(request):
    time.sleep(float(_payload(request).get("sleep", 0.5)))
    return JsonResponse({"id": _effect(request, "slow")}, status=201)


@csrf_exempt
@idempotent_view
def optional(request):
    return JsonResponse({"id": _effect(request, "optional")}, status=201)


@csrf_exempt
@idempotent_view(allow_anonymous=True)
def anonymous(request):
    return JsonResponse({"id": _effect(request, "anonymous")}, status=201)


@csrf_exempt
@idempotent_view(required=True)
def flaky(request):
    mode = FLAKY_SCRIPT.pop(0) if FLAKY_SCRIPT else "ok"
    effect_id = _effect(request, f"flaky-{mode}")
    if mode == "raise":
        raise RuntimeError("flaky view failed")
    status = {"ok": 201, "500": 500, "503": 503, "429": 429, "404": 404, "400": 400}[mode]
    return JsonResponse({"id": effect_id, "mode": mode}, status=status)


@csrf_exempt
@idempotent_view(required=True)
def big(request):
    size = int(_payload(request).get("size", 10))
    _effect(request, "big")
    return HttpResponse(b"x" * size, content_type="application/octet-stream")


@csrf_exempt
@idempotent_view(required=True)
def stream(request):
    _effect(request, "stream")
    return StreamingHttpResponse(iter([b"a", b"b"]))


@csrf_exempt
@idempotent_view(required=True, ttl=timedelta(minutes=5))
def template(request):
    effect_id = _effect(request, "template")
    page = engines["django"].from_string("<p>effect {{ effect_id }}</p>")
    return SimpleTemplateResponse(page, {"effect_id": effect_id}, status=202)


@csrf_exempt
def plain(request):
    """Not decorated: protected only when APPLY_TO_ALL_VIEWS is on."""
    if request.method == "GET":
        return JsonResponse({"ok": True})
    return JsonResponse({"id": _effect(request, "plain")}, status=201)


@csrf_exempt
def bench(request):
    """No database work of its own: what the query-count tests measure is the idempotency layer."""
    return JsonResponse({"ok": True, "echo": _payload(request)}, status=201)


urlpatterns = [
    path("transfers/", transfers),
    path("slow/", slow),
    path("optional/", optional),
    path("anonymous/", anonymous),
    path("flaky/", flaky),
    path("big/", big),
    path("stream/", stream),
    path("template/", template),
    path("plain/", plain),
    path("bench/", idempotent_view(allow_anonymous=True)(bench)),
]
