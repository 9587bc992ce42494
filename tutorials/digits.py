"""The machine-learning half of the tutorials: data, model, training loop and metrics.

Nothing here knows about dagger. The study (``pruning_study.py``) and the notebook
(``Tutorial.ipynb``) import these helpers so that their own code is only about the experiment:
the state, the recipes and the tree.

The data set is scikit-learn's handwritten digits (1,797 greyscale images of 8x8 pixels, ten
classes). It ships inside scikit-learn, so everything runs offline, and a small CNN learns it
to about 97% test accuracy in a few seconds on a laptop CPU.
"""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

__all__ = [
    "SmallCNN",
    "accuracy",
    "digits_loaders",
    "make_optimizer",
    "prunable_layers",
    "sparsity",
    "train_epochs",
]

# A network this small trains as fast on one thread as on several, and extra threads only wait
# for each other (badly so on a busy machine, or beside parallel workers with --workers).
torch.set_num_threads(1)


def digits_loaders(seed: int, batch_size: int = 32) -> tuple[DataLoader, DataLoader]:
    """Train and test loaders for the digits, split 75/25 (stratified) with ``seed``.

    The split depends on ``seed`` only, so every state of a tree sees the same test set.
    """
    images, labels = load_digits(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(
        images, labels, test_size=0.25, random_state=seed, stratify=labels
    )

    def dataset(x, y) -> TensorDataset:
        # Pixels are integers in 0..16; scale them to 0..1 and add the channel axis (N, 1, 8, 8).
        pixels = torch.tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8) / 16.0
        return TensorDataset(pixels, torch.tensor(y, dtype=torch.long))

    # shuffle=True draws from torch's global generator, which each training seeds: the order
    # of the batches is then a function of the seed, not of what ran before in this process.
    train_loader = DataLoader(dataset(train_x, train_y), batch_size=batch_size, shuffle=True)
    test_loader = DataLoader(dataset(test_x, test_y), batch_size=256)
    return train_loader, test_loader


class SmallCNN(nn.Module):
    """Two 3x3 convolutions and two linear layers: about 38k weights."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # 8x8 -> 4x4
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def make_optimizer(model: nn.Module, lr: float) -> torch.optim.Optimizer:
    """Adam over every parameter of ``model`` (a pruned layer's ``weight_orig`` included)."""
    return torch.optim.Adam(model.parameters(), lr=lr)


def train_epochs(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    epochs: int,
    seed: int,
) -> None:
    """Train ``model`` in place for ``epochs`` passes over ``loader``.

    Seeding here, and not once per process, makes a training step reproducible wherever it
    runs: first in a fresh process, after other states, or in a worker process.
    """
    torch.manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for images, labels in loader:
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(images), labels)
            loss.backward()
            optimizer.step()
    # A pruned layer's ``weight`` is recomputed as ``weight_orig * weight_mask`` by a forward
    # hook (torch.nn.utils.prune). After a training step it belongs to the autograd graph, and
    # copy.deepcopy refuses such tensors; dagger deep-copies a state that has several children.
    # Recomputing it outside autograd makes the trained model copy like any other.
    with torch.no_grad():
        for layer in prunable_layers(model):
            if hasattr(layer, "weight_mask"):
                layer.weight = layer.weight_orig * layer.weight_mask


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader) -> float:
    """Fraction of the examples in ``loader`` that ``model`` classifies correctly.

    The model is put in eval mode for the measure and given back in the mode it was in: a
    Function must leave the state it reads as it found it (dagger checks, and says when not).
    """
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        with torch.no_grad():
            for images, labels in loader:
                correct += int((model(images).argmax(dim=1) == labels).sum())
                total += len(labels)
    finally:
        model.train(was_training)
    return correct / total


def prunable_layers(model: nn.Module) -> list[nn.Module]:
    """The convolutions and linear layers: the modules whose weights are pruned."""
    return [module for module in model.modules() if isinstance(module, nn.Conv2d | nn.Linear)]


def sparsity(model: nn.Module) -> float:
    """Fraction of the prunable weights that are zero (masked out).

    A pruned layer holds its mask in ``weight_mask`` (torch.nn.utils.prune); a dense one has
    none, and its weights themselves are counted.
    """
    zeros = total = 0
    for layer in prunable_layers(model):
        weights = getattr(layer, "weight_mask", layer.weight)
        zeros += int((weights == 0).sum())
        total += weights.numel()
    return zeros / total
