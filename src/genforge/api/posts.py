"""Posts (a persona's caption, image, narration and video) and variant batches."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from genforge import variants
from genforge.api.deps import ServiceDep
from genforge.api.errors import COMMON, GENERATION, error_response, error_responses
from genforge.api.streaming import SSE_DOC, event_stream, sse
from genforge.posts import Post, PostRequest, PostService
from genforge.variants import Batch

router = APIRouter(tags=["posts"])


def _posts(request: Request) -> PostService:
    return request.app.state.runtime.posts


@router.post(
    "/api/v1/posts",
    status_code=201,
    response_model=Post,
    responses={
        202: {"description": "mode: async: the running post; follow its Location.", "model": Post},
        **error_responses(*GENERATION),
    },
)
async def create_post(body: PostRequest, request: Request):
    """Make a post; a failed post answers with the failed part's error (the post's id in it)."""
    posts = _posts(request)
    if body.mode == "async":
        post_id = await run_in_threadpool(posts.create_async, body)
        post = await run_in_threadpool(posts.get, post_id)
        headers = {"Location": f"/api/v1/posts/{post_id}"}
        return JSONResponse(post.model_dump(mode="json"), status_code=202, headers=headers)
    post = await run_in_threadpool(posts.create, body)
    if post.status != "succeeded":
        return error_response(posts.error_of(post), request.url.path)
    return post


@router.get("/api/v1/posts/{post_id}", response_model=Post, responses=error_responses(404, *COMMON))
def get_post(post_id: str, request: Request) -> Post:
    return _posts(request).get(post_id)


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
async def post_events(post_id: str, request: Request):
    posts = _posts(request)
    await run_in_threadpool(posts.get, post_id)  # 404 when unknown
    job = posts.events(post_id)

    async def frames():
        if job is not None:
            with job.events_async() as events:  # a client that leaves takes its listener with it
                while (event := await events.get())["type"] != "final":
                    yield sse(event["type"], json.dumps({k: v for k, v in event.items() if k != "type"}))
        final = await run_in_threadpool(posts.get, post_id)
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
def export_post(post_id: str, request: Request):
    data = _posts(request).export(post_id)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="post-{post_id}.zip"'},
    )


@router.get("/api/v1/batches/{batch_id}", response_model=Batch, responses=error_responses(404, *COMMON))
def get_batch(batch_id: str, svc: ServiceDep) -> Batch:
    return variants.get(svc, batch_id)
