"""The live status page (``GET /``): its files are served from the package and name nothing on
the internet; in a real headless browser (Debian's chromium, which .ci/run installs), after a fixed
number of requests with the pipe idle, the page shows the counts ``/v2/models/{m}/stats`` gives and
draws every node of the graph. The browser's screenshot is kept as a test artifact
(``$PIPESERVE_ARTIFACTS``, default ``.artifacts/``)."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

np = pytest.importorskip("numpy")
pytest.importorskip("uvicorn")

import pipeserve as ps  # noqa: E402
from pipeserve.server import Server  # noqa: E402
from tests.conftest import wait_until  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STATIC = ROOT / "src" / "pipeserve" / "server" / "static"
MODEL = "status_demo"
REQUESTS = 37  # batch sizes 1, 2, 3 in turn; the 6th, 19th and 32nd fail
FAILING = {5, 18, 31}
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # a namespace name in status.js, never fetched
CHROMIUM = shutil.which("chromium")


@ps.register_backend("StatusPageRows", replace=True)
def rows(items: list[dict[str, Any]]) -> list[Any]:
    """A tensor row as a list of floats (for the map-reduce); fails on a negative value."""
    results = []
    for item in items:
        values = np.asarray(item["data"], dtype=np.float32).ravel()
        if (values < 0).any():
            raise ValueError("negative input")
        results.append([float(v) for v in values])
    return results


@ps.register_backend("StatusPageArray", replace=True)
def array(items: list[dict[str, Any]]) -> list[Any]:
    return [np.asarray(item["data"], dtype=np.float32) for item in items]


CONFIG = """
[main]
backend = "StatusPageRows"
instance_num = 2
max = 8
next = "split"
inputs = [{ name = "INPUT0", datatype = "FP32", shape = [-1] }]
outputs = [{ name = "OUTPUT0", datatype = "FP32", shape = [-1] }]

[split]
backend = "MapReduce"
jump = "each"
split = "data"
merge = "result"
next = "post"

[post]
backend = "StatusPageArray"

[each]
backend = "Identity"
max = 16
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = tmp_path_factory.mktemp("status") / f"{MODEL}.toml"
    config.write_text(CONFIG)
    with Server([str(config)], port=0, grpc_port=None) as running:
        yield running


def request(server: Server, method: str, path: str, body: bytes | None = None) -> tuple[int, str, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        connection.close()


def get_json(server: Server, path: str) -> Any:
    status, _, body = request(server, "GET", path)
    assert status == 200, body
    return json.loads(body)


def test_the_page_names_nothing_on_the_internet() -> None:
    files = {name: (STATIC / name).read_text() for name in ("index.html", "status.js", "status.css")}
    for name, text in files.items():
        urls = set(re.findall(r"\b[a-z][a-z0-9+.-]*://[^\s\"'`)<>]*", text, re.IGNORECASE)) - {SVG_NAMESPACE}
        assert not urls, f"{name} names {urls}"
        assert not re.search(r"""(?:src|href)\s*=\s*["']?//|@import|url\(\s*["']?(?!#)""", text), name
    assert "innerHTML" not in files["status.js"] and "outerHTML" not in files["status.js"]
    assert "status.json" in files["status.js"] and '"/status.json' not in files["status.js"]  # relative


def test_the_page_and_its_files_are_served(server: Server) -> None:
    status, content_type, body = request(server, "GET", "/")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    assert b"static/status.js" in body and b"static/status.css" in body
    for name, kind in (("status.js", "text/javascript"), ("status.css", "text/css")):
        status, content_type, body = request(server, "GET", f"/static/{name}")
        assert status == 200 and content_type.startswith(kind)
        assert body == (STATIC / name).read_bytes()
    for path in (
        "/static/../observe.py",
        "/static/%2e%2e/observe.py",
        "/static/..%2fobserve.py",
        "/static/observe.py",
        "/static/missing.js",
        "/static/sub/status.js",
        "/index.html",
        "/nothing",
    ):
        status, _, _ = request(server, "GET", path)
        assert status == 404, path


@pytest.mark.parametrize("path", ["/static", "/static/"])
def test_the_static_folder_itself_is_404(server: Server, path: str) -> None:
    assert request(server, "GET", path)[0] == 404


class _Page(HTMLParser):
    """The figures a rendered page shows: ``data-counter``/``data-figure`` elements' text and the
    graph drawings' node elements."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False
        self.counters: dict[tuple[str, str], str] = {}
        self.figures: dict[tuple[str, str, str], str] = {}
        self.graph_nodes: dict[str, list[str]] = {}
        self._capture: tuple[str, ...] | None = None
        self._graph: str | None = None
        self.autotune: dict[str, str] = {}  # model -> the tuner's state pill
        self.tuned_nodes: dict[str, list[str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "body" and a.get("data-ready") == "1":
            self.ready = True
        if tag == "svg" and "graph" in a.get("class", "").split():
            self._graph = a["data-model"]
            self.graph_nodes[self._graph] = []
        if "data-graph-node" in a and self._graph is not None:
            self.graph_nodes[self._graph].append(a["data-graph-node"])
        if "data-autotune" in a:
            self.autotune[a["data-model"]] = a["data-autotune"]
        if "data-tuned-node" in a:
            self.tuned_nodes.setdefault(a["data-model"], []).append(a["data-tuned-node"])
        if "data-counter" in a:
            self._capture = ("counter", a["data-model"], a["data-counter"])
            self.counters[a["data-model"], a["data-counter"]] = ""
        elif "data-figure" in a:
            self._capture = ("figure", a["data-model"], a["data-node"], a["data-figure"])
            self.figures[a["data-model"], a["data-node"], a["data-figure"]] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._graph = None
        self._capture = None

    def handle_data(self, data: str) -> None:
        if self._capture is None:
            return
        if self._capture[0] == "counter":
            self.counters[self._capture[1], self._capture[2]] += data
        else:
            self.figures[self._capture[1], self._capture[2], self._capture[3]] += data


def count(text: str) -> int:
    return int(text.replace(",", "").strip())


def browse(url: str, profile: Path, screenshot: Path) -> _Page:
    """The page as chromium renders it once its first poll is drawn, and its screenshot.

    ``--virtual-time-budget`` runs the page's timers on virtual time; fetches pause that time, so
    the budget's 4 s see about four polls. Should a slow machine still dump a page that has not
    drawn yet (no ``data-ready`` on body), chromium is asked again."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--virtual-time-budget=4000",
        "--window-size=1400,1000",
        f"--screenshot={screenshot}",
        "--dump-dom",
        url,
    ]
    page = _Page()
    for _ in range(3):
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
        page = _Page()
        page.feed(done.stdout)
        if page.ready:
            return page
    raise AssertionError(f"the page never drew its first poll; chromium said:\n{done.stderr[-3000:]}")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test.sh installs it)")
def test_a_browser_shows_the_stats_counts(server: Server, tmp_path: Path) -> None:
    for k in range(REQUESTS):
        batch = 1 + k % 3
        value = -1.0 if k in FAILING else float(k)
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [batch, 3], "data": [value] * (3 * batch)}]}
        status, _, answer = request(server, "POST", f"/v2/models/{MODEL}/infer", json.dumps(body).encode())
        assert status == (500 if k in FAILING else 200), answer

    def idle() -> bool:
        model = get_json(server, "/status.json")["models"][0]
        return model["pending"] == 0 and all(n["queued"] == 0 and n["running"] == 0 for n in model["nodes"].values())

    wait_until(idle)
    stats = get_json(server, f"/v2/models/{MODEL}/stats")["model_stats"][0]
    document = get_json(server, "/status.json")["models"][0]
    assert stats["inference_stats"]["success"]["count"] == REQUESTS - len(FAILING)
    assert stats["inference_stats"]["fail"]["count"] == len(FAILING)

    artifacts = Path(os.environ.get("PIPESERVE_ARTIFACTS", ROOT / ".artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "status-page.png"
    screenshot.unlink(missing_ok=True)
    page = browse(f"http://{server.url}/", tmp_path / "profile", screenshot)

    expected = {
        "success": stats["inference_stats"]["success"]["count"],
        "fail": stats["inference_stats"]["fail"]["count"],
        "inference_count": stats["inference_count"],
        "execution_count": stats["execution_count"],
    }
    shown = {key: count(page.counters[MODEL, key]) for key in expected}
    assert shown == expected
    for node, figures in document["nodes"].items():
        for key in ("items", "batches", "queued", "running", "errors"):
            assert count(page.figures[MODEL, node, key]) == figures[key], (node, key)
    assert sorted(page.graph_nodes[MODEL]) == sorted(node["name"] for node in document["graph"])
    assert len(page.graph_nodes[MODEL]) == 4

    png = screenshot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert struct.unpack(">II", png[16:24]) == (1400, 1000)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (scripts/test.sh installs it)")
def test_a_browser_shows_the_autotune_panel(tmp_path: Path) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "tuned.toml").write_text(
        'autotune = { p99_ms = 100 }\n[a]\nbackend = "Identity"\nnext = "b"\ntune = { max = [1, 8] }\n'
        '[b]\nbackend = "Identity"\n'
    )
    with Server([str(folder)], port=0, grpc_port=None) as running:
        tuner = running.repository.get("tuned").pipe.autotune
        assert tuner is not None
        tuner.freeze()
        page = browse(f"http://{running.host}:{running.port}/", tmp_path / "profile", tmp_path / "shot.png")
        status = get_json(running, "/status.json")
    assert page.autotune == {"tuned": "frozen"}
    tuned = next(m for m in status["models"] if m["name"] == "tuned")["autotune"]
    assert sorted(page.tuned_nodes["tuned"]) == sorted(tuned["setting"]) == ["a", "b"]
