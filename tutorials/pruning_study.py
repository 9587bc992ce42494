"""A lottery-ticket-style pruning study on handwritten digits, as a dagger experiment tree.

The question: after pruning a trained network, is it better to keep training the pruned weights
(fine-tuning) or to rewind the surviving weights to their initial values and train again (the
"lottery ticket" recipe)? And does it matter which weights are pruned: the smallest ones (l1)
or random ones? The tree of states answers it:

    root (untrained model, optimizer, data; seeded)
     └─ Train(epochs)                                             [dense]
         └─ Prune(method, amount)  for method in (random, l1),    [method:*, level:*]
             │                     amount in (0.5, 0.8, 0.95)
             ├─ FineTune(epochs, lr)                              [finetune]
             └─ Rewind() ─ Train(epochs)                          [rewind]

Every state is stored under --directory, and next to it: tree.png (the tree coloured by test
accuracy), accuracy.png (accuracy against sparsity) and report.html (all of it in one page that
opens offline, every state clickable). Run the script twice: the second run finds every state
in the store, computes nothing, and prints the same table. Change a recipe's code or a
parameter and only the states that depend on it are computed again.

    python tutorials/pruning_study.py --directory runs/pruning_study --epochs 5
"""

from __future__ import annotations

import argparse
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas
import torch
from digits import (
    SmallCNN,
    accuracy,
    digits_loaders,
    make_optimizer,
    prunable_layers,
    sparsity,
    train_epochs,
)
from matplotlib.figure import Figure
from torch.nn.utils import prune

import dagger as dg
from dagger.plots import plot, save_figure

METHODS = ("random", "l1")
LEVELS = (0.5, 0.8, 0.95)  # fraction of the weights removed


# -- the state: what every point of the study holds ------------------------------------------


class DigitsState(dg.ExperimentState):
    """A model, its optimizer and the digits data.

    ``seed`` and ``lr`` are PROPERTIES: they are given to ``spawn_new_tree``, make up the root's
    identity, and every state of the tree inherits them as attributes.
    """

    PROPERTIES = ["seed", "lr"]

    def initialize_state(self, seed: int, lr: float) -> None:
        torch.manual_seed(seed)  # the initial weights are a function of the seed alone
        self.model = SmallCNN()
        self.optimizer = make_optimizer(self.model, lr)
        self.train_loader, self.test_loader = digits_loaders(seed)


# -- the recipes: the transitions from a state to a new state --------------------------------
# A recipe's identity is its class, its code and its public attributes: Train(epochs=5) applied
# to the same parent is the same state, found in the store instead of trained again.


class Train(dg.Recipe):
    """Train for ``epochs`` passes over the training set with the state's optimizer."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def run(self, state: DigitsState) -> DigitsState:
        train_epochs(state.model, state.optimizer, state.train_loader, self.epochs, state.seed)
        return state


class Prune(dg.Recipe):
    """Remove the fraction ``amount`` of all weights, chosen by ``method`` across all layers.

    torch.nn.utils.prune keeps each pruned layer's weights in ``weight_orig`` and a 0/1
    ``weight_mask`` beside them; the layer multiplies the two at every forward pass, so the
    pruned weights stay zero through any later training.
    """

    def __init__(self, method: str, amount: float) -> None:
        self.method = method
        self.amount = amount

    def run(self, state: DigitsState) -> DigitsState:
        how = {"random": prune.RandomUnstructured, "l1": prune.L1Unstructured}[self.method]
        torch.manual_seed(state.seed)  # random pruning draws its mask from this generator
        with torch.no_grad():  # keeps the masked weights out of autograd (see train_epochs)
            prune.global_unstructured(
                [(layer, "weight") for layer in prunable_layers(state.model)],
                pruning_method=how,
                amount=self.amount,
            )
        return state


class Rewind(dg.Recipe):
    """Reset the surviving weights to their values at initialisation, keeping the mask.

    The initial values come from the root of the tree (``state.root`` loads it from the store),
    and the optimizer starts afresh, as it did at the root.
    """

    def run(self, state: DigitsState) -> DigitsState:
        initial = dict(state.root.model.named_parameters())
        with torch.no_grad():
            for name, parameter in state.model.named_parameters():
                # A pruned layer's weights live in `weight_orig`; the root's are in `weight`.
                parameter.copy_(initial[name.removesuffix("_orig")])
        state.optimizer = make_optimizer(state.model, state.lr)
        return state


class FineTune(dg.Recipe):
    """Keep training the pruned network where it stands (optimizer state included) at ``lr``."""

    def __init__(self, epochs: int, lr: float) -> None:
        self.epochs = epochs
        self.lr = lr

    def run(self, state: DigitsState) -> DigitsState:
        for group in state.optimizer.param_groups:
            group["lr"] = self.lr
        train_epochs(state.model, state.optimizer, state.train_loader, self.epochs, state.seed)
        return state


# -- the analysis: a read-only Function whose result is recorded on the state ----------------


def evaluate(state: DigitsState) -> dict[str, float]:
    """Test accuracy and the fraction of pruned weights."""
    return {
        "accuracy": accuracy(state.model, state.test_loader),
        "sparsity": sparsity(state.model),
    }


# -- the study -------------------------------------------------------------------------------


def build_tree(exp: dg.Experiment, epochs: int, lr: float = 0.003, seed: int = 0) -> set[str]:
    """Define every state of the study (lazily: nothing runs here); returns their ids.

    The store may hold more than this tree (a run with other ``--epochs`` or another ``lr``
    adds its states beside these): the analysis below uses the states these ids name.
    """
    promises = []
    test = dg.Function(evaluate, name="test")
    with exp.tag("dense"):
        root = exp.spawn_new_tree(seed=seed, lr=lr)
        trained = Train(epochs)(root)
    promises += [root, trained]
    test(root)
    test(trained)
    for method in METHODS:
        for level in LEVELS:
            with exp.tag(f"method:{method}", f"level:{level}"):
                pruned = Prune(method, level)(trained)
                test(pruned)
                with exp.tag("finetune"):
                    finetuned = FineTune(epochs, lr)(pruned)
                    test(finetuned)
                with exp.tag("rewind"):
                    rewound = Rewind()(pruned)
                    retrained = Train(epochs)(rewound)
                    test(retrained)
                promises += [pruned, finetuned, rewound, retrained]
    return {promise.sha() for promise in promises}


def run(exp: dg.Experiment, workers: int) -> dg.RunReport:
    """Compute what the store lacks, in this process or in ``workers`` processes."""
    if workers <= 1:
        return exp.run()
    # Each pruned subtree depends on nothing but the trained model: they can train side by side.
    with ProcessPoolExecutor(workers) as executor:
        return exp.run(executor=executor)


def branches(study: dg.NodeSet) -> pandas.DataFrame:
    """One row per evaluated state below Prune: its method, level, branch and test results."""
    frame = study.filter("method:*").to_dataframe()
    # Which branch a state is on is told by the recipe that produced it. The Rewind states
    # themselves (untrained, with a mask) are left out: their Train child is the result.
    names = {"Prune": "pruned", "FineTune": "finetune", "Train": "rewind"}
    frame["branch"] = frame["recipe"].map(names)
    frame = frame.dropna(subset=["branch"])
    # The method and level of a descendant of Prune are in its tags, not in its own recipe.
    labels = frame["tags"].map(lambda tags: dict(tag.split(":", 1) for tag in tags if ":" in tag))
    frame["method"] = labels.map(lambda label: label["method"])
    frame["level"] = labels.map(lambda label: label["level"])
    return frame


def results_table(study: dg.NodeSet) -> pandas.DataFrame:
    """Test accuracy by pruning method and level (rows) and what followed pruning (columns)."""
    table = branches(study).pivot(
        index=["method", "level"], columns="branch", values="result.test.accuracy"
    )
    return table[["pruned", "finetune", "rewind"]].reset_index()


def accuracy_plot(study: dg.NodeSet, path: Path) -> Figure:
    """Test accuracy against the fraction of weights removed, one panel per pruning method and
    one line per branch (the dense network is the point at sparsity 0), written to ``path``."""
    frame = branches(study)
    dense = study.filter("dense").of_recipe(Train).to_dataframe().assign(branch="dense")
    columns = {
        "result.test.sparsity": "sparsity (fraction of weights removed)",
        "result.test.accuracy": "test accuracy",
    }
    figure = Figure(figsize=(10, 4), layout="constrained")
    panels = figure.subplots(1, 2, sharey=True)
    for axes, method in zip(panels, ("l1", "random"), strict=True):
        points = pandas.concat([dense, frame[frame["method"] == method]], ignore_index=True)
        plot(
            points.rename(columns=columns),
            x=columns["result.test.sparsity"],
            y=columns["result.test.accuracy"],
            hue="branch",
            title=f"Prune({method!r}, amount)",
            ax=axes,
        )
    save_figure(figure, path)
    return figure


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--directory", type=Path, default=Path("runs/pruning_study"), help="the store"
    )
    parser.add_argument(
        "--epochs", type=int, default=5, help="epochs of each training and fine-tuning"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="processes that compute states side by side"
    )
    args = parser.parse_args(argv)

    exp = dg.Experiment(args.directory, DigitsState)
    ids = build_tree(exp, args.epochs)
    report = run(exp, args.workers)
    if report.computed == 0:
        print(f"Nothing to compute: all {report.cached} states were served from the store.")
    else:
        print(
            f"Computed {report.computed} states ({report.cached} already stored) "
            f"in {report.seconds:.1f} s."
        )

    # Analysis reads the store back: slim states (records and results, no weights), fast.
    tree = dg.Experiment.restore(args.directory).graph
    study = tree.nodes.select(lambda state: state.sha() in ids)  # this run's tree, not others
    dense = study.filter("dense").of_recipe(Train)[0]
    dense_accuracy = dense.dagger.results["test"]["accuracy"]
    print(f"\nTest accuracy of the trained dense network: {dense_accuracy:.3f}")
    print("Test accuracy after pruning (pruned: before any retraining):")
    print(results_table(study).to_string(index=False, float_format="{:.3f}".format))

    # Pictures, next to the store: the tree coloured by accuracy, accuracy against sparsity,
    # and one HTML page with both, a table of every state and their details (opens offline).
    try:
        drawing = tree.draw(args.directory / "tree", format="png", color="result.test.accuracy")
    except dg.GraphvizNotFoundError as error:  # no `dot` program: keep the DOT source
        source = args.directory / "tree.dot"
        source.write_text(tree.to_dot())
        print(f"\n{error}\nThe tree of {len(tree)} states is described in {source}.")
    else:
        print(f"\nThe tree of {len(tree)} states is drawn in {drawing}")
    figure = accuracy_plot(study, args.directory / "accuracy.png")
    print(f"Accuracy against sparsity is plotted in {args.directory / 'accuracy.png'}")
    report = tree.report(
        args.directory / "report.html",
        title="Pruning study: fine-tuning or rewinding?",
        color="result.test.accuracy",
        plots=[figure, {"x": "param.amount", "y": "result.test.accuracy", "hue": "param.method"}],
    )
    print(f"Everything in one page: {report}")


if __name__ == "__main__":
    main()
