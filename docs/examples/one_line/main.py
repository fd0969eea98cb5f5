from fastapi import FastAPI

from fastapi_migrate import migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())
