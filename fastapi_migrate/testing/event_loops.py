"""Which event loop runs the plugin's async fixture: the one the test itself runs on.

An asyncio connection belongs to the loop that opened it (asyncpg refuses any other: "attached
to a different loop"). pytest-asyncio and anyio's plugin each run async tests on a loop of their
own, and each claims async fixtures in its own way: pytest-asyncio in strict mode only those
declared with ``@pytest_asyncio.fixture``, in auto mode every one, anyio only those of a test
that takes ``anyio_backend``. With both installed, whichever hook runs first decides. So the
plugin's fixture is a plain generator (neither claims it) that drives the async one on the
loop of whatever will run the test:
pytest-asyncio when it made the test its own (marked ``asyncio``, or any async test in auto
mode: it then runs anyio-marked tests too), else anyio when the test takes ``anyio_backend``
(marked ``@pytest.mark.anyio``). Fixtures of the user's are left to those plugins.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncGenerator, Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import Any

import pytest

from ..foundation.errors import ConfigurationError

AsyncFixture = Callable[..., AsyncGenerator[Any, None]]
Step = Callable[[], Coroutine[Any, Any, Any]]
Steps = Callable[[], AbstractContextManager[Callable[[Step], Any]]]
"""A context in which a function runs an async step on the test's loop."""


def on_the_tests_loop(
    fixture: AsyncFixture, request: pytest.FixtureRequest, **kwargs: Any
) -> Iterator[Any]:
    """What ``fixture(**kwargs)`` yields, set up and torn down on the loop the test runs on."""
    steps = _on_pytest_asyncio(request) or _on_anyio(request)
    if steps is None:
        raise ConfigurationError(
            f"{request.fixturename} is an asyncio fixture, and nothing runs {request.node.name} "
            "on an event loop: make it an async test marked @pytest.mark.anyio (with an "
            "anyio_backend fixture returning 'asyncio') or @pytest.mark.asyncio "
            "(pytest-asyncio; any async test in its auto mode)"
        )
    generator = fixture(**kwargs)

    async def step() -> Any:
        return await generator.__anext__()

    with steps() as run:
        value = run(step)
        try:
            yield value
        finally:
            with suppress(StopAsyncIteration):
                run(step)


def pytest_asyncio_loaded(config: pytest.Config) -> bool:
    """Whether pytest-asyncio runs in this session (by its entry point, or ``-p``)."""
    module = sys.modules.get("pytest_asyncio.plugin")
    return module is not None and config.pluginmanager.is_registered(module)


def _on_anyio(request: pytest.FixtureRequest) -> Steps | None:
    """anyio's test runner, which runs a test that takes ``anyio_backend``."""
    if "anyio_backend" not in request.fixturenames:
        return None
    from anyio.pytest_plugin import extract_backend_and_options, get_runner

    @contextmanager
    def steps() -> Iterator[Callable[[Step], Any]]:
        name, options = extract_backend_and_options(request.getfixturevalue("anyio_backend"))
        with get_runner(name, options) as runner:  # the test's own, held until teardown
            yield lambda step: runner.run_fixture(step, {})

    return steps


def _on_pytest_asyncio(request: pytest.FixtureRequest) -> Steps | None:
    """pytest-asyncio's runner of the loop scope the test runs in; None unless pytest-asyncio
    runs the test (it then runs anyio-marked tests too, in auto mode)."""
    if not pytest_asyncio_loaded(request.config):
        return None
    import pytest_asyncio

    if not pytest_asyncio.is_async_test(request.node):
        return None
    marker = request.node.get_closest_marker("asyncio")
    marked = marker.kwargs if marker is not None else {}
    loop_scope = (
        marked.get("loop_scope")
        or marked.get("scope")
        or request.config.getini("asyncio_default_test_loop_scope")
        or "function"
    )

    @contextmanager
    def steps() -> Iterator[Callable[[Step], Any]]:
        # The asyncio.Runner of that scope, as pytest-asyncio's own fixture hook gets it.
        runner = request.getfixturevalue(f"_{loop_scope}_scoped_runner")
        yield lambda step: runner.run(step())

    return steps
