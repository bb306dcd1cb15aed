import pytest

from pipeserve import ConfigError
from pipeserve.syntax import BackendTree, parse_backend


def test_plain_name() -> None:
    assert parse_backend("Identity") == BackendTree("Identity")


def test_nesting_filters_and_params_with_positions() -> None:
    tree = parse_backend("S[(swap)A, B(k=v, n=3)[C[D]]]")
    assert tree.name == "S"
    a, b = tree.children
    assert (a.name, a.filter, a.pos) == ("A", "swap", 8)
    assert b.params == (("k", "v"), ("n", "3"))
    assert b.children[0].name == "C" and b.children[0].children[0].name == "D"
    assert str(tree) == "S[(swap)A,B(k=v,n=3)[C[D]]]"
    assert tree.names() == ["S", "A", "B", "C", "D"]


def test_values_may_contain_brackets() -> None:
    tree = parse_backend("Resize(size=[1,2])")
    assert tree.params == (("size", "[1,2]"),)


@pytest.mark.parametrize(
    ("source", "column", "fragment"),
    [
        ("S[A,", 4, "expected a backend name"),
        ("S[A B]", 4, "expected ']'"),
        ("A(k)", 3, "expected '='"),
        ("A]", 1, "unexpected text"),
        ("(swap", 5, "expected ')'"),
        ("", 0, "expected a backend name"),
        ("A(k=)", 4, "expected a value"),
    ],
)
def test_errors_point_at_the_character(source: str, column: int, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_backend(source, node="n1")
    message = str(info.value)
    assert fragment in message
    assert "node 'n1'" in message and "key 'backend'" in message
    assert f"at character {column}" in message
    caret_line = message.splitlines()[-1]
    assert caret_line.index("^") - 4 == column
