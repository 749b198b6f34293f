"""``npz``: a dataset stored as NumPy arrays, ``train.npz`` and ``test.npz`` with images ``x`` and labels ``y``."""
from pathlib import Path

import numpy as np
import torch

from atkit.core.utils import ConfigError
from atkit.data import DATASETS, ImageDataset


def _split(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"npz dataset: {str(path)!r} does not exist (expected train.npz and test.npz in the root)")
    with np.load(path, allow_pickle=False) as arrays:  # plain arrays only: loading runs no code
        if "x" not in arrays or "y" not in arrays:
            raise ConfigError(f"{str(path)!r} holds {sorted(arrays.files)}; expected the arrays 'x' and 'y'")
        x, y = arrays["x"], arrays["y"]
    if x.dtype != np.uint8 or x.ndim != 4:
        raise ConfigError(f"{str(path)!r}: 'x' must be uint8 images (N, H, W, C) or (N, C, H, W), got {x.dtype} "
                          f"{x.shape}")
    if x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # channels last, as most releases store them
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.as_tensor(y.astype(np.int64).reshape(-1))


@DATASETS.register("npz")
def load_npz(root: str | None = None, classes: int = 0) -> ImageDataset:
    """Images and labels from ``<root>/train.npz`` and ``<root>/test.npz`` (``np.savez(path, x=..., y=...)``; e.g.
    CIFAR-10.1 or a corrupted CIFAR-10 test set beside CIFAR-10's training images). ``classes``: the class count
    when the labels do not show all of them (default: the largest label + 1); names from ``<root>/classes.txt``
    (one per line) when it exists."""
    if root is None:
        raise ConfigError("the npz dataset needs its folder: data: {root: FOLDER} (holding train.npz and test.npz)")
    root_path = Path(root).expanduser()
    train_x, train_y = _split(root_path / "train.npz")
    test_x, test_y = _split(root_path / "test.npz")
    num_classes = classes or int(max(train_y.max(), test_y.max())) + 1
    names_file = root_path / "classes.txt"
    names = names_file.read_text().split("\n") if names_file.is_file() else [str(c) for c in range(num_classes)]
    return ImageDataset(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y, num_classes=num_classes,
                        class_names=[n for n in names if n][:num_classes], name="npz",
                        meta={"root": str(root_path.resolve())})
