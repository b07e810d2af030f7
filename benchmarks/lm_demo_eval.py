"""Base vs LoRA vs full fine-tune of SmolLM2-135M-Instruct on the LM demo's data: a small, local, lm-eval-style
multiple-choice evaluation used to choose the fine-tune settings (not library code; the harness's own LM scoring
lives in the pipeline).

    PYTHONPATH=. OMP_NUM_THREADS=2 python benchmarks/lm_demo_eval.py --profile quick \
        [--n-arc-easy 200] [--n-arc-challenge 150] [--n-boolq 100] [--adaptations lora full] [--out FILE.json]

Scoring (as lm-eval 0.4's arc_easy, arc_challenge and boolq tasks):
* ARC: context "Question: {question}\\nAnswer:", each choice " " + text; ``acc`` = argmax of the summed
  log-likelihood of the choice tokens, ``acc_norm`` = argmax of that sum divided by the choice text's length in
  characters. Gold = position of answerKey in choices.label.
* BoolQ: context "{passage}\\nQuestion: {question}?\\nAnswer:", choices " no" / " yes", gold = answer; ``acc``.
Rows: the first N of ARC-Easy validation, ARC-Challenge validation and the committed BoolQ dev prefix (the demo
derives BoolQ validation/test by hash; here the first N rows). Accuracies are fractions with a 95% Wilson
interval. Fine-tunes are built (or reused) through harness.demo.lm_train.adapted_lm_dir under HARNESS_CACHE.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path

import torch

from harness.demo.lm_assets import smollm2_dir
from harness.demo.lm_train import LM_DATA_DIR, adapted_lm_dir, collate, encode_pairs, read_jsonl
from harness.spec.load import load_spec

_BATCH_SEQS = 16


def _arc_items(rows: list[dict]) -> list[tuple[str, list[str], int]]:
    return [(f"Question: {r['question']}\nAnswer:", [" " + t for t in r["choices"]["text"]],
             r["choices"]["label"].index(r["answerKey"])) for r in rows]


def _boolq_items(rows: list[dict]) -> list[tuple[str, list[str], int]]:
    return [(f"{r['passage']}\nQuestion: {r['question']}?\nAnswer:", [" no", " yes"], int(bool(r["answer"])))
            for r in rows]


@torch.no_grad()
def choice_loglik(model, tok, items: list[tuple[str, list[str], int]]) -> list[list[float]]:
    """Summed log-likelihood of each choice's tokens given its context (lm-eval's token split, via
    harness.demo.lm_train.encode_pairs); left-padded batches of about 16 sequences, logits only at the choices."""
    pairs = [(ctx, c) for ctx, choices, _ in items for c in choices]
    encoded, n_cut = encode_pairs(tok, pairs, 2048)
    if n_cut:
        raise ValueError(f"{n_cut} context/choice pairs do not fit 2048 tokens")
    owner = [qi for qi, (_, choices, _) in enumerate(items) for _ in choices]
    out: list[list[float]] = [[] for _ in items]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    for start in range(0, len(encoded), _BATCH_SEQS):
        batch = collate(encoded[start:start + _BATCH_SEQS], pad)
        labels = batch.pop("labels")
        k = int((labels != -100).sum(-1).max())
        logits = model(**batch, logits_to_keep=k + 1).logits[:, :-1].float()
        targets = labels[:, -k:]
        logp = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        sums = (logp * (targets != -100)).sum(-1)
        for i, value in enumerate(sums.tolist()):
            out[owner[start + i]].append(value)
    return out


def _wilson(k: int, n: int, z: float = 1.96) -> list[float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [round(centre - half, 4), round(centre + half, 4)]


def evaluate(model, tok, items: list[tuple[str, list[str], int]]) -> dict:
    started = time.perf_counter()
    ll = choice_loglik(model, tok, items)
    acc = sum(max(range(len(s)), key=s.__getitem__) == gold for s, (_, _, gold) in zip(ll, items))
    norm = [[v / len(c.lstrip(" ")) for v, c in zip(s, choices)] for s, (_, choices, _) in zip(ll, items)]
    acc_norm = sum(max(range(len(s)), key=s.__getitem__) == gold for s, (_, _, gold) in zip(norm, items))
    n = len(items)
    return {"n": n, "acc": round(acc / n, 4), "acc_ci95": _wilson(acc, n), "acc_norm": round(acc_norm / n, 4),
            "acc_norm_ci95": _wilson(acc_norm, n), "seconds": round(time.perf_counter() - started, 1)}


def _load(base: Path, adapted: Path | None, adaptation: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base)
    if adapted is None:
        return AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval(), tok
    if adaptation == "full":
        return AutoModelForCausalLM.from_pretrained(adapted, dtype=torch.float32).eval(), tok
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PeftModel.from_pretrained(model, adapted).merge_and_unload().eval(), tok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--training", default="suites/training-lm-demo.yaml")
    ap.add_argument("--n-arc-easy", type=int, default=200)
    ap.add_argument("--n-arc-challenge", type=int, default=150)
    ap.add_argument("--n-boolq", type=int, default=100)
    ap.add_argument("--adaptations", nargs="*", default=["lora", "full"])
    ap.add_argument("--skip-base", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(torch.get_num_threads())
    t0, c0 = time.perf_counter(), time.process_time()
    base = smollm2_dir()
    timings = {"convert_or_reuse_s": round(time.perf_counter() - t0, 1)}
    settings = load_spec(args.training).resolve(args.profile)
    suites = {
        "arc_easy/validation": _arc_items(read_jsonl(LM_DATA_DIR / "arc_easy/validation.jsonl")[:args.n_arc_easy]),
        "arc_challenge/validation": _arc_items(
            read_jsonl(LM_DATA_DIR / "arc_challenge/validation.jsonl")[:args.n_arc_challenge]),
        "boolq/dev_first_rows": _boolq_items(read_jsonl(LM_DATA_DIR / "boolq/dev_first1000.jsonl")[:args.n_boolq]),
    }
    results: dict = {"profile": args.profile, "settings": settings.model_dump(mode="json"), "timings": timings,
                     "threads": torch.get_num_threads(), "models": {}}
    adapted_dirs = {}
    for adaptation in args.adaptations:  # train (or reuse) first: the fine-tune times are the first result
        t, c = time.perf_counter(), time.process_time()
        adapted_dirs[adaptation] = adapted_lm_dir(base, settings, adaptation=adaptation)
        record = json.loads((adapted_dirs[adaptation] / "training_record.json").read_text())
        timings[f"{adaptation}_build_s"] = round(time.perf_counter() - t, 1)
        timings[f"{adaptation}_build_cpu_s"] = round(time.process_time() - c, 1)
        timings[f"{adaptation}_train_record"] = {k: record[k] for k in ("seconds", "cpu_seconds", "epoch_loss",
                                                                         "n_pairs", "trainable_parameters")}
        print(adaptation, json.dumps(timings[f"{adaptation}_train_record"]), flush=True)
    points = ([] if args.skip_base else [("base", None)]) + [(a, a) for a in args.adaptations]
    for name, adaptation in points:
        model, tok = _load(base, adapted_dirs.get(adaptation), adaptation or "")
        results["models"][name] = {}
        for suite, items in suites.items():
            if items:
                results["models"][name][suite] = evaluate(model, tok, items)
                print(name, suite, json.dumps(results["models"][name][suite]), flush=True)
    timings["total_s"] = round(time.perf_counter() - t0, 1)
    timings["total_cpu_s"] = round(time.process_time() - c0, 1)
    text = json.dumps(results, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
