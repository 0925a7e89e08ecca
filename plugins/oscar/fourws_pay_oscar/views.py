"""The 4WS callback endpoint, as a Django view.

4WS cannot sign its callbacks; each callback URL carries an unguessable per-operation
token instead, which fourws-pay checks in constant time before changing anything. Forged,
unknown and repeated callbacks therefore change nothing, whatever this view is sent. The
answer carries no detail an attacker could learn from.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from fourws_pay.errors import CallbackRejected, FourWSError
from fourws_pay.logs import get_logger
from fourws_pay_oscar import provider

log = get_logger()


@csrf_exempt
@require_POST
def callback(request: HttpRequest, operation_id: str, token: str) -> JsonResponse:
    try:
        result = provider.get_payments().handle_callback(request.path, request.body)
    except CallbackRejected as exc:
        return JsonResponse({"ok": False}, status=exc.status_code)
    except FourWSError as exc:
        log.error("fourws_pay_oscar.callback_error", error=type(exc).__name__)
        return JsonResponse({"ok": False}, status=500)
    return JsonResponse(
        {"ok": 200 <= result.status_code < 300, "applied": result.applied},
        status=result.status_code,
    )
