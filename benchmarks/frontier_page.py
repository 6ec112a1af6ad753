"""The frontier benchmark's page section and plot (``benchmarks/frontier.py``): how a
section says its runs were made (or, for ``--whole``, each network's protocol), its tables
(every rung, the issue's targets, the peer at equal MACs, the runs) and the accuracy
against measured speed-up plot."""
from __future__ import annotations

import datetime
import os
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks_md import cpu
from frontier_peer import PEER, PEERS
from frontier_protocol import (COMMON, ITERATIONS, KEEP_RATIO, NETWORKS, PROTOCOLS,
                               SIDE_BY_SIDE_ROUNDS, SIDE_BY_SIDE_RUNS, TARGET_DROP, TARGETS,
                               VALIDATION_SPLIT, invocation, section_of, variant_flags)


def validation_words(validation_split: str) -> str:
    """How the page says where a run's validation examples come from: a fraction is carved
    from the training split by the seed, a split string is the same examples for every seed."""
    try:
        float(validation_split)
    except ValueError:
        return f"every seed judges on the same validation examples, `{validation_split}`"
    return "a seed draws its own validation split"


def patience_words(patience: int) -> str:
    """The page's words for the runs' --drop_patience (none for the default 0)."""
    return (f"and `--drop_patience={patience}` (it stops once {patience + 1} students in a "
            "row lose more) " if patience else "")



def plot(frame: pd.DataFrame, path: Path) -> None:
    """Test accuracy change against measured float speed-up, one panel per network and
    dataset: a line per epkd_tf budget and allocation (its drop ladder, seed means), a
    square per peer point."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    groups = list(frame.groupby(["network", "dataset"], sort=False))
    # Up to three panels in a row; more (the whole frontier) a row per network.
    columns = len(groups) if len(groups) <= 3 else frame.dataset.nunique()
    rows = -(-len(groups) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 6.0 * rows),
                             squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, ((network, dataset), group) in zip(axes.flat, groups):
        for (budget, allocation, peer), line in group.groupby(
                ["budget", "allocation", "peer"], sort=False):
            mean = line.groupby("drop_allowed").agg(
                speedup=("float_speedup", "mean"), change=("change", "mean"))
            if peer:
                ax.plot(mean.speedup, mean.change, marker="s", linestyle="none",
                        label=f"{PEER}, MACs of --budget={budget} "
                        f"--allocation={line.of_allocation.iloc[0]}")
            else:
                ax.plot(mean.speedup, mean.change, marker="o",
                        label=f"epkd_tf --budget={budget} --allocation={allocation}")
        ax.axhline(-TARGET_DROP, color="grey", linestyle=":", linewidth=1)
        ax.set_title(f"{NETWORKS[network][0]}, {dataset}")
        ax.set_xlabel("measured float TFLite speed-up (x)")
        ax.set_ylabel("test accuracy change (points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def speedup(values: pd.Series) -> str:
    """Mean speed-up, or "-" where none was measured (the peer's int8 files)."""
    return "-" if values.isna().all() else f"{values.mean():.2f}x"


def as_accurate(mine: pd.Series, peer: pd.Series, seeds: pd.Series) -> str:
    """Whether epkd_tf is at least as accurate as the peer at equal MACs within the seed
    spread (the issue's target): the mean test change of ``mine`` (the epkd_tf students
    of the seeds the peer ran) at least ``peer``'s mean less the spread, the larger range
    (max - min) of the epkd_tf students of every seed at that rung (``seeds``) and of the
    peer's seeds: ``yes (spread 0.12)`` or ``**no** (spread 0.12)``."""
    spread = max(np.ptp(seeds.to_numpy()) if len(seeds) else 0.0,
                 np.ptp(peer.to_numpy()) if len(peer) else 0.0)
    met = mine.mean() >= peer.mean() - spread - 1e-9
    return f"{'yes' if met else '**no**'} (spread {spread:.2f})"


def reading_words(patience_words_: str) -> str:
    """The page's sentences on how a row is read: its rung, its speed-up, its change."""
    return ("A rung of the drop ladder is the final student a run with that "
            "`--max_accuracy_drop` (judged on the validation split) "
            f"{patience_words_}chooses. Speed-up: the teacher's and the student's TFLite "
            f"files timed side by side by this script ({SIDE_BY_SIDE_RUNS:,} invokes each in "
            f"{SIDE_BY_SIDE_ROUNDS} interleaved rounds, batch 1, one thread, medians). "
            "Test accuracy change: the full test split, mean over seeds (min..max in "
            "brackets when several).")


def header(args) -> list:
    """The section's heading and the paragraph saying how its runs were made."""
    names = ", ".join(NETWORKS[n][0] for n in args.networks)
    patience = getattr(args, "drop_patience", 0)
    keep = getattr(args, "keep_ratio", KEEP_RATIO)
    keep_of = "".join(f"{flag} " for flag in variant_flags(args) if flag.startswith("--keep_of"))
    flags = "".join(f", `{flag}`" for flag in variant_flags(args))
    return [f"## Accuracy against measured speed, {names} on {', '.join(args.datasets)}"
            f"{flags} (`benchmarks/frontier.py`)", "",
            f"Measured {datetime.date.today()} on {cpu()}, {os.cpu_count()} "
            f"cores, CPU only. Invocation: `{invocation(args)}`. Every run: "
            f"`--keep_ratio={keep:g} {keep_of}{' '.join(COMMON)} "
            f"--validation_split={getattr(args, 'validation_split', VALIDATION_SPLIT)} "
            f"--iterations={getattr(args, 'iterations', ITERATIONS)} "
            f"--finetune_epochs={args.finetune_epochs}` plus its row's flags; one teacher per "
            "network, dataset and seed, shared by that seed's runs ("
            f"{validation_words(getattr(args, 'validation_split', VALIDATION_SPLIT))}). "
            f"{reading_words(patience_words(patience))} "
            f"![frontier](../../plots/{section_of(args)}.png)", ""]


WHOLE_PATIENCE = "and its network's `--drop_patience` "


def whole_header(args) -> list:
    """``--whole``'s heading and paragraph, with a table of each network's protocol."""
    names = ", ".join(NETWORKS[n][0] for n in args.networks)
    peer = (f"{PEER} at the {', '.join(f'{d:g}' for d in args.peer_drops)} rung of seed "
            f"{', '.join(map(str, args.peer_seeds))}")
    lines = [f"## The whole frontier: {names} on {', '.join(args.datasets)} "
             "(`benchmarks/frontier.py --whole`)", "",
             f"Measured {datetime.date.today()} on {cpu()}, {os.cpu_count()} "
             f"cores, CPU only. Invocation: `{invocation(args)}`: budgets "
             f"{', '.join(args.budgets)}, allocation {', '.join(args.allocations)}, seeds "
             f"{', '.join(map(str, args.seeds))}, {peer}. Every run: `{' '.join(COMMON)} "
             f"--finetune_epochs={args.finetune_epochs} "
             f"--max_accuracy_drop={max(args.drops):g}` plus its network's protocol "
             "(below) and its row's flags; one teacher per network, dataset and seed, "
             "shared by that seed's runs. "
             f"{reading_words(WHOLE_PATIENCE)} "
             f"![frontier](../../plots/{section_of(args)}.png)", "",
             "| network | `--train_split` | `--validation_split` | teacher epochs | "
             "`--iterations` (at most) | `--drop_patience` | `--keep_ratio` | why |",
             "|---|---|---|---|---|---|---|---|"]
    for network in args.networks:
        p = PROTOCOLS[network]
        epochs = p.teacher_epochs or next(
            int(f.split("=")[1]) for f in NETWORKS[network][1] if f.startswith("--teacher_epochs"))
        lines.append(f"| {NETWORKS[network][0]} | {p.train_split or 'train (all)'} | "
                     f"{p.validation_split} | {epochs} | {p.iterations} | {p.drop_patience} | "
                     f"{p.keep_ratio:g} | {p.why} |")
    return lines + [""]


def markdown(frame: pd.DataFrame, args, runs: pd.DataFrame,
             missing: pd.DataFrame = None) -> str:
    lines = (whole_header if getattr(args, "whole", False) else header)(args) + [
        "| network | dataset | budget | allocation | drop allowed | iteration | test acc "
        "change (points) | MACs (x fewer) | params (x fewer) | float speed-up | int8 "
        "speed-up |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    keys = ["network", "dataset", "budget", "allocation", "drop_allowed"]
    for key, group in frame.groupby(keys, sort=False):
        network, dataset, budget, allocation, drop = key
        change = group.change
        spread = (f" ({change.min():+.2f}..{change.max():+.2f})" if len(group) > 1 else "")
        lines.append(
            f"| {NETWORKS[network][0]} | {dataset} | {budget} | {allocation} | {drop:g} | "
            f"{','.join(str(i) for i in group.iteration)} | {change.mean():+.2f}{spread} | "
            f"{group.macs.mean():,.0f} ({(group.teacher_macs / group.macs).mean():.1f}x) | "
            f"{group.params.mean():,.0f} ({(group.teacher_params / group.params).mean():.1f}x) | "
            f"{group.float_speedup.mean():.2f}x | {speedup(group.int8_speedup)} |")
    lines += ["", "Targets (issue #23: Fashion-MNIST, within "
              f"{TARGET_DROP} points of the teacher on test):", "",
              "| network | target | best within the drop | met |", "|---|---|---|---|"]
    ours = frame[~frame.peer]
    for network in args.networks:
        within = ours[(ours.network == network) & (ours.dataset == "fashion_mnist")]
        if within.empty:
            continue
        means = within.groupby(["budget", "allocation", "drop_allowed"]).agg(
            speedup=("float_speedup", "mean"), change=("change", "mean")).reset_index()
        ok = means[means.change >= -TARGET_DROP]
        best = ok.sort_values("speedup").iloc[-1] if not ok.empty else None
        what = ("none within the drop" if best is None else
                f"{best.speedup:.2f}x at {best.change:+.2f} points (--budget={best.budget} "
                f"--allocation={best.allocation}, drop allowed {best.drop_allowed:g})")
        met = best is not None and best.speedup >= TARGETS[network]
        lines.append(f"| {NETWORKS[network][0]} | >= {TARGETS[network]:g}x | {what} | "
                     f"{'yes' if met else '**no**'} |")
    peers = frame[frame.peer]
    missing = pd.DataFrame() if missing is None else missing
    if not peers.empty or not missing.empty:
        shown = [n for n in args.networks if n in PEERS
                 and (n in set(peers.network) or n in set(missing.get("network", [])))]
        by_protocol = {}
        for n in shown:              # networks sharing a protocol are named together
            by_protocol.setdefault(PEERS[n].protocol, []).append(NETWORKS[n][0])
        protocols = "; ".join(f"{', '.join(names)}: {protocol}"
                              for protocol, names in by_protocol.items())
        lines += ["", f"At equal MACs, {PEER} (its own virtual environment, the same teacher "
                  "weights, as many global-Taylor pruning steps as the epkd_tf student had "
                  f"iterations, each followed by distillation; {protocols}. Its widths are "
                  "cut from the teacher by epkd_tf's own surgery, converted to float and int8 "
                  "TFLite like the students and timed side by side with the teacher's "
                  "files; as accurate: epkd_tf's test change at least the peer's less the "
                  "seed spread, the larger range of either side's seeds at that rung, as the "
                  "issue asks):", "",
                  "| network | dataset | epkd_tf run | drop allowed | MACs | epkd_tf test "
                  "change | peer test change | epkd_tf float speed-up | peer float speed-up "
                  "| epkd_tf int8 speed-up | peer int8 speed-up | as accurate |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        keys = ["network", "dataset", "budget", "of_allocation", "drop_allowed"]
        for key, group in peers.groupby(keys, sort=False):
            network, dataset, of_budget, of_allocation, drop = key
            rung = ours[(ours.network == network) & (ours.dataset == dataset)
                        & (ours.budget == of_budget) & (ours.allocation == of_allocation)
                        & (ours.drop_allowed == drop)]
            mine = rung[rung.seed.isin(group.seed)]      # the seeds the peer ran (--peer_seeds)

            def spread(values):
                return (f"{values.mean():+.2f}" + (f" ({values.min():+.2f}..{values.max():+.2f})"
                                                   if len(values) > 1 else ""))
            lines.append(
                f"| {NETWORKS[network][0]} | {dataset} | --budget={of_budget} "
                f"--allocation={of_allocation} | {drop:g} | {group.macs.mean():,.0f} | "
                f"{spread(mine.change)} | {spread(group.change)} | "
                f"{mine.float_speedup.mean():.2f}x | {group.float_speedup.mean():.2f}x | "
                f"{speedup(mine.int8_speedup)} | {speedup(group.int8_speedup)} | "
                f"{as_accurate(mine.change, group.change, rung.change)} |")
        for r in missing.itertuples():
            lines.append(f"| {NETWORKS[r.network][0]} | {r.dataset} | --budget={r.budget} "
                         f"--allocation={r.of_allocation} | {r.drop_allowed:g} | "
                         f"{int(r.macs):,} (epkd_tf's) | "
                         f"{100 * (r.test_accuracy - r.teacher_accuracy):+.2f} | "
                         f"missing: {r.peer_missing} | "
                         f"{speedup(pd.Series([r.float_speedup]))} | - | "
                         f"{speedup(pd.Series([r.int8_speedup]))} | - | - |")
    lines += ["", "Runs (latency model error: the plan's predicted latency of every candidate "
              "against its measurement, median):", "",
              "| network | dataset | budget | allocation | seed | iterations run | "
              "teacher test acc | latency model error | seconds |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in runs.itertuples():
        error = "-" if np.isnan(r.model_error) else f"{100 * r.model_error:.1f}%"
        lines.append(f"| {NETWORKS[r.network][0]} | {r.dataset} | {r.budget} | "
                     f"{r.allocation} | {r.seed} | {r.iterations_run} | "
                     f"{100 * r.teacher_accuracy:.2f}% | {error} | {r.seconds:.0f} |")
    return "\n".join(lines)
