"""Review, channels, publications and webhooks (platform/: posts.py, channels.py, publishing.py, webhooks.py)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from genforge.api.deps import CallerDep, RuntimeDep
from genforge.api.errors import COMMON, error_responses
from genforge.platform.channels import ChannelInfo, ChannelRequest
from genforge.platform.posts import Post, ReviewRequest
from genforge.platform.publishing import Publication, PublishRequest
from genforge.platform.webhooks import Delivery, WebhookCreated, WebhookInfo, WebhookRequest

router = APIRouter(tags=["distribution"])


@router.post("/api/v1/posts/{post_id}/review", response_model=Post, responses=error_responses(404, 409, 422, *COMMON))
def review_post(post_id: str, body: ReviewRequest, rt: RuntimeDep, caller: CallerDep) -> Post:
    """Approve or reject a post waiting for review (a `review` or `admin` key); recorded in its `reviews`."""
    return rt.posts.review(post_id, body, caller)


@router.post(
    "/api/v1/posts/{post_id}/publish",
    status_code=202,
    response_model=Publication,
    responses={
        200: {"description": "The same post on the same channel: its publication, unchanged.", "model": Publication},
        **error_responses(404, 409, 422, *COMMON),
    },
)
async def publish_post(post_id: str, body: PublishRequest, rt: RuntimeDep, caller: CallerDep):
    """Publish an approved post to a channel (now, or at `publish_at`); follow GET /api/v1/publications/{id}."""
    pub, started = await run_in_threadpool(rt.publications.publish, post_id, body, caller)
    headers = {"Location": f"/api/v1/publications/{pub.id}"}
    return JSONResponse(pub.model_dump(mode="json"), status_code=202 if started else 200, headers=headers)


@router.get(
    "/api/v1/posts/{post_id}/publications", response_model=list[Publication], responses=error_responses(404, *COMMON)
)
def post_publications(post_id: str, rt: RuntimeDep, caller: CallerDep) -> list[Publication]:
    rt.posts.get(post_id, caller)
    return rt.publications.list(caller, post_id)


@router.get("/api/v1/publications/{pub_id}", response_model=Publication, responses=error_responses(404, *COMMON))
def get_publication(pub_id: str, rt: RuntimeDep, caller: CallerDep) -> Publication:
    return rt.publications.get(pub_id, caller)


@router.post(
    "/api/v1/publications/{pub_id}/recheck", response_model=Publication, responses=error_responses(404, 409, *COMMON)
)
def recheck_publication(pub_id: str, rt: RuntimeDep, caller: CallerDep) -> Publication:
    """Read a published post back now: `removed` or `altered` when the network no longer shows it as made."""
    return rt.publications.recheck_now(pub_id, caller)


@router.post(
    "/api/v1/channels", status_code=201, response_model=ChannelInfo, responses=error_responses(409, 422, *COMMON)
)
def create_channel(body: ChannelRequest, rt: RuntimeDep, caller: CallerDep) -> ChannelInfo:
    """Register a destination; its password is stored encrypted and never returned."""
    return rt.channels.create(body, caller)


@router.get("/api/v1/channels", response_model=list[ChannelInfo], responses=error_responses(*COMMON))
def list_channels(rt: RuntimeDep, caller: CallerDep) -> list[ChannelInfo]:
    return rt.channels.list(caller)


@router.get("/api/v1/channels/{ref}", response_model=ChannelInfo, responses=error_responses(404, *COMMON))
def get_channel(ref: str, rt: RuntimeDep, caller: CallerDep) -> ChannelInfo:
    return rt.channels.get(ref, caller)


@router.delete("/api/v1/channels/{ref}", status_code=204, responses=error_responses(404, *COMMON))
def delete_channel(ref: str, rt: RuntimeDep, caller: CallerDep) -> Response:
    rt.channels.delete(ref, caller)
    return Response(status_code=204)


@router.post(
    "/api/v1/webhooks", status_code=201, response_model=WebhookCreated, responses=error_responses(422, *COMMON)
)
def create_webhook(body: WebhookRequest, rt: RuntimeDep, caller: CallerDep) -> WebhookCreated:
    """Register a URL for signed callbacks (Standard Webhooks); the answer shows its secret this once."""
    return rt.webhooks.create(body, caller)


@router.get("/api/v1/webhooks", response_model=list[WebhookInfo], responses=error_responses(*COMMON))
def list_webhooks(rt: RuntimeDep, caller: CallerDep) -> list[WebhookInfo]:
    return rt.webhooks.list(caller)


@router.get(
    "/api/v1/webhooks/{webhook_id}/deliveries", response_model=list[Delivery], responses=error_responses(404, *COMMON)
)
def webhook_deliveries(webhook_id: str, rt: RuntimeDep, caller: CallerDep) -> list[Delivery]:
    """Each event sent to the webhook, with every attempt."""
    return rt.webhooks.deliveries(webhook_id, caller)


@router.delete("/api/v1/webhooks/{webhook_id}", status_code=204, responses=error_responses(404, *COMMON))
def delete_webhook(webhook_id: str, rt: RuntimeDep, caller: CallerDep) -> Response:
    rt.webhooks.delete(webhook_id, caller)
    return Response(status_code=204)
