from fastapi import FastAPI

from fastapi_migrate import MigrationTree, migrate_on_startup

trees = [
    MigrationTree(name="auth", script_location="auth:migrations", version_table="auth_version"),
    MigrationTree(
        name="billing", script_location="billing:migrations", version_table="billing_version"
    ),
    MigrationTree(name="app", script_location="migrations", version_table="alembic_version"),
]
app = FastAPI(lifespan=migrate_on_startup(trees=trees))
