"""A static HTML report of the showcase: PNGs side by side with bits, top-5 labels and boxes; opens in any browser.

Written into one folder (`index.html` + `img/*.png`), relative links only, so it can be copied or served as is.
"""

from __future__ import annotations

import html
from pathlib import Path

from prepcodec.eval.showcase import ShowcasePhoto, removed_information

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;color:#222}h2{margin-top:32px}
table{border-collapse:collapse}td{vertical-align:top;padding:6px 10px}img{max-width:300px;display:block}
.k{color:#666;font-size:90%}.save{color:#07a}.top{font-size:85%;margin:4px 0 0 0;padding-left:18px}"""


REMOVED_GAIN = 8.0  # the report's amplification of |x − x̄|


def _top5(items: list[dict]) -> str:
    rows = "".join(f"<li>{html.escape(t['name'])} {100 * t['score']:.1f} %</li>" for t in items)
    return f'<ol class="top">{rows}</ol>'


def write_report(photos: list[ShowcasePhoto], out: Path, title: str, summary: str) -> Path:
    """Write `out/index.html` and its PNGs; returns the HTML path."""
    from prepcodec.atomic import write_text
    from prepcodec.data.images import save_png
    from prepcodec.tasks.outputs import draw_prediction

    img = out / "img"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p>"]
    for p in photos:
        save_png(img / f"{p.name}-original.png", p.original)
        cells = [f"<td><b>original</b><img src='img/{p.name}-original.png' alt='{p.name} original'>"
                 f"{_top5(p.original_top5)}</td>"]
        for k, v in enumerate(v for v in p.variants if v.network and v.label.endswith("same level")):
            name = f"{p.name}-removed.png" if k == 0 else f"{p.name}-removed-{k}.png"
            save_png(img / name, removed_information(p.original, v.encoded_input, REMOVED_GAIN))
            cells.append(f"<td><b>removed by {html.escape(v.network)}</b> <span class='k'>|x − x̄| × 8</span>"
                         f"<img src='img/{name}' alt='{p.name} removed by {html.escape(v.network)}'></td>")
        plain_bytes = p.variants[0].nbytes
        for i, v in enumerate(p.variants):
            shown = draw_prediction(v.decoded, "detection", v.boxes) if v.boxes is not None else v.decoded
            name = f"{p.name}-{i}.png"
            save_png(img / name, shown)
            saved = "" if i == 0 else f" <span class='save'>{100 * (v.nbytes / plain_bytes - 1):+.1f} % bytes</span>"
            cells.append(f"<td><b>{html.escape(v.label)}</b> <span class='k'>level {v.level}, {v.nbytes} bytes, "
                         f"{v.bpp:.3f} bpp</span>{saved}<img src='img/{name}' alt='{p.name} {html.escape(v.label)}'>"
                         f"<span class='k'>{v.boxes_label}</span>{_top5(v.top5)}</td>")
        parts.append(f"<h2>{html.escape(p.name)}</h2><table><tr>{''.join(cells)}</tr></table>")
    # after load, the body records how many pictures rendered (read by tests and by anyone checking a copy)
    parts.append("<script>window.addEventListener('load',function(){var i=document.images,n=0;for(var k=0;k<i.length;"
                 "k++){if(i[k].complete&&i[k].naturalWidth>0)n++;}document.body.dataset.imagesLoaded=n+'/'+i.length;"
                 "});</script>")
    parts.append("</body></html>")
    return write_text(out / "index.html", "\n".join(parts) + "\n")
