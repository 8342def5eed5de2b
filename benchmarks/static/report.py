"""Write ``benchmarks/results/static-<commit>.{json,md}``: figures per (kernel, arch), the contracts' verdicts,
and the time model (sm_90 figures, H100)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.static import compile as cc
from benchmarks.static import contracts, model

RESULTS = cc.ROOT / "benchmarks" / "results"
MODEL_ARCH = 90


def commit() -> str:
    if os.environ.get("ANATO_COMMIT"):
        return os.environ["ANATO_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=cc.ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def verdicts(r: dict) -> dict[str, bool]:
    budget = contracts.BUDGETS[r["kernel"]]
    loop_free = contracts.BY_NAME[r["kernel"]].region == "kernel"
    spills = r["spill_store_bytes"] + r["spill_load_bytes"] if loop_free else r["spills_in_loop"]
    return dict(compiles=True, no_spills_in_loop=spills == 0, no_fence_in_loop=r["fences_in_loop"] == 0,
                no_div64_call=r["div64_calls"] == 0, registers=r["registers"] <= budget["registers"],
                instr_per_elem=r["instr_per_elem"] <= budget["instr_per_elem"])


def build(records: list[dict]) -> dict:
    import triton

    kernels = [r for r in records if r["kernel"] in contracts.BY_NAME]
    for r in kernels:
        if r["ok"]:
            r["contracts"] = verdicts(r)
    at = {r["kernel"]: r for r in kernels if r["arch"] == MODEL_ARCH and r["ok"]}
    estimates = {name: model.estimate(r) for name, r in at.items()}
    return dict(commit=commit(), timestamp=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                triton=triton.__version__, nvcc=cc.nvcc_version(), host=platform.node(),
                note="static figures from SASS (cuobjdump); the time model is a model, not a measurement",
                budgets=contracts.BUDGETS,
                known_violations={f"{k} / {c}": dict(reason=v.reason, archs=list(v.archs))
                                  for (k, c), v in contracts.KNOWN_VIOLATIONS.items()},
                model=dict(gpu=model.H100, arch=MODEL_ARCH, doc=model.__doc__.strip(),
                           kernels=list(estimates.values()), ops=model.op_rows(estimates)),
                records=records)


def markdown(data: dict) -> str:
    out = [f"# Static kernel figures, commit {data['commit']} (triton {data['triton']}, {data['nvcc']})", "",
           "Compiled on a CPU-only machine at the benchmark configuration; figures read from SASS "
           "(`python -m benchmarks.static`). Static counts, not measurements.", "",
           f"## sm_{MODEL_ARCH}", "",
           "| kernel | regs | spill B st/ld (in loop) | fences (in loop) | div64 calls (in loop) | barriers in region |"
           " ex2/elem | instr/elem | region |", "|---|---|---|---|---|---|---|---|---|"]
    for r in data["records"]:
        if r.get("arch") != MODEL_ARCH or r["kernel"] not in contracts.BY_NAME:
            continue
        if not r["ok"]:
            out.append(f"| {r['kernel']} | compile failed | | | | | | | |")
            continue
        out.append(f"| {r['kernel']} | {r['registers']} | {r['spill_store_bytes']}/{r['spill_load_bytes']} "
                   f"({r['spills_in_loop']}) | {r['fences']} ({r['fences_in_loop']}) | {r['div64_calls']} "
                   f"({r['div64_calls_in_loop']}) | {r['barriers_in_region']} | {r['ex2_per_elem']} | "
                   f"{r['instr_per_elem']} per {r['unit']} | {r['measured_region']} |")
    m = data["model"]
    out += ["", f"## Time model at the benchmark shapes ({m['gpu']['name']}: {m['gpu']['sms']} SMs × "
            f"{m['gpu']['schedulers']} schedulers × {m['gpu']['clock_hz'] / 1e9} GHz, MUFU {m['gpu']['mufu_lanes']}"
            f"/clk/SM, HBM {m['gpu']['hbm_bytes_s'] / 1e12} TB/s)", "",
            "**A model, not a measurement**: max(issue, MUFU, memory) per kernel from the sm_90 static figures, "
            "full occupancy, no stalls. See `benchmarks/static/model.py`.", "",
            "| op | backend | mode | model ms | bound per kernel | floor ms | measured ms (H100, turn 1) |",
            "|---|---|---|---|---|---|---|"]
    for row in m["ops"]:
        floor = f"{row['floor_ms']} ({row['floor']})" if row["floor_ms"] is not None else "–"
        measured = row["measured_ms"] if row["measured_ms"] is not None else "–"
        out.append(f"| {row['op']} | {row['backend']} | {row['mode']} | {row['model_ms']:.3f} | {row['bounds']} | "
                   f"{floor} | {measured} |")
    out += ["", "| kernel | elements | issue ms | MUFU ms | memory ms | model ms |", "|---|---|---|---|---|---|"]
    for e in m["kernels"]:
        out.append(f"| {e['kernel']} | {e['elements']:.3g} | {e['issue_ms']:.3f} | {e['mufu_ms']:.3f} | "
                   f"{e['memory_ms']:.3f} | {e['model_ms']:.3f} ({e['bound']}) |")
    out += ["", "## Known violations (xfail, strict)", "", "| kernel | contract | archs | reason |",
            "|---|---|---|---|"]
    for key, v in data["known_violations"].items():
        kernel, contract = key.split(" / ")
        out.append(f"| {kernel} | {contract} | {','.join(map(str, v['archs']))} | {v['reason']} |")
    return "\n".join(out) + "\n"


def write(records: list[dict], folder: Path = RESULTS) -> tuple[Path, Path]:
    data = build(records)
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"static-{data['commit']}"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(data))
    return stem.with_suffix(".json"), stem.with_suffix(".md")


def summary(records: list[dict]) -> str:
    bad = [r for r in records if not r["ok"]]
    return f"{len(records)} records, {len(bad)} failed" + "".join(f"\n  {r['kernel']} sm_{r['arch']}" for r in bad)
