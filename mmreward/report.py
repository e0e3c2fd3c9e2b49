"""Small helpers for demo outputs: metrics.json and a self-contained report.html."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from PIL import Image

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:center;vertical-align:top}
.best{outline:4px solid #2a9d3a}
figure{display:inline-block;margin:4px;text-align:center;font-size:12px}
img{image-rendering:pixelated}
"""


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):
        return _plain(value.item())
    return value


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> Path:
    """Write ``metrics`` as indented JSON (NaN/inf become null) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_plain(metrics), indent=2, sort_keys=True) + "\n")
    return path


def image_data_uri(image: Image.Image | str | Path, max_size: int = 160) -> str:
    """A PNG ``data:`` URI of ``image``, shrunk to at most ``max_size`` pixels a side."""
    img = Image.open(image) if isinstance(image, (str, Path)) else image
    img = img.convert("RGB")
    img.thumbnail((max_size, max_size))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def figure(image: Image.Image | str | Path, caption: str, best: bool = False, size: int = 128) -> str:
    """An ``<figure>`` with an inline image and an escaped caption; ``best`` outlines it."""
    cls = ' class="best"' if best else ""
    return (
        f'<figure><img{cls} src="{image_data_uri(image, size)}" width="{size}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def metrics_table(metrics: dict[str, Any]) -> str:
    """A two-column HTML table of (flattened) metrics."""
    rows = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            shown = f"{value:.4f}" if isinstance(value, float) else str(value)
            rows.append(f"<tr><td>{html.escape(prefix)}</td><td>{html.escape(shown)}</td></tr>")

    walk("", _plain(metrics))
    return "<table><tr><th>metric</th><th>value</th></tr>" + "".join(rows) + "</table>"


def controls_table(
    model: dict[str, float], controls: dict[str, dict[str, float]], notes: dict[str, str]
) -> str:
    """The model's held-out figures, then each control's on the same data and the model's margin over it.

    Args:
        model: Figure name -> the model's value (e.g. ``{"spearman": 0.9}``).
        controls: Control name -> its figures, under the same names.
        notes: Control name -> what the control takes away, in words.
    """
    names = list(model)
    head = "".join(f"<th>{html.escape(n)}</th><th>margin</th>" for n in names)
    rows = [
        "<tr><td>model</td><td></td>" + "".join(f"<td>{model[n]:.3f}</td><td></td>" for n in names) + "</tr>"
    ]
    for control, figures in controls.items():
        cells = "".join(f"<td>{figures[n]:.3f}</td><td>{model[n] - figures[n]:+.3f}</td>" for n in names)
        rows.append(
            f"<tr><td>{html.escape(control)}</td><td>{html.escape(notes.get(control, ''))}</td>{cells}</tr>"
        )
    return f"<table><tr><th>scorer</th><th>what it lacks</th>{head}</tr>{''.join(rows)}</table>"


def write_html(path: str | Path, title: str, sections: list[tuple[str, str]]) -> Path:
    """Write a self-contained HTML page of ``(heading, html body)`` sections."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = "".join(f"<h2>{html.escape(h)}</h2>{b}" for h, b in sections)
    path.write_text(
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n"
    )
    return path
