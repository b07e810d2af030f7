"""Data-parallel sweep and device-map benchmark (issue 21), for a machine with 2 GPUs; ``--tiny`` runs it on CPU.

    PYTHONPATH=. python benchmarks/dist_sweep_gpu.py [--rows 400] [--part all|dp|device-map] [--tiny] [--keep DIR]

``--part dp`` runs steps 1-3 only, ``--part device-map`` steps 1, 2 and 4 (to stay inside a 10-minute command).

1. Builds a llama-architecture causal LM from a config (``--tiny``: hidden 32, 2 layers; else about 1.1B
   parameters: hidden 2048, 22 layers, 32 heads, 4 KV heads, vocabulary 32,000, as TinyLlama) with random
   weights in bf16 (fp32 with ``--tiny``) and saves it, with a byte-level BPE tokenizer trained on the fly, as
   the base; the adapted model is the base plus seeded Gaussian noise (std 0.02 of each tensor's std), saved
   beside it. Both are complete checkpoints, so the harness's loader checks (no weight initialised at random)
   pass.
2. Writes two synthetic multiple-choice suites (JSONL + suite YAML): an ID suite and a shift suite of ``--rows``
   questions each (4 choices; validation and test halves).
3. Runs ``python -m harness sweep`` over 11 alphas (0, 0.1, ..., 1) with one process, then
   ``python -m torch.distributed.run --nproc-per-node 2 -m harness sweep`` (each run with its own empty
   ``HARNESS_CACHE``, so no run reads the other's results), and prints the wall times (whole command, and the
   sweep's stages blend + predict + metrics from rank 0's manifest), the speedup, whether the two summaries
   (results, selection, points) and predictions are identical, and peak GPU memory per rank.
4. Loads the base split over the GPUs (``device_map="balanced"``) and on one GPU, compares logits (bf16
   tolerance) and the harness's multiple-choice log-likelihoods, then runs the sweep with ``--device-map
   balanced`` (blends in place on each GPU) on 3 alphas and compares its summary with the 1-GPU one; prints
   memory per GPU.

Everything is printed as one JSON object at the end (``--json PATH`` writes it too). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ALPHAS = "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1"
WORDS = ("water light plants energy rock steam ice sun leaf animals grow mass river cloud stone metal wood glass "
         "salt sugar heat cold wind rain snow iron gold copper oxygen carbon").split()


def tokenizer(vocab: int):
    """A byte-level BPE trained on the suites' words (``<s>`` BOS added, ``</s>`` EOS, no pad)."""
    from tokenizers import Tokenizer, decoders, pre_tokenizers, processors, trainers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [" ".join(random.Random(i).sample(WORDS, 8)) + "? Question: Answer:" for i in range(200)]
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B",
                                                       special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def build_models(root: Path, tiny: bool, device: str) -> tuple[Path, Path, int]:
    """Save base and adapted (base + noise); returns their folders and the parameter count."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = tokenizer(400)
    if tiny:
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                          initializer_range=0.2)
        dtype = torch.float32
    else:
        cfg = LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=22,
                          num_attention_heads=32, num_key_value_heads=4, max_position_embeddings=2048)
        dtype = torch.bfloat16
    cfg.bos_token_id, cfg.eos_token_id = tok.bos_token_id, tok.eos_token_id
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    n_params = sum(p.numel() for p in model.parameters())
    base, adapted = root / "base", root / "adapted"
    model.save_pretrained(base)
    tok.save_pretrained(base)
    g = torch.Generator(device=device).manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=g, device=device, dtype=torch.float32)
            p.add_((0.02 * p.float().std() * noise).to(p.dtype))
    model.save_pretrained(adapted)
    tok.save_pretrained(adapted)
    del model
    return base, adapted, n_params


def write_suites(root: Path, rows: int) -> list[Path]:
    """An ID and a shift multiple-choice suite of ``rows`` questions each (unique prompts, 4 choices)."""
    rng = random.Random(0)
    paths = []
    for name, role in (("bench-id", "id"), ("bench-shift", "shift")):
        data = root / f"{name}.jsonl"
        with data.open("w") as f:
            for i in range(rows):
                choices = rng.sample(WORDS, 4)
                f.write(json.dumps({"id": f"{name}-{i}", "question": f"{i}: " + " ".join(rng.sample(WORDS, 6)),
                                    "choices": choices, "answer": rng.randrange(4)}) + "\n")
        shift = "shift_type: natural\n" if role == "shift" else ""
        (root / f"{name}.yaml").write_text(
            f"kind: suite\nname: {name}\nrole: {role}\n{shift}source: {{type: local, files: [{data.name}]}}\n"
            "id_column: id\ntask:\n  kind: multiple_choice\n  prompt: {template: \"Question: {{question}}\\nAnswer:\"}\n"
            "  choices: {field: choices}\n  gold: {index: answer}\nmetrics: [acc, acc_norm]\n"
            "splits:\n  - {name: validation, role: validation, fraction: 0.5}\n"
            "  - {name: test, role: test, fraction: 0.5}\n")
        paths.append(root / f"{name}.yaml")
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_sweep(root: Path, name: str, base: Path, adapted: Path, suites: list[Path], launcher: list[str],
              extra: list[str], alphas: str = ALPHAS) -> dict:
    """One ``harness sweep`` (own cache); its wall time, stage times and manifest."""
    out = root / name
    env = {**os.environ, "HARNESS_CACHE": str(root / f"cache-{name}"), "PYTHONPATH": str(ROOT),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = [sys.executable, *launcher, "-m", "harness", "sweep", "--base", str(base), "--adapted", str(adapted),
           "--suite", *map(str, suites), "--alphas", alphas, "--out", str(out), "--no-report", "--no-progress",
           "--n-resamples", "200", *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{name} failed ({res.returncode}):\n{' '.join(cmd)}\n{res.stdout[-2000:]}\n"
                         f"{res.stderr[-4000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest.get("timings_s") or {}
    sweep_s = sum(float(stages.get(k, 0.0)) for k in ("blend", "predict", "metrics"))
    return {"dir": out, "wall_s": round(wall, 2), "sweep_stages_s": round(sweep_s, 2), "stages": stages,
            "memory": manifest.get("memory"), "device_map": manifest.get("device_map")}


def same_runs(a: Path, b: Path) -> dict:
    """Whether two run directories hold identical summaries (results, selection, points) and predictions (every
    per-example column of every point, suite and split: bit for bit, float columns to rounding, rtol 1e-6 as the
    data-parallel tests allow: a rank's token-budget batches hold other questions), with the largest relative
    difference of the float columns."""
    import numpy as np

    from harness.rundir import predictions_for, read_predictions, read_summary

    sa, sb = read_summary(a), read_summary(b)
    fa, fb = read_predictions(a), read_predictions(b)
    same_preds, worst = len(fa) == len(fb), 0.0
    for pid, suites in sb.results.items():
        for suite, splits in suites.items():
            for split in splits:
                x, y = predictions_for(fa, pid, suite, split), predictions_for(fb, pid, suite, split)
                same_preds = same_preds and x is not None and all(list(u) == list(v) for u, v in zip(x[:3], y[:3]))
                same_preds = same_preds and set(x[3]) == set(y[3])
                for c in y[3] if same_preds else ():
                    u, v = np.asarray(x[3][c]), np.asarray(y[3][c])
                    if v.dtype.kind == "f":
                        same_preds = same_preds and u.shape == v.shape and np.allclose(
                            u, v, rtol=1e-6, atol=1e-9, equal_nan=True)
                        if u.shape == v.shape and u.size:
                            rel = np.nanmax(np.abs(u - v) / np.maximum(np.abs(v), 1e-12))
                            worst = max(worst, float(rel))
                    else:
                        same_preds = same_preds and np.array_equal(u, v)
    return {"results": sa.results == sb.results, "selection": sa.selection == sb.selection,
            "points": [p.model_dump() for p in sa.points] == [p.model_dump() for p in sb.points],
            "predictions": bool(same_preds), "predictions_max_rel_diff": worst,
            "chosen_alpha": [sa.selection.chosen_alpha, sb.selection.chosen_alpha]}


def device_map_check(base: Path, suites: list[Path], tiny: bool) -> dict:
    """Logits and MC log-likelihoods of the base split over the GPUs against one GPU."""
    import numpy as np
    import torch

    from harness.models.causal import CausalLMScorer
    from harness.models.causal_load import load_causal_lm
    from harness.models.placement import memory_by_device

    dtype = "fp32" if tiny else "bf16"
    one = load_causal_lm(base, dtype=dtype, device="cuda:0" if torch.cuda.is_available() else "cpu")
    rows = [json.loads(line) for line in suites[0].with_suffix(".jsonl").read_text().splitlines()[:64]]
    reqs = [(f"Question: {r['question']}\nAnswer:", " " + c) for r in rows for c in r["choices"]]
    ids = one.tokenizer([q for q, _ in reqs[:16]], return_tensors="pt", padding=True)
    with torch.inference_mode():
        ref = torch.log_softmax(one.model(**{k: v.to(one.device) for k, v in ids.items()}).logits.float(), -1).cpu()
    ll_one = CausalLMScorer(one.model, one.tokenizer).loglikelihood(reqs).loglik
    del one
    torch.cuda.empty_cache() if torch.cuda.is_available() else None
    split = load_causal_lm(base, dtype=dtype, device_map="balanced")
    with torch.inference_mode():
        got = torch.log_softmax(split.model(**{k: v.to(split.device) for k, v in ids.items()}).logits.float(),
                                -1).cpu()
    ll_split = CausalLMScorer(split.model, split.tokenizer).loglikelihood(reqs).loglik
    mask = ids["attention_mask"].bool()
    diff = (got - ref).abs()[mask]
    tol = 1e-4 if tiny else 5e-2
    out = {"devices": sorted(set(split.info["device_map"].values())),
           "logprob_max_abs_diff": float(diff.max()), "logprob_mean_abs_diff": float(diff.mean()),
           "top1_agreement": float((got.argmax(-1) == ref.argmax(-1))[mask].float().mean()),
           "mc_loglik_max_abs_diff": float(np.max(np.abs(ll_split - ll_one))),
           "mc_same_choice": float(np.mean(ll_split.reshape(-1, 4).argmax(1) == ll_one.reshape(-1, 4).argmax(1))),
           "tolerance": tol, "memory": memory_by_device(split.model)}
    out["within_tolerance"] = out["logprob_max_abs_diff"] <= tol
    del split
    return out


def data_parallel(root: Path, base: Path, adapted: Path, suites: list[Path], flags: list[str]) -> dict:
    """The 11-alpha sweep with one process and with torchrun's two: times, speedup, identity, memory."""
    one = run_sweep(root, "one", base, adapted, suites, [], flags)
    two = run_sweep(root, "two", base, adapted, suites,
                    ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port())], flags)
    return {"one_process": {k: one[k] for k in ("wall_s", "sweep_stages_s", "memory")},
            "two_processes": {k: two[k] for k in ("wall_s", "sweep_stages_s", "memory")},
            "speedup_wall": round(one["wall_s"] / two["wall_s"], 3),
            "speedup_sweep_stages": round(one["sweep_stages_s"] / max(two["sweep_stages_s"], 1e-9), 3),
            "identical_one_vs_two": same_runs(two["dir"], one["dir"])}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tiny", action="store_true", help="tiny model on CPU (gloo): checks the script, measures nothing")
    p.add_argument("--rows", type=int, default=None, help="questions per suite (default 400; 24 with --tiny)")
    p.add_argument("--part", choices=["all", "dp", "device-map"], default="all",
                   help="dp: the 1- vs 2-process sweeps only; device-map: the split-model checks only")
    p.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one, deleted)")
    p.add_argument("--json", default=None, help="also write the results here")
    a = p.parse_args()
    import torch

    cuda = torch.cuda.is_available() and not a.tiny
    if not a.tiny and torch.cuda.device_count() < 2:
        raise SystemExit("needs 2 CUDA devices (or --tiny for the CPU check)")
    rows = a.rows or (24 if a.tiny else 400)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(a.keep or tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        base, adapted, n_params = build_models(root, a.tiny, "cuda" if cuda else "cpu")
        suites = write_suites(root, rows)
        res: dict = {"tiny": a.tiny, "parameters": n_params, "rows_per_suite": rows, "alphas": 11,
                     "dtype": "fp32" if a.tiny else "bf16", "build_s": round(time.perf_counter() - t0, 1),
                     "torch": torch.__version__, "gpus": [torch.cuda.get_device_name(i)
                                                          for i in range(torch.cuda.device_count())] if cuda else []}
        dev = ["--device", "cpu"] if not cuda else []
        dtype = ["--dtype", res["dtype"]]
        if a.part in ("all", "dp"):
            res.update(data_parallel(root, base, adapted, suites, [*dev, *dtype]))
        if a.part in ("all", "device-map"):
            res["device_map"] = device_map_check(base, suites, a.tiny)
            mapped = run_sweep(root, "mapped", base, adapted, suites, [], [*dtype, "--device-map", "balanced"],
                               alphas="0,0.5,1")
            ref = run_sweep(root, "ref3", base, adapted, suites, [], [*dev, *dtype], alphas="0,0.5,1")
            res["device_map_sweep"] = {"wall_s": mapped["wall_s"], "memory": mapped["memory"],
                                       "placement_devices": sorted(set((mapped["device_map"] or {}).values())),
                                       "identical_to_one_device": same_runs(mapped["dir"], ref["dir"])}
    text = json.dumps(res, indent=2, default=str)
    print(text)
    if a.json:
        Path(a.json).write_text(text)


if __name__ == "__main__":
    main()
