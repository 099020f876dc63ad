"""The gallery page's stylesheet and script, inlined into index.html (nothing is fetched: it opens from disk).

The script reads the jobs from a JSON block (``<script type="application/json" id="gallery-data">``)
and shows every string from a run through ``textContent`` and ``setAttribute``, never as markup.
What it adds to the server-written table: sorting by a column, a filter box, a full-size viewer
(click a result or a snapshot), and a comparison of two picked results, side by side or blinking
in one place. The URL's fragment opens each of them, so a view can be linked or bookmarked:
``#view=3``, ``#compare=0,1``, ``#compare=0,1&blink``, ``#filter=beta%3D1e3``.
"""

from __future__ import annotations

import json
from typing import Any

BLINK_MS = 700  # how long each result of a blink comparison stays on screen

# What would end a <script> element or start a comment inside one, written as JSON escapes instead.
SCRIPT_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside ``<script>``: no ``</script>``, ``<!--`` or line separator survives."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return "".join(SCRIPT_ESCAPES.get(character, character) for character in text)


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #222; }
h1 { font-size: 1.3em; margin: 0 0 0.3em; } h2 { font-size: 1.1em; margin: 1.5em 0 0; }
.about { margin: 0 0 1em; } .about p { margin: 0.15em 0; }
.inputs img { height: 96px; margin-right: 0.5em; vertical-align: top; border: 1px solid #ccc; }
.controls { display: flex; gap: 0.8em; align-items: center; flex-wrap: wrap; margin: 0 0 0.6em; }
.controls input[type=search] { width: 22em; padding: 3px 6px; font: inherit; }
.controls button { font: inherit; padding: 2px 10px; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ddd; padding: 4px 6px; vertical-align: middle; }
thead th { position: sticky; top: 0; background: #f3f3f3; cursor: pointer; user-select: none; z-index: 1; }
thead th:hover { background: #e6e6e6; }
thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
thead th[aria-sort="descending"]::after { content: " \\25BC"; }
tbody tr:nth-child(even) { background: #fafafa; }
tbody tr.picked { outline: 2px solid #1f77b4; outline-offset: -2px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.result img { display: block; width: 112px; height: auto; max-height: 160px; object-fit: contain; cursor: zoom-in; }
td.result label { display: block; font-size: 12px; color: #555; margin-top: 2px; cursor: pointer; }
td.curve img { display: block; width: 176px; }
.nowrap { white-space: nowrap; }
.strip { display: flex; gap: 3px; max-width: 360px; overflow-x: auto; padding-bottom: 2px; }
.strip a { flex: none; text-align: center; font-size: 10px; color: #555; text-decoration: none; }
.strip img { display: block; height: 48px; width: auto; border: 1px solid #ddd; cursor: zoom-in; }
.figures img { display: block; max-width: 100%; margin: 0.5em 0 1.5em; border: 1px solid #ddd; }
.none { display: inline-block; width: 112px; padding: 40px 0; text-align: center; background: #e0e0e0;
        color: #555; font-size: 12px; }
.status-completed { color: #1a7f37; } .status-other { color: #b42318; font-weight: 600; }
.message { display: block; min-width: 140px; max-width: 220px; color: #555; font-size: 12px; }
.damaged { color: #b00020; }
.key { font-size: 12px; font-weight: normal; }
#viewer { position: fixed; inset: 0; z-index: 10; background: #1b1b1b; color: #eee;
          display: flex; flex-direction: column; }
#viewer[hidden] { display: none; }
#viewer .bar { display: flex; gap: 0.8em; align-items: center; padding: 0.5em 1em; }
#viewer .bar button { font: inherit; padding: 2px 10px; }
#viewer .caption { flex: 1; }
#viewer .pictures { flex: 1; display: flex; gap: 1em; justify-content: center; align-items: flex-start;
                    overflow: auto; padding: 0 1em 1em; }
#viewer figure { margin: 0; text-align: center; }
#viewer figcaption { font-size: 12px; margin-top: 0.3em; }
#viewer img { display: block; max-width: calc(100vw - 3em); max-height: calc(100vh - 7em); background: #fff; }
#viewer .side img, #viewer .blink img { width: calc(50vw - 2.5em); height: auto; object-fit: contain;
                                        image-rendering: pixelated; }  /* small results made comparable */
"""

SCRIPT = """
const data = JSON.parse(document.getElementById("gallery-data").textContent);
const table = document.querySelector("table.sortable");
const rows = Array.from(table.tBodies[0].rows);

// Sorting: click a header; again to reverse. A cell's data-sort, else its text; blanks last.
table.querySelectorAll("thead th").forEach((th, column) => th.addEventListener("click", () => {
  const descending = th.getAttribute("aria-sort") === "ascending";
  table.querySelectorAll("thead th").forEach((other) => other.removeAttribute("aria-sort"));
  th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  const key = (row) => row.cells[column].dataset.sort ?? row.cells[column].textContent.trim();
  const sorted = Array.from(table.tBodies[0].rows).sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" || y === "") return (x === "") - (y === "");
    const numbers = x.trim() !== "" && !isNaN(x) && !isNaN(y);
    const order = numbers ? Number(x) - Number(y) : x.localeCompare(y, undefined, {numeric: true});
    return descending ? -order : order;
  });
  table.tBodies[0].append(...sorted);
}));

// Filter: a row stays when it holds every word typed (its job, swept values, status, message).
const filter = document.getElementById("filter");
const shown = document.getElementById("shown");
function applyFilter() {
  const words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
  let count = 0;
  for (const row of rows) {
    const text = row.dataset.search.toLowerCase();
    row.hidden = !words.every((word) => text.includes(word));
    count += row.hidden ? 0 : 1;
  }
  shown.textContent = `${count} of ${rows.length} jobs shown`;
}
filter.addEventListener("input", applyFilter);

// The viewer: one picture full size, or two side by side, or two blinking in one place.
const viewer = document.getElementById("viewer");
const pictures = viewer.querySelector(".pictures");
const caption = viewer.querySelector(".caption");
const modeButton = document.getElementById("mode");
let blinkTimer = null;
let comparing = null;  // [job, job] while a comparison is open

function figure(src, text) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.setAttribute("src", src);
  img.setAttribute("alt", text);
  const label = document.createElement("figcaption");
  label.textContent = text;
  fig.append(img, label);
  return fig;
}

function stopBlink() {
  if (blinkTimer !== null) clearInterval(blinkTimer);
  blinkTimer = null;
}

function openViewer(src, text) {
  stopBlink();
  comparing = null;
  modeButton.hidden = true;
  pictures.className = "pictures";
  pictures.replaceChildren(figure(src, text));
  caption.textContent = text;
  viewer.hidden = false;
}

function openComparison(a, b, blink) {
  const jobs = [data.jobs[a], data.jobs[b]];
  if (jobs.some((job) => !job || !job.result)) return false;
  stopBlink();
  comparing = [a, b];
  modeButton.hidden = false;
  modeButton.textContent = blink ? "side by side" : "blink";
  caption.textContent = blink ? `blinking: ${jobs[0].label} / ${jobs[1].label}` : `${jobs[0].label} | ${jobs[1].label}`;
  if (blink) {
    const fig = figure(jobs[0].result, jobs[0].label);
    fig.dataset.showing = String(a);
    pictures.className = "pictures blink";
    pictures.replaceChildren(fig);
    let index = 0;
    blinkTimer = setInterval(() => {
      index = 1 - index;
      fig.querySelector("img").setAttribute("src", jobs[index].result);
      fig.querySelector("figcaption").textContent = jobs[index].label;
      fig.dataset.showing = String(comparing[index]);
    }, BLINK_MS);
  } else {
    pictures.className = "pictures side";
    pictures.replaceChildren(figure(jobs[0].result, jobs[0].label), figure(jobs[1].result, jobs[1].label));
  }
  viewer.hidden = false;
  return true;
}

function closeViewer() {
  stopBlink();
  comparing = null;
  viewer.hidden = true;
  pictures.replaceChildren();
  if (location.hash.startsWith("#view=") || location.hash.startsWith("#compare=")) {
    history.replaceState(null, "", location.pathname + location.search);
  }
}

document.getElementById("close").addEventListener("click", closeViewer);
viewer.addEventListener("click", (event) => { if (event.target === viewer || event.target === pictures) closeViewer(); });
document.addEventListener("keydown", (event) => {
  if (viewer.hidden) return;
  if (event.key === "Escape") closeViewer();
  if (event.key === " " && comparing) { event.preventDefault(); modeButton.click(); }
});
modeButton.addEventListener("click", () => {
  if (comparing) location.hash = `compare=${comparing.join(",")}${blinkTimer === null ? "&blink" : ""}`;
});

// A click on a result or a snapshot opens it here; the link still opens the file (new tab, no script).
for (const link of document.querySelectorAll("a.zoom")) {
  link.addEventListener("click", (event) => {
    if (event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    openViewer(link.getAttribute("href"), link.dataset.caption || link.getAttribute("href"));
  });
}

// Picking two results to compare.
const compareButton = document.getElementById("compare");
let picked = [];
function updatePicks() {
  for (const row of rows) row.classList.toggle("picked", picked.includes(row.dataset.job));
  for (const box of document.querySelectorAll("input.pick")) box.checked = picked.includes(box.dataset.job);
  compareButton.disabled = picked.length !== 2;
  compareButton.textContent = picked.length === 2 ? `Compare jobs ${picked[0]} and ${picked[1]}`
    : `Compare: pick ${2 - picked.length} more result${picked.length === 1 ? "" : "s"}`;
}
for (const box of document.querySelectorAll("input.pick")) {
  box.addEventListener("change", () => {
    picked = picked.filter((job) => job !== box.dataset.job);
    if (box.checked) picked.push(box.dataset.job);
    picked = picked.slice(-2);  // a third pick replaces the oldest
    updatePicks();
  });
}
compareButton.addEventListener("click", () => {
  if (picked.length === 2) location.hash = `compare=${picked.join(",")}`;
});

// The fragment: #view=JOB, #compare=A,B[&blink], #filter=TEXT.
function applyHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (params.has("filter")) { filter.value = params.get("filter"); }
  applyFilter();
  if (params.has("compare")) {
    const pair = params.get("compare").split(",");
    if (pair.length === 2 && openComparison(pair[0], pair[1], params.has("blink"))) {
      picked = pair;
      updatePicks();
      return;
    }
  }
  if (params.has("view")) {
    const job = data.jobs[params.get("view")];
    if (job && job.result) { openViewer(job.result, job.label); return; }
  }
  if (!viewer.hidden) { stopBlink(); comparing = null; viewer.hidden = true; }
}
window.addEventListener("hashchange", applyHash);
updatePicks();
applyHash();
document.body.dataset.ready = "true";  // the script ran to its end
"""


def script() -> str:
    """The page's script, its settings first."""
    return f'"use strict";\nconst BLINK_MS = {BLINK_MS};\n{SCRIPT}'
