from fastapi import FastAPI

from fastapi_migrate import migrate_on_startup
from settings import settings

# The URL is handed over once, where the app is made: the migration and the app agree.
app = FastAPI(lifespan=migrate_on_startup(database_url=settings.SQLALCHEMY_DATABASE_URI))
