"""HTML pieces of the run report. Every function takes plain data and returns escaped
HTML; images arrive as PNG bytes and are inlined as base64 so the page is one file."""

from __future__ import annotations

import base64
import json
from html import escape


def img(png: bytes, alt: str, max_width: int | None = None) -> str:
    data = base64.b64encode(png).decode("ascii")
    style = f' style="max-width:min(100%,{max_width}px)"' if max_width else ""
    tag = f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}"{style}>'
    return f'<div class="fig">{tag}</div>'


def pct(x, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def human(n) -> str:
    if n is None:
        return "–"
    n = float(n)
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n:g}"


def kv_table(rows: list[tuple[str, object]]) -> str:
    body = "".join(
        f"<tr><td>{escape(str(k))}</td><td>{v if isinstance(v, Raw) else escape(str(v))}</td></tr>"
        for k, v in rows
        if v not in (None, "", [], {})
    )
    return f'<table class="kv"><tbody>{body}</tbody></table>'


class Raw(str):
    """Already-escaped HTML that ``kv_table`` must not escape again."""


def section(anchor: str, title: str, lead: str, body: str) -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{anchor}"><h2>{escape(title)}</h2>{lead_html}{body}</section>'


def note(text: str) -> str:
    return f'<div class="note">{escape(text)}</div>'


def explain(html: str) -> str:
    return f'<div class="explain">{html}</div>'


def kpis(items: list[tuple[str, str, str]]) -> str:
    cards = "".join(
        f'<div class="kpi"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div>'
        f'<div class="h">{escape(h)}</div></div>'
        for k, v, h in items
    )
    return f'<div class="kpis">{cards}</div>'


def per_class_table(per_class: list[dict]) -> str:
    """Classes with precision, recall, F1 (as a bar) and support; the weakest F1s flagged."""
    # Flag the three weakest classes (by F1), unless they are as good as the best.
    best = max((r["f1"] for r in per_class), default=0.0)
    order = sorted(range(len(per_class)), key=lambda i: per_class[i]["f1"])
    weak_ids = {i for i in order[:3] if per_class[i]["f1"] < best} if len(per_class) > 3 else set()
    rows = []
    for i, r in enumerate(per_class):
        weak = ' class="weak"' if i in weak_ids else ""
        rows.append(
            f"<tr{weak}><td>{escape(str(r['class']))}</td>"
            f'<td class="num">{pct(r["precision"], 1)}</td>'
            f'<td class="num">{pct(r["recall"], 1)}</td>'
            f'<td class="num">{pct(r["f1"], 1)}<div class="bar">'
            f'<span style="width:{100 * r["f1"]:.1f}%"></span></div></td>'
            f'<td class="num">{r["support"]}</td></tr>'
        )
    head = ('<thead><tr><th>class</th><th class="num">precision</th><th class="num">recall</th>'
            '<th class="num">F1</th><th class="num">support</th></tr></thead>')
    return f"<table>{head}<tbody>{''.join(rows)}</tbody></table>"


def confused_table(pairs: list[dict]) -> str:
    if not pairs:
        return "<p>No confusions: every image was classified correctly.</p>"
    rows = "".join(
        f"<tr><td>{escape(str(p['true']))}</td><td>{escape(str(p['predicted']))}</td>"
        f'<td class="num">{p["count"]}</td><td class="num">{pct(p["rate"], 1)}</td></tr>'
        for p in pairs
    )
    head = ('<thead><tr><th>true class</th><th>predicted as</th><th class="num">images</th>'
            '<th class="num">share of the true class</th></tr></thead>')
    return f"<table>{head}<tbody>{rows}</tbody></table>"


def split_table(classes: list[str], counts: dict[str, list[int]]) -> str:
    """Images per class and split (rows: classes, columns: splits)."""
    names = list(counts)
    head = "<th>class</th>" + "".join(f'<th class="num">{escape(n)}</th>' for n in names)
    rows = []
    for i, c in enumerate(classes[:100]):
        cells = "".join(f'<td class="num">{counts[n][i]}</td>' for n in names)
        rows.append(f"<tr><td>{escape(str(c))}</td>{cells}</tr>")
    total = "".join(f'<td class="num"><b>{sum(counts[n])}</b></td>' for n in names)
    rows.append(f"<tr><td><b>total</b></td>{total}</tr>")
    more = f"<p>… and {len(classes) - 100} more classes.</p>" if len(classes) > 100 else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>{more}"


def health_html(health: dict) -> str:
    """The data health check: verdict, problems as a list, other facts as a table."""
    problems = health.get("problems") or []
    blocking = bool(health.get("blocking"))
    verdict = (
        '<span class="tag bad">blocking problems</span>' if blocking
        else '<span class="tag warn">warnings</span>' if problems
        else '<span class="tag ok">no problems found</span>'
    )
    items = []
    for p in problems:
        if isinstance(p, dict):
            cls = "bad" if p.get("blocking") else "warn"
            kind = p.get("kind") or ("blocking" if p.get("blocking") else "warning")
            text = f"{p.get('count', '')} × {p.get('message', '')}".strip(" ×")
            fix = f" <i>Fix: {escape(str(p['fix']))}</i>" if p.get("fix") else ""
            eg = ", ".join(map(str, (p.get("paths") or [])[:3]))
            eg = f"<br><small>e.g. {escape(eg)}</small>" if eg else ""
            items.append(f'<li><span class="tag {cls}">{escape(str(kind))}</span> '
                         f"{escape(text)}.{fix}{eg}</li>")
        else:
            items.append(f"<li>{escape(str(p))}</li>")
    skipped = health.get("skipped") or []
    if skipped:
        eg = ", ".join(str(s.get("path", s) if isinstance(s, dict) else s) for s in skipped[:3])
        items.append(f'<li><span class="tag warn">unreadable</span> {len(skipped)} file(s) could '
                     f"not be decoded and were left out.<br><small>e.g. {escape(eg)}</small></li>")
    skip = ("problems", "blocking", "blocking_kinds", "source")
    facts = [(k, v) for k, v in health.items()
             if k not in skip and k != "full" and isinstance(v, (int, float, str, bool))]
    if "full" in health:
        facts.insert(0, ("check", "full: every image decoded" if health["full"]
                         else "fast: file checks (`reslab check DATA` decodes every image)"))
    nested = {k: v for k, v in health.items()
              if k not in skip and isinstance(v, (dict, list)) and v}
    if skipped and not problems and not blocking:
        verdict = '<span class="tag warn">warnings</span>'
    out = f"<p>{verdict}</p>"
    if items:
        out += f"<ul>{''.join(items)}</ul>"
    if facts:
        out += kv_table(facts)
    if nested:
        out += ("<details><summary>full health report</summary><pre><code>"
                f"{escape(json.dumps(nested, indent=2, ensure_ascii=False, default=str)[:20000])}"
                "</code></pre></details>")
    return out


def gallery(items: list[dict]) -> str:
    """Cards of images, each ``{"png", "true", "pred", "prob", "loss"}`` (PNG bytes and labels)."""
    cards = []
    for it in items:
        b64 = base64.b64encode(it["png"]).decode("ascii")
        wrong = it["true"] != it["pred"]
        cards.append(
            f'<figure><img src="data:image/png;base64,{b64}" alt="Grad-CAM of a top-loss image">'
            f"<figcaption>true <b>{escape(str(it['true']))}</b> · predicted "
            f'<span class="{"wrong" if wrong else ""}">{escape(str(it["pred"]))}</span> '
            f"({pct(it['prob'], 1)})<br>loss {it['loss']:.3f}</figcaption></figure>"
        )
    return f'<div class="gallery">{"".join(cards)}</div>'


def code_block(text: str) -> str:
    return f"<pre><code>{escape(text)}</code></pre>"
