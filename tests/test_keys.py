"""Key templates (``cachify_core.keys.KeyTemplate``) and how the decorators use them.

Full keys are ``f'{template.format(...)}-{postfix}'`` (py-cachify's shape); the instance
prefix is added by the features, not here.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest

from cachify_core import (
    Cachify,
    CachifyKeyError,
    cached,
    init_cachify,
    lock,
    once,
    pooled,
)
from cachify_core.keys import KeyTemplate


def key(template: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
    return KeyTemplate(template, func, "cached").format(args, kwargs)


# -- how fields map to arguments ------------------------------------------------------------
def test_named_fields() -> None:
    def f(a: int, b: int) -> None: ...

    assert key("sum-{a}-{b}", f, 1, 2) == "sum-1-2-cached"
    assert key("sum-{a}-{b}", f, 1, b=2) == "sum-1-2-cached"
    assert key("sum-{a}-{b}", f, b=2, a=1) == "sum-1-2-cached"
    assert key("sum-{b}-{a}", f, 1, 2) == "sum-2-1-cached"


def test_postfix_is_appended() -> None:
    def f(a: int) -> None: ...

    assert KeyTemplate("k-{a}", f, "lock").format((7,), {}) == "k-7-lock"
    assert KeyTemplate("k-{a}", f, "pool").format((7,), {}) == "k-7-pool"


def test_defaults_are_applied() -> None:
    def f(a: int, b: int = 10, *, c: str = "x") -> None: ...

    assert key("{a}-{b}-{c}", f, 1) == "1-10-x-cached"
    assert key("{a}-{b}-{c}", f, 1, 2) == "1-2-x-cached"
    assert key("{a}-{b}-{c}", f, 1, c="y") == "1-10-y-cached"
    # Omitting a default or passing it explicitly is the same call, so the same key.
    assert key("{a}-{b}", f, 1) == key("{a}-{b}", f, 1, 10) == key("{a}-{b}", f, a=1, b=10)


def test_positional_fields_map_to_positional_params_without_var_args() -> None:
    def f(a: int, b: int) -> None: ...

    assert key("sum-{}-{}", f, 1, 2) == "sum-1-2-cached"
    assert key("sum-{}-{}", f, 1, b=2) == "sum-1-2-cached"
    assert key("sum-{}-{}", f, a=1, b=2) == "sum-1-2-cached"
    assert key("sum-{1}-{0}", f, 1, 2) == "sum-2-1-cached"


def test_positional_fields_use_defaults() -> None:
    def f(a: int, b: int = 5) -> None: ...

    assert key("{}-{}", f, 1) == "1-5-cached"


def test_positional_fields_map_to_var_args() -> None:
    def f(*args: int) -> None: ...

    assert key("{}-{}", f, 1, 2) == "1-2-cached"
    assert key("{1}", f, 1, 2) == "2-cached"


def test_positional_fields_skip_named_params_when_var_args_exist() -> None:
    def f(name: str, *args: int) -> None: ...

    # `{}` indexes *args, not `name`.
    assert key("{name}-{}", f, "p", 9) == "p-9-cached"
    assert key("{name}-{}-{}", f, "p", 8, 9) == "p-8-9-cached"


def test_attribute_access() -> None:
    def f(d: datetime.date) -> None: ...

    assert key("day-{d.year}-{d.month}", f, datetime.date(2024, 5, 17)) == "day-2024-5-cached"


def test_index_access() -> None:
    def f(cfg: dict[str, str], items: list[int]) -> None: ...

    assert key("{cfg[region]}-{items[1]}", f, {"region": "eu"}, [3, 4]) == "eu-4-cached"


def test_var_kwargs_values_are_named_fields() -> None:
    def f(a: int, **kwargs: Any) -> None: ...

    assert key("{a}-{user}", f, 1, user="bob") == "1-bob-cached"
    assert key("{a}-{user}", f, a=1, user="bob", other=3) == "1-bob-cached"


def test_keyword_only_params() -> None:
    def f(a: int, *, b: int, c: int = 3) -> None: ...

    assert key("{a}-{b}-{c}", f, 1, b=2) == "1-2-3-cached"
    assert key("{a}-{b}-{c}", f, a=1, b=2, c=4) == "1-2-4-cached"


def test_positional_only_params() -> None:
    def f(a: int, /, b: int) -> None: ...

    assert key("{a}-{b}", f, 1, 2) == "1-2-cached"
    assert key("{}-{}", f, 1, b=2) == "1-2-cached"


def test_methods_with_self() -> None:
    class Repo:
        def __init__(self, name: str) -> None:
            self.name = name

        def load(self, item_id: int) -> None: ...

    assert key("{self.name}-{item_id}", Repo.load, Repo("users"), 5) == "users-5-cached"
    assert key("{item_id}", Repo.load, Repo("users"), item_id=5) == "5-cached"


def test_constant_templates() -> None:
    def f(a: int = 0) -> None: ...

    assert key("flags", f) == "flags-cached"
    assert key("flags", f, 1) == key("flags", f, 2) == "flags-cached"


def test_literal_braces() -> None:
    def f(a: int) -> None: ...

    assert key("{{x}}-{a}", f, 1) == "{x}-1-cached"


def test_keys_differ_by_value_and_not_by_how_they_are_passed() -> None:
    def f(a: int, b: int = 2) -> None: ...

    keys = {key("{a}-{b}", f, *args) for args in [(1,), (1, 2), (1, 3), (2,)]}
    assert keys == {"1-2-cached", "1-3-cached", "2-2-cached"}


# -- decoration-time errors -----------------------------------------------------------------
def load_profile(user_id: int, region: str = "eu") -> None: ...


def test_unknown_field_raises_at_construction_naming_field_and_function() -> None:
    with pytest.raises(CachifyKeyError) as info:
        KeyTemplate("profile-{user}", load_profile, "cached")
    message = str(info.value)
    assert "'user'" in message
    assert "load_profile" in message
    assert isinstance(info.value, ValueError)


def test_several_unknown_fields_are_all_named() -> None:
    with pytest.raises(CachifyKeyError) as info:
        KeyTemplate("{user}-{zone}-{user_id}", load_profile, "cached")
    assert "'user'" in str(info.value)
    assert "'zone'" in str(info.value)


def test_unknown_attribute_root_is_checked_too() -> None:
    with pytest.raises(CachifyKeyError, match="'day'"):
        KeyTemplate("{day.year}", load_profile, "cached")


def test_var_kwargs_allow_any_field_name_at_decoration() -> None:
    def f(**kwargs: Any) -> None: ...

    assert KeyTemplate("{anything}", f, "cached").template == "{anything}"


@pytest.mark.parametrize(
    "decorate",
    [
        pytest.param(lambda k: cached(k), id="cached"),
        pytest.param(lambda k: once(k), id="once"),
        pytest.param(lambda k: lock(k), id="lock"),
        pytest.param(lambda k: pooled(k, max_size=2), id="pooled"),
        pytest.param(lambda k: init_cachify(is_global=False).cached(k), id="instance.cached"),
    ],
)
def test_decorating_with_unknown_field_raises_when_decorating(
    no_global: None, decorate: Callable[[str], Callable[[Any], Any]]
) -> None:
    decorator = decorate("profile-{user}")  # building the decorator is fine ...
    with pytest.raises(CachifyKeyError) as info:
        decorator(load_profile)  # ... applying it to a function that lacks `user` is not
    assert "'user'" in str(info.value)
    assert "load_profile" in str(info.value)


def test_async_function_is_checked_at_decoration_too(no_global: None) -> None:
    async def fetch_profile(user_id: int) -> None: ...

    with pytest.raises(CachifyKeyError, match="fetch_profile"):
        cached("profile-{user}")(fetch_profile)


def test_valid_template_decorates_before_init(no_global: None) -> None:
    # Decorating at import time, before init_cachify, must work (the instance is looked up per call).
    wrapped = cached("profile-{user_id}")(load_profile)
    assert wrapped.__wrapped__ is load_profile  # type: ignore[attr-defined]


@pytest.mark.parametrize("template", ["{}-{}-{}", "{2}", "{0}-{5}"])
def test_too_many_positional_fields(template: str) -> None:
    def f(a: int, b: int) -> None: ...

    with pytest.raises(CachifyKeyError, match="positional"):
        KeyTemplate(template, f, "cached")


def test_positional_fields_on_a_function_without_params() -> None:
    def f() -> None: ...

    with pytest.raises(CachifyKeyError):
        KeyTemplate("{}", f, "cached")


@pytest.mark.parametrize("template", ["{a", "a}", "{a!z}", "{}-{0}", "{a[}"])
def test_malformed_template(template: str) -> None:
    def f(a: int) -> None: ...

    with pytest.raises(CachifyKeyError) as info:
        KeyTemplate(template, f, "cached")
    assert repr(template) in str(info.value)


def test_non_string_template_is_a_type_error() -> None:
    def f(a: int) -> None: ...

    with pytest.raises(TypeError, match="key must be a str"):
        KeyTemplate(42, f, "cached")  # type: ignore[arg-type]


# -- call-time mismatches -------------------------------------------------------------------
class NoYear:
    pass


@pytest.mark.parametrize(
    ("template", "value"),
    [
        pytest.param("{a.year}", NoYear(), id="missing-attribute"),
        pytest.param("{a[region]}", {}, id="missing-mapping-key"),
        pytest.param("{a[3]}", [1], id="index-out-of-range"),
        pytest.param("{a[0]}", 5, id="not-subscriptable"),
        pytest.param("{a:d}", "x", id="format-spec-does-not-fit"),
    ],
)
def test_call_time_mismatch_raises_key_error(template: str, value: object) -> None:
    def f(a: object) -> None: ...

    t = KeyTemplate(template, f, "cached")
    with pytest.raises(CachifyKeyError) as info:
        t.format((value,), {})
    assert repr(template) in str(info.value)


def test_missing_var_args_raise_key_error() -> None:
    def f(*args: int) -> None: ...

    t = KeyTemplate("{}-{}", f, "cached")
    with pytest.raises(CachifyKeyError):
        t.format((1,), {})


def test_missing_var_kwargs_field_raises_key_error() -> None:
    def f(**kwargs: Any) -> None: ...

    t = KeyTemplate("{user}", f, "cached")
    with pytest.raises(CachifyKeyError, match="user"):
        t.format((), {"other": 1})


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((1, 2, 3), {}, id="too-many-positional"),
        pytest.param((), {}, id="missing-required"),
        pytest.param((1,), {"c": 3}, id="unexpected-keyword"),
        pytest.param((1,), {"a": 5}, id="multiple-values-with-default"),
        pytest.param((1, 2), {"a": 5}, id="multiple-values"),
    ],
)
def test_wrong_call_arguments_raise_type_error(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    def f(a: int, b: int = 2) -> None: ...

    for template in ["{a}-{b}", "{}-{}", "{a}"]:
        with pytest.raises(TypeError):
            KeyTemplate(template, f, "cached").format(args, kwargs)
        with pytest.raises(TypeError):  # what the function itself does
            f(*args, **kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        pytest.param((1, 2), {}, id="too-many"),
        pytest.param((), {}, id="missing"),
        pytest.param((1,), {"x": 1}, id="kw"),
    ],
)
def test_constant_template_still_rejects_wrong_call_arguments(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    def f(a: int) -> None: ...

    with pytest.raises(TypeError):
        KeyTemplate("flags", f, "cached").format(args, kwargs)


def test_wrong_call_arguments_on_a_cache_hit_raise_type_error(no_global: None) -> None:
    c: Cachify = init_cachify(is_global=False)
    calls: list[tuple[int, int]] = []

    @c.cached("k-{a}-{b}")
    def f(a: int, b: int = 2) -> int:
        calls.append((a, b))
        return a + b

    assert f(5) == 7
    # f(1, a=5) is a TypeError for the function; a cached entry for a=5 must not mask that.
    with pytest.raises(TypeError):
        f(1, a=5)  # type: ignore[misc]
    with pytest.raises(TypeError):
        f.reset(1, a=5)  # type: ignore[misc]
    assert calls == [(5, 2)]


def test_wrong_call_arguments_on_a_constant_key_hit_raise_type_error(no_global: None) -> None:
    c: Cachify = init_cachify(is_global=False)

    @c.cached("flags")
    def f(a: int) -> int:
        return a

    assert f(1) == 1
    with pytest.raises(TypeError):
        f()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        f(1, 2)  # type: ignore[call-arg]
