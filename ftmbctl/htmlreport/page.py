"""The HTML around the figures: one self-contained page, readable with JavaScript off.

Everything is inline (style, SVG figures, a few lines of script): the page opens offline and
fetches nothing. Tables carry every number a figure shows, so the page reads without
JavaScript and without the pictures. The script only adds a detail box to the crash-point map:
a click on a failing point shows its row of the failing-points table there (with JavaScript
off, the same click jumps to that row, which CSS highlights).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Iterable, Sequence

from ftmbctl import __version__

STYLE = """
:root { color-scheme: light; --ink: #1b1b1b; --muted: #555; --rule: #d8d8d8; --bad: #b3421b; --good: #1d6e4f; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", "Liberation Sans", Arial, sans-serif; color: var(--ink);
       max-width: 72rem; margin: 0 auto; padding: 1.5rem 1.25rem 4rem; }
h1 { font-size: 1.6rem; margin: 0 0 .25rem; } h2 { font-size: 1.25rem; margin: 2.5rem 0 .5rem;
     border-bottom: 1px solid var(--rule); padding-bottom: .25rem; } h3 { font-size: 1.05rem; margin: 1.5rem 0 .4rem; }
p.lede, footer, figcaption, .note { color: var(--muted); }
nav ol { display: flex; flex-wrap: wrap; gap: .25rem 1.25rem; padding: 0; list-style: none; margin: .75rem 0 0; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .92rem; }
th, td { text-align: left; padding: .3rem .7rem .3rem 0; border-bottom: 1px solid var(--rule); vertical-align: top; }
thead th { border-bottom: 2px solid var(--ink); }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { font-weight: 600; padding-right: 1.5rem; }
.bad { color: var(--bad); font-weight: 600; } .good { color: var(--good); font-weight: 600; }
figure { margin: 1rem 0; } figcaption { font-size: .9rem; max-width: 60rem; }
svg.figure { width: 100%; max-width: 60rem; height: auto; display: block; }
tr:target, tr.selected { background: #fff2c7; }
.detail { border: 1px solid var(--rule); border-left: 4px solid var(--bad); padding: .5rem 1rem; margin: .5rem 0;
          max-width: 60rem; }
.detail dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; margin: .25rem 0; }
.detail dt { font-weight: 600; } .detail dd { margin: 0; }
code { font-size: .9em; background: #f3f3f3; padding: 0 .2em; }
"""

SCRIPT = """
(function () {
  var box = document.getElementById("map-detail");
  if (!box) { return; }
  document.addEventListener("click", function (event) {
    var link = event.target.closest ? event.target.closest("svg a") : null;
    if (!link) { return; }
    var href = link.getAttribute("href") || link.getAttributeNS("http://www.w3.org/1999/xlink", "href") || "";
    var row = href.charAt(0) === "#" ? document.getElementById(href.slice(1)) : null;
    if (!row || row.tagName !== "TR") { return; }
    event.preventDefault();
    var heads = row.closest("table").querySelectorAll("thead th");
    var list = document.createElement("dl");
    Array.prototype.forEach.call(row.cells, function (cell, i) {
      var term = document.createElement("dt");
      var value = document.createElement("dd");
      term.textContent = heads[i] ? heads[i].textContent : "";
      value.textContent = cell.textContent;
      list.appendChild(term);
      list.appendChild(value);
    });
    var heading = document.createElement("strong");
    heading.textContent = "Selected crash point";
    box.replaceChildren(heading, list);
    box.hidden = false;
    Array.prototype.forEach.call(document.querySelectorAll("tr.selected"), function (other) {
      other.classList.remove("selected");
    });
    row.classList.add("selected");
  });
})();
"""


class Html(str):
    """Text that is HTML already (built here from escaped parts): ``cell`` leaves it as it is."""


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def cell(value: object) -> str:
    return value if isinstance(value, Html) else esc(value)


def code(text: object) -> Html:
    return Html(f"<code>{esc(text)}</code>")


def mark(text: object, good: bool | None) -> Html:
    """A verdict word, its class saying good or bad (the word itself says it too)."""
    return Html(f'<span class="{"good" if good else "bad"}">{esc(text)}</span>' if good is not None else esc(text))


@dataclass
class Column:
    title: str
    numeric: bool = False


def table(columns: Sequence[Column | str], rows: Iterable[Sequence[object]], caption: str | None = None,
          row_ids: Sequence[str] | None = None) -> Html:
    """A table with a header row; numeric columns are right-aligned."""
    cols = [c if isinstance(c, Column) else Column(c) for c in columns]
    head = "".join(f'<th scope="col"{" class=num" if c.numeric else ""}>{esc(c.title)}</th>' for c in cols)
    body = []
    for i, row in enumerate(rows):
        ident = f' id="{esc(row_ids[i])}"' if row_ids else ""
        cells = "".join(f'<td{" class=num" if c.numeric else ""}>{cell(v)}</td>' for c, v in zip(cols, row))
        body.append(f"<tr{ident}>{cells}</tr>")
    title = f"<caption>{esc(caption)}</caption>" if caption else ""
    return Html(f"<table>{title}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>")


def facts(rows: Iterable[tuple[str, object]]) -> Html:
    """A two-column table of named facts, each name a row header."""
    body = "".join(f'<tr><th scope="row">{esc(name)}</th><td>{cell(value)}</td></tr>' for name, value in rows)
    return Html(f'<table class="facts"><tbody>{body}</tbody></table>')


def figure(svg: str, caption: str) -> Html:
    """An inline SVG figure (svg.py gives it its title and description) and its caption."""
    return Html(f"<figure>{svg}<figcaption>{esc(caption)}</figcaption></figure>")


def paragraph(text: object, cls: str | None = None) -> Html:
    return Html(f'<p{f" class={cls}" if cls else ""}>{cell(text)}</p>')


@dataclass
class Section:
    anchor: str
    title: str
    parts: list[str]


def document(title: str, lede: str, sections: Sequence[Section], footer: str) -> str:
    """The whole page: a heading, a table of contents, the sections, and a footer."""
    toc = "".join(f'<li><a href="#{esc(s.anchor)}">{esc(s.title)}</a></li>' for s in sections)
    body = "".join(f'<section id="{esc(s.anchor)}" aria-labelledby="{esc(s.anchor)}-h">'
                   f'<h2 id="{esc(s.anchor)}-h">{esc(s.title)}</h2>{"".join(s.parts)}</section>' for s in sections)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="ftmbctl {esc(__version__)}">\n'
            f"<title>{esc(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            f'<header><h1>{esc(title)}</h1><p class="lede">{esc(lede)}</p>'
            f'<nav aria-label="sections"><ol>{toc}</ol></nav></header>\n<main>{body}</main>\n'
            f"<footer><p>{esc(footer)}</p></footer>\n<script>{SCRIPT}</script>\n</body>\n</html>\n")
