"""Tests for atkit.data: datasets (synthetic, folder, tiny-imagenet, torchvision error paths) and BatchLoader."""
from __future__ import annotations

import inspect
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import atkit.data as data
from helpers import write_tiny_imagenet
from atkit.data import (
    BatchLoader,
    ImageDataset,
    crop_flip,
    eval_loader,
    load_dataset,
    make_synthetic,
    split_validation,
)
from atkit.core.utils import ConfigError


# ---------------------------------------------------------------------------------------------
# synthetic
# ---------------------------------------------------------------------------------------------


def test_synthetic_deterministic_in_seed():
    a = make_synthetic(n_train=200, n_test=50, seed=3)
    b = load_dataset("synthetic", n_train=200, n_test=50, seed=3)
    c = make_synthetic(n_train=200, n_test=50, seed=4)
    for split in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(a, split), getattr(b, split))
    assert not torch.equal(a.train_x, c.train_x)
    assert not torch.equal(a.test_x, c.test_x)
    # The test split has its own stream: changing n_test leaves the training images alone.
    d = make_synthetic(n_train=200, n_test=80, seed=3)
    assert torch.equal(a.train_x, d.train_x) and torch.equal(a.train_y, d.train_y)
    # A larger split starts with the smaller one (also across the generator's 1024-image chunks).
    e = make_synthetic(n_train=1100, n_test=50, seed=3)
    assert torch.equal(e.train_x[:200], a.train_x) and torch.equal(e.train_y[:200], a.train_y)
    f = make_synthetic(n_train=2100, n_test=50, seed=3)
    assert torch.equal(f.train_x[:1100], e.train_x)


def test_synthetic_shapes_dtypes_labels():
    ds = make_synthetic(n_train=300, n_test=60, num_classes=7, seed=0)
    assert ds.train_x.shape == (300, 3, 32, 32) and ds.test_x.shape == (60, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert ds.num_classes == 7 and len(ds.class_names) == 7
    assert ds.image_size == 32 and ds.channels == 3
    assert int(ds.train_y.min()) >= 0 and int(ds.train_y.max()) == 6
    assert set(ds.train_y.tolist()) == set(range(7))
    assert ds.train_x.device.type == "cpu"


def test_synthetic_robust_feature_agreement_rate():
    ds = make_synthetic(n_train=4000, n_test=10, seed=1, robust_agreement=0.75)
    k, y = ds.meta["robust_label_train"], ds.train_y
    agree = (k == y).float().mean().item()
    assert abs(agree - 0.75) < 0.03
    # Disagreeing blobs show some *other* class, spread over the classes.
    assert set(k[k != y].tolist()) == set(range(ds.num_classes))


def test_synthetic_texture_is_below_eps():
    # Same seed with and without the texture: images differ by at most the texture amplitude
    # (plus uint8 rounding), i.e. the fully predictive feature fits inside the 8/255 ball.
    kw = dict(n_train=64, n_test=8, seed=5)
    with_tex = make_synthetic(texture_amplitude=6 / 255, **kw)
    without = make_synthetic(texture_amplitude=0.0, **kw)
    diff = (with_tex.train_x.int() - without.train_x.int()).abs()
    assert int(diff.max()) <= 7  # 6/255 texture + one rounding step
    assert float(diff.float().mean()) > 3.0  # ... and it is really there (2 of 3 channels per pixel)
    # Opponent colour: the texture does not change a pixel's channel sum (no luminance part).
    lum = (with_tex.train_x.int() - without.train_x.int()).sum(1).abs()
    assert int(lum.max()) <= 2


@pytest.mark.parametrize("classes,period,colour", [(10, 4, "opponent"), (10, 8, "rgb"), (100, 4, "opponent")])
def test_texture_tiles_symmetric_and_distinct(classes, period, colour):
    tiles = data.synthetic._texture_tiles(classes, period, torch.Generator().manual_seed(0), colour)
    assert tiles.shape == (classes, 3, period, period)
    assert torch.equal(tiles, tiles.flip(-1))  # a flipped image shows the same tile
    if colour == "rgb":
        assert set(tiles.unique().tolist()) == {-1.0, 1.0}
    else:
        assert set(tiles.unique().tolist()) == {-1.0, 0.0, 1.0}
        assert int(tiles.sum(1).abs().max()) == 0  # zero-sum over channels at every pixel
        assert bool(((tiles != 0).sum(1) == 2).all())  # two opposite channels per pixel
    energy = float((tiles[0] ** 2).sum())
    assert not bool((tiles == tiles[:, :, :1, :1]).flatten(1).all(1).any())  # no flat tile
    # Tiles of different classes stay far apart under every cyclic shift (any phase).
    flat = tiles.flatten(1)
    for dy in range(period):
        for dx in range(period):
            shifted = tiles.roll((dy, dx), dims=(-2, -1)).flatten(1)
            d2 = ((flat[:, None, :] - shifted[None, :, :]) ** 2).sum(-1)
            d2.fill_diagonal_(float("inf"))
            assert float(d2.min()) >= energy / 2


def test_synthetic_flip_and_shift_keep_the_texture_class():
    # Texture only (no blob or background field), on a level of 0.4 = 102/255 with amplitude 6/255:
    # (x - 102) / 6 is the tiled texture. A flipped image of class c equals the class-c tiling at
    # another phase, and never another class's tiling.
    ds = make_synthetic(
        n_train=40, n_test=1, seed=2, robust_amplitude=0.0, background_amplitude=0.0, background_level=0.4
    )
    tiles = ds.meta["texture_tiles"]
    tex = (ds.train_x.float() - 102) / 6
    assert set(tex.unique().tolist()) == {-1.0, 0.0, 1.0}

    def matches(img, cls):
        for dy in range(4):
            for dx in range(4):
                if torch.equal(img, tiles[cls].roll((dy, dx), dims=(-2, -1)).repeat(1, 8, 8)):
                    return True
        return False

    for i in range(40):
        c = int(ds.train_y[i])
        assert matches(tex[i], c)
        assert matches(tex[i].flip(-1), c)
        assert not any(matches(tex[i], o) for o in range(10) if o != c)


def test_synthetic_rejects_bad_values():
    with pytest.raises(ConfigError, match="num_classes"):
        make_synthetic(num_classes=1)
    with pytest.raises(ConfigError, match="robust_agreement"):
        make_synthetic(robust_agreement=1.5)
    with pytest.raises(ConfigError, match="bogus"):
        load_dataset("synthetic", bogus=1)


def test_palette_separation_many_classes():
    # grid levels L: smallest with L^3 - (L-1)^3 >= classes; separation one grid step 1/(L-1).
    for c, step in ((2, 1.0), (7, 1.0), (10, 0.5), (30, 1 / 3), (100, 1 / 6)):
        pal = data.synthetic._palette(c)
        assert pal.shape == (c, 3)
        assert float(pal.min()) >= 0.0 and torch.allclose(pal.amax(1), torch.ones(c))
        d = (pal[:, None] - pal[None]).abs().amax(-1) + torch.eye(c) * 9
        assert float(d.min()) >= step - 1e-6


# ---------------------------------------------------------------------------------------------
# ImageDataset / validation split
# ---------------------------------------------------------------------------------------------


def _tiny_ds(n: int = 50) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 3, 4, 4), generator=g, dtype=torch.uint8)
    y = torch.arange(n) % 5
    return ImageDataset(x, y, x[:10].clone(), y[:10].clone(), 5, list("abcde"), "tiny")


def test_split_validation_is_a_deterministic_partition():
    ds = _tiny_ds()
    sp = split_validation(ds, n_val=12, seed=1)
    assert len(sp.val_y) == 12 and len(sp.train_y) == 38
    idx = sp.meta["val_indices"]
    keep = torch.ones(50, dtype=torch.bool)
    keep[idx] = False
    assert torch.equal(sp.val_x, ds.train_x[idx]) and torch.equal(sp.val_y, ds.train_y[idx])
    assert torch.equal(sp.train_x, ds.train_x[keep]) and torch.equal(sp.train_y, ds.train_y[keep])
    assert torch.equal(ds.split_validation(12, seed=1).meta["val_indices"], idx)
    assert not torch.equal(split_validation(ds, n_val=12, seed=2).meta["val_indices"], idx)
    assert torch.equal(sp.test_x, ds.test_x)
    with pytest.raises(ConfigError, match="n_val"):
        split_validation(ds, n_val=50)


def test_imagedataset_validates():
    ds = _tiny_ds()
    with pytest.raises(ConfigError, match="labels"):
        ImageDataset(ds.train_x, ds.train_y + 1, ds.test_x, ds.test_y, 5, list("abcde"), "bad")
    with pytest.raises(ConfigError, match="uint8"):
        ImageDataset(ds.train_x.float(), ds.train_y, ds.test_x, ds.test_y, 5, list("abcde"), "bad")


def test_channel_stats():
    ds = _tiny_ds()
    mean, std = ds.channel_stats()
    xf = ds.train_x.double() / 255
    for c in range(3):
        assert abs(mean[c] - float(xf[:, c].mean())) < 1e-9
        assert abs(std[c] - float(xf[:, c].std(unbiased=False))) < 1e-9


def test_subset():
    ds = _tiny_ds().subset(n_train=20, n_test=4, seed=0)
    assert len(ds.train_y) == 20 and len(ds.test_y) == 4
    with pytest.raises(ConfigError, match="n_train"):
        _tiny_ds().subset(n_train=0)


# ---------------------------------------------------------------------------------------------
# BatchLoader
# ---------------------------------------------------------------------------------------------


def _data(n: int = 103, size: int = 8):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def test_loader_covers_every_index_once_and_len():
    x, y = _data()
    loader = BatchLoader(x, y, 16, seed=0)
    batches = list(loader)
    assert len(batches) == len(loader) == 7
    idx = torch.cat([b.index for b in batches])
    assert torch.equal(idx.sort().values, torch.arange(103))
    assert [len(b.y) for b in batches] == [16] * 6 + [7]
    for b in batches:
        assert torch.equal(b.y, y[b.index])
        assert b.x.dtype == torch.float32 and b.x.shape[1:] == (3, 8, 8)
        assert b.x2 is None
    dl = BatchLoader(x, y, 16, drop_last=True)
    assert len(dl) == 6 and len(list(dl)) == 6


def test_loader_without_augmentation_returns_exact_pixels():
    x, y = _data()
    for b in BatchLoader(x, y, 32, augment=False, shuffle=True, seed=3):
        assert torch.equal(b.x, x[b.index].float() / 255)
    xf = x.float() / 255  # float input in [0, 1] is used as is
    for b in BatchLoader(xf, y, 32, augment=False, seed=3):
        assert torch.equal(b.x, xf[b.index])
    ev = list(eval_loader(x, y, 40))
    assert torch.equal(torch.cat([b.index for b in ev]), torch.arange(103))
    assert torch.equal(torch.cat([b.x for b in ev]), x.float() / 255)


def _manual_crop_flip(img: torch.Tensor, dy: int, dx: int, flip: bool, pad: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    p = F.pad(img, (pad, pad, pad, pad))[:, dy : dy + h, dx : dx + w]
    return p.flip(-1) if flip else p


def test_augmentation_matches_a_manual_crop_and_flip():
    x, y = _data(40)
    loader = BatchLoader(x, y, 16, seed=7, padding=3)
    loader.set_epoch(2)
    plan = loader.epoch_plan()
    assert int(plan.offsets.min()) >= 0 and int(plan.offsets.max()) <= 6
    assert plan.flips.any() and not plan.flips.all()
    pos = 0
    for b in loader:
        assert b.x.shape == (len(b.y), 3, 8, 8)
        assert float(b.x.min()) >= 0.0 and float(b.x.max()) <= 1.0
        for i in range(len(b.y)):
            dy, dx = plan.offsets[pos].tolist()
            want = _manual_crop_flip(x[b.index[i]].float() / 255, dy, dx, bool(plan.flips[pos]), 3)
            assert torch.equal(b.x[i], want)
            pos += 1
    assert pos == 40


def test_crop_flip_known_offsets():
    x, _ = _data(2)
    # corner (0, 0) of the 4-px padded image: shift down-right by 4, zeros enter at top/left.
    out = crop_flip(x, torch.tensor([[0, 0], [4, 4]]), torch.tensor([False, True]), padding=4)
    assert torch.equal(out[0, :, 4:, 4:], x[0, :, :-4, :-4])
    assert int(out[0, :, :4].abs().sum()) == 0 and int(out[0, :, :, :4].abs().sum()) == 0
    # centre offset + flip = plain mirror image.
    assert torch.equal(out[1], x[1].flip(-1))


def test_two_views_are_independent_augmentations():
    x, y = _data(64)
    loader = BatchLoader(x, y, 64, seed=0, two_views=True)
    b = next(iter(loader))
    assert b.x2 is not None and b.x2.shape == b.x.shape
    assert not torch.equal(b.x, b.x2)
    plan = loader.epoch_plan()
    assert not torch.equal(plan.offsets, plan.offsets2)
    # Row i of x2 is row i's image under the second draw.
    for i in range(3):
        dy, dx = plan.offsets2[i].tolist()
        want = _manual_crop_flip(x[b.index[i]].float() / 255, dy, dx, bool(plan.flips2[i]), 4)
        assert torch.equal(b.x2[i], want)


def test_loader_depends_only_on_seed_and_epoch():
    x, y = _data()

    def epoch_batches(seed, epoch):
        ld = BatchLoader(x, y, 32, seed=seed, two_views=True)
        ld.set_epoch(epoch)
        return list(ld)

    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = epoch_batches(1, 3)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    torch.manual_seed(123)  # and not used
    b = epoch_batches(1, 3)
    for ba, bb in zip(a, b):
        assert torch.equal(ba.x, bb.x) and torch.equal(ba.x2, bb.x2) and torch.equal(ba.index, bb.index)
    c = epoch_batches(1, 4)
    assert not torch.equal(a[0].index, c[0].index)
    d = epoch_batches(2, 3)
    assert not torch.equal(a[0].index, d[0].index)
    # mid-epoch resume yields exactly the remaining batches
    ld = BatchLoader(x, y, 32, seed=1, two_views=True)
    ld.set_epoch(3)
    rest = list(ld.iter_from(2))
    assert len(rest) == len(a) - 2
    for ra, rb in zip(rest, a[2:]):
        assert torch.equal(ra.x, rb.x) and torch.equal(ra.index, rb.index)


def test_rank_shards_are_disjoint_and_cover_the_epoch():
    x, y = _data(103)
    ws = 4
    loaders = [BatchLoader(x, y, 8, seed=5, rank=r, world_size=ws) for r in range(ws)]
    for ld in loaders:
        ld.set_epoch(1)
    lens = {len(ld) for ld in loaders}
    assert lens == {4}  # ceil(103 / 4) = 26 rows -> 4 batches of 8 on every rank
    per_rank = [torch.cat([b.index for b in ld]) for ld in loaders]
    assert all(len(p) == 26 for p in per_rank)
    allidx = torch.cat(per_rank)
    counts = torch.bincount(allidx, minlength=103)
    assert bool((counts >= 1).all()) and int(counts.sum()) == 104 and int((counts == 2).sum()) == 1
    # Without padding (n divisible by world size) the shards are disjoint and interleave the
    # single-process order, with the same augmentation draws per position.
    x2, y2 = x[:96], y[:96]
    single = BatchLoader(x2, y2, 96, seed=5)
    single.set_epoch(1)
    sp = single.epoch_plan()
    for r in range(ws):
        ld = BatchLoader(x2, y2, 8, seed=5, rank=r, world_size=ws)
        ld.set_epoch(1)
        plan = ld.epoch_plan()
        assert torch.equal(plan.indices, sp.indices[r::ws])
        assert torch.equal(plan.offsets, sp.offsets[r::ws])
    shards = [set(BatchLoader(x2, y2, 8, seed=5, rank=r, world_size=ws).epoch_plan().indices.tolist()) for r in range(ws)]
    assert sum(len(s) for s in shards) == 96 and len(set.union(*shards)) == 96


def test_loader_rejects_bad_arguments():
    x, y = _data(10)
    with pytest.raises(ConfigError, match="rank"):
        BatchLoader(x, y, 4, rank=2, world_size=2)
    with pytest.raises(ConfigError, match="batch_size"):
        BatchLoader(x, y, 0)
    with pytest.raises(ConfigError, match="shape"):
        BatchLoader(x, y[:5], 4)


# ---------------------------------------------------------------------------------------------
# folder datasets
# ---------------------------------------------------------------------------------------------


def _write_tree(root: Path, counts: dict[str, dict[str, int]], size=(6, 5), fmt="png", seed=0):
    """root/<split>/<class>/NNNN.<fmt> with random pixels; returns {path: array}."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, per_class in counts.items():
        for cls, k in per_class.items():
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(k):
                arr = rng.integers(0, 256, (size[0], size[1], 3), dtype=np.uint8)
                p = d / f"{i:04d}.{fmt}"
                Image.fromarray(arr).save(p)
                arrays[str(p)] = arr
    return arrays


def test_folder_dataset_decodes_exactly_and_uses_cache(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    arrays = _write_tree(root, {"train": {"cat": 3, "ant": 2, "dog": 2}, "test": {"ant": 1, "dog": 2}})
    cache = tmp_path / "cache"
    calls = []
    real = data.sources._decode_image
    monkeypatch.setattr(data.sources, "_decode_image", lambda p, s: (calls.append(p), real(p, s))[1])

    ds = load_dataset("folder", root=root, cache_dir=cache, num_workers=1)
    assert ds.class_names == ["ant", "cat", "dog"] and ds.num_classes == 3
    assert ds.train_x.shape == (7, 3, 6, 5) and ds.image_size == (6, 5)
    # Stored in the fixed shuffled order, not the class-folder order; every image keeps its label.
    assert sorted(ds.train_y.tolist()) == [0, 0, 1, 1, 1, 2, 2] and sorted(ds.test_y.tolist()) == [0, 2, 2]
    for split, x, y in (("train", ds.train_x, ds.train_y), ("test", ds.test_x, ds.test_y)):
        for row, label in zip(x, y.tolist()):
            owners = [p for p, a in arrays.items() if f"/{split}/" in p
                      and torch.equal(row, torch.from_numpy(a).permute(2, 0, 1))]
            assert len(owners) == 1 and Path(owners[0]).parent.name == ds.class_names[label]
    first = root / "train" / "ant" / "0000.png"
    pos = next(i for i, row in enumerate(ds.train_x)
               if torch.equal(row, torch.from_numpy(arrays[str(first)]).permute(2, 0, 1)))
    assert len(calls) == 10

    calls.clear()
    again = load_dataset("folder", root=root, cache_dir=cache)
    assert calls == []  # served from the cache
    assert torch.equal(again.train_x, ds.train_x) and torch.equal(again.test_y, ds.test_y)

    # A changed file invalidates the cache and the new pixels show up; the stale cache is removed.
    new = np.full((6, 5, 3), 7, dtype=np.uint8)
    Image.fromarray(new).save(first)
    st = os.stat(first)
    os.utime(first, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = load_dataset("folder", root=root, cache_dir=cache)
    assert len(calls) == 10
    assert torch.equal(third.train_x[pos], torch.from_numpy(new).permute(2, 0, 1))
    assert len(list(cache.glob("*.pt"))) == 1


def test_folder_dataset_default_cache_resize_and_jpeg(tmp_path):
    root = tmp_path / "jpgs"
    _write_tree(root, {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}}, size=(10, 10), fmt="jpg")
    ds = load_dataset("folder", root=root, image_size=4)
    assert ds.train_x.shape == (4, 3, 4, 4) and ds.test_x.shape == (2, 3, 4, 4)
    assert len(list((root / ".atkit_cache").glob("folder-*.pt"))) == 1
    assert ds.name == "folder:jpgs"
    full = load_dataset("folder", root=root)  # another size keeps its own cache file
    assert full.train_x.shape == (4, 3, 10, 10) and full.image_size == 10
    assert len(list((root / ".atkit_cache").glob("folder-*.pt"))) == 2


def test_folder_dataset_mixed_sizes_need_image_size(tmp_path):
    root = tmp_path / "mixed"
    _write_tree(root, {"train": {"a": 1}, "test": {"a": 1}}, size=(6, 6))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "train" / "a" / "big.png")
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("folder", root=root, cache_dir=tmp_path / "c")
    ds = load_dataset("folder", root=root, cache_dir=tmp_path / "c", image_size=6)
    assert ds.train_x.shape == (2, 3, 6, 6)


def test_folder_missing_path_and_bad_layout(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="nowhere") as err:
        load_dataset("folder", root=missing)
    assert "train" in str(err.value) and "test" in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="train/"):
        load_dataset("folder", root=tmp_path / "empty")
    with pytest.raises(ConfigError, match="root"):
        load_dataset("folder")


def test_folder_from_archive(tmp_path, monkeypatch):
    import tarfile

    src = tmp_path / "src"
    _write_tree(src / "pack", {"train": {"a": 2, "b": 1}, "test": {"a": 1, "b": 1}})
    archive = tmp_path / "pack.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(src / "pack", arcname="pack")
    monkeypatch.setenv("ATKIT_DATA_DIR", str(tmp_path / "dataroot"))
    ds = load_dataset("folder", root=archive)
    assert ds.train_x.shape[0] == 3 and ds.class_names == ["a", "b"]
    assert (tmp_path / "dataroot" / "pack" / "pack" / "train").is_dir()


def test_tiny_imagenet_layout(tmp_path):
    write_tiny_imagenet(tmp_path)
    ds = load_dataset("tiny-imagenet", root=tmp_path, download=False, cache_dir=tmp_path / "c")
    assert ds.num_classes == 2 and ds.class_names == ["goldfish", "tabby"]
    assert ds.meta["wnids"] == ["n01", "n02"]
    assert ds.train_x.shape == (6, 3, 64, 64) and ds.image_size == 64
    assert sorted(ds.train_y.tolist()) == [0, 0, 0, 1, 1, 1]  # stored shuffled, not by class folder
    assert sorted(ds.test_y.tolist()) == [0, 1, 1]
    # Each image's dominant colour channel identifies its class: red = n01, blue = n02.
    for x, y in ((ds.train_x, ds.train_y), (ds.test_x, ds.test_y)):
        red = x[:, 0].float().mean((1, 2)) > x[:, 2].float().mean((1, 2))
        assert torch.equal(red, y == 0)
    # The folder itself (not its parent) is accepted too.
    ds2 = load_dataset("tiny_imagenet", root=tmp_path / "tiny-imagenet-200", download=False,
                       cache_dir=tmp_path / "c")
    assert torch.equal(ds2.train_x, ds.train_x)


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(ConfigError, match="tiny-imagenet-200") as err:
        load_dataset("tiny-imagenet", root=tmp_path / "none", download=False)
    assert str(tmp_path / "none") in str(err.value)


# ---------------------------------------------------------------------------------------------
# names and torchvision error paths
# ---------------------------------------------------------------------------------------------


def test_unknown_dataset_name_suggests():
    with pytest.raises(ConfigError, match="Did you mean 'cifar10'"):
        load_dataset("cifar-10")
    with pytest.raises(ConfigError, match="synthetic"):
        load_dataset("imagenet-1k")


@pytest.mark.parametrize("name,where", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_torchvision_missing_files_error(tmp_path, name, where):
    with pytest.raises(ConfigError) as err:
        load_dataset(name, root=tmp_path, download=False)
    msg = str(err.value)
    assert where in msg and str(tmp_path) in msg and "download" in msg


def test_svhn_missing_files_error(tmp_path):
    with pytest.raises(ConfigError, match="(scipy|train_32x32.mat)"):
        load_dataset("svhn", root=tmp_path, download=False)


def test_torchvision_takes_no_extra_options(tmp_path):
    with pytest.raises(ConfigError, match="image_size"):
        load_dataset("cifar10", root=tmp_path, download=False, image_size=32)


# ---------------------------------------------------------------------------------------------
# the DATASETS registry: a loader's options are its signature
# ---------------------------------------------------------------------------------------------


def test_unknown_folder_option_is_refused_naming_the_signature_options(tmp_path):
    from atkit.training.config import RunConfig

    params = set(inspect.signature(data.DATASETS["folder"]).parameters)
    assert {"root", "image_size", "num_workers", "test_split", "cache_dir"} == params
    assert data.dataset_options("folder") == sorted(params)
    _write_tree(tmp_path / "tree", {"train": {"a": 2, "b": 2}, "test": {"a": 1, "b": 1}})
    accepted = "accepted: cache_dir, image_size, num_workers, root, test_split"
    with pytest.raises(ConfigError) as err:
        load_dataset("folder", root=tmp_path / "tree", cache_dir=tmp_path / "cache", imagesize=16)
    msg = str(err.value)
    assert "\n" not in msg and "'imagesize'" in msg and msg.endswith(accepted)
    assert not (tmp_path / "cache").exists()  # refused before anything was decoded
    # Run-config validation goes through the same check.
    with pytest.raises(ConfigError, match=r"'imagesize'; " + accepted + "$"):
        RunConfig.from_dict({"method": "pgd_at", "dataset": "folder", "model": "small_cnn",
                             "data": {"root": str(tmp_path / "tree"), "imagesize": 16}})


@pytest.fixture
def toy_loader():
    """A loader registered the way a user adds a dataset, removed again after the test."""

    @data.DATASETS.register("toy_squares")
    def load_toy_squares(root=None, side: int = 8, level: int = 100, n: int = 12) -> ImageDataset:
        x = torch.full((n, 3, side, side), level, dtype=torch.uint8)
        y = torch.arange(n) % 2
        return ImageDataset(train_x=x, train_y=y, test_x=x[:4], test_y=y[:4], num_classes=2,
                            class_names=["even", "odd"], name="toy_squares", meta={"root": root})

    try:
        yield load_toy_squares
    finally:
        del data.DATASETS["toy_squares"]


def test_a_newly_registered_loader_takes_its_own_options(toy_loader, tmp_path):
    from atkit.training.config import RunConfig
    from atkit.training.setup import prepare

    assert data.dataset_options("toy_squares") == ["level", "n", "root", "side"]
    ds = load_dataset("toy_squares", root="somewhere", side=6, level=9)  # download/cache_dir: not in its signature
    assert ds.train_x.shape == (12, 3, 6, 6) and int(ds.train_x.max()) == 9 and ds.meta["root"] == "somewhere"
    with pytest.raises(ConfigError, match=r"dataset 'toy_squares' does not take option\(s\) 'sides'; "
                                          r"accepted: level, n, root, side$"):
        load_dataset("toy_squares", sides=6)
    cfg = RunConfig.from_dict({"method": "pgd_at", "dataset": "toy_squares", "model": "small_cnn", "epochs": 1,
                               "data": {"side": 8, "n": 20}, "eval": {"n_test": 4}, "out_dir": str(tmp_path)})
    assert len(prepare(cfg, torch.device("cpu")).dataset.train_y) == 20
    with pytest.raises(ConfigError, match=r"'levels'; accepted: level, n, root, side$"):
        RunConfig.from_dict({"method": "pgd_at", "dataset": "toy_squares", "model": "small_cnn",
                             "data": {"levels": 3}})


def test_class_sorted_folder_gives_stratified_subsets_everywhere(tmp_path):
    """An ImageFolder tree is class-sorted on disk; no subset taken anywhere may be one class."""
    from atkit.training.config import RunConfig
    from atkit.training.setup import prepare

    classes = [f"c{i}" for i in range(5)]
    _write_tree(tmp_path / "tree", {"train": {c: 40 for c in classes}, "test": {c: 20 for c in classes}}, size=(4, 4))
    ds = load_dataset("folder", root=tmp_path / "tree", cache_dir=tmp_path / "cache")
    # The stored order does not follow the class folders: the first 20 test images are not one class.
    assert len(set(ds.test_y[:20].tolist())) > 1 and len(set(ds.train_y[:40].tolist())) > 1
    for split, n_split in (("test", 100), ("train", 200)):
        for n in (5, 10, 23, 50, n_split - 1):
            _, y, idx = ds.eval_subset(n, split=split)
            counts = torch.bincount(y, minlength=5)
            assert int(counts.max() - counts.min()) <= 1, (split, n, counts.tolist())  # in proportion, up to one
            assert len(set(idx.tolist())) == n
        _, _, small = ds.eval_subset(10, split=split)
        _, _, large = ds.eval_subset(30, split=split)
        assert torch.equal(large[:10], small)  # nested: a prefix of a stratified subset is the smaller one
    _, _, whole = ds.eval_subset(None)
    assert torch.equal(whole, torch.arange(100))
    # Seeded: the same images for every model of an experiment, other images for another seed.
    assert torch.equal(ds.eval_subset(10)[2], ds.eval_subset(10)[2])
    assert not torch.equal(ds.eval_subset(10, seed=1)[2], ds.eval_subset(10)[2])
    sub = ds.subset(n_train=25, n_test=10)
    assert torch.bincount(sub.train_y, minlength=5).tolist() == [5] * 5
    assert torch.bincount(sub.test_y, minlength=5).tolist() == [2] * 5
    # The trainer's per-epoch selection images are stratified too.
    cfg = RunConfig.from_dict({"method": "pgd_at", "dataset": "folder",
                               "data": {"root": str(tmp_path / "tree"), "cache_dir": str(tmp_path / "cache")},
                               "model": "small_cnn", "epochs": 1, "eval": {"n_test": 10}})
    prep = prepare(cfg, torch.device("cpu"))
    assert torch.bincount(prep.eval_y, minlength=5).tolist() == [2] * 5
    with pytest.raises(ConfigError, match="n=0"):
        ds.eval_subset(0)


def test_stratified_order_proportions_for_unequal_classes():
    labels = torch.tensor([0] * 70 + [1] * 20 + [2] * 10)
    for n in (1, 7, 10, 33, 99, 100):
        counts = torch.bincount(labels[data.stratified_indices(labels, n)], minlength=3).float()
        assert (counts - n * torch.tensor([0.7, 0.2, 0.1])).abs().max() <= 1.0, (n, counts.tolist())
    with pytest.raises(ConfigError, match="must be an integer"):
        data.stratified_indices(labels, True)


def test_prepare_selects_on_a_stratified_part_of_the_validation_split():
    """val_size > 0: per-epoch selection on held-out training images (this path crashed before: it unpacked the
    one dataset split_validation returns as two)."""
    from atkit.training.config import RunConfig
    from atkit.training.setup import prepare

    cfg = RunConfig.from_dict({"method": "pgd_at", "dataset": "synthetic", "model": "small_cnn", "epochs": 1,
                               "data": {"n_train": 200, "n_test": 50, "image_size": 8, "num_classes": 4},
                               "val_size": 40, "eval": {"n_test": 20}})
    prep = prepare(cfg, torch.device("cpu"))
    assert len(prep.dataset.train_y) == 160 and len(prep.dataset.val_y) == 40
    assert len(prep.eval_y) == 20
    share = torch.bincount(prep.dataset.val_y, minlength=4).float() * 20 / 40  # in proportion to the val split
    assert (torch.bincount(prep.eval_y, minlength=4).float() - share).abs().max() <= 1.0
    val_idx = prep.eval_indices
    assert torch.equal(prep.eval_y, prep.dataset.val_y[val_idx])  # the selection images are validation images


def test_npz_dataset_reads_either_channel_order_and_refuses_what_it_cannot_read(tmp_path):
    rng = np.random.default_rng(0)
    last = rng.integers(0, 256, (6, 5, 4, 3), dtype=np.uint8)  # (N, H, W, C): H != W, so the order shows
    np.savez(tmp_path / "train.npz", x=last, y=np.array([0, 1, 2, 0, 1, 2]))
    np.savez(tmp_path / "test.npz", x=last[:2].transpose(0, 3, 1, 2), y=np.array([1, 0]))  # (N, C, H, W)
    ds = load_dataset("npz", root=tmp_path)
    assert ds.train_x.shape == (6, 3, 5, 4) and torch.equal(ds.train_x[:2], ds.test_x)
    assert torch.equal(ds.train_x[1, :, 2, 3], torch.from_numpy(last[1, 2, 3]))
    assert ds.num_classes == 3 and ds.class_names == ["0", "1", "2"]
    assert load_dataset("npz", root=tmp_path, classes=10).num_classes == 10
    np.savez(tmp_path / "test.npz", x=last.astype(np.float32), y=np.zeros(6))
    with pytest.raises(ConfigError, match="'x' must be uint8 images"):
        load_dataset("npz", root=tmp_path)
    np.savez(tmp_path / "test.npz", images=last)
    with pytest.raises(ConfigError, match=r"holds \['images'\]; expected the arrays 'x' and 'y'"):
        load_dataset("npz", root=tmp_path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset("npz", root=tmp_path / "none")
    with pytest.raises(ConfigError, match="needs its folder"):
        load_dataset("npz")
