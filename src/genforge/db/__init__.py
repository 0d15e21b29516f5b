from genforge.db.database import Database
from genforge.db.tables import BatchRow, ContentRow, ModelRow, PersonaRow, PostRow

__all__ = ["Database", "BatchRow", "ContentRow", "ModelRow", "PersonaRow", "PostRow"]
