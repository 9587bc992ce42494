"""ExperimentStatePromise: a lazy node of the tree, before it is computed.

A promise is its parent promise, the recipe applied to it, and the tags active when it was
defined. Building promises touches no disk and runs nothing; :meth:`sha` hashes how the state
will be produced, :meth:`get` computes (or loads) just this state and the ones on its path.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from .errors import ExperimentDefinitionError
from .recipe import child_sha

if TYPE_CHECKING:
    from .experiment import Experiment
    from .recipe import Function, Recipe, RecipeInfo
    from .state import ExperimentState

__all__ = ["ExperimentStatePromise", "as_promise"]


class ExperimentStatePromise:
    """A state the experiment will produce.

    Attributes:
        experiment: The Experiment this promise belongs to.
        parent: The parent promise (None for a root or for a stored state grown again).
        recipe: The recipe producing this state from the parent (None for a root).
        tags: Tags active when the promise was defined.
        children: Promises defined from this one, in the order they were defined.
        functions: Functions to run on the state once it exists.
    """

    def __init__(
        self,
        experiment: Experiment,
        parent: ExperimentStatePromise | None,
        recipe: Recipe | None,
        tags: Iterable[str],
        *,
        arguments: dict[str, Any] | None = None,
        known_sha: str | None = None,
    ) -> None:
        self.experiment = experiment
        self.parent = parent
        self.recipe = recipe
        self.tags = tuple(tags)
        self.arguments = arguments
        self.children: list[ExperimentStatePromise] = []
        self.functions: list[Function] = []
        self._sha = known_sha
        self._identity: tuple[str, str, dict[str, Any]] | None = None
        self._info: RecipeInfo | None = None
        self.stored = known_sha is not None

    @property
    def experiment_object(self) -> Experiment:
        """The seed's name for :attr:`experiment`."""
        return self.experiment

    @property
    def is_root(self) -> bool:
        return self.parent is None and self.recipe is None and not self.stored

    def sha(self) -> str:
        """The id the state will have (computed once, from identities only; no disk access).

        Raises:
            HashingError: A recipe property or experiment argument cannot be hashed.
        """
        if self._sha is None:
            if self.parent is None or self.recipe is None:
                assert self.arguments is not None
                self._sha = self.experiment.state_class.root_sha(self.arguments)
            else:
                self._identity = self.recipe.identity()
                self._sha = child_sha(self.parent.sha(), self.recipe, self._identity)
        return self._sha

    def recipe_info(self) -> RecipeInfo | None:
        """How the record will describe this promise's recipe (None for a root)."""
        if self.recipe is None:
            return None
        if self._info is None:
            self.sha()
            self._info = self.recipe.info(self._identity)
        return self._info

    def get(self) -> ExperimentState:
        """Compute (or load) this state and only what lies on its path; return it fully loaded."""
        return self.experiment.get(self)

    def __repr__(self) -> str:
        what = "root" if self.is_root else repr(self.recipe) if self.recipe else "stored"
        sha = self._sha[:12] if self._sha else "?"
        return f"ExperimentStatePromise({what}, sha={sha}, tags={list(self.tags)})"


def as_promise(target: Any, what: str) -> ExperimentStatePromise:
    """The promise to grow from ``target``: a promise, or a state of a restored experiment."""
    if isinstance(target, ExperimentStatePromise):
        return target
    from .state import ExperimentState

    if isinstance(target, ExperimentState) and target.experiment_object is not None:
        return target.to_promise()
    raise ExperimentDefinitionError(
        f"{what} was applied to a `{type(target).__name__}`. Apply recipes and functions to "
        "the promise returned by spawn_new_tree() or by another recipe, or to a state of a "
        "restored experiment.",
        value_type=type(target).__name__,
    )
