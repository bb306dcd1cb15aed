"""``pipeserve graph``: Mermaid, DOT, rendering."""

import shutil
from pathlib import Path

import pytest

from pipeserve.cli import main
from pipeserve.diagram import to_dot, to_mermaid

CONFIG = {
    "detect": {"backend": "S[Identity,Identity]", "instance_num": 2, "max": 4, "next": "boxes"},
    "boxes": {"backend": "MapReduce", "jump": "rec", "split": "data", "merge": "result"},
    "rec": {"backend": "Identity", "max": 32, "next": "rec.2"},
    "rec.2": {"filter": "or"},
}


def test_mermaid_shows_backend_instances_batch_range_filters_and_jumps() -> None:
    text = to_mermaid(CONFIG)
    assert text.startswith("flowchart LR")
    assert "<b>detect</b><br/>S[Identity,Identity]<br/>x2, batch 1..4" in text
    assert "MapReduce -> rec<br/>split data, merge result<br/>filter swap" in text
    assert "<b>rec.2</b><br/>Identity<br/>on rec<br/>filter or" in text
    assert "n0 --> n1" in text and "n1 -. map-reduce .-> n2" in text and "n2 --> n3" in text


def test_dot_has_every_node_and_edge() -> None:
    text = to_dot(CONFIG)
    assert text.startswith("digraph pipeserve {") and text.rstrip().endswith("}")
    assert '"detect" -> "boxes";' in text and '"boxes" -> "rec" [style=dashed, label="map-reduce"];' in text
    assert '"rec" -> "rec.2";' in text


def _toml(tmp_path: Path) -> str:
    path = tmp_path / "g.toml"
    path.write_text('[a]\nbackend = "Identity"\nnext = "b"\n[b]\nbackend = "Identity"\n')
    return str(path)


def test_cli_prints_mermaid_and_dot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _toml(tmp_path)
    assert main(["graph", config]) == 0 and "flowchart LR" in capsys.readouterr().out
    assert main(["graph", config, "--format", "dot"]) == 0 and '"a" -> "b";' in capsys.readouterr().out


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz is not installed")
def test_cli_renders_png_and_svg_with_graphviz(tmp_path: Path) -> None:
    config = _toml(tmp_path)
    png, svg = tmp_path / "g.png", tmp_path / "g.svg"
    assert main(["graph", config, "--png", str(png), "--svg", str(svg)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()


def test_cli_explains_a_missing_graphviz(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["graph", _toml(tmp_path), "--png", str(tmp_path / "g.png")]) == 2
    assert "apt-get install graphviz" in capsys.readouterr().err


def test_cli_reports_config_errors_without_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[a]\nnext = "nowhere"\n')
    assert main(["graph", str(path)]) == 2
    assert "ConfigError: node 'a', key 'next': unknown node 'nowhere'" in capsys.readouterr().err
