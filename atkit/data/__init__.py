"""Datasets as uint8 tensors held in memory, and a device-side batch loader with augmentation.

One module per concern, all re-exported here (``from atkit.data import load_dataset`` etc.):

- :mod:`atkit.data.dataset`: the container :class:`ImageDataset`, its validation split, its fingerprint and the
  class-stratified, seeded subsets (:func:`stratified_order`, :func:`stratified_indices`);
- :mod:`atkit.data.synthetic`: the built-in synthetic dataset (:func:`make_synthetic`);
- :mod:`atkit.data.sources`: the ``name -> loader`` registry :data:`DATASETS` (torchvision CIFAR-10/100 and SVHN,
  ImageFolder trees, Tiny-ImageNet, the synthetic set), the decode cache, and :func:`load_dataset`;
- :mod:`atkit.data.loader`: :class:`Batch`, :class:`BatchLoader` and the batched crop/flip augmentation.
"""
from .dataset import ImageDataset, split_validation, stratified_indices, stratified_order
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

# Private helpers reachable as atkit.data._name before the split (tests use the synthetic ones).
from .dataset import _mix_seed  # noqa: E402,F401
from .sources import _decode_image  # noqa: E402,F401
from .synthetic import _palette, _texture_tiles  # noqa: E402,F401

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
]
