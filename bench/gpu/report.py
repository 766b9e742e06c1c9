"""Writing the GPU run's results: the markdown report and the PNG plot (bench/gpu/speed.py).
Pure Python (no torch, no GPU), so `speed.py --dry-run` tests it anywhere.

A result row is a dict: section ("fwd" or "fwd+bwd"), dim, causal, seq, batch, heads, method,
ms (median, None when it did not run), tflops, note.
"""
import os
import shutil
import subprocess


def flops(batch, heads, seq, dim, causal, backward):
    """4·B·H·S²·D for the forward, halved when causal, ×2.5 for forward+backward (the
    backward's 2.5× the forward on top of it: 3.5× in all)."""
    total = 4.0 * batch * heads * seq * seq * dim
    if causal:
        total /= 2
    if backward:
        total *= 3.5
    return total


def _fmt(value, digits=1):
    return "—" if value is None else f"{value:.{digits}f}"


def speed_tables(rows, ours, baseline):
    """One markdown table per (section, dim, causal): rows = sequence lengths, columns = methods
    (TFLOP/s), then ours/baseline ratios."""
    lines = []
    keys = []
    for row in rows:
        key = (row["section"], row["dim"], row["causal"])
        if key not in keys:
            keys.append(key)
    methods = []
    for row in rows:
        if row["method"] not in methods:
            methods.append(row["method"])
    for section, dim, causal in keys:
        subset = [r for r in rows if (r["section"], r["dim"], r["causal"]) == (section, dim, causal)]
        seqs = sorted({r["seq"] for r in subset})
        lines.append(f"### {section}, d={dim}, {'causal' if causal else 'not causal'} "
                     f"(TFLOP/s; B·S = 16k, H·D = 2048, bf16)")
        lines.append("")
        ratio_names = [f"{o}/{baseline}" for o in ours]
        lines.append("| S | B×H | " + " | ".join(methods) + " | " + " | ".join(ratio_names) + " |")
        lines.append("|" + "---|" * (2 + len(methods) + len(ratio_names)))
        for seq in seqs:
            at = {r["method"]: r for r in subset if r["seq"] == seq}
            first = next(iter(at.values()))
            cells = [str(seq), f"{first['batch']}×{first['heads']}"]
            cells += [_fmt(at[m]["tflops"]) if m in at else "—" for m in methods]
            for o in ours:
                a, b = at.get(o), at.get(baseline)
                if a and b and a["ms"] and b["ms"]:
                    cells.append(f"{b['ms'] / a['ms']:.2f}×")
                else:
                    cells.append("—")
            lines.append("| " + " | ".join(cells) + " |")
        notes = sorted({f"{r['method']}: {r['note']}" for r in subset if r.get("note")})
        if notes:
            lines.append("")
            lines.extend(f"- {n}" for n in notes)
        lines.append("")
    return lines


def write_markdown(path, title, header_lines, sections):
    """sections: list of (heading, lines)."""
    with open(path, "w") as out:
        out.write(f"# {title}\n\n")
        for line in header_lines:
            out.write(line + "\n")
        out.write("\n")
        for heading, lines in sections:
            out.write(f"## {heading}\n\n")
            for line in lines:
                out.write(line + "\n")
            out.write("\n")


def _series(rows, section, dim, causal):
    by_method = {}
    for r in rows:
        if (r["section"], r["dim"], r["causal"]) == (section, dim, causal) and r["tflops"]:
            by_method.setdefault(r["method"], []).append((r["seq"], r["tflops"]))
    return {m: sorted(points) for m, points in by_method.items()}


def write_plot(path, rows, title):
    """TFLOP/s against S, one panel per (section, dim, causal). matplotlib where it is installed
    (the GPU machine), else gnuplot; returns what wrote it, or None with no plotter."""
    panels = []
    for r in rows:
        key = (r["section"], r["dim"], r["causal"])
        if key not in panels:
            panels.append(key)
    if not panels:
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    columns = 4
    count = len(panels)
    grid_rows = (count + columns - 1) // columns
    if plt is not None:
        figure, axes = plt.subplots(grid_rows, min(columns, count),
                                    figsize=(4.2 * min(columns, count), 3.4 * grid_rows),
                                    squeeze=False)
        for index, (section, dim, causal) in enumerate(panels):
            ax = axes[index // columns][index % columns]
            for method, points in _series(rows, section, dim, causal).items():
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
            ax.set_xscale("log", base=2)
            ax.set_title(f"{section} d={dim} {'causal' if causal else 'full'}", fontsize=9)
            ax.set_xlabel("S")
            ax.set_ylabel("TFLOP/s")
            ax.grid(True, alpha=0.3)
            ax.legend(fontsize=6)
        for index in range(count, grid_rows * columns):
            if index // columns < len(axes) and index % columns < len(axes[0]):
                axes[index // columns][index % columns].axis("off")
        figure.suptitle(title, fontsize=10)
        figure.tight_layout()
        figure.savefig(path, dpi=110)
        plt.close(figure)
        return "matplotlib"
    gnuplot = shutil.which("gnuplot")
    if not gnuplot:
        return None
    data_dir = os.path.splitext(path)[0] + "-data"
    os.makedirs(data_dir, exist_ok=True)
    script = [f"set terminal pngcairo size {420 * min(columns, count)},{340 * grid_rows} font ',8'"
              if _has_cairo(gnuplot) else
              f"set terminal png size {420 * min(columns, count)},{340 * grid_rows}",
              f"set output '{path}'",
              f"set multiplot layout {grid_rows},{min(columns, count)} title '{title}'",
              "set logscale x 2", "set key left top font ',6'", "set grid",
              "set xlabel 'S'", "set ylabel 'TFLOP/s'"]
    for index, (section, dim, causal) in enumerate(panels):
        plots = []
        for m_index, (method, points) in enumerate(_series(rows, section, dim, causal).items()):
            data = os.path.join(data_dir, f"p{index}-m{m_index}.dat")
            with open(data, "w") as out:
                out.writelines(f"{s} {t}\n" for s, t in points)
            plots.append(f"'{data}' using 1:2 with linespoints title '{method}'")
        script.append(f"set title '{section} d={dim} {'causal' if causal else 'full'}'")
        script.append("plot " + ", ".join(plots) if plots else "plot 0 notitle")
    script.append("unset multiplot")
    subprocess.run([gnuplot], input="\n".join(script) + "\n", text=True, check=True)
    shutil.rmtree(data_dir, ignore_errors=True)
    return "gnuplot"


def _has_cairo(gnuplot):
    probe = subprocess.run([gnuplot, "-e", "set terminal"], capture_output=True, text=True)
    return "pngcairo" in probe.stdout + probe.stderr
