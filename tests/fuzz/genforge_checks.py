"""A schemathesis check for the fuzz test (loaded with SCHEMATHESIS_HOOKS): a 5xx is allowed only as a typed
error the schema documents: 502/503/504/507 carrying one of the codes that say the engine, the model, the
clock or the disk failed. Anything else (a 500, an untyped body) is a crash genforge must fix."""

import schemathesis

TYPED = {
    502: {"engine_failed", "invalid_output"},
    503: {"model_unavailable", "database_unavailable", "shutting_down"},
    504: {"generation_timeout"},
    507: {"storage_failed"},
}


@schemathesis.check
def typed_server_errors(ctx, response, case):
    if response.status_code < 500:
        return None
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        raise AssertionError(f"{response.status_code} without the error shape: {response.text[:200]}") from None
    if code not in TYPED.get(response.status_code, set()):
        raise AssertionError(f"{response.status_code} {code}: a server error that is not a typed engine/model failure")
    return None
