"""Datasets as uint8 tensors held in memory, and a device-side batch loader (see :mod:`atkit.data.dataset`)."""
from .dataset import (  # noqa: F401
    DATASETS,
    IMAGE_EXTENSIONS,
    TINY_IMAGENET_URL,
    Batch,
    BatchLoader,
    EpochPlan,
    ImageDataset,
    __all__,
    available_memory_bytes,
    check_dataset_options,
    crop_flip,
    default_data_root,
    eval_loader,
    load_dataset,
    make_synthetic,
    split_validation,
    stratified_indices,
    stratified_order,
    synthetic_bytes,
)
from .dataset import _decode_image, _mix_seed, _palette, _texture_tiles  # noqa: F401  (tests reach these)
