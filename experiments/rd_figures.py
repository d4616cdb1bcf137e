"""BD-rate tables and rate-distortion figures from the results of experiments/rd_sweep.py.

Reads ``<content>_<codec>_<method>.json`` (CompressAI's layout, written by
``dualcodec eval``) from a results folder. Used by rd_sweep.py, which writes
``bd_rate.json``, ``bd_rate.md`` and ``rd_psnr.png`` beside the results, and by
notebooks/rate_distortion.ipynb, which draws the same figures inline.

    python experiments/rd_figures.py [experiments/results/rd]     # tables and figure again
    python experiments/rd_figures.py --compare OLD.json NEW.json    # one curve file against another, item by item

``--compare`` prints, for each item of two results files of the same content (an earlier
version from git, say: ``git show REV:experiments/results/rd/video_h264_dualcodec.json``),
the PSNR-YUV BD-rate of NEW against OLD, each file's side-stream kilobytes per QP, and per
QP NEW's PSNR-YUV and file bytes less OLD's.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "experiments" / "results" / "rd"
CONTENTS = ("kodak", "video")
CODECS = ("h264", "hevc", "av1")
METHODS = ("auto", "dualcodec", "bicubic", "plain")
LABELS = {"auto": "dualcodec --scale auto (the default)", "dualcodec": "dualcodec 2x model alone",
          "bicubic": "bicubic down/up per plane, same codec", "plain": "plain codec, full resolution"}
CODEC_NAMES = {"h264": "H.264", "hevc": "HEVC", "av1": "AV1"}
# metric key -> (axis label, sign that makes it grow with quality)
METRICS = {"psnr-yuv": ("PSNR-YUV 6:1:1 (dB)", 1.0), "vmaf": ("VMAF v0.6.1", 1.0),
           "ms-ssim-rgb": ("MS-SSIM RGB", 1.0), "lpips": ("LPIPS (AlexNet)", -1.0)}
# BD-rate columns: (test, anchor, metric)
COMPARISONS = [("auto", "plain", "psnr-yuv"), ("auto", "plain", "vmaf"), ("auto", "bicubic", "psnr-yuv"),
               ("dualcodec", "plain", "psnr-yuv"),
               ("dualcodec", "bicubic", "psnr-yuv"), ("bicubic", "plain", "psnr-yuv"),
               ("dualcodec", "bicubic", "vmaf"), ("bicubic", "plain", "vmaf"),
               ("dualcodec", "bicubic", "ms-ssim-rgb"), ("dualcodec", "bicubic", "lpips")]


def load(folder: Path = RESULTS) -> dict[tuple[str, str, str], dict]:
    """``(content, codec, method) -> results file`` for every file present."""
    found = {}
    for content in CONTENTS:
        for codec in CODECS:
            for method in METHODS:
                path = Path(folder) / f"{content}_{codec}_{method}.json"
                if path.is_file():
                    found[content, codec, method] = json.loads(path.read_text())
    return found


def bd_rows(runs: dict) -> list[dict]:
    """One row per (content, codec): every comparison's BD-rate in percent, and dualcodec's BD-PSNR
    over bicubic in dB (None: the curves do not overlap)."""
    from dualcodec.metrics import bd_psnr, bd_rate

    rows = []
    for content in CONTENTS:
        for codec in CODECS:
            if not all((content, codec, m) in runs for m in METHODS):
                continue
            row = {"content": content, "codec": codec, "items": len(runs[content, codec, "plain"]["inputs"])}
            warnings = {}
            for test, anchor, metric in COMPARISONS:
                sign = METRICS[metric][1]
                a, t = runs[content, codec, anchor]["results"], runs[content, codec, test]["results"]
                bd = bd_rate(a["bpp"], [sign * v for v in a[metric]], t["bpp"], [sign * v for v in t[metric]])
                column = f"{test} vs {anchor}, {metric}"
                row[column] = None if math.isnan(bd.value) else round(bd.value, 2)
                if bd.warning:
                    warnings[column] = bd.warning
            a, t = runs[content, codec, "bicubic"]["results"], runs[content, codec, "dualcodec"]["results"]
            gain = bd_psnr(a["bpp"], a["psnr-yuv"], t["bpp"], t["psnr-yuv"])
            row["dualcodec vs bicubic, bd-psnr"] = None if math.isnan(gain.value) else round(gain.value, 3)
            if gain.warning:
                warnings["dualcodec vs bicubic, bd-psnr"] = gain.warning
            row["warnings"] = warnings  # the bjontegaard package's, e.g. curves overlapping < 75%
            rows.append(row)
    return rows


def item_rows(runs: dict, test: str = "auto", anchor: str = "plain", metric: str = "psnr-yuv") -> list[dict]:
    """BD-rate of ``test`` against ``anchor`` for every item (image or clip) on its own."""
    from dualcodec.metrics import bd_rate

    rows = []
    for content in CONTENTS:
        for codec in CODECS:
            if (content, codec, test) not in runs or (content, codec, anchor) not in runs:
                continue
            curves = {}
            for method in (test, anchor):
                for entry in runs[content, codec, method]["inputs"]:
                    points = sorted(entry["points"], key=lambda p: p["qp"])
                    key = {"psnr-yuv": "psnr_yuv", "ms-ssim-rgb": "ms_ssim"}.get(metric, metric)
                    # by file name: one results file may say ../shared/..., another /work/shared/...
                    curves[method, Path(entry["source"]).name] = ([p["bpp"] for p in points], [p[key] for p in points],
                                                                  [p.get("mode", "") for p in points])
            for source in dict.fromkeys(s for m, s in curves if m == test):
                (ra, qa, _), (rt, qt, modes) = curves[anchor, source], curves[test, source]
                bd = bd_rate(ra, qa, rt, qt)
                rows.append({"content": content, "codec": codec, "item": source,
                             "bd_rate": None if math.isnan(bd.value) else round(bd.value, 2),
                             "modes": modes, "warning": bd.warning})
    return rows


def _item_cell(item: dict) -> str:
    if item["bd_rate"] is not None:
        return f"{item['bd_rate']:+.2f}%"
    if "overlap" in (item["warning"] or ""):
        return "no overlap"  # e.g. the model kept at every QP: its curve lies at lower rates than plain's
    return "not monotonic"  # a kept model point at a lower rate than a later plain point


def items_markdown(items: list[dict]) -> str:
    """Per-item BD-rates (:func:`item_rows`) as markdown: one row per content and codec."""
    lines = ["| content | base codec | items | auto vs plain per item (PSNR-YUV): each | mean | worst |",
             "|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for item in items:
        groups.setdefault((item["content"], item["codec"]), []).append(item)
    for (content, codec), group in groups.items():
        values = [i["bd_rate"] for i in group if i["bd_rate"] is not None]
        cells = ", ".join(f"{i['item'].split('_')[0].removesuffix('.png')} " + _item_cell(i) for i in group)
        mean = f"{sum(values) / len(values):+.2f}%" if values else "n/a"
        worst = f"{max(values):+.2f}%" if values else "n/a"
        lines.append(f"| {content} | {CODEC_NAMES[codec]} | {len(group)} | {cells} | {mean} | {worst} |")
    return "\n".join(lines)


def markdown(rows: list[dict]) -> str:
    """The BD-rate table as markdown."""
    columns = [f"{t} vs {a}, {m}" for t, a, m in COMPARISONS]
    heads = [f"{t} vs {a} ({METRICS[m][0].split(' (')[0]})" for t, a, m in COMPARISONS]
    heads.append("dualcodec vs bicubic (BD-PSNR YUV)")
    lines = ["| content | base codec | items | " + " | ".join(heads) + " |", "|---" * (3 + len(heads)) + "|"]
    marked = False
    for row in rows:
        def mark(column: str) -> str:
            nonlocal marked
            marked |= column in row["warnings"]
            return "*" if column in row["warnings"] else ""

        cells = ["no overlap" if row[c] is None else f"{row[c]:+.1f}%{mark(c)}" for c in columns]
        gain = row["dualcodec vs bicubic, bd-psnr"]
        cells.append("no overlap" if gain is None else f"{gain:+.2f} dB{mark('dualcodec vs bicubic, bd-psnr')}")
        lines.append(f"| {row['content']} | {CODEC_NAMES[row['codec']]} | {row['items']} | " + " | ".join(cells) + " |")
    if marked:
        lines += ["", "\\* the two curves overlap over less than 75% of their range (bjontegaard's warning): "
                  "read that figure with care."]
    return "\n".join(lines)


def figure(runs: dict, content: str, metrics=tuple(METRICS)):
    """Rows: metrics; columns: base codecs; curves: the three methods."""
    import matplotlib.pyplot as plt

    codecs = [c for c in CODECS if any((content, c, m) in runs for m in METHODS)]
    fig, axes = plt.subplots(len(metrics), len(codecs), figsize=(4.6 * len(codecs), 3.6 * len(metrics)),
                             squeeze=False)
    for row, metric in enumerate(metrics):
        for col, codec in enumerate(codecs):
            ax = axes[row][col]
            for method in METHODS:
                if (content, codec, method) in runs:
                    results = runs[content, codec, method]["results"]
                    ax.plot(results["bpp"], results[metric], "o-", ms=4, label=LABELS[method])
            ax.set_title(f"{content}, {CODEC_NAMES[codec]} base, QP {'/'.join(map(str, results['qp']))}", fontsize=10)
            ax.set_xlabel("bits per pixel (whole file)")
            ax.set_ylabel(METRICS[metric][0])
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def summarize(folder: Path = RESULTS) -> None:
    """Write bd_rate.json, bd_rate.md and rd_<content>.png into ``folder``; print the table."""
    import matplotlib

    matplotlib.use("Agg")
    runs = load(folder)
    rows = bd_rows(runs)
    (folder / "bd_rate.json").write_text(json.dumps(rows, indent=1) + "\n")
    table = markdown(rows)
    (folder / "bd_rate.md").write_text(table + "\n")
    items = item_rows(runs)
    (folder / "bd_items.json").write_text(json.dumps(items, indent=1) + "\n")
    (folder / "bd_items.md").write_text(items_markdown(items) + "\n")
    for content in CONTENTS:
        if any(key[0] == content for key in runs):
            figure(runs, content).savefig(folder / f"rd_{content}.png", dpi=80)
    print(table)
    print(items_markdown(items))


def compare(old: Path, new: Path) -> None:
    """Print NEW's BD-rate against OLD per item (:func:`item_rows`), both side streams'
    kilobytes per QP, and per QP NEW's PSNR-YUV and file bytes less OLD's."""
    runs = {("video", "h264", "old"): json.loads(old.read_text()), ("video", "h264", "new"): json.loads(new.read_text())}
    points = {(method, Path(entry["source"]).name): sorted(entry["points"], key=lambda p: p["qp"])
              for (_, _, method), run in runs.items() for entry in run["inputs"]}
    rows = item_rows(runs, test="new", anchor="old")
    for row in rows:
        a, b = points["old", row["item"]], points["new", row["item"]]
        side = [[round(p["side_bytes"] / 1000, 1) for p in q] for q in (a, b)]
        change = ", ".join(f"QP {q['qp']} {q['psnr_yuv'] - p['psnr_yuv']:+.3f} dB {q['file_bytes'] - p['file_bytes']:+d} B"
                           for p, q in zip(a, b))
        print(f"{row['item']}: {_item_cell(row)}; side KB, old {side[0]}, new {side[1]}; new - old: {change}")
    values = [row["bd_rate"] for row in rows if row["bd_rate"] is not None]
    if values:
        print(f"mean over {len(values)} items: {sum(values) / len(values):+.2f}%")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(__doc__)
    elif len(sys.argv) == 4 and sys.argv[1] == "--compare":
        compare(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        summarize(Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS)
