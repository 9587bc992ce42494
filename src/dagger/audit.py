"""Audit: does a stored state reproduce? Recompute it from its stored parent and compare.

For each audited state, :func:`audit` loads its parent from the store, runs its recipe again (a
root: ``initialize_state`` with its recorded arguments) in a scratch area, and compares every
attribute of the result with the stored state (:func:`dagger.compare.compare_states`: tensors
and arrays bitwise or within ``rtol``/``atol``, other values by their canonical encoding). The
stored states are never replaced:

* the recomputed state goes through what a stored one went through (its ``save_pre_hooks``,
  the pickling with large buffers as blobs, its ``load_post_hooks``), into a scratch
  :class:`~dagger.store.DirectoryStore` in a temporary folder (``TMPDIR``) that is deleted as
  soon as the state is compared: on disk rather than in memory, so that a large state is not
  held twice more in memory;
* ``state.experiment_object`` of the recomputed states loads stored states (the parent,
  ``load_root()``) from the real store, read only, and its ``directory`` is a temporary folder,
  so a recipe that writes files beside the experiment writes them there;
* the only write to the store is the audit's outcome in each audited state's notes
  (:class:`~dagger.record.AuditNote`: ``reproduced``, ``differs`` or ``error``), which tables
  show in an ``audit`` column.

The process-wide random generators (``random``, ``numpy.random``, ``torch``'s default ones,
CUDA's included) are set to fresh random states before each recomputation and put back after
it. A recipe that draws from them without seeding them itself depends on whatever ran before
it in the process (in a run: the states computed before it, which caching changes from one run
to the next), so it is flagged whatever the order of the audit; a recipe that seeds them, or
uses its own seeded generator, reproduces.

Where the recipe comes from: the script that defined the tree, when the state is part of it (the
recipe snapshot taken when it was applied); otherwise it is rebuilt from the record (module,
class, parameters): ``cls(**params)``, else ``cls.__new__(cls)`` with the parameters set as
attributes, and used only if it gives back the state's id (same class, code and parameters).
A recipe that cannot be rebuilt that way (defined in a script, code changed since, parameters
that are not plain JSON values) is reported, with how to audit from the script instead.

Environment: the report carries the auditing process's environment
(:func:`dagger.environment.capture_environment`), and each audited state the differences
between the environment its record holds (the one it was computed in) and the auditing one
(with the device the recomputation ran on), next to its value differences. A record written
before dagger recorded environments is compared on what it holds (the dagger version).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from ._compat import call_method
from .compare import StateComparison, compare_states
from .environment import GIT_KEYS, capture_environment, environment_changes
from .errors import (
    ExperimentDefinitionError,
    InvalidArgumentError,
    RecipeResultError,
    StateNotFoundError,
)
from .loading import StoreOwner, load_state, new_root
from .promise import ExperimentStatePromise
from .recipe import Recipe, rebuild_recipe
from .record import (
    FORMAT_VERSION,
    MAX_AUDIT_PATHS,
    AuditNote,
    ExperimentMeta,
    StateRecord,
    Status,
    now,
)
from .selection import ids_of, resolve_ids
from .state import ExperimentState, adopt
from .store import DirectoryStore, Store

__all__ = [
    "AuditOutcome",
    "AuditReport",
    "Definition",
    "StateAudit",
    "audit",
    "definitions",
    "fresh_random_state",
    "ids_of",
    "rebuild_recipe",
    "resolve_ids",
]

AuditOutcome = Literal["reproduced", "differs", "error", "not audited"]

# What an audit advises when a recipe cannot be rebuilt from its record.
AUDIT_FROM_SCRIPT = (
    "To audit it, run the audit from the script that defines the tree: build the tree there "
    "and call exp.audit() (it uses that script's recipes)."
)

# Differences a report's text lists per state (all are in StateAudit.comparison).
DIFFERENCES_SHOWN = 20


@dataclasses.dataclass(frozen=True)
class Definition:
    """How the script that defined the tree makes a state (what a live Experiment knows).

    Attributes:
        parent_id: The parent's id (None for a root).
        recipe: The recipe snapshot applied to the parent (None for a root).
        arguments: A root's ``spawn_new_tree`` arguments, exactly as given (None otherwise).
    """

    parent_id: str | None
    recipe: Recipe | None = None
    arguments: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class StateAudit:
    """The audit of one state.

    Attributes:
        state_id: The state's id.
        recipe: How it is made, for people: ``Train(epochs=1)``, or ``root`` with its class.
        outcome: ``reproduced``, ``differs`` (see ``comparison``), ``error`` (the recipe
            raised when recomputed: see ``reason`` and ``traceback``) or ``not audited`` (it
            could not be recomputed: ``reason`` says why and what to do).
        comparison: The stored state compared with the recomputed one (``reproduced`` and
            ``differs`` only): ``comparison.differences`` gives each differing attribute with
            its largest absolute difference and the fraction of its elements that differ.
        reason: Why it was not audited, or what the recipe raised (``Type: message``).
        traceback: The recipe's traceback (``error`` only).
        recipe_source: ``script`` (the recipe of the tree this process defined) or ``record``
            (rebuilt from the stored record); empty when not audited before that.
        seconds: Wall time of the recomputation, in seconds.
        recorded_seconds: Wall time recorded when the state was computed, in seconds.
        environment_changes: What differs between the environment the state was computed in
            (its record's) and the auditing one, one line each (``"torch 2.13.0 -> 2.14.1"``,
            stored -> audit); a record that holds no environment is compared on its dagger
            version alone.
    """

    state_id: str
    recipe: str
    outcome: AuditOutcome
    comparison: StateComparison | None = None
    reason: str = ""
    traceback: str = ""
    recipe_source: str = ""
    seconds: float | None = None
    recorded_seconds: float | None = None
    environment_changes: tuple[str, ...] = ()

    def detail(self) -> str:
        """One line: what was found (the report's ``detail`` column)."""
        if self.outcome == "reproduced" and self.comparison is not None:
            return f"{self.comparison.compared} parts equal"
        if self.outcome == "differs" and self.comparison is not None:
            differences = self.comparison.differences
            shown = ", ".join(difference.path or "(state)" for difference in differences[:3])
            more = f" and {len(differences) - 3} more" if len(differences) > 3 else ""
            return f"{len(differences)} of {self.comparison.compared} parts differ: {shown}{more}"
        return self.reason

    def note(self, created: str, environment: dict[str, Any] | None) -> AuditNote | None:
        """What the state's notes keep of this audit (None when it was not audited)."""
        if self.outcome == "not audited":
            return None
        comparison = self.comparison
        return AuditNote(
            outcome=self.outcome,
            created=created,
            rtol=comparison.rtol if comparison is not None else 0.0,
            atol=comparison.atol if comparison is not None else 0.0,
            differences=tuple(comparison.paths[:MAX_AUDIT_PATHS]) if comparison else (),
            error=self.reason if self.outcome == "error" else "",
            environment=environment,
        )


@dataclasses.dataclass(frozen=True)
class AuditReport:
    """What an audit found, state by state; ``str()`` is a table with the differences.

    Attributes:
        states: One :class:`StateAudit` per audited state, in tree order.
        rtol: The relative tolerance used (0 with ``atol`` 0: bitwise).
        atol: The absolute tolerance used, in the values' units.
        seed: The seed the sample was drawn with (None when the states were given): pass it
            again to audit the same sample.
        candidates: How many stored states the sample was drawn from.
        environment: Where the audit ran (:func:`dagger.environment.capture_environment`).
    """

    states: tuple[StateAudit, ...]
    rtol: float = 0.0
    atol: float = 0.0
    seed: int | None = None
    candidates: int = 0
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)

    def count(self, outcome: str) -> int:
        """How many states had ``outcome`` (``reproduced``, ``differs``, ``error``,
        ``not audited``)."""
        return sum(1 for state in self.states if state.outcome == outcome)

    @property
    def ok(self) -> bool:
        """True when every audited state reproduced (and none was left unaudited)."""
        return all(state.outcome == "reproduced" for state in self.states)

    def __getitem__(self, state_id: str) -> StateAudit:
        """The audit of a state, by id or unique prefix.

        Raises:
            StateNotFoundError: No audited state has that id.
        """
        found = [state for state in self.states if state.state_id.startswith(state_id)]
        if len(found) != 1:
            raise StateNotFoundError(
                f"{len(found)} audited states match {state_id!r}; audited: "
                f"{', '.join(state.state_id[:12] for state in self.states) or 'none'}.",
                state_id=state_id,
            )
        return found[0]

    def summary(self) -> str:
        """One line: ``"3 reproduced, 1 differs, 0 errors, 1 not audited"``."""
        return (
            f"{self.count('reproduced')} reproduced, {self.count('differs')} differ"
            f"{'s' if self.count('differs') == 1 else ''}, {self.count('error')} error"
            f"{'s' if self.count('error') != 1 else ''}, {self.count('not audited')} not audited"
        )

    def __str__(self) -> str:
        how = (
            "bitwise"
            if self.rtol == 0 and self.atol == 0
            else f"within rtol={self.rtol:g}, atol={self.atol:g}"
        )
        if self.seed is not None:
            what = (
                f"{len(self.states)} of {self.candidates} stored states, drawn with seed="
                f"{self.seed}"
            )
        else:
            what = f"{len(self.states)} state{'s' if len(self.states) != 1 else ''}"
        lines = [f"audit of {what}, recomputed and compared {how} (NaN equals NaN)"]
        header = ("state", "recipe", "outcome", "detail")
        rows = [
            (state.state_id[:12], state.recipe, state.outcome, state.detail())
            for state in self.states
        ]
        lines.extend(_table(header, rows))
        for state in self.states:
            if state.outcome == "differs" and state.comparison is not None:
                lines.append("")
                lines.append(f"{state.state_id[:12]} {state.recipe}: what differs")
                lines.extend("  " + line for line in _differences(state.comparison))
            if state.environment_changes:
                lines.append(
                    f"{state.state_id[:12]} {state.recipe}: environment (stored -> audit): "
                    + "; ".join(state.environment_changes)
                )
        lines.append("")
        lines.append(self.summary())
        lines.append(f"audited in: {_environment_line(self.environment)}")
        return "\n".join(lines)

    def to_dataframe(self) -> Any:
        """A ``pandas.DataFrame``, one row per state: ``state_id``, ``recipe``, ``outcome``,
        ``differences`` (how many attributes differ), ``paths`` (a list), ``max_abs_diff``
        (the largest over the differing attributes; NaN when none is numeric), ``detail``,
        ``seconds`` and ``recorded_seconds``."""
        import pandas as pd

        rows = []
        for state in self.states:
            differences = state.comparison.differences if state.comparison is not None else ()
            numeric = [d.max_abs_diff for d in differences if d.max_abs_diff is not None]
            rows.append(
                {
                    "state_id": state.state_id,
                    "recipe": state.recipe,
                    "outcome": state.outcome,
                    "differences": len(differences),
                    "paths": [d.path for d in differences],
                    "max_abs_diff": max(numeric) if numeric else math.nan,
                    "detail": state.detail(),
                    "seconds": state.seconds,
                    "recorded_seconds": state.recorded_seconds,
                }
            )
        columns = [
            "state_id",
            "recipe",
            "outcome",
            "differences",
            "paths",
            "max_abs_diff",
            "detail",
            "seconds",
            "recorded_seconds",
        ]
        return pd.DataFrame(rows, columns=columns)


# -- choosing what to audit ------------------------------------------------------------------


def definitions(roots: Iterable[ExperimentStatePromise]) -> dict[str, Definition]:
    """How the tree under ``roots`` (an Experiment's promises) makes each state, by id, in
    tree order. Promises standing for stored states grown again define nothing."""
    found: dict[str, Definition] = {}
    stack = list(reversed(list(roots)))
    while stack:
        promise = stack.pop()
        sha = promise.sha()
        if sha not in found:
            if promise.is_root:
                found[sha] = Definition(None, arguments=promise.arguments)
            elif promise.recipe is not None and promise.parent is not None:
                found[sha] = Definition(promise.parent.sha(), promise.recipe)
        stack.extend(reversed(promise.children))
    return found


def _sample(candidates: Sequence[str], sample: int | None, seed: int) -> list[str]:
    if sample is None or sample >= len(candidates):
        return list(candidates)
    chosen = set(random.Random(seed).sample(list(candidates), sample))
    return [state_id for state_id in candidates if state_id in chosen]  # tree order


# -- the audit ---------------------------------------------------------------------------------


class AuditOwner(StoreOwner):
    """What recomputed states call back: stored states come from the real store (read only);
    ``directory`` is the audit's scratch folder."""

    def __init__(self, store: Store, state_class: type[ExperimentState], scratch: Path) -> None:
        super().__init__(store, state_class)
        self.directory = scratch

    def promise_of(self, state: ExperimentState) -> Any:
        raise ExperimentDefinitionError(
            "A state recomputed by an audit cannot grow the tree: define children in the "
            "script that runs the experiment."
        )


def audit(
    store: Store,
    state_class: type[ExperimentState],
    *,
    definitions: Mapping[str, Definition],
    candidates: Sequence[str],
    states: Sequence[str] | None = None,
    sample: int | None = 5,
    rtol: float = 0.0,
    atol: float = 0.0,
    seed: int | None = None,
    environment: dict[str, Any],
    class_importable: bool = True,
) -> AuditReport:
    """Recompute states from their stored parents and compare them with the stored ones.

    Args:
        store: The experiment's store (read; the outcome is written to each state's notes).
        state_class: The experiment's state class.
        definitions: How the script that defined the tree makes its states, by id.
        candidates: The stored states a sample is drawn from, in tree order.
        states: Full ids to audit, all of them; None draws ``sample`` of ``candidates``.
        sample: How many candidates to draw (None: all).
        rtol: Relative tolerance (0 with ``atol`` 0: bitwise).
        atol: Absolute tolerance, in the values' units.
        seed: Seed of the draw; None draws one (reported, so the sample can be repeated).
        environment: The auditing process's environment.
        class_importable: Whether ``state_class`` is the real class (roots need it).

    Raises:
        InvalidArgumentError: ``sample`` is not a positive whole number, or a tolerance is
            negative or not a number.
    """
    if sample is not None and (
        isinstance(sample, bool) or not isinstance(sample, int) or sample < 1
    ):
        raise InvalidArgumentError(
            f"sample={sample!r} is not a number of states: pass a whole number >= 1, or None "
            "to audit every stored state.",
            name="sample",
            value=sample,
        )
    # Two empty states compare at once: bad tolerances are reported before any work is done.
    compare_states({}, {}, rtol=rtol, atol=atol)
    if states is None:
        if seed is None:
            seed = random.SystemRandom().randrange(1 << 31)
        chosen = _sample(candidates, sample, seed)
    else:
        chosen, seed = list(states), None
    audits: list[StateAudit] = []
    created = now()
    stored = set(store.snapshot().ids_of(Status.DONE))
    with tempfile.TemporaryDirectory(prefix="dagger-audit-") as scratch:
        files = Path(scratch) / "files"
        files.mkdir()
        owner = AuditOwner(store, state_class, files)
        for state_id in chosen:
            result = _audit_one(
                store,
                state_class,
                owner,
                Path(scratch),
                state_id,
                definitions.get(state_id),
                stored=state_id in stored,
                rtol=rtol,
                atol=atol,
                environment=environment,
                class_importable=class_importable,
            )
            audits.append(result)
            note = result.note(created, environment)
            if note is not None:
                store.update_notes(state_id, audit=note)
    return AuditReport(
        states=tuple(audits),
        rtol=float(rtol),
        atol=float(atol),
        seed=seed,
        candidates=len(candidates),
        environment=environment,
    )


def _describe(record: StateRecord | None, state_class: type[ExperimentState]) -> str:
    if record is None:
        return "?"
    if record.recipe is None:
        return f"root ({record.state_class.partition(':')[2] or state_class.__name__})"
    return str(record.recipe)


def _audit_one(
    store: Store,
    state_class: type[ExperimentState],
    owner: AuditOwner,
    scratch: Path,
    state_id: str,
    definition: Definition | None,
    *,
    stored: bool,
    rtol: float,
    atol: float,
    environment: dict[str, Any],
    class_importable: bool,
) -> StateAudit:
    record = store.read_record(state_id)
    described = _describe(record, state_class)

    def not_audited(reason: str, source: str = "") -> StateAudit:
        return StateAudit(state_id, described, "not audited", reason=reason, recipe_source=source)

    if record is None or not stored:
        return not_audited(
            "it is not stored (it failed, was never computed, or its payload is missing): run "
            "the experiment first"
        )
    # What to run: the script's definition, else the record's.
    recipe: Recipe | None = None
    arguments: dict[str, Any] | None = None
    source = "script" if definition is not None else "record"
    if record.parent is None:
        if not class_importable:
            return not_audited(
                f"its state class `{record.state_class}` cannot be imported here, so "
                "initialize_state cannot run; audit from the script that defines it"
            )
        arguments = definition.arguments if definition is not None else record.arguments
        if arguments is None:
            return not_audited("its record holds no spawn_new_tree arguments")
        try:
            same = state_class.root_sha(arguments) == state_id
        except Exception as error:
            same, why = False, f" ({type(error).__name__}: {error})"
        else:
            why = ""
        if not same:
            return not_audited(
                "its spawn_new_tree arguments cannot be rebuilt from the record (the record "
                f"keeps a JSON view of each, or the state class's code changed){why}; audit "
                "from the script that defines the tree (exp.audit() there)",
                source,
            )
    else:
        if definition is not None and definition.recipe is not None:
            recipe = definition.recipe.snapshot()  # run() must not change the script's copy
        elif record.recipe is None:
            return not_audited("its record names no recipe")
        else:
            recipe, why_not = rebuild_recipe(
                record.recipe,
                record.parent,
                state_id,
                fix=AUDIT_FROM_SCRIPT,
                changed_fix="Audit with the code that computed it (check out that commit).",
            )
            if recipe is None:
                return not_audited(why_not, source)
    stored_state = load_state(store, state_id, state_class, owner=owner)
    if stored_state is None:
        return not_audited("its stored payload cannot be loaded (missing or damaged)", source)
    started = time.perf_counter()
    state_scratch = Path(tempfile.mkdtemp(prefix=f"{state_id[:12]}-", dir=scratch))
    try:
        try:
            with fresh_random_state(random.SystemRandom().randrange(1 << 63)):
                recomputed = _recompute(
                    store, state_class, owner, state_scratch, record, recipe, arguments
                )
        except _ParentUnavailable as error:
            return not_audited(str(error), source)
        except Exception as error:
            return StateAudit(
                state_id,
                described,
                "error",
                reason=f"{type(error).__name__}: {error}",
                traceback=traceback.format_exc(),
                recipe_source=source,
                seconds=time.perf_counter() - started,
                recorded_seconds=record.seconds,
                environment_changes=tuple(_recorded_environment_changes(record, environment)),
            )
        seconds = time.perf_counter() - started
        comparison = compare_states(stored_state, recomputed, rtol=rtol, atol=atol)
    finally:
        shutil.rmtree(state_scratch, ignore_errors=True)
    return StateAudit(
        state_id,
        described,
        "reproduced" if comparison.equal else "differs",
        comparison=comparison,
        recipe_source=source,
        seconds=seconds,
        recorded_seconds=record.seconds,
        environment_changes=tuple(_recorded_environment_changes(record, environment)),
    )


@contextlib.contextmanager
def fresh_random_state(seed: int) -> Iterator[None]:
    """Seed the process-wide generators (``random``; ``numpy.random`` and ``torch``, CUDA
    included, when they are imported) with ``seed`` for the block, and put their states back
    after it."""
    numpy = sys.modules.get("numpy")
    torch = sys.modules.get("torch")
    saved_random = random.getstate()
    saved_numpy = numpy.random.get_state() if numpy is not None else None
    saved_torch = torch.get_rng_state() if torch is not None else None
    saved_cuda = (
        torch.cuda.get_rng_state_all()
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized()
        else None
    )
    random.seed(seed)
    if numpy is not None:
        numpy.random.seed(seed % (1 << 32))
    if torch is not None:
        torch.manual_seed(seed)  # seeds every CUDA device too (lazily, if not initialised)
    try:
        yield
    finally:
        random.setstate(saved_random)
        if numpy is not None:
            numpy.random.set_state(saved_numpy)
        if torch is not None:
            torch.set_rng_state(saved_torch)
            if saved_cuda is not None:
                torch.cuda.set_rng_state_all(saved_cuda)


class _ParentUnavailable(Exception):
    """The parent of an audited state cannot be loaded."""


def _recompute(
    store: Store,
    state_class: type[ExperimentState],
    owner: AuditOwner,
    scratch: Path,
    record: StateRecord,
    recipe: Recipe | None,
    arguments: dict[str, Any] | None,
) -> ExperimentState:
    """Compute the state again, then save and load it through a scratch store in ``scratch``,
    as the stored one was saved and loaded (hooks, pickling, blobs)."""
    state_id = record.id
    if record.parent is None:
        assert arguments is not None
        state = new_root(state_class, owner=owner, sha=state_id, arguments=dict(arguments), tags=[])
    else:
        assert recipe is not None
        parent = load_state(store, record.parent, state_class, owner=owner)
        if parent is None:
            raise _ParentUnavailable(
                f"its parent {record.parent[:12]} cannot be loaded (missing or damaged): run "
                "the experiment to recompute it, then audit again"
            )
        adopt(
            parent,
            experiment=owner,
            sha=state_id,
            parent_id=record.parent,
            tags=list(record.tags),
            recipe=record.recipe,
        )
        state = call_method(recipe, "run", parent)
        if not isinstance(state, ExperimentState):
            raise RecipeResultError(
                f"Recipe `{type(recipe).__name__}.run` returned a `{type(state).__name__}`; it "
                "must return an ExperimentState.",
                recipe=type(recipe).__name__,
                value_type=type(state).__name__,
            )
        adopt(
            state,
            experiment=owner,
            sha=state_id,
            parent_id=record.parent,
            tags=list(record.tags),
            recipe=record.recipe,
        )
    for hook in list(state.save_pre_hooks):
        hook()
    scratch_store = DirectoryStore(scratch, durability="fast")
    scratch_store.prepare(
        ExperimentMeta(format=FORMAT_VERSION, roots=(), state_class=record.state_class)
    )
    scratch_store.save(state_id, state, record)
    del state
    loaded = load_state(scratch_store, state_id, state_class, owner=owner)
    if loaded is None:  # pragma: no cover - a store loads what it has just saved
        raise RuntimeError(f"the recomputed state {state_id[:12]} could not be loaded back")
    return loaded


def _recorded_environment_changes(record: StateRecord, environment: Mapping[str, Any]) -> list[str]:
    """Differences between the environment the record holds and the auditing one, on the
    device the recomputation just ran on; a record without one: its dagger version alone."""
    # Now, after the recomputation: the device it ran on (and CUDA, if it initialised it).
    current = capture_environment(git={key: environment.get(key) for key in GIT_KEYS})
    if record.environment is not None:
        return environment_changes(record.environment, current)
    if not record.dagger_version:
        return []
    return environment_changes({"dagger": record.dagger_version}, {"dagger": current["dagger"]})


# -- text --------------------------------------------------------------------------------------


def _differences(comparison: StateComparison) -> list[str]:
    header = ("attribute", "kind", "max abs diff", "elements differing", "detail")
    rows = []
    for difference in comparison.differences[:DIFFERENCES_SHOWN]:
        detail = difference.detail.replace("the first state", "the stored state").replace(
            "the second state", "the recomputed state"
        )
        rows.append(
            (
                difference.path or "(state)",
                difference.kind,
                _number(difference.max_abs_diff),
                "" if difference.fraction is None else f"{difference.fraction:.2%}",
                detail,
            )
        )
    lines = _table(header, rows)
    more = len(comparison.differences) - DIFFERENCES_SHOWN
    if more > 0:
        lines.append(f"... {more} more (StateAudit.comparison lists all)")
    return lines


def _number(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.6g}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *rows]
    ]


def _environment_line(environment: Mapping[str, Any]) -> str:
    if not environment:
        return "(not captured)"
    parts = [
        f"python {environment.get('python')}",
        f"torch {environment.get('torch') or '(none)'}",
        f"numpy {environment.get('numpy') or '(none)'}",
        f"dagger {environment.get('dagger')}",
    ]
    devices = environment.get("cuda_devices") or []
    parts.append(f"cuda {', '.join(devices)}" if devices else "no GPU")
    if environment.get("git_commit"):
        dirty = " (dirty)" if environment.get("git_dirty") else ""
        parts.append(f"git {str(environment['git_commit'])[:12]}{dirty}")
    parts.append(f"host {environment.get('hostname')}")
    return ", ".join(parts)
