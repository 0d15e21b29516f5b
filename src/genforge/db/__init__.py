from genforge.db.database import Database
from genforge.db.tables import ContentRow, ModelRow

__all__ = ["Database", "ContentRow", "ModelRow"]
