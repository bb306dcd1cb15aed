"""The sample Grafana dashboard (docs/grafana/pipeserve-dashboard.json) queries only series that a
server's ``GET /metrics`` exposes, and shows every pipeserve and Triton-named series."""

from __future__ import annotations

import http.client
import json
import re
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("prometheus_client")
pytest.importorskip("numpy")
pytest.importorskip("uvicorn")

from pipeserve.server import Server

DASHBOARD = Path(__file__).resolve().parent.parent / "docs" / "grafana" / "pipeserve-dashboard.json"

# Two nodes: the second raises ValueError for the item "bad" (a JSON input gives it the string).
CONFIG = """\
[first]
backend = "Identity"
next = "second"
max = 4
inputs = [{ name = "INPUT0", datatype = "BYTES", shape = [1], json = true }]
outputs = [{ name = "OUTPUT0", datatype = "BYTES", shape = [1], json = true }]

[second]
backend = "ValueError"
error_on = ["bad"]
instance_num = 2
"""

# PromQL functions, aggregations, keywords and literals, and Grafana's query functions: every other
# identifier left in an expression (outside strings, label matchers, ranges and label lists) is a
# metric name.
PROMQL_WORDS = frozenset(
    """
    abs absent absent_over_time acos acosh asin asinh atan atanh ceil changes clamp clamp_max clamp_min cos cosh
    count_over_time day_of_month day_of_week day_of_year days_in_month deg delta deriv exp floor histogram_avg
    histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar histogram_sum
    holt_winters double_exponential_smoothing hour idelta increase irate label_join label_replace last_over_time
    ln log2 log10 mad_over_time max_over_time min_over_time minute month pi predict_linear present_over_time
    quantile_over_time rad rate resets round scalar sgn sin sinh sort sort_by_label sort_by_label_desc sort_desc
    sqrt stddev_over_time stdvar_over_time sum_over_time tan tanh time timestamp vector year avg_over_time
    sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio
    by without on ignoring group_left group_right offset bool and or unless atan2 start end inf nan
    label_values label_names metrics query_result
    """.split()
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_LABEL_VALUES = re.compile(r"\blabel_values\s*\(([^(),]*),\s*[a-zA-Z_]\w*\s*\)")
_LABEL_VALUES_ONLY_LABEL = re.compile(r"\blabel_values\s*\(\s*[a-zA-Z_]\w*\s*\)")
# Numbers and durations first, so that ``1e-9`` or ``5m`` never yield an identifier.
_TOKEN = re.compile(
    r"(?P<number>(?:\d+(?:ms|[smhdwy]))+|0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)"
)


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression (or a Grafana ``label_values`` query) reads."""
    text = _STRING.sub(" ", query)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _VARIABLE.sub(" ", text)
    text = _LABEL_LIST.sub(r" \1 ", text)
    text = _LABEL_VALUES.sub(r" \1 ", text)
    text = _LABEL_VALUES_ONLY_LABEL.sub(" ", text)
    names = set()
    for token in _TOKEN.finditer(text):
        name = token.group("name")
        if name is not None and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ('sum by (model, le) (rate(a_bucket{model=~"$model", x="b,c}"}[$__rate_interval]))', {"a_bucket"}),
        ("histogram_quantile(0.99, sum without (node) (increase(b_total[5m] offset 1h))) > 1e-9", {"b_total"}),
        ("c / on(model) group_left(node) d * 2 and bool e", {"c", "d", "e"}),
        ('label_values(f{job=~"$job", model=~"$model"}, node)', {"f"}),
        ("label_values(job)", set()),
        ("max_over_time(g[1h:5m])", {"g"}),
    ],
)
def test_the_query_reader_finds_metric_names_only(query: str, expected: set[str]) -> None:
    assert metric_names(query) == expected


def _dashboard() -> dict[str, Any]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def _panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in document["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", ()))
    return found


def _queries(document: dict[str, Any]) -> list[tuple[str, str]]:
    """``(where, query)`` for every panel target and every query variable."""
    queries = []
    for panel in _panels(document):
        for target in panel.get("targets", ()):
            queries.append((f"panel {panel['title']!r}", target["expr"]))
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            queries.append((f"variable {variable['name']!r}", query["query"] if isinstance(query, dict) else query))
    return queries


def test_the_dashboard_is_a_grafana_dashboard_with_titled_panels_that_query() -> None:
    document = _dashboard()
    assert document["title"] and document["uid"] and document["schemaVersion"] >= 36
    variables = {v["name"]: v for v in document["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert "nv_inference_request_success" in variables["model"]["definition"]
    assert {"model", "node"} <= variables.keys()
    ids = [panel["id"] for panel in _panels(document)]
    assert len(ids) == len(set(ids))
    for panel in _panels(document):
        assert panel.get("title"), panel
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and _balanced(target["expr"]), (panel["title"], target["expr"])


def _balanced(expr: str) -> bool:
    """Whether the brackets of ``expr`` pair up, strings aside."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub(" ", expr):
        if char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            return False
    return not stack and bool(expr.strip())


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The series names of a server's ``/metrics`` after successes, a batch and a failure."""
    folder = tmp_path_factory.mktemp("grafana")
    (folder / "two.toml").write_text(CONFIG)
    (folder / "tuned.toml").write_text('autotune = { p99_ms = 100 }\n[main]\nbackend = "Identity"\n')  # its families
    with Server([str(folder)], port=0, grpc_port=None, cpu_count=1, metrics=True) as server:
        statuses = [_infer(server, data) for data in (["a"], ["b", "c"], ["bad"])]
        assert statuses == [200, 200, 500]
        status, text = _get(server, "/metrics")
    assert status == 200
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def _connection(server: Server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(server.host, server.port, timeout=10)


def _infer(server: Server, data: list[str]) -> int:
    tensor = {"name": "INPUT0", "datatype": "BYTES", "shape": [len(data), 1], "data": [json.dumps(d) for d in data]}
    connection = _connection(server)
    try:
        connection.request("POST", "/v2/models/two/infer", body=json.dumps({"inputs": [tensor]}).encode())
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def _get(server: Server, path: str) -> tuple[int, str]:
    connection = _connection(server)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode("utf-8")
    finally:
        connection.close()


def test_every_series_the_dashboard_queries_is_exposed(exposed: set[str]) -> None:
    missing = []
    for where, query in _queries(_dashboard()):
        names = metric_names(query)
        assert names, f"{where}: no metric in {query!r}"
        missing.extend(f"{where}: {name}" for name in sorted(names - exposed))
    assert not missing, "queried but not exposed:\n" + "\n".join(missing)


def test_the_dashboard_shows_every_pipeserve_and_triton_series(exposed: set[str]) -> None:
    used = set().union(*(metric_names(query) for _, query in _queries(_dashboard())))
    ours = {name for name in exposed if name.startswith(("nv_", "pipeserve_"))}
    assert "pipeserve_request_failures_total" in ours  # the failing request was counted
    assert ours - used == set()
