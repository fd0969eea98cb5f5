import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from app import app, get_session


@pytest.fixture
def anyio_backend():
    return "asyncio"


@pytest.fixture
async def client(migrated_async_connection):  # tests marked @pytest.mark.anyio
    async def session_on_the_test_connection():
        async with AsyncSession(
            bind=migrated_async_connection,
            join_transaction_mode="create_savepoint",
            expire_on_commit=False,  # else reading item.id after commit: MissingGreenlet
        ) as s:
            yield s

    app.dependency_overrides[get_session] = session_on_the_test_connection
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),  # the app's lifespan, on the test's database
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        yield client
    app.dependency_overrides.clear()
