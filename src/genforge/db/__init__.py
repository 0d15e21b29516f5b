from genforge.db.database import Database
from genforge.db.tables import ApiKeyRow, BatchRow, ContentRow, ModelRow, PersonaRow, PostRow

__all__ = ["Database", "ApiKeyRow", "BatchRow", "ContentRow", "ModelRow", "PersonaRow", "PostRow"]
