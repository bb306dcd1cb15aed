from pathlib import Path

import pytest

from pipeserve import ConfigError
from pipeserve.config import expand_groups, get_bool, get_float, get_int, get_list, load_config, params_for


def test_toml_top_level_keys_are_defaults_overridden_by_nodes(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('instance_num = 2\nmax = "4"\n[a]\nbackend = "Identity"\n[b]\nmax = 8\n')
    config = load_config(path)
    assert list(config.nodes) == ["a", "b"]
    assert config.nodes["a"].params["instance_num"] == 2
    assert get_int(config.nodes["a"].params, "max") == 4
    assert config.nodes["b"].params["max"] == 8


def test_flat_dict_is_one_node_named_main() -> None:
    config = load_config({"backend": "Identity", "max": 4})
    assert list(config.nodes) == ["main"]
    assert config.nodes["main"].params["max"] == 4


def test_node_dict_with_global_table() -> None:
    config = load_config({"global": {"max": 2}, "x": {"backend": "Identity"}, "y": {"max": 3}})
    assert config.nodes["x"].params["max"] == 2 and config.nodes["y"].params["max"] == 3


def test_configuration_is_frozen() -> None:
    config = load_config({"backend": "Identity"})
    with pytest.raises(TypeError):
        config.nodes["main"].params["backend"] = "x"  # type: ignore[index]


@pytest.mark.parametrize("name", ["data", "result", "node_name", "context", "event", "_private"])
def test_reserved_names_cannot_name_nodes(name: str) -> None:
    with pytest.raises(ConfigError, match="reserved"):
        load_config({name: {"backend": "Identity"}})


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[a\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")


def test_coercion_accepts_strings_and_names_node_and_key() -> None:
    params = {"a": "4", "b": " 2.5 ", "c": "yes", "d": "x, y,,z", "e": "four", "f": True}
    assert get_int(params, "a") == 4
    assert get_float(params, "b") == 2.5
    assert get_bool(params, "c") is True
    assert get_list(params, "d") == ["x", "y", "z"]
    with pytest.raises(ConfigError, match=r"node 'n', key 'e': expected an integer, got 'four'"):
        get_int(params, "e", node="n")
    with pytest.raises(ConfigError, match="expected an integer"):
        get_int(params, "f")
    with pytest.raises(ConfigError, match=">= 1"):
        get_int({"m": 0}, "m", minimum=1)
    with pytest.raises(ConfigError, match="required"):
        get_int({}, "m")


def test_ampersand_groups_repeat_the_last_element() -> None:
    groups = expand_groups({"model": "b1&b4&b8", "max": "1&4", "instance_num": 2})
    assert [(g["model"], g["max"], g["instance_num"]) for g in groups] == [
        ("b1", "1", 2),
        ("b4", "4", 2),
        ("b8", "4", 2),
    ]
    with pytest.raises(ConfigError, match="empty bucket-group"):
        expand_groups({"max": "1&&8"})


def test_scoped_keys_reach_only_their_backend() -> None:
    params = {"max": 4, "Resize::max": 1, "Resize::h": 32, "Other::h": 7}
    assert params_for("Resize", params) == {"max": 1, "h": 32}
    assert params_for("Identity", params) == {"max": 4}
