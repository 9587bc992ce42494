"""The plan of a run: one node per distinct state, what the store holds, and the work left.

:func:`build` turns the experiment's promises into plan nodes (one per distinct id; the tags
of duplicate promises merged), :func:`survey` marks what the store already holds and what
each subtree still needs, and :func:`segment` cuts a chain of states to compute one after the
other (a task for an executor). :func:`to_wire` and :func:`from_wire` are the one
serialisation of a segment, for a worker process.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import ExperimentDefinitionError
from .promise import ExperimentStatePromise, code_now
from .recipe import Function, Recipe
from .record import RecipeInfo, Status
from .store import Store
from .store.base import Survey
from .store.table import paused_gc

__all__ = [
    "SIBLINGS_COMPARED",
    "PlanNode",
    "build",
    "from_wire",
    "segment",
    "survey",
    "tally",
    "to_wire",
]


_NO_FUNCTIONS: Mapping[str, Any] = MappingProxyType({})


def _no_functions() -> Mapping[str, Any]:
    """The one empty, read-only mapping every node without Functions shares."""
    return _NO_FUNCTIONS


#: How many stored siblings a state to compute is compared with, at most: the newest of each
#: recipe code identity, newest first (what a run says when it computes a state again).
SIBLINGS_COMPARED = 3


@dataclass(eq=False, slots=True)
class PlanNode:
    """One distinct state of the plan.

    Attributes:
        sha: The state's id.
        parent: The parent node (None for a root, or for the first node of a worker's chain
            whose parent is stored).
        recipe: The recipe that computes it (None for a root or a state stored before).
        info: How its record describes the recipe (worked out when first asked for: a stored
            state, most of a rerun's, never needs it).
        is_root: Whether it is a root (computed by ``initialize_state``).
        arguments: A root's ``spawn_new_tree`` arguments.
        tags: Every tag any promise of this state was defined with.
        functions: Functions to run on it, by result name.
        function_codes: Their code identities, by result name.
        children: Child nodes, in definition order.
        stored: Whether the store holds it.
        pending: Names of the Functions whose results are missing or outdated.
        new_tags: Tags its record and notes do not have yet.
        work: Whether anything in its subtree must be done.
        consumers: How many children will take its state in memory (plus one if kept).
        keep: Whether the caller wants the state back (``promise.get()``).
        siblings: For a state to compute: stored children of its parent made by the same
            recipe class (the newest of each code identity, newest first), to say what
            differs from them (filled by :func:`survey`); ``twin`` first when there is one.
        twin: For a state to compute: the newest stored sibling with the same parameter
            values (any code identity), the one a run compares it with first (None if none).
        cached: Promises of stored children with nothing to do (leaves without Functions
            or tags) that a run's plan leaves out (:func:`build` with a survey): counted as
            cached and in :meth:`size`, never walked. A 100,000-state rerun is mostly these.
    """

    sha: str
    parent: PlanNode | None
    recipe: Any = None
    _info: RecipeInfo | None = None
    is_root: bool = False
    arguments: dict[str, Any] | None = None
    # Empty tuples until there is something to hold: a rerun plans 100,000 nodes, mostly
    # untagged, stored leaves, and every list would be one more object for the collector.
    tags: list[str] | tuple[str, ...] = ()
    # Shared and read-only until a Function is applied (most nodes have none): two dicts per
    # node were 200,000 objects in a 100,000-state rerun.
    functions: Mapping[str, Any] = field(default_factory=_no_functions)
    function_codes: Mapping[str, str] = field(default_factory=_no_functions)
    children: list[PlanNode] | tuple[PlanNode, ...] = ()
    stored: bool = False
    pending: list[str] | tuple[str, ...] = ()
    new_tags: list[str] | tuple[str, ...] = ()
    work: bool = False
    consumers: int = 0
    keep: bool = False
    promise: Any = field(default=None, repr=False)
    siblings: tuple[str, ...] = ()
    twin: str | None = None
    cached: list[ExperimentStatePromise] | tuple[()] = ()

    @property
    def info(self) -> RecipeInfo | None:
        if self._info is None and self.promise is not None:
            self._info = self.promise.recipe_info()
        return self._info

    @info.setter
    def info(self, value: RecipeInfo | None) -> None:
        self._info = value

    def describe(self) -> str:
        """``root``, ``stored state`` or the recipe's repr."""
        if self.is_root:
            return "root"
        if self.recipe is None:
            return "stored state"
        return repr(self.recipe)

    def size(self) -> int:
        """How many nodes its subtree holds, itself included."""
        total, stack = 0, [self]
        while stack:
            node = stack.pop()
            total += 1 + len(node.cached)
            stack.extend(node.children)
        return total


def build(
    roots: Iterable[ExperimentStatePromise],
    path: set[int] | None = None,
    survey: Survey | None = None,
) -> list[PlanNode]:
    """One node per distinct id under ``roots`` (only promises in ``path`` if given).

    Args:
        roots: The promises to plan from.
        path: Only these promises (by ``id``), for a run of one path (``promise.get()``).
        survey: A run's snapshot of the store (``store.survey()``). With it, a leaf promise
            without Functions or tags whose state is stored (done or pruned) gets no node of
            its own: its parent's node lists it in ``cached`` (and :func:`survey` checks its
            files, giving it a node after all if they are missing). Without it (a preview,
            ``exp.plan()``), every state has a node.

    Raises:
        ExperimentDefinitionError: Two different Functions with one name on one state; a
            class changed after states were defined from it.
        HashingError: A recipe property or argument cannot be hashed.
    """
    with paused_gc():  # 100,000 nodes at once, none in a cycle the collector must find
        return _build(roots, path, survey if path is None else None)


def _build(
    roots: Iterable[ExperimentStatePromise], path: set[int] | None, survey: Survey | None
) -> list[PlanNode]:
    nodes: dict[str, PlanNode] = {}
    # stored leaves left out of the plan: id -> the node whose ``cached`` lists its promise
    left_out: dict[str, PlanNode] = {}
    status_of = survey.status_of if survey is not None else None
    stored_statuses = (Status.DONE, Status.PRUNED)
    plan_roots: list[PlanNode] = []
    # Depth-first, in definition order: one iterator per level, each resumed where it
    # stopped (a parent's leaves are taken in one tight loop, no stack entry each).
    levels: list[Iterator[ExperimentStatePromise]] = [iter(list(roots))]
    parents: list[PlanNode | None] = [None]
    # class -> its code identity now, worked out once per class per run (cached fingerprint
    # checks); each promise's recorded one is compared with it.
    codes_now: dict[type, str] = {}
    while levels:
        parent = parents[-1]
        for promise in levels[-1]:
            if path is not None and id(promise) not in path:
                continue
            sha = promise.sha()
            node = nodes.get(sha)
            if node is None:
                # One id, one code identity: a duplicate promise has the node's.
                defined = promise.defined_code()
                if defined is not None:
                    cls, code = defined
                    now = codes_now.get(cls)
                    if now is None:
                        now = codes_now[cls] = code_now(cls)
                    if now != code:
                        raise _edited_after_definition(cls, sha)
                if (promise.reads_code or promise.is_root) and promise.id_now() != sha:
                    raise _values_changed(promise, sha)
                if status_of is not None and parent is not None:
                    if not (promise.children or promise.functions or promise.tags):
                        if sha in left_out:
                            continue  # a duplicate of a stored leaf left out: one state
                        if status_of(sha) in stored_statuses:
                            left_out[sha] = parent
                            if isinstance(parent.cached, list):
                                parent.cached.append(promise)
                            else:
                                parent.cached = [promise]
                            continue
                    elif sha in left_out:  # it does have something to do after all
                        _put_back(left_out.pop(sha), sha)
                node = nodes[sha] = _node_of(promise, sha, parent)
                if parent is None:
                    plan_roots.append(node)
            elif promise.tags:
                tags = list(node.tags)
                for tag in promise.tags:
                    if tag not in tags:
                        tags.append(tag)
                node.tags = tags
            if promise.functions and path is None:
                _add_functions(node, promise.functions)
            if promise.children:  # its subtree next, then the rest of this level
                levels.append(iter(promise.children))
                parents.append(node)
                break
        else:
            levels.pop()
            parents.pop()
    return plan_roots


def _node_of(promise: ExperimentStatePromise, sha: str, parent: PlanNode | None) -> PlanNode:
    """The node of ``promise``'s state, added to ``parent``'s children."""
    node = PlanNode(
        sha,
        parent,
        promise.recipe,
        None,
        promise.is_root,
        promise.arguments,
        list(dict.fromkeys(promise.tags)) if promise.tags else (),
        promise=promise,
    )
    if parent is not None:
        if isinstance(parent.children, list):
            parent.children.append(node)
        else:
            parent.children = [node]
    return node


def _put_back(parent: PlanNode, sha: str) -> None:
    """Take the promise of state ``sha`` out of ``parent.cached`` (it gets a node)."""
    assert isinstance(parent.cached, list)
    parent.cached = [promise for promise in parent.cached if promise.sha() != sha]


def _add_functions(node: PlanNode, functions: Iterable[Function]) -> None:
    """Give ``node`` the Functions a promise of its state was given.

    Raises:
        ExperimentDefinitionError: Two different Functions with one name on one state.
    """
    if not node.functions:
        node.functions, node.function_codes = {}, {}
    named, codes = node.functions, node.function_codes
    assert isinstance(named, dict) and isinstance(codes, dict)
    for function in functions:
        code = function.code_identity()
        known = codes.get(function.name)
        if known is not None and known != code:
            raise ExperimentDefinitionError(
                f"Two different Functions named `{function.name}` were applied to state "
                f"{node.sha[:12]}. Give them distinct names with Function(op, name=...).",
                name=function.name,
            )
        named[function.name] = function
        codes[function.name] = code


def _values_changed(promise: ExperimentStatePromise, sha: str) -> ExperimentDefinitionError:
    if promise.recipe is None:
        what = "the root"
        held = "a spawn_new_tree() argument"
    else:
        what = f"{type(promise.recipe).__name__}(...)"
        held = f"a property of {type(promise.recipe).__name__}"
    return ExperimentDefinitionError(
        f"State {sha[:12]} ({what}) was defined from values that changed since: {held} is "
        "a function, class or recipe whose code (or a global it reads) was edited in this "
        "process, or an object that was changed in place. Running now would store what the "
        "new values compute under the id of the old ones. Define the tree again (re-run the "
        "code or notebook cell that spawns the roots and applies the recipes) and run that "
        "Experiment.",
        sha=sha,
    )


def _edited_after_definition(cls: type, sha: str) -> ExperimentDefinitionError:
    what = "recipe class" if issubclass(cls, Recipe) else "state class"
    name = f"{cls.__module__}.{cls.__qualname__}"
    return ExperimentDefinitionError(
        f"The {what} `{name}` changed after states were defined from it (a method, class "
        f"attribute or global its code reads was edited in this process; state {sha[:12]} was "
        "defined before): running now would compute the new code under the ids of the old "
        f"one. Define the tree again (re-run the code or notebook cell that spawns the roots "
        f"and applies the recipes) and run that Experiment.",
        class_name=name,
        sha=sha,
    )


def survey(roots: list[PlanNode], store: Store) -> set[str]:
    """Decide, for every node, whether it is stored and what work lies in its subtree.

    One snapshot of the store answers for every node (no per-state read). A state counts as
    stored only if its files are still there at their recorded sizes (``store.check``: a stat
    per file, none for states kept inside the logs); one whose files are missing or truncated
    is computed again by this run. A pruned state counts as stored: it is recomputed only if
    something below it, or a Function on it, needs it. Nothing is written: a plan
    (``exp.plan()``) surveys the same way as a run.

    Returns:
        The ids of the plan's states that failed in an earlier run.
    """
    with paused_gc():
        return _survey(roots, store)


def _survey(roots: list[PlanNode], store: Store) -> set[str]:
    table = store.survey()
    order: list[PlanNode] = []  # every node after its ancestors
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        if node.children:
            stack.extend(node.children)
    shas = [node.sha for node in order]
    statuses = table.statuses_of(shas)
    done, pruned = Status.DONE, Status.PRUNED
    stored = [sha for sha, status in zip(shas, statuses, strict=True) if status is done]
    failed = {sha for sha, status in zip(shas, statuses, strict=True) if status is Status.FAILED}
    left_out = [promise.sha() for node in order for promise in node.cached]
    problems = store.check([*stored, *left_out]) if stored or left_out else {}
    if problems and left_out:
        # A stored leaf left out of the plan whose files are missing: it gets its node now,
        # and is computed again like any other such state.
        for node in list(order):
            damaged = [promise for promise in node.cached if promise.sha() in problems]
            if damaged:
                node.cached = [promise for promise in node.cached if promise not in damaged]
                for promise in damaged:
                    order.append(_node_of(promise, promise.sha(), node))
                    statuses.append(table.status_of(promise.sha()))
    # One pass, children before parents: what is stored, what is pending, what has work.
    for node, status in zip(reversed(order), reversed(statuses), strict=True):
        recorded = status is done or status is pruned
        node.stored = recorded and not (problems and node.sha in problems)
        if node.tags and recorded:
            known = table.tags_of(node.sha)
            node.new_tags = [tag for tag in node.tags if tag not in known]
        if node.functions:
            node.pending = _pending(node, recorded, table, store)
        children = node.children
        if children:  # (most nodes are leaves: no generator each for them)
            node.consumers = int(node.keep) + sum(1 for child in children if not child.stored)
            node.work = (
                not node.stored
                or bool(node.pending)
                or bool(node.new_tags)
                or node.keep
                or any(child.work for child in children)
            )
        else:
            node.consumers = int(node.keep)
            node.work = not node.stored or bool(node.pending or node.new_tags) or node.keep
    _find_siblings(order, table)
    return failed


def _pending(node: PlanNode, recorded: bool, table: Any, store: Store) -> list[str]:
    """The names of ``node``'s Functions whose results are missing, failed, made by other
    code, or damaged (``recorded``: whether the state has a record)."""
    pending = []
    for name in node.functions:
        summary = table.result_of(node.sha, name) if recorded else None
        if (
            summary is None
            or summary[2]  # it failed
            or summary[1] != node.function_codes[name]
            or (not summary[3] and _result_damaged(store, node.sha, name))
        ):
            pending.append(name)
    return pending


def _find_siblings(order: list[PlanNode], table: Any) -> None:
    """Give each state to compute the stored siblings it could have been (same parent, same
    recipe class). Nothing is read when nothing is to be computed (a cached rerun)."""
    computing = [
        node
        for node in order
        if not node.stored and node.parent is not None and node.recipe is not None
    ]
    if not computing:
        return
    found = table.latest_children(
        {node.parent.sha for node in computing if node.parent}, SIBLINGS_COMPARED
    )
    if not found:
        return
    # The sibling with the same parameters (a code or global edit made this one new) is the
    # one to compare with; the newest few of each code identity need not hold it.
    queries = []
    for node in computing:
        try:
            info = node.info
        except Exception:  # the run reports such a recipe; only the comparison is lost here
            continue
        if node.parent is not None and info is not None:
            queries.append((node, (node.parent.sha, type(node.recipe).__qualname__, info.params)))
    twins = table.same_params_children([query for _, query in queries])
    for (node, _), twin in zip(queries, twins, strict=True):
        if twin is not None and twin != node.sha:
            node.twin = twin
    for node in computing:
        assert node.parent is not None
        ids = found.get((node.parent.sha, type(node.recipe).__qualname__), ())
        twin = node.twin
        node.siblings = tuple(state_id for state_id in ids if state_id not in (node.sha, twin))
        if twin is not None:
            node.siblings = (twin, *node.siblings)


def _result_damaged(store: Store, sha: str, name: str) -> bool:
    """Whether a recorded side-payload result can no longer be loaded (it is recomputed)."""
    entry = store.read_notes(sha).results.get(name)
    return entry is None or store.result_problem(entry) is not None


def tally(roots: Iterable[PlanNode]) -> tuple[int, int, int]:
    """One pass over the plan: ``(stored, to compute, pending Functions)``.

    Stored states are counted everywhere; states to compute and pending Functions only where
    work is left: a node that has work and whose ancestors all have work.
    """
    stored = to_compute = functions = 0
    stack = [(root, True) for root in roots]
    while stack:
        node, working = stack.pop()
        stored += node.stored + len(node.cached)
        working = working and node.work
        if working:
            to_compute += not node.stored
            functions += len(node.pending)
        if node.children:
            stack.extend([(child, working) for child in node.children])
    return stored, to_compute, functions


def segment(start: PlanNode) -> list[PlanNode]:
    """The chain from ``start`` down to the first state where the work branches (or ends)."""
    chain = [start]
    while True:
        working = [child for child in chain[-1].children if child.work]
        if len(working) != 1:
            return chain
        chain.append(working[0])


_WIRE_FIELDS = (
    "sha",
    "recipe",
    "info",
    "is_root",
    "arguments",
    "tags",
    "functions",
    "function_codes",
    "pending",
    "new_tags",
    "stored",
)


def to_wire(chain: list[PlanNode]) -> dict[str, Any]:
    """What a worker needs to compute a segment: its nodes as plain data, the parent's id and
    the size of the subtree below its last node."""
    return {
        "parent": chain[0].parent.sha if chain[0].parent else None,
        "nodes": [{name: _plain(getattr(node, name)) for name in _WIRE_FIELDS} for node in chain],
        "below": chain[-1].size() - 1,
    }


def _plain(value: Any) -> Any:
    """A node's field as it travels: a read-only mapping as a dict (it pickles)."""
    return dict(value) if isinstance(value, MappingProxyType) else value


def from_wire(wire: dict[str, Any]) -> tuple[PlanNode | None, list[PlanNode]]:
    """The parent (stored) and the chain of nodes of a segment sent by :func:`to_wire`."""
    parent = PlanNode(wire["parent"], None, stored=True) if wire["parent"] else None
    chain: list[PlanNode] = []
    for item in wire["nodes"]:
        fields = dict(item)
        fields["_info"] = fields.pop("info")
        node = PlanNode(parent=chain[-1] if chain else parent, work=True, **fields)
        if chain:
            chain[-1].children = [node]
        chain.append(node)
    for node in chain:
        node.consumers = sum(1 for child in node.children if not child.stored)
    return parent, chain
