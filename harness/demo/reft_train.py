"""A small native ReFT trainer for causal LMs on (prompt, answer) pairs (the LM demo's ``--adaptation reft``).

The base model is frozen (its ``requires_grad`` flags are restored afterwards and its weights never change);
only the interventions' ``R``, ``W``, ``b`` are trained, with AdamW and a linear learning-rate decay, R kept
orthonormal by torch's orthogonal parametrization (as pyreft does). The loss is the mean token cross-entropy on
the answer tokens only (prompt and padding labels are ignored). Each row is ``prompt tokens + answer tokens
(+ EOS)``, encoded separately so the prompt boundary is exact, left-padded with position ids from the mask; the interventions edit the prompt's positions
(:func:`harness.models.reft.prompt_lengths`), never the answer's, as pyreft's supervised data modules do.

Run as a script to fine-tune on ARC-Easy questions (lm-eval's ``arc_easy`` prompt: ``"Question: {q}\\nAnswer:"``,
answer ``" {gold choice}"``)::

    python -m harness.demo.reft_train --model /tmp/smollm2-hf --data ../shared/data/llm/arc_easy/train.jsonl \\
        --n 300 --layers 8,16,24 --rank 4 --positions l1 --out /tmp/reft-arc
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from harness.errors import ModelError, format_error
from harness.progress import progress_bar
from harness.models.reft import (KINDS, InterventionEngine, InterventionSpec, ReftAdapter, ReftIntervention,
                                 model_dims, parse_positions, prompt_lengths)

__all__ = ["ReftTrainConfig", "TrainStats", "encode_pairs", "train_reft", "arc_pairs"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReftTrainConfig:
    """Training settings (defaults: pyreft's last-position quick-start style, small and fast on CPU).

    ``layers`` are 0-based block indices; ``positions`` pyreft's string (one shared intervention per layer);
    ``lr`` the AdamW peak learning rate, decayed linearly to 0; ``max_length`` caps prompt + answer tokens (the
    prompt is cut from the left).
    """

    kind: str = "loreft"
    layers: tuple[int, ...] = (2,)
    positions: str = "l1"
    rank: int = 4
    lr: float = 4e-3
    weight_decay: float = 0.0
    epochs: int = 1
    batch_size: int = 8
    max_length: int = 256
    add_eos: bool = True
    seed: int = 0
    progress: bool = True


@dataclass
class TrainStats:
    """What training did: steps, examples, answer tokens, wall and process-CPU seconds, and the mean loss of each
    epoch (and of the first and last step)."""

    steps: int = 0
    examples: int = 0
    answer_tokens: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    epoch_losses: list[float] = field(default_factory=list)
    first_step_loss: float = float("nan")
    last_step_loss: float = float("nan")


def encode_pairs(tokenizer, pairs: Sequence[tuple[str, str]], *, max_length: int = 256,
                 add_eos: bool = True) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, answer ids)`` per pair: the prompt with the tokenizer's default special tokens, the answer
    without (plus EOS when ``add_eos``); the prompt is left-truncated so both fit ``max_length``.

    Raises
    ------
    ModelError
        If an answer is empty or alone longer than ``max_length - 1``.
    """
    out = []
    eos = [tokenizer.eos_token_id] if add_eos and tokenizer.eos_token_id is not None else []
    for i, (prompt, answer) in enumerate(pairs):
        p = tokenizer(prompt)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"] + eos
        if not a or len(a) >= max_length:
            raise ModelError(format_error("a training answer is empty or too long", where=f"pair {i}",
                                          expected=f"1..{max_length - 1} tokens", got=len(a)))
        out.append((p[-(max_length - len(a)):], a))
    return out


def _collate(rows: list[tuple[list[int], list[int]]], pad_id: int):
    """Left-padded ids, mask and labels (-100 outside answers), position ids from the mask, prompt lengths. Left
    padding puts every answer at the end, so only the last ``max answer + 1`` logits are computed."""
    width = max(len(p) + len(a) for p, a in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, (p, a) in enumerate(rows):
        n = len(p) + len(a)
        ids[r, width - n:] = torch.tensor(p + a)
        mask[r, width - n:] = 1
        labels[r, width - len(a):] = torch.tensor(a)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, labels, positions, [len(p) for p, _ in rows]


def _new_adapter(cfg: ReftTrainConfig, hidden: int, n_layers: int) -> ReftAdapter:
    if cfg.kind not in KINDS:
        raise ModelError(format_error("unknown ReFT kind", where="kind", expected=KINDS, got=cfg.kind))
    bad = [layer for layer in cfg.layers if not 0 <= layer < n_layers]
    if bad or not cfg.layers:
        raise ModelError(format_error("ReFT layers out of range", where="layers", expected=f"0..{n_layers - 1}",
                                      got=list(cfg.layers)))
    first, last = parse_positions(cfg.positions)
    torch.manual_seed(cfg.seed)
    specs = [InterventionSpec(layer, "block_output", first, last) for layer in cfg.layers]
    mods = torch.nn.ModuleList(ReftIntervention(cfg.kind, hidden, cfg.rank) for _ in specs)
    return ReftAdapter(kind=cfg.kind, specs=specs, interventions=mods, hidden_size=hidden, num_layers=n_layers,
                       info={"source": "harness.demo.reft_train"})


def train_reft(model: torch.nn.Module, tokenizer, pairs: Sequence[tuple[str, str]],
               cfg: ReftTrainConfig = ReftTrainConfig()) -> tuple[ReftAdapter, TrainStats]:
    """Train ReFT interventions on a frozen causal LM; returns the adapter (fp32, CPU) and :class:`TrainStats`.

    Parameters
    ----------
    model : torch.nn.Module
        A causal LM (llama, gpt2 family); left unchanged (hooks removed, ``requires_grad`` restored).
    tokenizer
        Its tokenizer; needs a pad or EOS token for padding.
    pairs : sequence of (str, str)
        (prompt, answer); loss on the answer tokens only. Shuffled per epoch with ``cfg.seed``.
    cfg : ReftTrainConfig, default=ReftTrainConfig()

    Raises
    ------
    ModelError
        Bad layers, kind, positions or rank, no pairs, or an answer that does not fit.
    """
    from torch.nn.utils import parametrize
    from torch.nn.utils.parametrizations import orthogonal
    if not pairs:
        raise ModelError(format_error("no training pairs", where="pairs", fix="pass (prompt, answer) pairs"))
    hidden, n_layers = model_dims(model)
    adapter = _new_adapter(cfg, hidden, n_layers)
    rows = encode_pairs(tokenizer, pairs, max_length=cfg.max_length, add_eos=cfg.add_eos)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    for mod in adapter.interventions:
        orthogonal(mod, "R")  # R R^T = I throughout training, as pyreft's rotate_layer
    adapter.interventions.to(device)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(False)
    engine = InterventionEngine(model, adapter, alpha=1.0)
    stats = TrainStats(examples=len(rows))
    t0, c0 = time.perf_counter(), time.process_time()
    was_training = model.training
    model.eval()  # no dropout in the frozen base: seeded runs repeat exactly
    try:
        _fit(model, adapter, rows, pad_id, device, cfg, stats)
    finally:
        engine.remove()
        for mod in adapter.interventions:
            if parametrize.is_parametrized(mod, "R"):
                parametrize.remove_parametrizations(mod, "R", leave_parametrized=True)
                mod.R.data = mod.R.data.contiguous()  # as saved and loaded: same kernels, same bits
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
        model.train(was_training)
    stats.seconds, stats.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
    adapter.interventions.to("cpu").requires_grad_(False)
    adapter.info["training"] = {**asdict(cfg), "layers": list(cfg.layers), **asdict(stats)}
    return adapter, stats


def _fit(model, adapter: ReftAdapter, rows, pad_id: int, device, cfg: ReftTrainConfig, stats: TrainStats) -> None:
    """The optimisation loop (AdamW, linear decay to 0, per-epoch seeded shuffle); fills ``stats``."""
    opt = torch.optim.AdamW(list(adapter.interventions.parameters()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    n_batches = (len(rows) + cfg.batch_size - 1) // cfg.batch_size
    total = n_batches * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / total))
    rng = random.Random(cfg.seed)
    with progress_bar(total=total, desc=f"ReFT {cfg.kind} r={cfg.rank}", unit="step", leave=True,
                      show=cfg.progress) as bar:
        for _ in range(cfg.epochs):
            order = list(range(len(rows)))
            rng.shuffle(order)
            losses = []
            for b in range(n_batches):
                ids, mask, labels, positions, plens = _collate(
                    [rows[i] for i in order[b * cfg.batch_size:(b + 1) * cfg.batch_size]], pad_id)
                loss = _step(model, ids.to(device), mask.to(device), labels.to(device), positions.to(device), plens)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                stats.answer_tokens += int((labels != -100).sum())
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
                bar.update()
            if not stats.epoch_losses:
                stats.first_step_loss = losses[0]
            stats.epoch_losses.append(sum(losses) / len(losses))
            stats.steps += len(losses)
            stats.last_step_loss = losses[-1]


def _step(model, ids, mask, labels, positions, plens) -> torch.Tensor:
    """Mean cross-entropy of the answer tokens (next-token prediction), interventions on the prompts; logits only
    for the positions that predict answer tokens (the vocabulary projection is a large share of the compute)."""
    keep = int((labels != -100).sum(1).max()) + 1
    with prompt_lengths(plens):
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    return torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(),
                                             labels[:, -(keep - 1):].flatten(), ignore_index=-100)


def arc_pairs(path: str | Path, n: int | None = None, seed: int = 0) -> list[tuple[str, str]]:
    """(prompt, answer) pairs from an ARC jsonl file in lm-eval's ``arc_easy`` format; ``n`` rows sampled with
    ``seed`` (all rows when None). The gold choice is found by the position of ``answerKey`` in
    ``choices.label``."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if n is not None and n < len(rows):
        rows = random.Random(seed).sample(rows, n)
    out = []
    for r in rows:
        gold = r["choices"]["label"].index(r["answerKey"])
        out.append((f"Question: {r['question']}\nAnswer:", " " + r["choices"]["text"][gold]))
    return out


def main(argv: list[str] | None = None) -> int:
    """Train on ARC questions and write the harness ReFT format (see module docstring)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.reft_io import save_reft

    ap = argparse.ArgumentParser(prog="python -m harness.demo.reft_train", description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--kind", default="loreft", choices=KINDS)
    ap.add_argument("--layers", default="8,16,24")
    ap.add_argument("--positions", default="l1")
    ap.add_argument("--rank", type=int, default=4)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32).eval()
    cfg = ReftTrainConfig(kind=a.kind, layers=tuple(int(x) for x in a.layers.split(",")), positions=a.positions,
                          rank=a.rank, lr=a.lr, epochs=a.epochs, batch_size=a.batch_size, seed=a.seed)
    adapter, stats = train_reft(model, tok, arc_pairs(a.data, a.n, a.seed), cfg)
    save_reft(adapter, a.out, base_name=str(a.model), base_model_type=model.config.model_type,
              training=adapter.info["training"])
    log.info("trained %s in %.1f s (%.1f CPU s): %d steps, %d answer tokens, loss %.4f -> %.4f (epoch means %s); wrote %s",
             adapter.describe(), stats.seconds, stats.cpu_seconds, stats.steps, stats.answer_tokens, stats.first_step_loss,
             stats.last_step_loss, [round(x, 4) for x in stats.epoch_losses], a.out)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
