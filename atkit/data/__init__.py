"""Data: datasets as uint8 tensors held in memory, and a device-side batch loader with augmentation.

Owns the dataset registry and loaders, the class-stratified subsets every evaluation takes, and the record of which
test images an evaluation used. May import core only; every wing above may import it. One module per concern, all
re-exported here (``from atkit.data import load_dataset`` etc.):

- :mod:`atkit.data.dataset`: the container :class:`ImageDataset`, its validation split, its fingerprint and the
  class-stratified, seeded subsets (:func:`stratified_order`, :func:`stratified_indices`);
- :mod:`atkit.data.synthetic`: the built-in synthetic dataset (:func:`make_synthetic`);
- :mod:`atkit.data.sources`: the ``name -> loader`` registry :data:`DATASETS` (torchvision CIFAR-10/100 and SVHN,
  ImageFolder trees, Tiny-ImageNet, the synthetic set), the decode cache, and :func:`load_dataset`;
- :mod:`atkit.data.loader`: :class:`Batch`, :class:`BatchLoader` and the batched crop/flip augmentation.
"""
import importlib
import pkgutil

from .dataset import (ImageDataset, split_validation, stratified_indices, stratified_order, test_images_record,
                      to_float_images)
from .loader import Batch, BatchLoader, EpochPlan, crop_flip, eval_loader
from .sources import (
    DATASETS,
    IMAGE_EXTENSIONS,
    LOAD_KEYWORDS,
    TINY_IMAGENET_URL,
    check_dataset_options,
    dataset_options,
    default_data_root,
    load_dataset,
)
from .synthetic import available_memory_bytes, check_synthetic_options, make_synthetic, synthetic_bytes

#: The modules above; every other module of this folder is imported, which registers its datasets (a new dataset is
#: one file with a ``@DATASETS.register("name")`` loader).
INFRASTRUCTURE = ("dataset", "loader", "sources", "synthetic")

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    if _module not in INFRASTRUCTURE:
        importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "DATASETS",
    "Batch",
    "BatchLoader",
    "EpochPlan",
    "ImageDataset",
    "crop_flip",
    "default_data_root",
    "eval_loader",
    "load_dataset",
    "make_synthetic",
    "split_validation",
    "stratified_indices",
    "stratified_order",
    "test_images_record",
    "to_float_images",
]
