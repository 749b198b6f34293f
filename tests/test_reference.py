"""atkit.experiments.reference loads the published numbers from its data files (atkit/experiments/reference_data/*.json), also from an
installed wheel, and refuses a malformed file with a message naming the file and the entry."""
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from atkit.experiments import reference
from helpers import REPO


def _copy_data(tmp_path: Path) -> Path:
    folder = tmp_path / "reference_data"
    shutil.copytree(reference.data_folder(), folder)
    return folder


def test_every_data_file_is_loaded_in_order():
    papers, refs = reference.load_references()
    assert list(papers) == ["RPAT", "RAAT", "DUCAT", "FAIT/MER"] and refs == reference.REFERENCES
    on_disk = sum(len(json.loads((reference.data_folder() / n).read_text())["entries"]) for n in reference.DATA_FILES)
    assert len(refs) == on_disk
    # Each file's rows are contiguous and its tables are described in the file.
    for name in reference.DATA_FILES:
        data = json.loads((reference.data_folder() / name).read_text())
        assert set(data["tables"]) == {e["table"] for e in data["entries"]}
        assert all(e["paper"] == data["paper"] for e in data["entries"])


def test_a_malformed_file_is_refused_naming_file_and_entry(tmp_path):
    folder = _copy_data(tmp_path)
    path = folder / "raat.json"
    data = json.loads(path.read_text())
    data["entries"][3]["values"]["pgd7"] = 50.0
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"raat.json, entry 3: metrics \['pgd7'\]"):
        reference.load_references(folder)
    del data["entries"][3]["values"]["pgd7"], data["entries"][3]["threat_model"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"raat.json, entry 3: missing keys \['threat_model'\]"):
        reference.load_references(folder)


def test_an_unlisted_data_file_is_refused(tmp_path):
    folder = _copy_data(tmp_path)
    (folder / "extra.json").write_text("{}")
    with pytest.raises(ValueError, match="extra.json"):
        reference.load_references(folder)


def test_an_installed_wheel_carries_the_data_files(tmp_path):
    """Build the wheel from a copy of the source tree, unpack it elsewhere and load the numbers from there."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "atkit", src / "atkit", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(src),
                    "-w", str(tmp_path / "dist")], check=True, cwd=src, capture_output=True)
    wheel = next((tmp_path / "dist").glob("atkit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"atkit/experiments/reference_data/{n}" for n in reference.DATA_FILES} <= set(names)
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = ("import atkit.experiments.reference as r; print(r.data_folder()); print(len(r.REFERENCES))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}).stdout.split("\n")
    assert Path(out[0]).is_relative_to(site) and int(out[1]) == len(reference.REFERENCES)
