"""Posts (a persona's caption, image, narration and video) and variant batches."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from genforge.api.deps import CallerDep, PostsDep, ServiceDep
from genforge.api.errors import COMMON, GENERATION, error_response, error_responses
from genforge.api.streaming import SSE_DOC, event_stream, sse
from genforge.platform import variants
from genforge.platform.posts import Post, PostRequest
from genforge.platform.variants import Batch

router = APIRouter(tags=["posts"])


@router.post(
    "/api/v1/posts",
    status_code=201,
    response_model=Post,
    responses={
        202: {"description": "mode: async: the running post; follow its Location.", "model": Post},
        **error_responses(*GENERATION),
    },
)
async def create_post(body: PostRequest, request: Request, posts: PostsDep, caller: CallerDep):
    """Make a post; a failed post answers with the failed part's error (the post's id in it)."""
    if body.mode == "async":
        post_id = await run_in_threadpool(posts.create_async, body, caller)
        post = await run_in_threadpool(posts.get, post_id, caller)
        headers = {"Location": f"/api/v1/posts/{post_id}"}
        return JSONResponse(post.model_dump(mode="json"), status_code=202, headers=headers)
    post = await run_in_threadpool(posts.create, body, caller)
    if post.status != "succeeded":
        return error_response(posts.error_of(post), request.url.path)
    return post


@router.get("/api/v1/posts/{post_id}", response_model=Post, responses=error_responses(404, *COMMON))
def get_post(post_id: str, posts: PostsDep, caller: CallerDep) -> Post:
    return posts.get(post_id, caller)


@router.get(
    "/api/v1/posts/{post_id}/events",
    response_class=Response,
    responses={
        200: {
            "description": "Each part's events (with a `part` field): `part` (a part's state), `token`, `progress`, "
            "`retry`; then `done` or `failed` with the post.",
            "content": SSE_DOC,
        },
        **error_responses(404, *COMMON),
    },
)
async def post_events(post_id: str, posts: PostsDep, caller: CallerDep):
    await run_in_threadpool(posts.get, post_id, caller)  # 404 when unknown (or another key's)
    job = posts.events(post_id)

    async def frames():
        if job is not None:
            with job.events_async() as events:  # a client that leaves takes its listener with it
                while (event := await events.get())["type"] != "final":
                    yield sse(event["type"], json.dumps({k: v for k, v in event.items() if k != "type"}))
        final = await run_in_threadpool(posts.get, post_id, caller)
        yield sse("done" if final.status == "succeeded" else "failed", final.model_dump_json())

    return event_stream(frames())


@router.get(
    "/api/v1/posts/{post_id}/export",
    response_class=Response,
    responses={
        200: {"description": "A zip of the artifacts and manifest.json.", "content": {"application/zip": {}}},
        **error_responses(404, 409, *COMMON),
    },
)
def export_post(post_id: str, posts: PostsDep, caller: CallerDep) -> Response:
    data = posts.export(post_id, caller)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="post-{post_id}.zip"'},
    )


@router.get("/api/v1/batches/{batch_id}", response_model=Batch, responses=error_responses(404, *COMMON))
def get_batch(batch_id: str, svc: ServiceDep, caller: CallerDep) -> Batch:
    return variants.get(svc, batch_id, caller)
