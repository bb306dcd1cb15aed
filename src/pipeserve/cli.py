"""The ``pipeserve`` command line.

pipeserve demo                      the main job: the OCR service on bundled pages
pipeserve serve CONFIG... [options] serve pipelines over HTTP and gRPC (Triton's protocol)
pipeserve bench CONFIG [options]    load-test any pipeline configuration (--url: a served model)
pipeserve tune CONFIG --p99 MS      search instances, batch sizes and windows for a latency target
pipeserve backends                  list registered backends and filters
pipeserve graph CONFIG [--format dot] [--png F] [--svg F]   draw a pipeline's graph
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pipeserve

from .bench import LoadResult, format_table, run_closed_loop, run_open_loop


def _items_from(args: argparse.Namespace) -> Callable[[int], dict[str, Any]]:
    """The load's items: the files of ``--input`` as bytes in turn, or ``--data``."""
    if args.input:
        files = sorted(p for p in Path(args.input).iterdir() if p.is_file())
        if not files:
            raise SystemExit(f"no files in {args.input}")
        payloads: list[Any] = [p.read_bytes() for p in files]
    else:
        payloads = [args.data]
    return lambda index: {"data": payloads[index % len(payloads)]}


def bench(args: argparse.Namespace) -> int:
    """``bench CONFIG``: load-test a pipe in this process, or with ``--url`` a served model.

    Each step runs for ``--seconds`` or, with ``--requests N``, until N requests have been
    measured (see :func:`pipeserve.bench.run_closed_loop`). Prints one summary row per step;
    ``--json FILE`` also writes the figures (rows, latency over time, machine; ``meta`` records
    the mode, ``"duration"`` or ``"requests"``, and the count or the seconds) and ``--plot FILE``
    draws them (see :mod:`pipeserve.bench.report`). A ``--plot``
    that could not be written (no matplotlib, unknown suffix) is refused before the load runs:
    one line on stderr, exit status 2.
    """
    if args.plot:
        from .bench.report import check_plot

        try:
            check_plot(args.plot)
        except (ImportError, ValueError) as exc:
            print(f"pipeserve bench: {exc}", file=sys.stderr)
            return 2
    name = args.config
    make_item = _items_from(args)
    if args.url:
        from concurrent.futures import ThreadPoolExecutor

        from .bench.remote import remote_call

        call = remote_call(args.url, args.config)
        try:
            with ThreadPoolExecutor(max(64, *args.clients)) as pool:  # open loop: calls that overlap
                results = _load(args, call, lambda item: pool.submit(call, item), make_item)
        finally:
            call.close()
        _report(args, name, args.url, results)
        return 0
    if args.config == "ocr":
        from .examples.ocr import config as ocr_config

        args.config = ocr_config()
    with pipeserve.pipe(args.config) as pipe:
        _report(args, name, "in-process", _load(args, pipe, pipe.submit, make_item))
        if args.stats:
            print(json.dumps(pipe.stats(), indent=2))
    return 0


def _load(
    args: argparse.Namespace,
    call: Callable[[dict[str, Any]], Any],
    submit: Callable[[dict[str, Any]], Future[Any]],
    make_item: Callable[[int], dict[str, Any]],
) -> list[LoadResult]:
    """One result per client count (closed loop through ``call``), or one at ``--rate``
    (open loop through ``submit``)."""
    results = []
    seconds = _seconds(args)
    for clients in args.clients:
        if args.rate:
            result = run_open_loop(
                submit,
                make_item,
                rate=args.rate,
                seconds=seconds,
                requests=args.requests,
                label=f"{args.rate}/s",
                progress=sys.stderr,
            )
        else:
            result = run_closed_loop(
                call,
                make_item,
                clients=clients,
                seconds=seconds,
                requests=args.requests,
                label=f"{clients} clients",
                progress=sys.stderr,
            )
        results.append(result)
        if result.first_error:
            print(f"first error: {result.first_error}", file=sys.stderr)
        if args.rate:
            break
    return results


def tune(args: argparse.Namespace) -> int:
    """``tune CONFIG --p99 MS``: the offline search (:mod:`pipeserve.bench.tune`); writes the
    tuned TOML (``--out``), and where asked the report (``--report``) and the frontier's plot
    (``--plot``, refused before the search when matplotlib is missing)."""
    from .bench.tune import TuneOptions, tuned_toml, write_plot, write_report
    from .bench.tune import tune as search

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("pipeserve tune: --plot needs matplotlib (pip install matplotlib)", file=sys.stderr)
            return 2
    name = args.config
    source: Any = args.config
    if args.config == "ocr":
        from .examples.ocr import config as ocr_config
        from .examples.ocr.demo import IMAGES

        source = ocr_config()
        args.input = args.input or str(IMAGES)
    options = TuneOptions(
        p99_ms=args.p99,
        clients=args.clients,
        rate=args.rate,
        budget_s=args.budget_s,
        trial_s=args.trial_s,
        warmup_s=args.warmup_s,
        cpu_count=args.cpu_count,
    )
    print(
        f"tuning {name} for p99 <= {args.p99:g} ms under {options.describe_load()}: "
        f"trials of {args.trial_s:g} s (+{args.warmup_s:g} s warm-up), {args.budget_s:g} s at most",
        file=sys.stderr,
    )
    result = search(source, _items_from(args), options)
    out = args.out or (Path(name).stem if name != "ocr" else "ocr") + ".tuned.toml"
    Path(out).write_text(tuned_toml(result, name))
    best = result.best
    print(
        f"best (trial {best.index}): {best.sample.throughput:.3g}/s, p50 {best.sample.p50_ms:.4g} ms, "
        f"p99 {best.sample.p99_ms:.4g} ms; as configured {result.start.sample.throughput:.3g}/s, "
        f"p99 {result.start.sample.p99_ms:.4g} ms; {len(result.search.trials)} trials in {result.elapsed_s:.0f} s "
        f"({result.search.stopped})"
    )
    print(f"wrote {out}")
    if args.report:
        write_report(result, name, args.report)
        print(f"wrote {args.report}")
    if args.plot:
        write_plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _seconds(args: argparse.Namespace) -> float:
    """The duration of a step: ``--seconds``, 5 by default (unused with ``--requests``)."""
    return 5.0 if args.seconds is None else float(args.seconds)


def _report(args: argparse.Namespace, name: str, target: str, results: list[LoadResult]) -> None:
    """Print the summary rows; write ``--json`` and ``--plot`` where asked."""
    rows = [result.summary() for result in results]
    columns = ["label", "clients", "requests", "errors", "seconds", "throughput", "p50_ms", "p90_ms", "p99_ms"]
    print(format_table(rows, columns))
    if not (args.json or args.plot):
        return
    from .bench.report import build_report, write_json, write_plot

    report = build_report(results, config=name, target=target, rate=args.rate)
    fixed = args.requests is not None
    report["meta"]["mode"] = "requests" if fixed else "duration"
    report["meta"]["requests"] = args.requests  # per step; None for a duration
    report["meta"]["seconds"] = None if fixed else _seconds(args)  # per step; measured ones in each summary
    for path, write in ((args.json, write_json), (args.plot, write_plot)):
        if path:
            write(report, path)
            print(f"wrote {path}", file=sys.stderr)


def _range(text: str) -> tuple[int, int]:
    low, _, high = text.partition(",")
    try:
        return int(low), int(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX (two whole numbers), got {text!r}") from None


def serve(args: argparse.Namespace) -> int:
    import logging

    if args.ray:
        from .ray.service import serve_on_ray

        return serve_on_ray(args)

    from .server import Server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    server = Server(
        args.configs,
        host=args.host,
        port=args.port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
        timeout=args.timeout / 1e3 if args.timeout else None,
        drain_timeout=args.drain_timeout,
        access_log=args.access_log,
        cpu_count=args.cpu_count,
        max_body=args.max_body,
        metrics=args.metrics,
        trace_rate=args.trace_rate,
        trace_file=args.trace_file,
    )
    server.run()
    return 0


def graph(args: argparse.Namespace) -> int:
    from .diagram import render, to_dot, to_mermaid

    if args.png or args.svg:
        dot = to_dot(args.config)
        for path, fmt in ((args.png, "png"), (args.svg, "svg")):
            if path:
                render(dot, path, fmt)
                print(f"wrote {path}")
        return 0
    print(to_dot(args.config) if args.format == "dot" else to_mermaid(args.config), end="")
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pipeserve`` command."""
    parser = argparse.ArgumentParser(prog="pipeserve", description="Serve deep-learning pipelines in one process.")
    parser.add_argument("--version", action="version", version=f"pipeserve {pipeserve.__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the main job: the OCR service on bundled pages")
    demo.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="measuring time per table row (default: the OCR demo measures 2 x clients + 8 requests per row; "
        "--scheduler: 10 s)",
    )
    demo.add_argument(
        "--annotated",
        metavar="PATH",
        default=".artifacts/ocr-annotated.png",
        help="where to write the first page with its boxes and texts drawn (default: %(default)s)",
    )
    demo.add_argument("--scheduler", action="store_true", help="instead: the scheduler on built-in backends")

    served = commands.add_parser("serve", help="serve pipelines over HTTP and gRPC (Triton's protocol)")
    served.add_argument("configs", nargs="+", metavar="CONFIG", help="TOML files, folders of them, or 'ocr'")
    served.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    served.add_argument("--port", type=int, default=8000, help="HTTP port")
    served.add_argument("--grpc-port", type=int, default=8001, help="gRPC port (-1: no gRPC)")
    served.add_argument("--timeout", type=float, default=0.0, help="default request deadline in ms (0: none)")
    served.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to finish in-flight work on stop")
    served.add_argument("--access-log", action="store_true", help="log id, model, status and latency per request")
    served.add_argument("--cpu-count", type=int, default=None, help="cores the models share (default: all)")
    served.add_argument("--max-body", type=int, default=64 * 1024 * 1024, help="largest request body in bytes")
    served.add_argument(
        "--metrics",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="serve GET /metrics (default: when prometheus-client is installed)",
    )
    served.add_argument("--trace-rate", type=float, default=None, help="share of requests traced (0..1)")
    served.add_argument(
        "--trace-file", default=None, help="JSON-lines file for traces (default: OpenTelemetry if set up)"
    )
    on_ray = served.add_argument_group("on Ray Serve (HTTP at Ray's proxy; see docs/scaling.md)")
    on_ray.add_argument("--ray", action="store_true", help="serve as Ray Serve replicas instead of this process")
    on_ray.add_argument("--address", default=None, help="the Ray cluster to join (default: start a local one)")
    scaling = on_ray.add_mutually_exclusive_group()
    scaling.add_argument("--replicas", type=int, default=1, help="ingress replicas (default: 1)")
    scaling.add_argument(
        "--autoscale", type=_range, default=None, metavar="MIN,MAX", help="ingress replicas between MIN and MAX"
    )
    on_ray.add_argument("--num-cpus", type=float, default=None, help="CPUs per ingress replica (default: a share)")
    on_ray.add_argument("--num-gpus", type=float, default=0.0, help="GPUs per ingress replica")
    on_ray.add_argument("--app-name", default="pipeserve", help="the Serve application's name")
    on_ray.add_argument("--route-prefix", default="/", help="where the application's HTTP paths start")

    load = commands.add_parser("bench", help="load-test a pipeline configuration")
    load.add_argument("config", help="a TOML file, or 'ocr' for the bundled OCR pipeline (with --url: a model name)")
    load.add_argument("--url", help="drive a server instead: http://HOST:PORT or grpc://HOST:PORT")
    load.add_argument("--clients", type=lambda s: [int(c) for c in s.split(",")], default=[1, 4, 16])
    load.add_argument("--rate", type=float, default=0.0, help="open loop: requests per second (instead of clients)")
    length = load.add_mutually_exclusive_group()
    length.add_argument("--seconds", type=float, default=None, help="measuring time per step (default: 5)")
    length.add_argument(
        "--requests",
        type=_positive,
        default=None,
        metavar="N",
        help="instead of --seconds: measure exactly N requests per step (all clients together, after the warm-up); "
        "throughput is N over the time from the first one sent to the last one done (with --rate: N requests "
        "sent at that rate)",
    )
    load.add_argument("--input", help="a folder whose files are sent as bytes in 'data'")
    load.add_argument("--data", default="x", help="the 'data' to send when no --input is given")
    load.add_argument("--stats", action="store_true", help="print per-node statistics afterwards")
    load.add_argument("--json", metavar="FILE", help="write the figures (rows, latency over time, machine) as JSON")
    load.add_argument("--plot", metavar="FILE", help="draw latency over time, throughput vs clients (.png/.svg/.pdf)")

    tuning = commands.add_parser("tune", help="search instances, batch sizes and windows for a p99 target")
    tuning.add_argument("config", help="a TOML file, or 'ocr' for the bundled OCR pipeline (on its bundled pages)")
    tuning.add_argument("--p99", type=float, required=True, metavar="MS", help="the p99 latency target, in ms")
    offered = tuning.add_mutually_exclusive_group()
    offered.add_argument("--clients", type=_positive, default=16, help="closed-loop clients (default 16)")
    offered.add_argument("--rate", type=float, default=0.0, help="instead: an open loop of this many requests/s")
    tuning.add_argument("--budget-s", type=float, default=300.0, help="time for the whole search (default 300 s)")
    tuning.add_argument("--trial-s", type=float, default=5.0, help="measured seconds per trial (default 5)")
    tuning.add_argument("--warmup-s", type=float, default=1.0, help="warm-up seconds before each trial (default 1)")
    tuning.add_argument("--cpu-count", type=_positive, default=None, help="cores the pipe may use (default: all)")
    tuning.add_argument("--input", help="a folder whose files are sent as bytes in 'data'")
    tuning.add_argument("--data", default="x", help="the 'data' to send when no --input is given")
    tuning.add_argument("--out", help="the tuned TOML (default: CONFIG's name + .tuned.toml, here)")
    tuning.add_argument("--report", metavar="FILE", help="write every trial, the best and the frontier as JSON")
    tuning.add_argument("--plot", metavar="FILE", help="draw throughput against p99 of the trials (.png/.svg/.pdf)")

    commands.add_parser("backends", help="list registered backends and filters")

    draw = commands.add_parser("graph", help="print a pipeline's graph as Mermaid or DOT, or render it")
    draw.add_argument("config", help="a TOML file")
    draw.add_argument("--format", choices=["mermaid", "dot"], default="mermaid")
    draw.add_argument("--png", help="render to this PNG file (needs Graphviz)")
    draw.add_argument("--svg", help="render to this SVG file (needs Graphviz)")

    args = parser.parse_args(argv)
    try:
        return _run(args)
    except pipeserve.PipeServeError as exc:
        print(f"pipeserve: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.command == "demo":
        if args.scheduler:
            from .bench.demo import main as run_scheduler_demo

            run_scheduler_demo(10.0 if args.seconds is None else args.seconds)
        else:
            from .examples.ocr.demo import main as run_ocr_demo

            run_ocr_demo(args.seconds, annotated=args.annotated)
        return 0
    if args.command == "bench":
        return bench(args)
    if args.command == "serve":
        return serve(args)
    if args.command == "graph":
        return graph(args)
    if args.command == "tune":
        return tune(args)
    print("backends:", ", ".join(pipeserve.list_backends()))
    print("filters: ", ", ".join(pipeserve.list_filters()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
