"""Screenshots for README: an HTML report, or an executed notebook, rendered in headless Chromium.

    python docs/screenshot.py report   PATH/index.html   docs/report.png
    python docs/screenshot.py notebook PATH/executed.ipynb docs/notebook.png

Needs the test extras (playwright drives the system's /usr/bin/chromium; it never downloads a browser). A
notebook is turned into one static page first: markdown cells as text, code cells as source, and their
outputs (streams, tables, PNGs) as the notebook showed them. No nbconvert needed.
"""
from __future__ import annotations

import argparse
import html
import re
import tempfile
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;color:#222;font-size:14px}
.cell{margin:.6em 0}.src{background:#f5f5f5;border-left:3px solid #4C72B0;padding:.5em;white-space:pre-wrap;
font-family:monospace;font-size:12px}.out{padding:.3em .5em;overflow-x:auto}.out pre{margin:0;font-size:12px;
white-space:pre-wrap}.out img{max-width:100%}table.dataframe{border-collapse:collapse;font-size:12px}
table.dataframe td,table.dataframe th{padding:2px 6px;border-bottom:1px solid #eee;text-align:right}
.prompt{color:#888;font-family:monospace;font-size:11px}"""


def _markdown(src: str) -> str:
    """Headings, paragraphs and `code`: the little markdown the project's notebooks use."""
    out = []
    for block in re.split(r"\n\s*\n", src.strip()):
        m = re.match(r"^(#{1,4})\s+(.*)$", block)
        text = html.escape(m.group(2) if m else block)
        text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
        out.append(f"<h{len(m.group(1))}>{text}</h{len(m.group(1))}>" if m else f"<p>{text}</p>")
    return "\n".join(out)


def _output(o: dict) -> str:
    if o.get("output_type") == "stream":
        # stderr is the local JVM's start-up chatter (Ivy resolving the Delta jars), not the notebook's output
        return "" if o.get("name") == "stderr" else f"<pre>{html.escape(o.get('text', ''))}</pre>"
    data = o.get("data", {})
    if "image/png" in data:
        return f"<img alt='figure' src='data:image/png;base64,{data['image/png'].strip()}'>"
    if "text/html" in data:  # the notebook's own executed output (pandas tables)
        return data["text/html"]
    if "text/plain" in data:
        return f"<pre>{html.escape(data['text/plain'])}</pre>"
    if o.get("output_type") == "error":
        return f"<pre>{html.escape(o.get('ename', ''))}: {html.escape(o.get('evalue', ''))}</pre>"
    return ""


def notebook_html(path: Path) -> str:
    import nbformat

    nb = nbformat.read(path, as_version=4)
    parts = []
    for c in nb.cells:
        if c.cell_type == "markdown":
            parts.append(f"<div class='cell'>{_markdown(c.source)}</div>")
        elif c.cell_type == "code":
            n = c.get("execution_count") or " "
            outs = "".join(f"<div class='out'>{_output(o)}</div>" for o in c.get("outputs", []))
            parts.append(f"<div class='cell'><div class='prompt'>In [{n}]:</div>"
                         f"<div class='src'>{html.escape(c.source)}</div>{outs}</div>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(path.name)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")


def screenshot(url: str, out: Path, width: int, max_height: int | None) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": 900})
            page.goto(url, wait_until="load")
            broken = page.eval_on_selector_all("img", "els => els.filter(e => !e.complete || !e.naturalWidth)"
                                                      ".map(e => e.getAttribute('src').slice(0, 40))")
            if broken:
                raise SystemExit(f"images that did not load: {broken}")
            height = page.evaluate("document.documentElement.scrollHeight")
            clip = {"x": 0, "y": 0, "width": width, "height": min(height, max_height or height)}
            page.screenshot(path=str(out), clip=clip, full_page=True)
        finally:
            browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["report", "notebook"])
    ap.add_argument("source", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1320)
    ap.add_argument("--max-height", type=int, default=None, help="crop the page to this height (pixels)")
    a = ap.parse_args()
    if a.kind == "report":
        screenshot(a.source.resolve().as_uri(), a.out, a.width, a.max_height)
        return
    with tempfile.TemporaryDirectory() as d:
        page = Path(d) / "notebook.html"
        page.write_text(notebook_html(a.source), encoding="utf-8")
        screenshot(page.as_uri(), a.out, a.width, a.max_height)


if __name__ == "__main__":
    main()
