"""Results: the goals of the issues evaluated, the JSON file, the PNG plots, the markdown region.

The JSON holds two sections, `speed` and `soak`, each with its own run metadata; a run that
measured only one of them keeps the other from the existing file, so docs/benchmarks.md is
always rendered from one file. `--write-docs` rewrites only the text between
`<!-- speed:start -->` and `<!-- speed:end -->` (the soak has its own sub-region inside).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

SPEED_START, SPEED_END = "<!-- speed:start -->", "<!-- speed:end -->"
SOAK_START, SOAK_END = "<!-- speed:soak:start -->", "<!-- speed:soak:end -->"

LATENCY_GOAL_MS = 10.0
LATENCY_FLOOR_FACTOR = 3.0
THROUGHPUT_SHARE = 0.40
TRAIN_FACTOR = 3.0
API_RSS_LIMIT_MB = 1.5 * 1024
PERSIST_SHARE = 0.30
ACCEPT_SHARE = 0.50
SINGLE_EVENT_RPS = 1500.0


# --- goals -----------------------------------------------------------------------------------
def _goal(issue: int, goal: str, measured: float | None, target: float, *, higher_is_better: bool,
          unit: str = "", context: str = "") -> dict[str, Any]:
    met = None if measured is None or (isinstance(measured, float) and math.isnan(measured)) else (
        measured >= target if higher_is_better else measured <= target
    )
    gap = ""
    if met is False and measured:
        if higher_is_better:
            gap = f"{target / measured:.2f}x short"
        else:
            gap = f"{measured / target:.2f}x over"
    return {"issue": issue, "goal": goal, "context": context, "measured": measured, "target": target,
            "unit": unit, "met": met, "gap": gap}


def speed_goals(speed: dict[str, Any]) -> list[dict[str, Any]]:
    goals: list[dict[str, Any]] = []
    floors = speed["floors"]
    numpy_p99 = floors["numpy_topk"]["ms"]["p99"]
    from benchmarks.speed.run import VARIANTS

    for label in ("unloaded", "loaded"):
        block = speed["recommend"][label]
        context = f"concurrency {block['concurrency']}"
        for variant in (v for v in VARIANTS if v.issue3):
            server = (block["variants"][variant.name].get("server_ms") or {}).get("p99")
            ratio = None if server is None else server / numpy_p99
            # Both halves of the goal in one row: the verdict is met only when both hold.
            goal = _goal(3, f"{variant.name}: server p99 <= 10 ms and <= 3x numpy top-20 p99", server,
                         LATENCY_GOAL_MS, higher_is_better=False, unit="ms", context=context)
            goal["floor_ratio"] = ratio
            goal["floor_ratio_target"] = LATENCY_FLOOR_FACTOR
            if ratio is not None and ratio > LATENCY_FLOOR_FACTOR:
                goal["met"] = False
                goal["gap"] = ", ".join(filter(None, [goal["gap"], f"{ratio / LATENCY_FLOOR_FACTOR:.1f}x over 3x floor"]))
            goals.append(goal)
    loaded = speed["recommend"]["loaded"]
    bare = floors[f"bare_json_c{loaded['concurrency']}"]["ok_rps"]
    personalized = loaded["variants"]["personalized"]["ok_rps"]
    goals.append(_goal(3, "recommend (personalized) requests/s >= 40% of the bare FastAPI JSON endpoint",
                       personalized / bare if bare else None, THROUGHPUT_SHARE, higher_is_better=True, unit="share",
                       context=f"concurrency {loaded['concurrency']}"))
    train = speed["train"]
    als = floors["als_alone"]["seconds"]
    goals.append(_goal(3, "full train (load -> artifact saved) <= 3x the ALS fit alone", train["duration_s"] / als,
                       TRAIN_FACTOR, higher_is_better=False, unit="x"))
    goals.append(_goal(3, "api RSS with the model loaded <= 1.5 GB", speed["memory"]["api_rss_mb_model_loaded"],
                       API_RSS_LIMIT_MB, higher_is_better=False, unit="MB"))
    ingest = speed["ingest"]
    batches = ingest["batches"]
    goals.append(_goal(2, "events/s persisted by one worker (1,000-event jobs) >= 30% of raw COPY",
                       ingest["persisted_vs_copy"], PERSIST_SHARE, higher_is_better=True, unit="share"))
    for batch in ("100", "1000"):
        goals.append(_goal(2, f"accepted events/s, batches of {batch}, >= 50% of the bare endpoint's parse rate",
                           batches[batch]["accepted_vs_floor"], ACCEPT_SHARE, higher_is_better=True, unit="share"))
    goals.append(_goal(2, "single-event requests/s per api process >= 1,500", batches["1"]["requests_per_s"],
                       SINGLE_EVENT_RPS, higher_is_better=True, unit="req/s"))
    return goals


def soak_goals(soak: dict[str, Any]) -> list[dict[str, Any]]:
    goals = [
        _goal(6, "no error other than 429", float(soak["errors_non_429"]), 0.0, higher_is_better=False,
              unit="errors"),
        _goal(6, "events accepted == events stored", float(soak["events"]["stored"]),
              float(soak["events"]["accepted"]), higher_is_better=True, unit="events"),
    ]
    goals[-1]["met"] = soak["events"]["equal"]
    for name in ("api", "worker"):
        trend = soak["rss"][name]["trend"]
        goal = _goal(6, f"{name} RSS flat after warm-up (fitted growth < 5% of mean or 10 MB)",
                     trend["growth_mb"], max(0.05 * (trend["mean_mb"] or 0), 10.0), higher_is_better=False,
                     unit="MB")
        goals.append(goal)
    return goals


# --- JSON ------------------------------------------------------------------------------------
def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else round(value, 6)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def write_results(path: Path, sections: dict[str, Any]) -> dict[str, Any]:
    """Merge this run's sections into the file (the other section is kept) and write it."""
    merged: dict[str, Any] = {"schema": 1}
    if path.exists():
        try:
            merged.update(json.loads(path.read_text()))
        except ValueError:
            pass
    merged.update(_clean(sections))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(merged, indent=1, sort_keys=False) + "\n")
    return merged


# --- plots -----------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_plot(raw: dict[str, Any], speed: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    names = [n for n in raw if isinstance(raw[n], dict)]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    colors = plt.get_cmap("tab10")
    for ax, key, title in ((axes[0], "client_ms", "client-side (HTTP round trip)"),
                           (axes[1], "server_ms", "server-side (latency_ms in the response)")):
        for i, name in enumerate(names):
            values = np.asarray(raw[name][key], dtype=np.float64)
            values = np.sort(values[np.isfinite(values) & (values > 0)])
            if len(values) == 0:
                continue
            pick = np.unique(np.linspace(0, len(values) - 1, min(len(values), 2000)).astype(int))
            style = "--" if "+filters" in name else "-"
            ax.plot(values[pick], (pick + 1) / len(values), style, color=colors(i % 10), label=name, lw=1.4)
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log scale)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    numpy_p99 = raw.get("numpy_p99_ms")
    if numpy_p99:
        axes[1].axvline(numpy_p99, color="black", lw=1, ls=":", label=f"numpy top-20 p99 ({numpy_p99:.2f} ms)")
        axes[1].axvline(3 * numpy_p99, color="grey", lw=1, ls="-.", label="3x numpy p99")
    axes[1].axvline(LATENCY_GOAL_MS, color="red", lw=1, ls=":", label="10 ms goal")
    axes[0].set_ylabel("share of requests at or below")
    axes[1].legend(fontsize=7, loc="lower right")
    concurrency = speed["recommend"]["loaded"]["concurrency"]
    dataset = speed["dataset"]["name"]
    fig.suptitle(f"POST /v1/recommend latency CDF, concurrency {concurrency}, {dataset}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def soak_plot(soak: dict[str, Any], path: Path) -> None:
    plt = _pyplot()
    over = soak["over_time"]
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)
    t = np.asarray(over["t"], dtype=np.float64)
    axes[0].plot(t, over["rps"], label="requests/s")
    errors = np.asarray(over["errors"], dtype=np.float64)
    axes[0].bar(t, errors, width=(t[1] - t[0]) if len(t) > 1 else 1.0, color="red", alpha=0.5,
                label="non-429 errors")
    axes[0].set_ylabel("per second / per bucket")
    axes[0].legend(fontsize=8)
    for key, label in (("p99_ms", "all"), ("p99_recommend_ms", "recommend"), ("p99_ingest_ms", "ingest")):
        values = np.asarray([np.nan if v is None else v for v in over[key]], dtype=np.float64)
        axes[1].plot(t, values, label=f"p99 {label}")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("client p99 (ms)")
    axes[1].legend(fontsize=8)
    for name, color in (("api", "tab:blue"), ("worker", "tab:orange")):
        block = soak["rss"][name]
        series = block["series"]
        axes[2].plot(series["t"], series["rss_mb"], color=color, label=f"{name} RSS")
        if name == "worker" and series.get("rss_tree_mb"):
            axes[2].plot(series["t"], series["rss_tree_mb"], color=color, ls=":", lw=0.8,
                         label="worker + training child")
        trend = block["trend"]
        if trend.get("slope_mb_per_min") is not None and series["t"]:
            x = np.asarray([block["warmup_s"], series["t"][-1]])
            mean_t = (x[0] + x[1]) / 2
            y = trend["mean_mb"] + trend["slope_mb_per_min"] * (x - mean_t) / 60.0
            axes[2].plot(x, y, color=color, ls="--", lw=1,
                         label=f"{name} trend {trend['slope_mb_per_min']:+.2f} MB/min")
    axes[2].axvline(soak["rss"]["api"]["warmup_s"], color="grey", ls=":", lw=1)
    axes[2].set_ylabel("RSS (MB)")
    axes[2].set_xlabel("seconds into the soak")
    axes[2].legend(fontsize=8)
    fig.suptitle(f"soak: {soak['duration_s']:.0f} s, {soak['orgs']} orgs, target {soak['rate_rps']:.0f} req/s "
                 f"(80% recommend / 20% ingest)", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- markdown --------------------------------------------------------------------------------
def _f(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:,.{digits}f}"


def _pct(value: Any) -> str:
    if value is None:
        return "n/a"
    return f"{100 * value:.1f}%" if 0 < abs(value) < 0.1 else f"{100 * value:.0f}%"


def _met(met: Any) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def _machine(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    load = ", ".join(str(x) for x in m.get("load_avg_at_start", []))
    return (f"{m['nproc']} cores ({m['cpu_model']}), {m['ram_gb']} GB RAM, Python {m['python']}; "
            f"load average at start {load}")


def _code(meta: dict[str, Any]) -> str:
    code = meta.get("code") or {}
    if not code.get("commit"):
        return ""
    changed = code.get("uncommitted_server_files") or []
    dirty = f", plus uncommitted changes to {len(changed)} server file(s)" if changed else ""
    return f" (at commit {code['commit']}{dirty})"


def _goal_rows(goals: list[dict[str, Any]]) -> list[str]:
    rows = ["| issue | goal | where | measured | target | verdict | gap |", "|---|---|---|---|---|---|---|"]
    for g in goals:
        unit = g["unit"]
        if unit == "share":
            measured, target = _pct(g["measured"]), _pct(g["target"])
        elif unit == "x":
            measured, target = f"{_f(g['measured'], 2)}x", f"{_f(g['target'], 1)}x"
        else:
            measured, target = f"{_f(g['measured'])} {unit}", f"{_f(g['target'])} {unit}"
        if "floor_ratio" in g:
            measured += f" ({_f(g['floor_ratio'], 1)}x floor)"
            target += f", {_f(g['floor_ratio_target'], 0)}x floor"
        rows.append(f"| {g['issue']} | {g['goal']} | {g['context'] or '-'} | {measured} | {target} | "
                    f"{_met(g['met'])} | {g['gap'] or '-'} |")
    return rows


def speed_markdown(speed: dict[str, Any], image_dir: str) -> list[str]:
    meta = speed["meta"]
    floors = speed["floors"]
    numpy_floor = floors["numpy_topk"]
    lines = [
        "## Speed (`lehnz bench`)",
        "",
        f"Measured {meta['started_at']} on {_machine(meta)}. The machine is shared with other work, so",
        "absolute numbers are noisy; ratios compare figures measured in the same run, minutes apart.",
        "",
        (f"- Dataset: {speed['dataset']['name']}: {speed['dataset']['items']:,} items, "
        f"{speed['dataset']['users']:,} users, {speed['dataset']['interactions']:,} interactions over "
        f"{speed['dataset']['days']} days; preloaded with {speed['preload']['method']} "
        f"({_f(speed['preload']['events_copy_per_s'], 0)} rows/s), then trained through the api."),
        f"- Reproduce: `{meta['command']}`{_code(meta)}",
        (f"- Load generator: {meta['loadgen']}. Every phase is measured for "
        f"{meta['options']['duration_s']} s after {meta['options']['warmup_s']} s of warm-up."),
        ("- Servers: embedded PostgreSQL and Redis; one `lehnz api` process (uvicorn, as `lehnz api` runs it) "
        "and one `lehnz worker`; rate limit lifted, access log off, no scheduled retrain during the run."),
        ("- Server-side latency is the response's `latency_ms`. It spans an await (the user's real-time state "
        "in Redis), so under concurrency it also counts time the event loop spent on other requests; the "
        "concurrency-1 table is the service time."),
        "",
        "### Goals",
        "",
        *_goal_rows(speed["goals"]),
        "",
    ]
    for label in ("loaded", "unloaded"):
        block = speed["recommend"][label]
        c = block["concurrency"]
        bare = floors[f"bare_json_c{c}"]
        lines += [
            f"### POST /v1/recommend at concurrency {c}" + (" (service time, no queueing)" if c == 1 else ""),
            "",
            (f"Floors: bare FastAPI JSON endpoint {_f(bare['ok_rps'], 0)} req/s (client p50 "
            f"{_f(bare['client_ms']['p50'], 2)} ms, p99 {_f(bare['client_ms']['p99'], 2)} ms); numpy top-20 over "
            f"{numpy_floor['items']:,} x {numpy_floor['factors']} item factors p50 {_f(numpy_floor['ms']['p50'], 2)} ms, "
            f"p99 {_f(numpy_floor['ms']['p99'], 2)} ms."),
            "",
            ("| strategy | req/s | x bare | client p50 / p95 / p99 ms | server p50 / p95 / p99 ms | "
            "server / numpy (p50, p99) | fallback | api CPU |"),
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in block["variants"].items():
            client, server = v["client_ms"], v.get("server_ms") or {}
            ratio = (server.get("p99") or float("nan")) / numpy_floor["ms"]["p99"]
            ratio50 = (server.get("p50") or float("nan")) / numpy_floor["ms"]["p50"]
            lines.append(
                f"| {name} | {_f(v['ok_rps'], 0)} | {_pct(v['ok_rps'] / bare['ok_rps'] if bare['ok_rps'] else None)} | "
                f"{_f(client['p50'], 2)} / {_f(client['p95'], 2)} / {_f(client['p99'], 2)} | "
                f"{_f(server.get('p50'), 2)} / {_f(server.get('p95'), 2)} / {_f(server.get('p99'), 2)} | "
                f"{_f(ratio50, 1)}x, {_f(ratio, 1)}x | {_pct((v.get('modes') or {}).get('fallback', 0.0))} | "
                f"{_pct(v['cpu_util'].get('api'))} |"
            )
            if v["errors"]:
                lines[-1] += f" ({v['errors']} errors: {v['statuses']})"
        lines.append("")
    lines += [f"![recommend latency distribution]({image_dir}/latency.png)", ""]

    ingest = speed["ingest"]
    copy = ingest["copy_floor"]
    lines += [
        "### Ingest (POST /v1/ingest/events/ingest)",
        "",
        (f"Accepted: one api process, worker stopped (SIGSTOP) so the queue fills; concurrency "
        f"{ingest['concurrency']}. Persisted: the worker alone drains that queue. Floors: a bare FastAPI "
        f"endpoint that parses the same bodies and answers 202; raw asyncpg COPY of {copy['rows']:,} of the "
        f"same event rows: {_f(copy['rows_per_s'], 0)} rows/s."),
        "",
        ("| request | accepted events/s | req/s | 202 p50 / p99 ms | api CPU | bare parse events/s | accepted / bare | "
        "persisted events/s | worker CPU | persisted / COPY | all stored |"),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for batch, row in ingest["batches"].items():
        name = "1 event" if batch == "1" else f"{int(batch):,} events"
        lines.append(
            f"| {name} | {_f(row['accepted_events_per_s'], 0)} | {_f(row['requests_per_s'], 0)} | "
            f"{_f(row['latency_ms']['p50'], 2)} / {_f(row['latency_ms']['p99'], 2)} | {_pct(row['api_cpu_util'])} | "
            f"{_f(row['floor_events_per_s'], 0)} | {_pct(row['accepted_vs_floor'])} | "
            f"{_f(row['persisted_events_per_s'], 0)} | {_pct(row['worker_cpu_util'])} | "
            f"{_pct(row['persisted_events_per_s'] / copy['rows_per_s'])} | "
            f"{'yes' if row['all_accepted_stored'] else '**no**'} |"
        )
    train = speed["train"]
    als = floors["als_alone"]
    lines += [
        "",
        "### Training",
        "",
        (f"Full train of {train['interactions']:,} interactions ({train['users']:,} users x {train['items']:,} items): "
        f"{_f(train['duration_s'])} s from load to saved artifact ({_f(train['duration_s'] / als['seconds'], 2)}x "
        f"the ALS fit alone: {_f(als['seconds'])} s for {als['factors']} factors x {als['iterations']} iterations on "
        f"the same {als['users']:,} x {als['items']:,} matrix, {als['nnz']:,} non-zeros). "
        f"Peak RSS of the worker with its training child: {_f(train['peak_rss_mb_worker_with_training_child'], 0)} MB."),
        "",
        "| part | seconds | share |",
        "|---|---|---|",
    ]
    total = train["duration_s"]
    for part, seconds in sorted(train["parts_s"].items(), key=lambda kv: -kv[1]):
        lines.append(f"| {part} | {_f(seconds, 2)} | {_pct(seconds / total if total else None)} |")
    other = total - train["sum_parts_s"]
    lines.append(f"| (save, process start, bookkeeping) | {_f(other, 2)} | {_pct(other / total if total else None)} |")
    memory = speed["memory"]
    lines += [
        "",
        "### Memory (RSS)",
        "",
        (f"api: {_f(memory['api_rss_mb_started'], 0)} MB at start, {_f(memory['api_rss_mb_model_loaded'], 0)} MB with "
        f"the model loaded, {_f(memory['api_rss_mb_end'], 0)} MB at the end. worker: "
        f"{_f(memory['worker_rss_mb_started'], 0)} MB at start, {_f(memory['worker_rss_mb_end'], 0)} MB at the end "
        "(training runs in a child process that exits after each train)."),
        "",
    ]
    return lines


def soak_markdown(soak: dict[str, Any], image_dir: str) -> list[str]:
    meta = soak["meta"]
    lat = soak["latency_ms"]
    ev = soak["events"]
    per_org = soak["per_org"]
    lines = [
        "### Soak (`lehnz bench --soak`)",
        "",
        f"Measured {meta['started_at']} on {_machine(meta)}. Reproduce: `{meta['command']}`",
        "",
        (f"{soak['orgs']} orgs of {per_org['items']:,} items / {per_org['interactions']:,} interactions each; "
        f"{soak['duration_s']:.0f} s open loop at {soak['rate_rps']:.0f} requests/s "
        f"(achieved {_f(soak['achieved_rps'], 0)}), concurrency cap {soak['concurrency']}; 80% recommend "
        f"({', '.join(soak['mix']['strategies'])}), 20% ingest (1 and 10 events). Default training settings: "
        f"{soak['retrains_during_soak']} scheduled retrain(s) landed during the soak."),
        "",
        *_goal_rows(soak["goals"]),
        "",
        (f"- Requests: {soak['requests']:,}; statuses {soak['statuses']}; non-429 errors {soak['errors_non_429']} "
        f"({_pct(soak['error_rate_non_429'])})."),
        (f"- Client latency p50 / p99: recommend {_f(lat['recommend']['p50'], 2)} / {_f(lat['recommend']['p99'], 2)} ms, "
        f"ingest {_f(lat['ingest']['p50'], 2)} / {_f(lat['ingest']['p99'], 2)} ms; recommend server p99 "
        f"{_f(lat['recommend_server']['p99'], 2)} ms."),
        f"- Events: {ev['accepted']:,} accepted (202), {ev['stored']:,} stored after a {_f(ev['drain_s'])} s drain.",
    ]
    for name in ("api", "worker"):
        trend = soak["rss"][name]["trend"]
        lines.append(
            f"- {name} RSS after {_f(soak['rss'][name]['warmup_s'], 0)} s warm-up: {_f(trend.get('start_mb'), 0)} -> "
            f"{_f(trend.get('end_mb'), 0)} MB (max {_f(trend.get('max_mb'), 0)}), fitted slope "
            f"{_f(trend.get('slope_mb_per_min'), 2)} MB/min."
        )
    lines += ["", f"![soak over time]({image_dir}/soak.png)", ""]
    return lines


def render(merged: dict[str, Any], image_dir: str) -> str:
    lines: list[str] = []
    if "speed" in merged:
        lines += speed_markdown(merged["speed"], image_dir)
    else:
        lines += ["(speed report: `lehnz bench`)", ""]
    lines.append(SOAK_START)
    if "soak" in merged:
        lines += soak_markdown(merged["soak"], image_dir)
    else:
        lines.append("(soak report: `lehnz bench --soak 600 --soak-only --write-docs`)")
    lines.append(SOAK_END)
    return "\n".join(lines)


def write_docs(docs: Path, merged: dict[str, Any], *, image_dir: str) -> None:
    """Replace only the speed region of the document."""
    text = docs.read_text()
    start, end = text.find(SPEED_START), text.find(SPEED_END)
    if start < 0 or end < start:
        raise ValueError(f"{docs} has no {SPEED_START} ... {SPEED_END} region")
    body = render(merged, image_dir)
    docs.write_text(text[: start + len(SPEED_START)] + "\n" + body + "\n" + text[end:])
