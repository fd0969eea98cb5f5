import inspect

import pytest

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


async def answer(response):
    return (await response) if inspect.isawaitable(response) else response


@pytest.mark.parametrize("name", ["ada", "grace"])
async def test_each_test_sees_only_its_rows(client, name):
    assert (await answer(client.get("/items"))).json() == []
    added = await answer(client.post(f"/items/{name}"))
    assert added.status_code == 201, added.text
    assert isinstance(added.json()["id"], int)
    assert (await answer(client.get("/items"))).json() == [name]
