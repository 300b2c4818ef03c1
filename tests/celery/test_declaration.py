# mypy: disable-error-code="untyped-decorator"
# (celery ships no type information, so every @app.task is an untyped decorator)
"""Options are validated when a task is declared: the error names the task and the option."""

from __future__ import annotations

from typing import Any

import pytest
from celery import Celery, Task

from cachify_celery import CachifyTask, CachifyTaskOptionError, install
from cachify_core import Cachify, init_cachify


def make_app(**kwargs: Any) -> Any:
    app = Celery("decl", set_as_current=False, **kwargs)
    app.conf.task_always_eager = True
    return app


@pytest.fixture
def app() -> Any:
    app = make_app()
    install(app)
    return app


# -- with install(app): errors raise at the decorator ------------------------------------------
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"once_kye": "x"}, "unknown option(s) once_kye"),
        ({"once_key": "order-{nope}"}, "once_key: key template 'order-{nope}'"),
        ({"once_key": "x", "once_mode": "forever"}, "once_mode must be"),
        ({"once_key": "x", "once_ttl": 0}, "once_ttl must be a positive number"),
        ({"once_mode": "running"}, "once_mode given without once_key"),
        ({"pool_key": "p"}, "pool_max_size must be an int >= 1"),
        ({"pool_key": "p", "pool_max_size": 2, "pool_on_full": "wait"}, "pool_on_full must be"),
        ({"pool_key": "p", "pool_max_size": 2, "pool_backoff": (5, 1)}, "pool_backoff first_seconds"),
        ({"pool_key": "p", "pool_max_size": 2, "pool_max_requeues": -1}, "pool_max_requeues"),
        ({"cache_key": "r-{order_id}", "cache_ttl": -5}, "cache_ttl must be a positive number"),
        ({"cachify": "redis://"}, "cachify must be a Cachify instance"),
    ],
)
def test_a_bad_option_raises_at_the_decorator_naming_task_and_option(
    app: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(CachifyTaskOptionError, match=r"'decl\.check_order'") as info:

        @app.task(name="decl.check_order", shared=False, **options)
        def check_order(order_id: int) -> None: ...

    assert message in str(info.value)


def test_a_bare_decorator_is_checked_too(app: Any) -> None:
    @app.task
    def plain(order_id: int) -> int:
        return order_id

    assert isinstance(plain, CachifyTask)
    assert plain.delay(3).get() == 3


def test_bound_tasks_bind_templates_without_self(app: Any) -> None:
    @app.task(bind=True, shared=False, cachify=Cachify(), once_key="order-{order_id}")
    def bound(self: Any, order_id: int) -> int:
        return order_id

    assert bound.delay(5).get() == 5
    with pytest.raises(CachifyTaskOptionError, match="'self'"):

        @app.task(bind=True, shared=False, once_key="order-{self}")
        def uses_self(self: Any, order_id: int) -> None: ...


def test_a_non_cachify_base_with_options_is_refused(app: Any) -> None:
    with pytest.raises(CachifyTaskOptionError, match="need a CachifyTask base"):

        @app.task(base=Task, shared=False, once_key="x")
        def plain(order_id: int) -> None: ...


def test_install_binds_tasks_to_the_given_instance() -> None:
    instance = init_cachify(prefix="mine-", is_global=False)
    app = make_app()
    base = install(app, cachify=instance)

    @app.task(shared=False, cache_key="r-{x}")
    def cached(x: int) -> int:
        return x

    assert issubclass(base, CachifyTask)
    assert base.cachify is instance
    assert cached.cachify is instance


def test_install_after_the_task_class_was_built_is_an_error() -> None:
    app = make_app()
    assert app.Task is not None  # builds the default task class
    with pytest.raises(RuntimeError, match="before declaring"):
        install(app)


# -- with task_cls=CachifyTask: errors raise when Celery builds the task -----------------------
def test_task_cls_checks_when_the_task_is_built() -> None:
    app = make_app(task_cls=CachifyTask)

    @app.task(shared=False, pool_key="p")
    def lazy(x: int) -> None: ...

    with pytest.raises(CachifyTaskOptionError, match="pool_max_size"):
        lazy.delay(1)  # first use builds the task class


def test_class_based_tasks_take_options_from_the_class_and_its_bases() -> None:
    class Limited(CachifyTask):
        abstract = True
        pool_key = "limited"
        pool_max_size = 2

    class Charge(Limited):
        name = "decl.charge"

        def run(self, customer: str) -> str:
            return customer

    policy = Charge._cachify_policies
    assert policy is not None
    assert policy.declared.options.pool_max_size == 2
    with pytest.raises(CachifyTaskOptionError, match="pool_max_size"):

        class Broken(Limited):
            name = "decl.broken"
            pool_max_size = 0

            def run(self, customer: str) -> None: ...


def test_per_call_options_are_checked_before_sending(app: Any) -> None:
    instance = init_cachify(is_global=False)

    @app.task(shared=False, cachify=instance, once_key="k-{x}")
    def keyed(x: int) -> int:
        return x

    with pytest.raises(CachifyTaskOptionError, match="once_mode must be"):
        keyed.apply_async((1,), once_mode="never")
    with pytest.raises(CachifyTaskOptionError, match="JSON values"):
        keyed.apply_async((1,), pool_key="p", pool_max_size=1, pool_on_full=lambda x: x)
    assert keyed.apply_async((1,), once_ttl=5).get() == 1


def test_calling_the_task_directly_runs_the_function_without_options(app: Any) -> None:
    calls: list[int] = []

    @app.task(shared=False, cachify=Cachify(), cache_key="r-{x}")
    def direct(x: int) -> int:
        calls.append(x)
        return x

    assert direct(1) == direct(1) == 1
    assert calls == [1, 1]
