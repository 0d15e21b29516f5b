from genforge.db.database import Database
from genforge.db.tables import ApiKeyRow, ContentRow, ModelRow

__all__ = ["Database", "ApiKeyRow", "ContentRow", "ModelRow"]
