"""Property-based tests (Hypothesis) of the configuration front end, graph walks and the batch policy.

(a) Generated configurations and composition strings give either a working pipe, which answers a
    request correctly or with a typed RequestError, or a ConfigError that says where (node, key,
    character): never another exception, never a hang, no thread left behind.
(b) Generated DAGs and items: every request gets exactly one outcome, equal to one the reference
    walk in this file allows (an exhaustive interleaving of the walk rules of NOTE [walk]).
(c) The batch policy (``batching.decide`` on a ``BatchQueue``) under generated queues and a fake
    integer clock: never more than ``max``, never fewer than ``min``, never a wait past the oldest
    item's window, never holding items when nothing can come.

The ``ci`` profile (registered and loaded below) is derandomized and bounded so that the file runs
in well under a minute on two cores; ``HYPOTHESIS_PROFILE`` picks another registered profile.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import re
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import pipeserve as ps
from pipeserve.batching import BatchQueue, Task, decide
from pipeserve.syntax import BackendTree, parse_backend

settings.register_profile(
    "ci",
    max_examples=40,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

pytestmark = pytest.mark.timeout(90)  # the whole file runs in seconds; a hang fails, never blocks the suite
HANG = 20.0  # seconds: an outcome later than this is a hang
Item = dict[str, Any]


# ------------------------------------------------------------------------------------ helpers
def _pipeserve_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("pipeserve")}


@contextmanager
def _no_thread_left() -> Iterator[None]:
    """The body must leave no pipeserve thread behind (pipes closed, failed builds cleaned up)."""
    before = _pipeserve_threads()
    yield
    left = _pipeserve_threads() - before
    assert not left, f"threads left behind: {sorted(t.name for t in left)}"


def _wait_all(futures: list[concurrent.futures.Future[Any]]) -> None:
    _, not_done = concurrent.futures.wait(futures, timeout=HANG)
    assert not not_done, f"{len(not_done)} of {len(futures)} requests had no outcome after {HANG} s"


def _check_located(err: ps.ConfigError, nodes: set[str], keys: set[str]) -> None:
    """A ConfigError names where it is: a node of the configuration and/or a key, both in its
    message; a syntax error also shows the character."""
    assert err.node is not None or err.key is not None, f"ConfigError without a location: {err}"
    text = str(err)
    if err.node is not None:
        assert err.node in nodes, f"names node {err.node!r}, not one of {sorted(nodes)}: {text}"
        assert repr(err.node) in text, text
    if err.key is not None:
        assert err.key in keys, f"names key {err.key!r}, not one of {sorted(keys)}: {text}"
        assert repr(err.key) in text, text
    caret = re.search(r"at character (\d+):\n    (.*)\n    ( *)\^", text)
    if "at character" in text:
        assert caret is not None, f"no caret under the character: {text!r}"
        assert len(caret.group(3)) == int(caret.group(1)) <= len(caret.group(2))


# ------------------------------------------------------------------------------------ backends
def _increment(data: Any) -> Any:
    """``data + 1``, element-wise for a list (a TypeError for anything else, None included)."""
    return [value + 1 for value in data] if isinstance(data, list) else data + 1


ps.register_backend(lambda items: [_increment(item["data"]) for item in items], "PropInc", replace=True)


@dataclass
class _Lifecycle:
    """What instances of ``PropLife`` did: (node, instance, thread) per successful init / close."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    inits: list[tuple[str, int, int]] = field(default_factory=list)
    closes: list[tuple[str, int, int]] = field(default_factory=list)

    def reset(self) -> None:
        with self.lock:
            self.inits.clear()
            self.closes.clear()


LIFE = _Lifecycle()


@ps.register_backend("PropLife", replace=True)
class _PropLife(ps.Backend):
    """Records init/close; instance ``fail_instance`` fails to initialise (``fail_with``: a foreign
    exception or a ConfigError)."""

    def init(self, params: Mapping[str, Any], options: ps.Options) -> None:
        super().init(params, options)
        if options.instance == int(params.get("fail_instance", -1)):
            if params.get("fail_with") == "config":
                raise ps.ConfigError("refused on purpose", node=options.node, key="fail_instance")
            raise RuntimeError(f"init failed on purpose for instance {options.instance}")
        with LIFE.lock:
            LIFE.inits.append((options.node, options.instance, threading.get_ident()))

    def close(self) -> None:
        with LIFE.lock:
            LIFE.closes.append((self.options.node, self.options.instance, threading.get_ident()))


# ================================================================================ (a) syntax
_NAMES = st.sampled_from(["A", "Identity", "S", "x_1", "m.n", "X::k", "r/s", "b-2"])
_VALUES = st.sampled_from(["1", "v", "2.5", "a b", "[1,2]", "(x)", "k=v"])


@st.composite
def _trees(draw: st.DrawFn, depth: int = 0) -> BackendTree:
    """A composition tree whose text round-trips (values are single tokens, balanced brackets)."""
    children: tuple[BackendTree, ...] = ()
    if depth < 2 and draw(st.booleans()):
        children = tuple(draw(st.lists(_trees(depth + 1), min_size=1, max_size=3)))
    params = tuple(draw(st.lists(st.tuples(_NAMES, _VALUES), max_size=2)))
    filter_name = draw(st.none() | _NAMES) if depth else None
    return BackendTree(draw(_NAMES), params, children, filter_name)


def _shape(tree: BackendTree) -> Any:
    return (tree.name, tree.params, tree.filter, tuple(_shape(c) for c in tree.children))


def _spaced(tree: BackendTree, sp: str) -> str:
    """``str(tree)`` with ``sp`` between every two tokens (outside values)."""
    text = f"({sp}{tree.filter}{sp}){sp}" if tree.filter else ""
    text += tree.name
    if tree.params:
        text += f"{sp}({sp}" + f"{sp},{sp}".join(f"{k}{sp}={sp}{v}" for k, v in tree.params) + f"{sp})"
    if tree.children:
        text += f"{sp}[{sp}" + f"{sp},{sp}".join(_spaced(c, sp) for c in tree.children) + f"{sp}]"
    return text


@given(_trees(), st.sampled_from([" ", "  ", "\t"]))
@settings(max_examples=200)
def test_composition_round_trips(tree: BackendTree, space: str) -> None:
    """A tree's text, with or without whitespace between tokens, parses back to the same tree."""
    text = str(tree)
    for source in (text, _spaced(tree, space), space + _spaced(tree, space) + space):
        parsed = parse_backend(source)
        assert _shape(parsed) == _shape(tree)
        assert str(parsed) == text


_SYNTAX_ALPHABET = "SAI[](),= =k1(f)"


@given(st.one_of(st.text(_SYNTAX_ALPHABET, max_size=14), st.text(max_size=8)), st.sampled_from(["a", "n-1"]))
@settings(max_examples=500)
def test_composition_strings_parse_or_point_at_the_character(source: str, node: str) -> None:
    """Any string parses (each stage's ``pos`` pointing at its name, the tree's text parsing to the
    same tree) or raises a plain ConfigError naming node, key and character, caret underneath."""
    try:
        tree = parse_backend(source, node=node)
    except ps.ConfigError as err:
        assert type(err) is ps.ConfigError
        assert (err.node, err.key) == (node, "backend")
        position = int(re.search(r"at character (\d+)", str(err)).group(1))  # type: ignore[union-attr]
        assert 0 <= position <= len(source)
        if source.isprintable():  # one line, no tabs: the caret must sit under the character
            assert str(err).endswith(f":\n    {source}\n    {' ' * position}^"), str(err)
            _check_located(err, {node}, {"backend"})
        return
    # Every stage's name is where ``pos`` says it is, and the text parses to the same tree again.
    stack = [tree]
    while stack:
        stage = stack.pop()
        assert source[stage.pos : stage.pos + len(stage.name)] == stage.name
        stack.extend(stage.children)
    assert _shape(parse_backend(str(tree))) == _shape(tree)


def test_the_caret_of_a_multi_line_composition_sits_under_the_character() -> None:
    with pytest.raises(ps.ConfigError, match="found ','") as caught:
        parse_backend("S[A,\n  ,B]", node="a")
    *_, above, caret = str(caught.value).split("\n")
    column = caret.index("^")
    assert above[column : column + 1] == ","


# ================================================================================ (a) configurations
_VALID_BACKENDS = [
    "Identity",
    "S[Identity,Identity]",
    "S[Identity,Add]",
    "Sequential[Identity, (swap)Identity]",
    "S[Identity,(Skip)ValueError]",
    "S[Identity,(or)ValueError]",
    "(swap)Identity",
    "Sleep",
    "ValueError",
    "Add",
    "Jump",
    "MapReduce",
    "Identity&S[Identity,Identity]",
]
_BAD_BACKENDS = [
    "S[Identity,Jump]",  # a graph-only backend as a stage
    # unknown names
    "NoSuchBackend",
    "S[Identity,Nope]",
    "S[Identity,(nofilter)Identity]",
    # malformed
    "S[Identity",
    "S[Identity,]",
    "S[,]",
    "(swap",
    "Identity)",
    "[Identity]",
    "Identity(k=",
    "Identity(k=v",
    "S[Identity]]",
    "S[Identity](",
    "",
    " ",
    "1&&2",
]
_KEYS = {
    "backend",
    "instance_num",
    "min",
    "max",
    "batching_timeout",
    "next",
    "map",
    "filter",
    "jump",
    "add",
    "error_on",
    "isolate",
    "max_queue",
    "overload",
    "timeout",
    "inline",
    "bucket_key",
    "bucket_edges",
    "global",
}
_BAD_NODE_NAMES = ["_x", "data", "global", "bad name", "x.y", "a.b.c", "-a"]


def _valid_keys() -> dict[str, st.SearchStrategy[Any]]:
    """A node's own keys, but for those that draw the graph (see ``_configs``)."""
    return {
        "backend": st.sampled_from(_VALID_BACKENDS),
        "instance_num": st.one_of(st.integers(1, 3), st.sampled_from(["2", "1&2"])),
        "min": st.sampled_from([1, "1", "1&2"]),
        "max": st.one_of(st.integers(1, 4), st.sampled_from(["1&4", "2"])),
        "batching_timeout": st.sampled_from([0, 1, 2.5, "1", "1&0"]),
        "add": st.just("k:v"),
        "error_on": st.sampled_from(["7", "1,7", "3"]),
        "isolate": st.sampled_from([True, "no", "off"]),
        "max_queue": st.sampled_from([0, 1, 2]),
        "overload": st.sampled_from(["error", "block"]),
        "timeout": st.sampled_from([0, 2, 1000, "500"]),
        "inline": st.sampled_from([True, False, "no"]),
        "bucket_key": st.sampled_from(["data", "shape[0]", "nokey"]),
        "bucket_edges": st.sampled_from(["4,8", "1", ""]),
    }


_BAD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "backend": st.one_of(st.sampled_from(_BAD_BACKENDS), st.text(_SYNTAX_ALPHABET + "dentiy", max_size=12)),
    "instance_num": st.sampled_from([-1, 0, "x", "", 1.5, True, [1], "1&&2"]),
    "min": st.sampled_from([0, 2, 5, "x", -1, "2&1"]),
    "max": st.sampled_from([0, -1, "x", "4&0", 2.5]),
    "batching_timeout": st.sampled_from([-1, "x", float("nan"), "1&-1", [1]]),
    "next": st.sampled_from(["zz", "a,zz", ["zz"], 5]),
    "map": st.sampled_from(["zz[result:data]", "a[result]", "a[", "", "[]", "a[:data]", "[result:data", 3]),
    "filter": st.sampled_from(["NoSuchFilter", "", "Run(x)"]),
    "jump": st.sampled_from(["zz", ""]),
    "add": st.sampled_from(["bad", "", ":v", "k:"]),
    "isolate": st.sampled_from(["maybe", 2]),
    "max_queue": st.sampled_from([-1, "x"]),
    "overload": st.sampled_from(["drop", ""]),
    "timeout": st.sampled_from([-1, "x", float("nan")]),
    "inline": st.sampled_from(["maybe", 3]),
    # "bucket_edges": "x" names the wrong key: test_a_bad_bucket_edge_names_its_key
}


_DEFECTS = ["none", "none", "none", "value", "value", "name", "cycle", "missing", "root filter", "jump"]


@st.composite
def _configs(draw: st.DrawFn) -> tuple[dict[str, Any], set[str]]:
    """A configuration dict, mostly valid, with at most one planted defect (a bad value or node
    name, a cycle, a reference to a missing node, a filter on a root, a jump anywhere), and the
    node names it may name. Edges go forward in a drawn order, so that without a defect the graph
    is acyclic; it may still have several roots or sinks, or a node with several predecessors and
    no usable map."""
    flat = draw(st.booleans())
    names = (
        ["main"] if flat else draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=4, unique=True))
    )
    if len(names) > 1 and draw(st.booleans()):
        names[-1] = f"{names[0]}.1"  # a logical node of the first
    nodes = {name: draw(st.fixed_dictionaries({}, optional=_valid_keys())) for name in names}
    preds: dict[str, list[str]] = {name: [] for name in names}
    for i, name in enumerate(names[:-1]):
        targets = draw(st.lists(st.sampled_from(names[i + 1 :]), max_size=2, unique=True))
        if targets:
            nodes[name]["next"] = ",".join(targets) if draw(st.booleans()) else targets
            for target in targets:
                preds[target].append(name)
    for name in names:
        mine = preds[name]
        if mine and (len(mine) > 1 or draw(st.booleans())):
            sources = draw(st.permutations(mine))
            nodes[name]["map"] = ",".join(
                [f"{sources[0]}[result:data]", *(f"{p}[result:from_{p}]" for p in sources[1:])]
            )
        if mine and draw(st.booleans()):
            nodes[name]["filter"] = draw(
                st.sampled_from(["Run", "Skip", "swap", "or", "Break", "Error", "SerialSkip", "SubGraphSkip"])
            )
        if nodes[name].get("backend") in ("Jump", "MapReduce"):
            nodes[name]["jump"] = draw(st.sampled_from(names))
    defect = draw(st.sampled_from(_DEFECTS))
    victim = draw(st.sampled_from(names))
    if defect == "value":
        key = draw(st.sampled_from([*sorted(_BAD_VALUES), "backend", "backend", "backend"]))
        nodes[victim][key] = draw(_BAD_VALUES[key])
    elif defect == "name" and not flat:
        bad = draw(st.sampled_from(_BAD_NODE_NAMES))
        nodes[bad] = nodes.pop(victim)
        names[names.index(victim)] = bad
    elif defect == "cycle":
        nodes[names[-1]]["next"] = victim  # back to an earlier node, or to itself
    elif defect == "missing":
        key = draw(st.sampled_from(["next", "map", "jump"]))
        nodes[victim][key] = {"next": "zz", "map": "zz[result:data]", "jump": "zz"}[key]
    elif defect == "root filter":
        nodes[names[0]]["filter"] = "Run"
    elif defect == "jump":
        nodes[victim]["jump"] = draw(st.sampled_from(names))
    if flat:
        return nodes["main"], {"main"}
    config: dict[str, Any] = dict(nodes)
    if draw(st.booleans()):
        config["global"] = draw(st.fixed_dictionaries({}, optional={"max": st.sampled_from([2, "3"])}))
    if draw(st.booleans()):
        config["instance_num"] = draw(st.sampled_from([2, "2"]))
    return config, {*names, "main"}


def _answer(pipe: ps.Pipe, entry: str | None) -> None:
    """One request by ``submit`` and one by a blocking call: the result, or a typed RequestError
    with the caller's dict untouched. (Every backend above passes ``data`` on, so a result, when
    there is one, is the data sent.)"""
    sent: Item = {"data": 7} if entry is None else {"data": 7, "node_name": entry}
    items = [dict(sent), dict(sent)]
    outcomes: list[BaseException | None] = [None, None]

    def blocking() -> None:
        try:
            pipe(items[1])
        except BaseException as exc:  # noqa: BLE001 - judged below
            outcomes[1] = exc

    future = pipe.submit(items[0])
    caller = threading.Thread(target=blocking, name="prop-caller")
    caller.start()
    _wait_all([future])
    outcomes[0] = future.exception()
    caller.join(HANG)
    assert not caller.is_alive(), "a blocking call hung"
    for item, error in zip(items, outcomes, strict=True):
        if error is None:
            assert item.get("result", 7) == 7, item
        else:
            assert isinstance(error, ps.RequestError), f"{type(error).__name__}: {error}"
            assert item == sent, "a failed request changed the caller's dict"


@given(_configs())
@settings(max_examples=400)
def test_generated_configurations_build_a_working_pipe_or_say_where_they_are_wrong(
    generated: tuple[dict[str, Any], set[str]],
) -> None:
    """Building gives a pipe whose every entry answers (by ``submit`` and by a blocking call) with
    the data sent or a RequestError, or a ConfigError (UnknownNameError included) naming a node of
    the configuration and/or a key; nothing else is raised, nothing hangs, and once the pipe is
    closed (or was never built) no pipeserve thread is left."""
    config, names = generated
    with _no_thread_left():
        try:
            pipe = ps.pipe(config)
        except ps.ConfigError as err:
            event(f"{type(err).__name__} at key {err.key}")
            _check_located(err, names, _KEYS)
            return
        event(f"built, {len(pipe.entries)} entries")
        try:
            for entry in pipe.entries:
                _answer(pipe, entry if len(pipe.entries) > 1 else None)
        finally:
            pipe.close()


@given(
    count=st.integers(1, 4),
    failing=st.data(),
    fail_with=st.sampled_from(["runtime", "config"]),
    neighbour=st.sampled_from([None, "before", "after"]),
)
@settings(max_examples=30)
def test_an_instance_failing_to_initialise_closes_the_others(
    count: int, failing: st.DataObject, fail_with: str, neighbour: str | None
) -> None:
    """One of N instances fails in ``init`` (or none: index N): the pipe is not built, the error
    names the node (and the instance), every instance that was built is closed once, by the thread
    that built it, and no thread remains. Another node built before it is closed too."""
    index = failing.draw(st.integers(0, count), label="failing instance")
    node = {"backend": "PropLife", "instance_num": count, "fail_instance": index, "fail_with": fail_with}
    config: dict[str, Any] = {"life": node}
    if neighbour == "before":
        config = {"pre": {"backend": "PropLife", "instance_num": 2, "next": "life"}, "life": node}
    elif neighbour == "after":
        config = {"life": {**node, "next": "post"}, "post": {"backend": "PropLife", "instance_num": 2}}
    LIFE.reset()
    with _no_thread_left():
        if index == count:
            with ps.pipe(config) as pipe:
                assert pipe({"data": 3})["result"] == 3
        else:
            with pytest.raises(ps.ConfigError) as caught:
                ps.pipe(config)
            err = caught.value
            assert err.node == "life", str(err)
            if fail_with == "runtime":
                assert f"instance {index}" in str(err) and isinstance(err.__cause__, RuntimeError), str(err)
            else:
                assert err.key == "fail_instance", str(err)
    built = {(n, i) for n, i, _ in LIFE.inits}
    expected = {("life", i) for i in range(count) if i != index}
    if neighbour == "before" or (neighbour == "after" and index == count):
        expected |= {("pre" if neighbour == "before" else "post", i) for i in range(2)}
    assert built == expected
    assert sorted(LIFE.closes) == sorted(LIFE.inits), "each built instance is closed once, by its own thread"


def test_a_bad_bucket_edge_names_its_key() -> None:
    with _no_thread_left(), pytest.raises(ps.ConfigError) as caught:
        ps.pipe({"bucket_key": "data", "bucket_edges": "4,x"})
    assert (caught.value.node, caught.value.key) == ("main", "bucket_edges"), str(caught.value)


def test_a_config_error_found_after_the_nodes_started_leaves_no_thread() -> None:
    """(Until fixed, this leaves one idle daemon worker thread for the rest of the session: nothing
    outside the failed constructor can reach its node to close it.)"""
    LIFE.reset()
    with _no_thread_left(), pytest.raises(ps.ConfigError, match="trace_rate"):
        ps.pipe({"backend": "PropLife", "trace_rate": 2})
    assert sorted(LIFE.closes) == sorted(LIFE.inits)


def test_closing_a_pipe_closes_the_stages_of_a_composite() -> None:
    LIFE.reset()
    with _no_thread_left(), ps.pipe({"backend": "S[PropLife,PropLife]"}) as pipe:
        assert pipe({"data": 1})["result"] == 1
    assert len(LIFE.inits) == 2
    assert sorted(LIFE.closes) == sorted(LIFE.inits)


# ================================================================================ (b) graphs
# A graph spec: node name -> NodeSpec. Main nodes n0..nk (n0 the only root, the last the only
# sink); an optional jump target s0 (-> s1) for MapReduce and Jump nodes.
@dataclass(frozen=True)
class NodeSpec:
    backend: str
    preds: tuple[str, ...] = ()
    next: tuple[str, ...] = ()
    map: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] | None = None
    map_unnamed: bool = False  # written "[src:dst]" (the single predecessor)
    filter: str | None = None
    error_on: tuple[str, ...] = ()
    add: tuple[str, str] | None = None
    scheduling: Mapping[str, Any] = field(default_factory=dict)

    def config(self) -> dict[str, Any]:
        out: dict[str, Any] = {"backend": self.backend, **self.scheduling}
        if self.next:
            out["next"] = ",".join(self.next)
        if self.map is not None:
            out["map"] = ",".join(
                ("" if self.map_unnamed else source) + "[" + ",".join(f"{a}:{b}" for a, b in pairs) + "]"
                for source, pairs in self.map
            )
        if self.filter is not None:
            out["filter"] = self.filter
        if self.backend == "ValueError":
            out["error_on"] = ",".join(self.error_on)
        if self.add is not None:
            out["add"] = f"{self.add[0]}:{self.add[1]}"
        if self.backend in ("MapReduce", "Jump"):
            out["jump"] = "s0"
        return out


_SCHEDULING = st.fixed_dictionaries(
    {
        "instance_num": st.integers(1, 2),
        "max": st.integers(1, 4),
        "batching_timeout": st.sampled_from([0, 0, 1, 2]),
    }
)
_FILTERS = st.sampled_from([None, None, None, "Run", "Run", "Skip", "or", "Break", "swap", "Error"])


@st.composite
def _compute_spec(draw: st.DrawFn, name: str, kinds: list[str]) -> NodeSpec:
    backend = draw(st.sampled_from(kinds))
    return NodeSpec(
        backend=backend,
        error_on=tuple(draw(st.lists(st.sampled_from("0123456789"), min_size=1, max_size=2, unique=True))),
        add=(f"tag_{name}", name) if backend == "Add" else None,
        scheduling=draw(_SCHEDULING),
    )


@st.composite
def _graphs(draw: st.DrawFn) -> dict[str, NodeSpec]:
    count = draw(st.integers(1, 6))
    names = [f"n{i}" for i in range(count)]
    with_sub = draw(st.booleans())
    kinds = ["Identity", "PropInc", "PropInc", "ValueError", "Add", "Add"]
    kinds += ["MapReduce", "MapReduce", "Jump"] if with_sub else []
    preds: dict[str, list[str]] = {names[0]: []}
    for i in range(1, count):
        preds[names[i]] = draw(st.lists(st.sampled_from(names[:i]), min_size=1, max_size=2, unique=True))
    successors: dict[str, list[str]] = {name: [] for name in names}
    for name in names:
        for pred in preds[name]:
            successors[pred].append(name)
    for name in names[:-1]:  # the last node is the only sink
        if not successors[name]:
            successors[name].append(names[-1])
            preds[names[-1]].append(name)
    graph: dict[str, NodeSpec] = {}
    for i, name in enumerate(names):
        spec = draw(_compute_spec(name, kinds))
        mine = tuple(preds[name])
        map_: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] | None = None
        unnamed = False
        if len(mine) > 1 or (mine and draw(st.integers(0, 3)) == 0):
            first = draw(
                st.sampled_from(
                    [(("result", "data"),)] * 3
                    + [(("result", "data"), ("data", "result")), (("data", "data"),), (("nokey", "data"),)]
                )
            )
            entries = [(mine[0], first)]
            entries += [(p, (("result", f"from_{p}"),)) for p in mine[1:]]
            if i > 1 and "n0" not in mine and draw(st.booleans()):
                entries.append(("n0", (("data", "original"),)))  # any ancestor, not only a predecessor
            map_ = tuple(entries)
            unnamed = len(entries) == 1 and draw(st.booleans())
        graph[name] = replace(
            spec,
            preds=mine,
            next=tuple(draw(st.permutations(successors[name]))),
            map=map_,
            map_unnamed=unnamed,
            filter=draw(_FILTERS) if mine else None,
        )
    if with_sub:
        sub_kinds = ["Identity", "PropInc", "ValueError"]
        if draw(st.booleans()):
            graph["s0"] = replace(draw(_compute_spec("s0", sub_kinds)), next=("s1",))
            graph["s1"] = replace(
                draw(_compute_spec("s1", sub_kinds)), preds=("s0",), filter=draw(st.sampled_from([None, "or", "Skip"]))
            )
        else:
            graph["s0"] = draw(_compute_spec("s0", sub_kinds))
    return graph


# ----------------------------------------------------------------- the reference walk
# An outcome is ("ok", output dict) or ("err", (the node the RequestError names, text its message
# must hold: which sub-item failed, for an error from a sub-request)).
Outcome = tuple[str, Any]


@dataclass
class _Walk:
    sink: str
    outputs: dict[str, Item]
    pending: dict[str, int]
    running: dict[str, list[Outcome]]  # launched nodes -> their possible outcomes
    error: tuple[str, str] | None = None
    done: Outcome | None = None

    def copy(self) -> _Walk:
        return _Walk(self.sink, dict(self.outputs), dict(self.pending), dict(self.running), self.error, self.done)

    @property
    def over(self) -> bool:
        return self.done is not None or (self.error is not None and not self.running)

    @property
    def outcome(self) -> Outcome:
        if self.done is not None:
            return self.done
        assert self.error is not None
        return ("err", self.error)


def _dedupe(outcomes: list[Outcome]) -> list[Outcome]:
    seen: dict[str, Outcome] = {}
    for outcome in outcomes:
        seen.setdefault(repr(outcome), outcome)
    return list(seen.values())


class Reference:
    """Every outcome NOTE [walk] allows for one request, over all orders in which running nodes
    may finish. Backends: Identity, PropInc (data + 1), ValueError (error_on), Add (a key, and
    ``result = data`` unless there is one), MapReduce and Jump into s0."""

    def __init__(self, graph: Mapping[str, NodeSpec]) -> None:
        self.graph = graph

    def members(self, entry: str) -> list[str]:
        seen, todo = [entry], [entry]
        while todo:
            for following in self.graph[todo.pop()].next:
                if following not in seen:
                    seen.append(following)
                    todo.append(following)
        return seen

    def outcomes(self, entry: str, item: Item) -> list[Outcome]:
        members = self.members(entry)
        sink = next(name for name in members if not self.graph[name].next)
        pending = {name: sum(p in members for p in self.graph[name].preds) for name in members}
        states = self._launch(_Walk(sink, {}, pending, {}), entry, dict(item))
        found: list[Outcome] = []
        while states:
            state = states.pop()
            if state.over:
                found.append(state.outcome)
                continue
            for name, possible in state.running.items():
                for outcome in possible:
                    after = state.copy()
                    del after.running[name]
                    if outcome[0] == "ok":
                        states.extend(self._completed(after, name, outcome[1]))
                    else:
                        states.extend(self._failed(after, outcome[1]))
        return _dedupe(found)

    # The walk's rules, each returning the possible states that follow.
    def _failed(self, state: _Walk, node: tuple[str, str]) -> list[_Walk]:
        if state.error is None:
            state.error = node
        if not state.running and state.done is None:
            state.done = ("err", state.error)
        return [state]

    def _finish(self, state: _Walk, output: Item) -> list[_Walk]:
        if state.done is None:
            state.done = ("ok", output)
        return [state]

    def _completed(self, state: _Walk, name: str, output: Item) -> list[_Walk]:
        if state.done is not None or state.error is not None:
            return self._failed(state, state.error) if state.error is not None else [state]
        state.outputs[name] = output
        if name == state.sink:
            return self._finish(state, output)
        ready = []
        for following in self.graph[name].next:
            state.pending[following] -= 1
            if not state.pending[following]:
                ready.append(following)
        return self._ready_all(state, ready)

    def _ready_all(self, state: _Walk, names: list[str]) -> list[_Walk]:
        states = [state]
        for name in names:
            following: list[_Walk] = []
            for current in states:
                if current.done is not None:
                    following.append(current)
                    continue
                if current.error is not None:
                    # NOTE [walk]: the first error stops new nodes from starting. The executor
                    # still runs the filters of nodes made ready together with the failing one
                    # (see test_a_sibling_of_a_failed_node_does_not_start): both are allowed here.
                    following.append(current.copy())
                following.extend(self._ready(current, name))
            states = following
        return states

    def _ready(self, state: _Walk, name: str) -> list[_Walk]:
        spec = self.graph[name]
        if spec.map is None:
            item = dict(state.outputs[spec.preds[0]])
        else:
            item = {}
            for source, pairs in spec.map:
                for key, target in pairs:
                    if key in state.outputs[source]:
                        item[target] = state.outputs[source][key]
            if "data" not in item:
                return self._failed(state, (name, ""))
        chosen = spec.filter or ("swap" if len(spec.preds) == 1 and spec.map is None else "Run")
        if chosen == "swap":
            if "result" not in item:
                return self._finish(state, item)
            item["data"] = item.pop("result")
            chosen = "Run"
        elif chosen == "or":
            chosen = "Skip" if "result" in item else "Run"
        if chosen == "Skip":
            return self._completed(state, name, item)
        if chosen == "Break":
            return self._finish(state, item)
        if chosen == "Error":
            return self._failed(state, (name, ""))
        return self._launch(state, name, item)

    def _launch(self, state: _Walk, name: str, item: Item) -> list[_Walk]:
        spec = self.graph[name]
        if spec.backend in ("MapReduce", "Jump"):
            return self._fan_out(state, name, item)
        state.running[name] = [self._backend(name, item)]
        return [state]

    def _backend(self, name: str, item: Item) -> Outcome:
        spec = self.graph[name]
        out = dict(item)
        if spec.backend == "PropInc":
            try:
                out["result"] = _increment(out["data"])
            except TypeError:
                return ("err", (name, ""))
        elif spec.backend == "ValueError":
            if str(out["data"]) in spec.error_on:
                return ("err", (name, ""))
            out["result"] = out["data"]
        elif spec.backend == "Add":
            assert spec.add is not None
            out[spec.add[0]] = spec.add[1]
            out.setdefault("result", out["data"])
        else:
            out["result"] = out["data"]
        return ("ok", out)

    def _fan_out(self, state: _Walk, name: str, item: Item) -> list[_Walk]:
        if self.graph[name].backend == "Jump":
            children = [self.outcomes("s0", dict(item))]
        elif not isinstance(item.get("data"), (list, tuple)):
            return self._failed(state, (name, ""))
        elif not item["data"]:
            return self._completed(state, name, {**item, "result": []})
        else:
            children = [self.outcomes("s0", {**item, "data": value}) for value in item["data"]]
        possible = []
        for combination in itertools.product(*children):
            errors = [(index, outcome[1]) for index, outcome in enumerate(combination) if outcome[0] == "err"]
            if errors:  # the lowest failing index, named in the message; the node stays the child's
                index, (node, _) = errors[0]
                possible.append(("err", (node, f"sub-item {index} of {len(combination)}")))
            elif self.graph[name].backend == "Jump":
                possible.append(combination[0])
            else:
                possible.append(("ok", {**item, "result": [outcome[1].get("result") for outcome in combination]}))
        state.running[name] = _dedupe(possible)
        return [state]


# ----------------------------------------------------------------- the property
_INTS = st.integers(0, 5)
_PRIORITY = st.sampled_from([0, 0, 1, 2])


def _items(lists: bool) -> st.SearchStrategy[list[Item]]:
    """Items with ``data`` (lists of ints for MapReduce, else mostly ints) and a ``_priority`` at
    times."""
    data = st.one_of(_INTS, st.lists(_INTS, max_size=3), st.lists(_INTS, min_size=1, max_size=3)) if lists else _INTS
    item = st.builds(lambda d, rank: {"data": d, **({"_priority": rank} if rank else {})}, data, _PRIORITY)
    return st.lists(item, min_size=1, max_size=8)


@st.composite
def _graphs_and_items(draw: st.DrawFn) -> tuple[dict[str, NodeSpec], list[Item]]:
    graph = draw(_graphs())
    return graph, draw(_items(any(spec.backend == "MapReduce" for spec in graph.values())))


def _pipe_config(graph: Mapping[str, NodeSpec]) -> dict[str, Any]:
    return {name: spec.config() for name, spec in graph.items()}


def _run_items(pipe: ps.Pipe, items: list[Item], how: str) -> list[BaseException | None]:
    """Send every item (as ``how`` says) and return each one's error, or None on success."""
    if how == "submit":
        futures = [pipe.submit(item) for item in items]
    elif how == "submit_many":
        futures = pipe.submit_many(items)
    else:
        pool = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="prop-caller")
        try:
            futures = [pool.submit(pipe, item) for item in items]
            _wait_all(futures)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
    _wait_all(futures)
    errors = [future.exception() for future in futures]
    for future, item, error in zip(futures, items, errors, strict=True):
        if error is None:
            assert future.result() is item
    return errors


@given(_graphs_and_items(), st.sampled_from(["submit", "submit_many", "blocking"]))
@settings(max_examples=300)
def test_generated_graphs_give_each_request_exactly_one_expected_outcome(
    generated: tuple[dict[str, NodeSpec], list[Item]], how: str
) -> None:
    """Items sent together (``submit``, ``submit_many`` or blocking calls from four threads): each
    request gets exactly one outcome (its future resolves, an observer hears of it once); a success
    leaves the caller's dict equal to an output the reference allows, an error is a RequestError
    naming a node (and the failing sub-item) the reference allows and leaves the dict untouched;
    nothing hangs and no thread is left."""
    graph, items = generated
    if "s0" in graph and not any(spec.backend in ("MapReduce", "Jump") for spec in graph.values()):
        items = [{**item, "node_name": "n0"} for item in items]  # s0 is an entry too
    reference = Reference(graph)
    expected = [reference.outcomes("n0", {k: v for k, v in item.items() if k != "result"}) for item in items]
    sent = [dict(item) for item in items]
    observed: list[tuple[str, BaseException | None]] = []
    lock = threading.Lock()

    def observe(entry: str, seconds: float, error: BaseException | None) -> None:
        with lock:
            observed.append((entry, error))

    with _no_thread_left():
        pipe = ps.pipe(_pipe_config(graph))
        try:
            assert pipe.entries[0] == "n0" and len(pipe.entries) == 1 + ("node_name" in items[0])
            pipe.add_observer(observe)
            errors = _run_items(pipe, items, how)
        finally:
            pipe.close()
        assert pipe.pending == 0
    assert len(observed) == len(items), "each request is observed exactly once"
    assert sorted(e is None for _, e in observed) == sorted(e is None for e in errors)
    event(f"{round(4 * sum(e is None for e in errors) / len(errors)) * 25}% succeeded")
    event(f"{max(map(len, expected))} outcomes allowed")
    for item, original, error, allowed in zip(items, sent, errors, expected, strict=True):
        if error is None:
            assert ("ok", item) in allowed, f"{original} gave {item}; allowed: {allowed}"
        else:
            assert isinstance(error, ps.RequestError), f"{type(error).__name__}: {error}"
            assert item == original, "a failed request changed the caller's dict"
            assert any(
                kind == "err" and where[0] == error.node and where[1] in str(error) for kind, where in allowed
            ), f"{original} failed at {error.node!r} ({error}); allowed: {allowed}"


def test_a_sibling_of_a_failed_node_does_not_start() -> None:
    """y's successors are c (whose filter fails the item) then b (whose filter breaks), while x, in
    another branch, is still running: x waits until b's filter has run (at most 2 s, which is what
    a fixed executor costs here), so the order is deterministic."""
    BREAK_SEEN.clear()
    config = {
        "n0": {"next": "x,y"},
        "x": {"backend": "PropWaitForBreak", "next": "sink"},
        "y": {"next": "c,b"},
        "c": {"filter": "Error", "next": "sink"},  # fails first...
        "b": {"filter": "PropSignalBreak", "next": "sink"},  # ...so b must not start
        "sink": {"map": "x[result:data]"},
    }
    with _no_thread_left(), ps.pipe(config) as pipe:
        future = pipe.submit({"data": 1})
        _wait_all([future])
        assert isinstance(future.exception(), ps.FilterError), f"b started after c failed: {future.exception()!r}"


BREAK_SEEN = threading.Event()


@ps.register_filter("PropSignalBreak", replace=True)
def _signal_break(item: Item) -> ps.Status:
    BREAK_SEEN.set()
    return ps.Status.Break


@ps.register_backend("PropWaitForBreak", replace=True)
def _wait_for_break(items: list[Item]) -> list[Any]:
    BREAK_SEEN.wait(2.0)
    return [item["data"] for item in items]


# ================================================================================ (c) batch policy
_BIRTHS = itertools.count()


class _Req:
    finished = False
    deadline = None
    trace = None
    span = 0

    def __init__(self) -> None:
        self.birth = next(_BIRTHS)  # each task its own request, in the order made

    def expired(self, now: float) -> bool:
        return False

    def fail(self, error: BaseException) -> bool:
        return True


def _task(data: int, bucket: Any, priority: int) -> Task:
    return Task({"data": data}, _Req(), lambda task, error: None, priority=priority, bucket=bucket)


_ARRIVALS = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from([None, None, "a", "b"]), st.sampled_from([0, 0, 0, 1, 2])),
    min_size=1,
    max_size=12,
)


_QUEUED = st.lists(
    st.tuples(st.integers(0, 8), st.sampled_from([None, None, "a", "b"]), st.sampled_from([0, 0, 0, 1, 2])),
    min_size=1,
    max_size=8,
)


@st.composite
def _ranges(draw: st.DrawFn) -> tuple[int, int]:
    high = draw(st.sampled_from([1, 2, 3, 4, 6, 8, 10, 12]))
    return draw(st.sampled_from([1, 1, 1, min(2, high), high])), high


@given(_QUEUED, _ranges(), st.integers(0, 20), st.integers(0, 12), st.sampled_from([0, 0, 1, 3]))
@settings(max_examples=600)
def test_decide_respects_max_min_window_and_nothing_coming(
    arrivals: list[tuple[int, Any, int]], batch: tuple[int, int], timeout: int, later: int, upstream: int
) -> None:
    """One decision on a generated queue (buckets, priorities) at a generated moment: a release is
    one bucket's, within ``min..max`` (``max`` when full, only once the window closed for
    ``timeout``); a wait is positive and ends no later than the oldest item's window; nothing is
    held when nothing can come (upstream 0) or a full batch is there; with one bucket, a releasable
    batch is never left waiting for a change."""
    low, high = batch
    queue = BatchQueue()
    for index, (at, bucket, priority) in enumerate(sorted(arrivals, key=lambda a: a[0])):
        queue.push(_task(index, bucket, priority), at)
    sizes = {bucket: queue.bucket_size(bucket) for _, bucket, _ in arrivals}
    now = max(at for at, _, _ in arrivals) + later
    remaining = queue.oldest_enqueued() + timeout - now  # of the oldest item's window
    decision = decide(queue, now, max_batch=high, min_batch=low, timeout=timeout, upstream=upstream)
    releasable = any(size >= low for size in sizes.values())
    event(decision.reason or ("wait" if decision.wait is not None else "wait for a change"))
    if decision.take:
        assert decision.wait is None
        assert low <= decision.take <= high, "a batch within the instance's range"
        assert decision.take <= sizes[decision.bucket]
        assert decision.reason in ("full", "nothing_coming", "timeout")
        if decision.reason == "full":
            assert decision.take == high
        elif decision.reason == "timeout":
            assert remaining <= 0, "released for the window before it closed"
        taken = queue.take(decision.bucket, decision.take)
        assert len(taken) == decision.take and {t.bucket for t in taken} == {decision.bucket}
        return
    assert not (releasable and upstream <= 0), "held items although nothing can come"
    assert not any(size >= high for size in sizes.values()), "held a full batch"
    if decision.wait is not None:
        assert 0 < decision.wait <= remaining, "waits past the oldest item's window"
    elif releasable and len(sizes) == 1:
        pytest.fail("waits for a change with a batch it could release")


def test_a_closed_window_releases_a_releasable_bucket_behind_a_small_head() -> None:
    queue = BatchQueue()
    queue.push(_task(0, "a", 0), 0)  # the head: one item, fewer than min
    queue.push(_task(1, "b", 0), 1)
    queue.push(_task(2, "b", 0), 2)  # bucket b: a batch of min items
    decision = decide(queue, 100, max_batch=4, min_batch=2, timeout=5, upstream=1)
    assert decision.take == 2 or (decision.wait is not None and decision.wait <= 0)


@given(
    _ARRIVALS,
    st.integers(1, 5),
    st.integers(0, 12),
    st.integers(0, 2),
    st.integers(0, 40),
)
@settings(max_examples=300)
def test_one_instance_on_a_fake_clock_releases_every_item_once_within_its_window(
    arrivals: list[tuple[int, Any, int]], high: int, timeout: int, phantom: int, phantom_until: int
) -> None:
    """Drive ``decide`` as an always-idle instance (min 1) would, on an integer clock: items arrive
    as generated; ``phantom`` items are in flight upstream until ``phantom_until`` and never come.
    Every item is released exactly once, in batches of one bucket of at most ``max``, no later than
    its window closes, and at once when nothing more can come."""
    schedule = sorted(arrivals, key=lambda a: a[0])
    last_arrival = schedule[-1][0]

    def upstream(now: int) -> int:
        return sum(at > now for at, _, _ in schedule) + (phantom if now < phantom_until else 0)

    queue = BatchQueue()
    released: dict[int, int] = {}
    now, arrived = 0, 0
    for _ in range(10_000):
        while arrived < len(schedule) and schedule[arrived][0] <= now:
            at, bucket, priority = schedule[arrived]
            queue.push(_task(arrived, bucket, priority), at)
            arrived += 1
        if arrived == len(schedule) and not queue.size:
            break
        decision = decide(queue, now, max_batch=high, timeout=timeout, upstream=upstream(now))
        if decision.take:
            batch = queue.take(decision.bucket, decision.take)
            assert 1 <= len(batch) <= high and len({t.bucket for t in batch}) == 1
            for task in batch:
                assert task.item["data"] not in released, "released twice"
                released[task.item["data"]] = now
            continue
        moments = [schedule[arrived][0]] if arrived < len(schedule) else []
        if now < phantom_until and phantom:
            moments.append(phantom_until)
        if decision.wait is not None:
            assert decision.wait > 0
            moments.append(now + decision.wait)
        assert moments or not queue.size, "items held with nothing to wait for"
        assert min(moments) > now
        now = int(min(moments))
    else:
        pytest.fail("the simulation did not end")
    assert sorted(released) == list(range(len(schedule)))
    nothing_from = max(last_arrival, phantom_until if phantom else 0)
    for index, (at, _, _) in enumerate(schedule):
        assert released[index] <= at + timeout, "waited past its window"
        assert released[index] <= max(at, nothing_from), "held although nothing could come"
