from fastapi import FastAPI

from fastapi_migrate import health_router, migrate_on_startup

app = FastAPI(lifespan=migrate_on_startup())
app.include_router(health_router)  # GET /health/migrations
