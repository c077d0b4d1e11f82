"""What a shard directory holds: hours, recordings, subjects, datasets, montages, failures."""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from pathlib import Path

from eegfm.shards import read_manifest

_FAILURES = re.compile(r"^failures(-\d+)?\.jsonl$")


def read_failures(root: os.PathLike) -> list[dict]:
    """Every failure / duplicate record of a shard directory (all SLURM parts)."""
    records = []
    for path in sorted(p for p in Path(root).iterdir() if _FAILURES.match(p.name)):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return records


def describe_failure(record: dict) -> str:
    """`source: reason` of a failure record (reasons from prep already start with the file)."""
    reason = record["reason"]
    return reason if reason.startswith(record["source"]) else f"{record['source']}: {reason}"


def summarize(root: os.PathLike) -> dict:
    """A JSON-ready summary of a shard directory (reads only manifests and failure lists)."""
    root = Path(root)
    entries = read_manifest(root)
    hours = sum(e.duration_s for e in entries) / 3600
    datasets: dict[str, dict] = defaultdict(
        lambda: {"recordings": 0, "hours": 0.0, "subjects": set()}
    )
    montages: dict[str, dict] = {}
    for entry in entries:
        dataset = datasets[entry.dataset]
        dataset["recordings"] += 1
        dataset["hours"] += entry.duration_s / 3600
        dataset["subjects"].add(entry.subject or f"<{entry.recording_id}>")
        montage = montages.setdefault(
            entry.montage_id,
            {
                "n_channels": entry.n_channels,
                "recordings": 0,
                "hours": 0.0,
                "methods": Counter(),
                "unresolved": Counter(),
                "datasets": set(),
            },
        )
        montage["recordings"] += 1
        montage["hours"] += entry.duration_s / 3600
        montage["datasets"].add(entry.dataset)
        localization = entry.localization or {}
        montage["methods"].update(
            {
                k: v
                for k, v in (localization.get("counts") or {}).items()
                if k not in ("unresolved", "non_scalp")
            }
        )
        montage["unresolved"].update(
            {
                "unresolved": len(localization.get("unresolved") or []),
                "non_scalp": len(localization.get("non_scalp") or []),
            }
        )
    records = read_failures(root)
    return {
        "root": str(root),
        "recordings": len(entries),
        "hours": hours,
        "shards": len({e.shard for e in entries}),
        "sfreq": sorted({e.sfreq for e in entries}),
        "subjects": len({(e.dataset, e.subject or e.recording_id) for e in entries}),
        "datasets": {
            name: {**d, "subjects": len(d["subjects"])} for name, d in sorted(datasets.items())
        },
        "montages": [
            {
                "montage_id": key,
                "n_channels": m["n_channels"],
                "recordings": m["recordings"],
                "hours": m["hours"],
                "methods": dict(m["methods"]),
                "dropped": dict(m["unresolved"]),
                "datasets": sorted(m["datasets"]),
            }
            for key, m in sorted(montages.items(), key=lambda kv: (-kv[1]["hours"], kv[0]))
        ],
        "bad_channels": sum(len(e.bad_channels) for e in entries),
        "failures": [r for r in records if "duplicate_of" not in r],
        "duplicates": [r for r in records if "duplicate_of" in r],
    }


def format_summary(summary: dict, max_rows: int = 25) -> str:
    """Human-readable text of `summarize`."""
    lines = [
        f"shard directory {summary['root']}",
        f"  {summary['recordings']} recordings, {summary['hours']:.2f} h of EEG in "
        f"{summary['shards']} shard(s) at {', '.join(f'{s:g}' for s in summary['sfreq'])} Hz; "
        f"{summary['subjects']} subjects; {summary['bad_channels']} channels flagged bad",
        "",
        "datasets:",
    ]
    for name, data in summary["datasets"].items():
        lines.append(
            f"  {name:<24} {data['recordings']:>6} recordings {data['hours']:>9.2f} h "
            f"{data['subjects']:>6} subjects"
        )
    lines += [
        "",
        f"montages ({len(summary['montages'])}):",
        f"  {'montage_id':<16} {'channels':>8} {'recordings':>10} {'hours':>8}  "
        "coordinates from (channels summed over recordings); dropped",
    ]
    for montage in summary["montages"][:max_rows]:
        methods = ", ".join(f"{k} {v}" for k, v in sorted(montage["methods"].items()))
        dropped = ", ".join(f"{k} {v}" for k, v in montage["dropped"].items() if v) or "-"
        lines.append(
            f"  {montage['montage_id']:<16} {montage['n_channels']:>8} "
            f"{montage['recordings']:>10} {montage['hours']:>8.2f}  {methods}; {dropped}"
        )
    if len(summary["montages"]) > max_rows:
        lines.append(f"  ... {len(summary['montages']) - max_rows} more (use --json)")
    for title, records in (
        ("failures", summary["failures"]),
        ("duplicates (not stored twice)", summary["duplicates"]),
    ):
        lines += ["", f"{title}: {len(records)}"]
        lines += [f"  {describe_failure(r)}" for r in records[:max_rows]]
        if len(records) > max_rows:
            lines.append(f"  ... {len(records) - max_rows} more (use --json)")
    return "\n".join(lines)
