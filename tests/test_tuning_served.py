"""A served model with ``autotune``: its decisions in ``/metrics``, ``/status.json`` and
``/v2/models/{m}/autotune``, which also freezes it (NOTE [autotune])."""

from __future__ import annotations

import http.client
import json
import threading
from pathlib import Path

import pytest

prometheus_client = pytest.importorskip("prometheus_client")
pytest.importorskip("uvicorn")

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from pipeserve.server import Server  # noqa: E402

TUNED = """
autotune = { p99_ms = 500, interval_s = 0.1, instances = 4 }
[a]
backend = "Sleep"
sleep_ms = 3.0
per_item_ms = 0.3
tune = { instances = [1, 3], max = [1, 8] }
next = "b"
[b]
backend = "Sleep"
sleep_ms = 0.5
per_item_ms = 1.0
tune = { instances = [1, 3], max = [1, 8] }
"""


def request(server: Server, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_a_served_models_tuning_shows_in_metrics_status_and_its_endpoint(tmp_path: Path) -> None:
    (tmp_path / "tuned.toml").write_text(TUNED)
    (tmp_path / "plain.toml").write_text('[main]\nbackend = "Identity"\n')
    with Server([str(tmp_path)], port=0, grpc_port=None, cpu_count=4) as server:
        pipe = server.repository.get("tuned").pipe
        tuner = pipe.autotune
        assert tuner is not None

        def client(index: int) -> None:
            for i in range(150):
                pipe({"data": index * 1000 + i}, timeout=30)

        threads = [threading.Thread(target=client, args=(c,)) for c in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert tuner.decisions, "the bad start (one instance, batches of one) was changed"

        status, body = request(server, "GET", "/v2/models/tuned/autotune")
        assert status == 200
        document = json.loads(body)
        assert document["p99_ms"] == 500 and document["decisions"] and not document["frozen"]
        assert set(document["setting"]) == {"a", "b"}

        status, body = request(server, "POST", "/v2/models/tuned/autotune", json.dumps({"frozen": True}).encode())
        assert status == 200 and json.loads(body)["frozen"] is True and tuner.frozen
        assert request(server, "POST", "/v2/models/tuned/autotune", b'{"frozen": 1}')[0] == 400
        assert request(server, "GET", "/v2/models/plain/autotune")[0] == 404

        status, body = request(server, "GET", "/status.json")
        model = next(m for m in json.loads(body)["models"] if m["name"] == "tuned")
        assert model["autotune"]["frozen"] is True
        assert len(model["autotune"]["decisions"]) == len(tuner.decisions)
        assert next(m for m in json.loads(body)["models"] if m["name"] == "plain")["autotune"] is None

        status, body = request(server, "GET", "/metrics")
        found = {}
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                found[(sample.name, frozenset(sample.labels.items()))] = sample.value
        changes = sum(
            v
            for (name, labels), v in found.items()
            if name == "pipeserve_autotune_decisions_total" and ("model", "tuned") in labels
        )
        assert changes == sum(number for number in tuner.counts().values())
        assert found[("pipeserve_autotune_frozen", frozenset({("model", "tuned")}))] == 1.0
        assert found[("pipeserve_autotune_target_p99_seconds", frozenset({("model", "tuned")}))] == 0.5
        for name, node in pipe.describe().nodes.items():
            labels = frozenset({("model", "tuned"), ("node", name)})
            assert found[("pipeserve_node_batch_max", labels)] == node.batch_range[1]
            assert found[("pipeserve_node_active_instances", labels)] == node.active_instances
