"""Screenshots of the ablation widget UI in a real browser, for docs/notebooks.md ("Interactive ablations").

The UI runs here in Python (real training on the synthetic data, the quick final evaluation); its widget state is
written as standalone HTML by ``ipywidgets.embed.embed_minimal_html`` and rendered by headless Chromium with the
widget manager of ``@jupyter-widgets/html-manager`` (its ``dist/embed.js``, which ``npm pack
@jupyter-widgets/html-manager@1`` fetches), the same views JupyterLab draws. Besides each PNG it writes what the
browser laid out (``<name>.layout.json``: the size of every image shown and its natural size), so the aspect ratio
can be read, not guessed::

    python docs/images/widget_screenshots.py --embed-js PATH/TO/embed.js --browser chromium --out docs/images

Needs Chromium (``apt-get install chromium``); not part of the package or its tests.
"""
from __future__ import annotations

import argparse
import json
from html import unescape
import shutil
import subprocess
import tempfile
from pathlib import Path

from ipywidgets.embed import dependency_state, embed_minimal_html
from PIL import Image, ImageOps

from atkit.workbench.widgets import AblationSession, AblationUI

BASE = {"method": "trades", "dataset": "synthetic", "data": {"n_train": 768, "n_test": 300, "image_size": 16},
        "model": "small_cnn", "epochs": 3, "batch_size": 128, "threat": {"steps": 3}, "device": "cpu",
        "eval": {"n_test": 300, "pgd_steps": 5, "final_attacks": ["clean", "pgd20", "apgd"], "sanity": True}}
WINDOW = (1320, 1180)
# Filled in by the page once the widgets are drawn: every image's shown and natural size.
MEASURE = """<pre id="layout" style="display: none"></pre><script>
window.addEventListener("load", () => setTimeout(() => {
  const shown = [...document.querySelectorAll(".widget-image, img")].map(img => {
    const r = img.getBoundingClientRect();
    return {width: r.width, height: r.height, natural: [img.naturalWidth, img.naturalHeight]};
  });
  const menus = [...document.querySelectorAll("select")].map(s => s.options[s.selectedIndex]?.text ?? null);
  document.getElementById("layout").textContent = JSON.stringify({images: shown, menus: menus});
}, 4000));
</script>"""


def snapshot(ui: AblationUI, name: str, out: Path, embed_js: Path, browser: str, work: Path) -> None:
    html = work / f"{name}.html"
    embed_minimal_html(html, views=[ui.widget], state=dependency_state(ui.widget), requirejs=False,
                       title="atkit ablation UI", embed_url=embed_js.resolve().as_uri())
    text = html.read_text(encoding="utf-8").replace("</body>", MEASURE + "</body>")
    html.write_text(text, encoding="utf-8")
    flags = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=20000", "--allow-file-access-from-files"]
    png = out / f"{name}.png"
    subprocess.run([*flags, f"--screenshot={png}", html.as_uri()], check=True, capture_output=True, timeout=300)
    image = Image.open(png).convert("RGB")  # cropped to what the page drew, plus a margin
    left, top, right, bottom = ImageOps.invert(image).getbbox() or (0, 0, *image.size)
    image.crop((0, 0, min(image.width, right + 12), min(image.height, bottom + 12))).save(png, optimize=True)
    dom = subprocess.run([*flags, "--dump-dom", html.as_uri()], check=True, capture_output=True, text=True,
                         timeout=300).stdout
    start = dom.index('<pre id="layout" style="display: none">') + len('<pre id="layout" style="display: none">')
    layout = json.loads(unescape(dom[start:dom.index("</pre>", start)]))
    (out / f"{name}.layout.json").write_text(json.dumps(layout, indent=1) + "\n", encoding="utf-8")
    print(name, json.dumps(layout))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--embed-js", type=Path, required=True, help="@jupyter-widgets/html-manager's dist/embed.js")
    ap.add_argument("--browser", default=shutil.which("chromium") or "chromium")
    ap.add_argument("--out", type=Path, default=Path("docs/images"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ui = AblationUI(AblationSession(BASE, runs_dir=work / "runs"), method="trades")
        snapshot(ui, "ablation_ui_start", args.out, args.embed_js, args.browser, work)
        for lam, epochs in ((0.0, 3), (0.3, 3), (6.0, 1)):  # the last run has one epoch: its curves' x axis
            ui.controls["lam"].value = lam
            ui.epochs.value = epochs
            ui.on_run()
            ui.wait()
            print(ui.status.value)
        snapshot(ui, "ablation_ui_runs", args.out, args.embed_js, args.browser, work)


if __name__ == "__main__":
    main()
