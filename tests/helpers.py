"""Shared pieces for tests: tiny models, a batch type, blob images with a seeded fit, smoke notebook runs."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


class TinyBatch(NamedTuple):
    x: torch.Tensor
    y: torch.Tensor
    x2: Optional[torch.Tensor] = None
    index: Optional[torch.Tensor] = None


class TinyNet(nn.Module):
    """Linear classifier on flattened 3x4x4 images with a BatchNorm, so BN modes matter."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_outputs = num_classes
        self.bn = nn.BatchNorm1d(48)
        self.fc = nn.Linear(48, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x.flatten(1)))


class TinyConvNet(nn.Module):
    """conv-BN-ReLU-pool-linear on 3x8x8 images (the blob images below); BN so that bn_mode matters."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.max_pool2d(F.relu(self.bn(self.conv(x))), 2).flatten(1))


def tiny_batch(b: int = 8, num_classes: int = 5, seed: int = 0, two_views: bool = False) -> TinyBatch:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, 3, 4, 4, generator=g)
    y = torch.randint(0, num_classes, (b,), generator=g)
    x2 = torch.rand(b, 3, 4, 4, generator=g) if two_views else None
    return TinyBatch(x, y, x2, torch.arange(b))


def make_blobs(n: int, seed: int, num_classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Easy 3x8x8 images: a fixed grey-ish prototype per class plus Gaussian noise, in [0, 1]."""
    protos = 0.5 + 0.1 * (2 * torch.rand(num_classes, 3, 8, 8, generator=torch.Generator().manual_seed(1234)) - 1)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return (protos[y] + 0.1 * torch.randn(n, 3, 8, 8, generator=g)).clamp(0, 1), y


def fit_blobs(model: nn.Module, steps: int = 200, num_classes: int = 4) -> nn.Module:
    """Train ``model`` with Adam on 1,024 blob images (seeded); returns it in eval mode without grads."""

    x, y = make_blobs(1024, seed=0, num_classes=num_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, 1024, (64,), generator=g)
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 240) -> None:
    """Poll ``condition()`` until it holds. The deadline only keeps a broken run from hanging the suite; what the
    test checks is decided by the condition, never by the clock."""
    began = time.time()
    while not condition():
        if time.time() - began > timeout:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        time.sleep(0.05)


def one_line(err: str) -> str:
    """The only line of a command's stderr (asserting there is exactly one and no traceback)."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def run_smoke_notebook(name: str, tmp_path: Path, **extra: Any) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with ``parameters/smoke/<name>.yaml`` into ``tmp_path/<name>``
    (runs under ``tmp_path/runs`` unless ``runs_dir`` is given); returns the output folder."""
    from atkit.workbench.notebooks import run_notebook

    out = tmp_path / name
    extra.setdefault("runs_dir", str(tmp_path / "runs"))
    run_notebook(name, str(REPO / "parameters" / "smoke" / f"{name}.yaml"), str(out), device="cpu", extra=extra,
                 progress=False)
    return out


def figure_outputs(executed: Path) -> tuple[int, int]:
    """``(PNG images, "<Figure size ...>" texts)`` among the outputs of an executed notebook: every figure
    shown once as an image gives ``(number of figures, 0)``."""
    import json

    images = texts = 0
    for cell in json.loads(Path(executed).read_text())["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            images += "image/png" in data
            text = data.get("text/plain", "")
            texts += "<Figure size" in ("".join(text) if isinstance(text, list) else text)
    return images, texts


def write_notebook(path: Path, *cells: Any) -> Path:
    """Write a python3-kernel notebook of ``cells`` (nbformat cells, the first tagged ``parameters``) to ``path``."""
    import nbformat
    from nbformat.v4 import new_notebook

    nb = new_notebook(cells=list(cells))
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def committed_notebooks(root: Path = REPO) -> dict[str, str]:
    """``{name: text}`` of the notebooks in ``notebooks/`` as committed (``git show HEAD:...``) when ``root`` is a
    git checkout with a commit, else as the files are. A user's working copies (outputs JupyterLab autosaved, a
    scratch notebook of their own) never decide what the tests check."""
    import subprocess

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, encoding="utf-8")

    try:
        listed = git("ls-tree", "--name-only", "HEAD", "notebooks/")
    except FileNotFoundError:  # no git on this machine
        listed = None
    if listed is None or listed.returncode != 0 or git("rev-parse", "--show-toplevel").stdout.strip() != str(
            Path(root).resolve()):
        return {p.stem: p.read_text(encoding="utf-8") for p in sorted((Path(root) / "notebooks").glob("*.ipynb"))}
    names = [line for line in listed.stdout.splitlines() if line.endswith(".ipynb")]
    return {Path(n).stem: git("show", f"HEAD:{n}").stdout for n in sorted(names)}


# ------------------------------------------------------------ reference formulas, written with plain torch ops
# One copy for every method test: the losses are recomputed from these, never from atkit's own helpers.
def ref_log_softmax(z: torch.Tensor) -> torch.Tensor:
    return z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))


def ref_softmax(z: torch.Tensor) -> torch.Tensor:
    e = torch.exp(z - z.max(dim=1, keepdim=True).values)
    return e / e.sum(dim=1, keepdim=True)


def ref_kl_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``KL(p || q)`` per row of two probability tables."""
    return (p * (torch.log(p) - torch.log(q))).sum(dim=1)


def ref_js_rows(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon per row with the mixture floored at 1e-8 (Consistency-AT)."""
    m = ((p + q) / 2).clamp(min=1e-8)
    return 0.5 * (ref_kl_rows(p, m) + ref_kl_rows(q, m))


def ref_ce(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy per row."""
    return -ref_log_softmax(z)[torch.arange(len(y)), y]


def ref_mart_margin(z_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """MART's margin per row: ``-log(1.0001 - max_{k != y} p_k(x'))``."""
    p_adv = ref_softmax(z_adv)
    others = p_adv.clone()
    others[torch.arange(len(y)), y] = 0.0
    return -torch.log(1.0001 - others.max(dim=1).values)


def ref_mart_weighted_kl(z: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``mean_i KL(p(x_i) || p(x'_i)) (1 - p_y(x_i))``."""
    p, p_adv = ref_softmax(z), ref_softmax(z_adv)
    return (ref_kl_rows(p, p_adv) * (1 - p[torch.arange(len(y)), y])).mean()


def ref_regularizer(base: str, z: torch.Tensor, z_adv: torch.Tensor, y: torch.Tensor, **params: float) -> torch.Tensor:
    """The regulariser of base method ``base`` beside its classification term (0 for PGD-AT): TRADES
    ``lam KL(p(x) || p(x'))``, MART margin ``+ lam`` weighted KL, Consistency-AT ``lam JS`` of the two halves."""
    if base == "pgd_at":
        return torch.zeros((), dtype=z_adv.dtype)
    if base == "trades":
        return params.get("lam", 6.0) * ref_kl_rows(ref_softmax(z), ref_softmax(z_adv)).mean()
    if base == "mart":
        return ref_mart_margin(z_adv, y).mean() + params.get("lam", 6.0) * ref_mart_weighted_kl(z, z_adv, y)
    if base == "consistency_at":
        b, t = z_adv.shape[0] // 2, params.get("temperature", 0.5)
        return params.get("lam", 1.0) * ref_js_rows(ref_softmax(z_adv[:b] / t), ref_softmax(z_adv[b:] / t)).mean()
    raise KeyError(base)


def no_grad_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's logits without gradients, in float64 for the reference formulas."""
    with torch.no_grad():
        return model(x).double()


def fixed_attack(method: Any, x_adv: torch.Tensor) -> Any:
    """Replace a method's attack by a fixed perturbation, so the loss can be checked on known inputs."""
    method.attack = lambda model, x, y, **kw: x_adv
    return method


def write_tiny_imagenet(root: Path) -> None:
    """A two-class ``tiny-imagenet-200`` tree (red n01 = goldfish, blue n02 = tabby), 3 + 3 train and 3 val images."""
    base = root / "tiny-imagenet-200"
    wnids = ["n02", "n01"]  # unsorted on purpose: labels follow the sorted order
    colours = {"n01": (250, 10, 10), "n02": (10, 10, 250)}
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (base / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\nn99\tunused\n")
    for w in wnids:
        d = base / "train" / w / "images"
        d.mkdir(parents=True)
        (base / "train" / w / f"{w}_boxes.txt").write_text("ignored\n")
        for i in range(3):
            Image.new("RGB", (64, 64), colours[w]).save(d / f"{w}_{i}.JPEG")
    lines = []
    for i, w in enumerate(["n01", "n02", "n02"]):
        Image.new("RGB", (64, 64), colours[w]).save(base / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def doc_block(page: str, marker: str) -> str:
    """The code block between ``<!-- MARKER:start -->`` and ``<!-- MARKER:end -->`` of a page of the repository,
    without its fence."""
    text = (REPO / page).read_text(encoding="utf-8")
    block = text.split(f"<!-- {marker}:start -->", 1)[1].split(f"<!-- {marker}:end -->", 1)[0].strip()
    return block.split("\n", 1)[1].rsplit("```", 1)[0].strip()
