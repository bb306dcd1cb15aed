from typing import Any

import pytest

import pipeserve as ps
from pipeserve.registry import resolve_filter


def test_builtin_names_are_listed() -> None:
    names = ps.list_backends()
    for name in ["Identity", "Sequential", "S", "Sleep", "Add", "Remove", "Copy", "Move", "RuntimeError", "ValueError"]:
        assert name in names
    for name in ["Run", "Skip", "Break", "SerialSkip", "SubGraphSkip", "Error", "swap", "or"]:
        assert name in ps.list_filters()


def test_register_forms_and_duplicates(make_pipe: Any) -> None:
    @ps.register_backend
    class TimesTwoForRegistryTest(ps.Backend):
        def forward(self, items: list[dict[str, Any]]) -> None:
            for item in items:
                item["result"] = item["data"] * 2

    @ps.register_backend("PlusOneForRegistryTest")
    def plus_one(items: list[dict[str, Any]]) -> list[int]:
        return [item["data"] + 1 for item in items]

    assert make_pipe({"backend": "TimesTwoForRegistryTest"})({"data": 4})["result"] == 8
    assert make_pipe({"backend": "PlusOneForRegistryTest"})({"data": 4})["result"] == 5
    with pytest.raises(ps.RegistryError, match="already registered"):
        ps.register_backend(plus_one, "PlusOneForRegistryTest")
    ps.register_backend(lambda items: [0] * len(items), "PlusOneForRegistryTest", replace=True)
    assert make_pipe({"backend": "PlusOneForRegistryTest"})({"data": 4})["result"] == 0


def test_function_backend_must_return_one_result_per_item(make_pipe: Any) -> None:
    ps.register_backend(lambda items: [1], "ShortForRegistryTest", replace=True)
    pipe = make_pipe({"backend": "ShortForRegistryTest", "isolate": False, "max": 2})
    with pytest.raises(ps.ContractError, match="expected 2 results for a batch of 2, got 1"):
        pipe([{"data": 1}, {"data": 2}])


def test_duck_typed_class_uses_its_own_optional_methods(make_pipe: Any) -> None:
    class Duck:
        def init(self, params: Any, options: Any) -> None:
            self.offset = int(params["offset"])

        def forward(self, items: list[dict[str, Any]]) -> None:
            for item in items:
                item["result"] = item["data"] + self.offset

        def max(self) -> int:
            return 3

    ps.register_backend(Duck, "DuckForRegistryTest", replace=True)
    pipe = make_pipe({"backend": "DuckForRegistryTest", "offset": 10})
    assert pipe({"data": 1})["result"] == 11
    assert pipe.max() == 3


def test_unknown_names_fail_at_construction() -> None:
    with pytest.raises(ps.UnknownNameError, match="unknown backend 'Nope'"):
        ps.pipe({"backend": "S[Identity,Nope]"})
    with pytest.raises(ps.ConfigError, match="unknown filter 'nofilter'"):
        ps.pipe({"backend": "S[Identity,(nofilter)Identity]"})


def test_lazy_entry_with_missing_package_names_the_extra() -> None:
    ps.register_lazy_backend(
        "NeedsMissingForRegistryTest", "no_such_package_xyz.mod:Thing", extra="vision", replace=True
    )
    with pytest.raises(ps.MissingDependencyError, match=r"pip install 'pipeserve\[vision\]'"):
        ps.pipe({"backend": "NeedsMissingForRegistryTest"})


def test_filters_register_and_resolve() -> None:
    @ps.register_filter("EvenOnlyForRegistryTest")
    def even_only(item: dict[str, Any]) -> ps.Status:
        return ps.Status.Run if item["data"] % 2 == 0 else ps.Status.Skip

    assert resolve_filter("EvenOnlyForRegistryTest")({"data": 2}) is ps.Status.Run
    with pytest.raises(ps.RegistryError):
        ps.register_filter(even_only, "EvenOnlyForRegistryTest")


def test_invalid_registrations() -> None:
    with pytest.raises(ps.RegistryError, match="not callable"):
        ps.register_backend(42, "FortyTwo")  # type: ignore[call-overload]
    with pytest.raises(ps.RegistryError, match="invalid backend name"):
        ps.register_backend(lambda items: None, "bad name")
    with pytest.raises(ps.RegistryError, match="module:attr"):
        ps.register_lazy_backend("X", "nocolon")
