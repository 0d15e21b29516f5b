from genforge.stores.db.database import Database
from genforge.stores.db.tables import ApiKeyRow, BatchRow, ContentRow, ModelRow, PersonaRow, PostRow, UploadRow

__all__ = ["Database", "ApiKeyRow", "BatchRow", "ContentRow", "ModelRow", "PersonaRow", "PostRow", "UploadRow"]
