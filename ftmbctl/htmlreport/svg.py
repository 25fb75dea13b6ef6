"""A matplotlib figure as SVG to inline in the page: accessible, hoverable, and small.

matplotlib writes each point of a scatter as one element of the group named by the scatter's
``gid``, in the order of its points (wrapped in an ``<a>`` when the point has a URL). This
module adds a ``<title>`` to each of those elements, which every browser shows on hover without
JavaScript, makes the in-page links stay in the page, and gives the whole picture a title and
a description for screen readers (``role="img"``). Ids stay unique in the page: matplotlib
names every group of every figure alike ("axes_1"), so the ids nothing refers to are dropped.
"""

from __future__ import annotations

import io
import re
from typing import Any, Sequence
from xml.etree import ElementTree as ET

REFERENCE = re.compile(r"url\(#([^)]+)\)")
SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
# Text stays text (smaller, selectable, read by screen readers); every figure gets its own salt,
# so the ids matplotlib derives from it never collide between the figures of one page.
BASE_STYLE = {"svg.fonttype": "none", "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold",
              "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.35,
              "grid.linewidth": 0.6, "legend.frameon": False, "legend.fontsize": 9,
              "font.family": "sans-serif",
              "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"]}


def _tag(name: str) -> str:
    return f"{{{SVG_NS}}}{name}"


def svg_text(fig: Any, name: str, title: str, description: str,
             tooltips: dict[str, Sequence[str]] | None = None) -> str:
    """The figure as an ``<svg>`` element (no XML prolog), with ``title`` and ``description``
    for assistive technology and, for each gid in ``tooltips``, one hover text per point."""
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": f"ftmbctl-{name}"}):
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(buffer.getvalue())
    for element in root.findall(_tag("metadata")):
        root.remove(element)
    _describe(root, name, title, description)
    for gid, texts in (tooltips or {}).items():
        _add_tooltips(root, gid, texts)
    for link in root.iter(_tag("a")):
        link.attrib.pop("target", None)  # matplotlib opens links in a new tab: these stay in the page
    _drop_unreferenced_ids(root, name)
    return ET.tostring(root, encoding="unicode")


def _describe(root: ET.Element, name: str, title: str, description: str) -> None:
    """``role="img"`` labelled by a title and a description; the width follows the page."""
    root.set("role", "img")
    root.set("aria-labelledby", f"{name}-title {name}-desc")
    root.set("class", "figure")
    root.set("id", f"fig-{name}")
    for attribute in ("width", "height"):  # the viewBox keeps the proportions; CSS sets the width
        root.attrib.pop(attribute, None)
    desc = ET.Element(_tag("desc"), id=f"{name}-desc")
    desc.text = description
    root.insert(0, desc)
    head = ET.Element(_tag("title"), id=f"{name}-title")
    head.text = title
    root.insert(0, head)


def _drop_unreferenced_ids(root: ET.Element, name: str) -> None:
    """Keep the ids something in the figure points at (clip paths, marker shapes), and ours,
    which start with the figure's name; the rest only repeat from figure to figure."""
    href = f"{{{XLINK_NS}}}href"
    used = {value[1:] for element in root.iter() for value in [element.get(href, "")] if value.startswith("#")}
    for element in root.iter():
        used.update(REFERENCE.findall(" ".join(v for k, v in element.attrib.items() if k != "id")))
    for element in root.iter():
        ident = element.get("id")
        if ident is not None and ident not in used and not ident.startswith((f"{name}-", f"fig-{name}")):
            del element.attrib["id"]


def _add_tooltips(root: ET.Element, gid: str, texts: Sequence[str]) -> None:
    """One ``<title>`` per point of the collection ``gid``: its elements after ``<defs>``."""
    group = next((g for g in root.iter(_tag("g")) if g.get("id") == gid), None)
    if group is None:
        return
    for element, text in zip(_share_clip_and_style(group), texts):
        title = ET.Element(_tag("title"))
        title.text = text
        element.insert(0, title)


def _share_clip_and_style(group: ET.Element) -> list[ET.Element]:
    """The points of a scatter's group, in order, made smaller where they can be.

    matplotlib wraps each point in a group of its own that only clips it, and repeats the
    point's style: when every point has the same clip and style, the collection's group carries
    them once and each point is a bare ``<use>`` (or a link holding one), a third of the bytes."""
    defs = [child for child in group if child.tag == _tag("defs")]
    points = [child for child in group if child.tag != _tag("defs")]
    wrappers = [point[0] if point.tag == _tag("a") and len(point) == 1 else point for point in points]
    if not all(w.tag == _tag("g") and len(w) == 1 and w[0].tag == _tag("use") for w in wrappers):
        return points  # drawn another way (each point a <path> of its own): left as it is
    clips = {w.get("clip-path") for w in wrappers}
    styles = {w[0].get("style") for w in wrappers}
    if len(clips) != 1 or len(styles) != 1:
        return points
    for name, value in (("clip-path", clips.pop()), ("style", styles.pop())):
        if value is not None:
            group.set(name, value)
    bare = []
    for point, wrapper in zip(points, wrappers):
        use = wrapper[0]
        use.attrib.pop("style", None)
        if point is not wrapper:  # a link: it keeps the point, unwrapped
            point.remove(wrapper)
            point.append(use)
            use = point
        bare.append(use)
    group[:] = defs + bare
    return bare
