from genforge.stores.db.database import Database
from genforge.stores.db.tables import (
    ApiKeyRow,
    BatchRow,
    ChannelRow,
    ContentRow,
    DeliveryRow,
    ModelRow,
    PersonaRow,
    PostRow,
    PublicationRow,
    ReviewRow,
    UploadRow,
    WebhookRow,
)

__all__ = [
    "Database",
    "ApiKeyRow",
    "BatchRow",
    "ChannelRow",
    "ContentRow",
    "DeliveryRow",
    "ModelRow",
    "PersonaRow",
    "PostRow",
    "PublicationRow",
    "ReviewRow",
    "UploadRow",
    "WebhookRow",
]
