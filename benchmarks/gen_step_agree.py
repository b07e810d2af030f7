"""On a GPU, the compiled greedy step in recorded chunks (CUDA graphs) gives the eager step's tokens and
``generate``'s (issue 20).

Tiny GPT-2 and Llama models from the tests' configs (fp32, seeded, peaked random weights: no near ties), four
left-padded prompts and one prompt alone (batch 1: the tuned step's eager attention), 40 new tokens, and with
``--real DIR`` a real model (fp32) on ``--rows`` GSM8K test questions; for each model: ``generate`` (greedy), the
loop with the eager step, and the loop with :func:`~harness.models.causal_decode.compiled_step` as the harness runs
it (on a GPU, chunks of steps recorded as CUDA graphs, the prompt's forward padded and recorded too) called twice
(the first call records the graphs, the second replays them), then once more after every weight is scaled in place
by 1.05 (as a blend writes weights; the replay must give the eager step's new tokens), without and with an EOS id
the model really emits (rows padded after it). Prints and writes JSON; exit 1 if any comparison differs. (Whether
the weight write changed the tokens is reported, not required: on the tiny GPT-2 it often does not, and that check
then shows nothing.)

    python benchmarks/gen_step_agree.py [--tuned] [--real /tmp/smollm2-hf] [--out step_agree.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "unit")]

from _causal import byte_bpe, tiny_causal  # noqa: E402

from harness.models.causal_decode import compiled_step, decode_static  # noqa: E402

PROMPTS = ["Question: Is the sky blue?\nAnswer:", "The", "Plants need water, air and", "Students measured the mass"]


def check(model, tok, prompts: list[str], tuned: bool, n: int = 40) -> dict:
    dev = next(model.parameters()).device
    rows = [tok.encode(p) for p in prompts]
    width = max(map(len, rows))
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows], device=dev)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=dev)
    out: dict = {}
    model.generation_config.eos_token_id = None  # generate stops only at the EOS ids given below
    for label in ("no_eos", "eos"):
        eos_ids = [out["eager_tokens"][0][7]] if label == "eos" else []  # an id the first row really emits
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                                 pad_token_id=0, eos_token_id=eos_ids or None)[:, width:].tolist()
        eager = decode_static(model, ids, mask, max_new_tokens=n, eos_ids=eos_ids, pad_id=0)
        graph = dev.type == "cuda"  # as the harness: chunks of steps recorded as CUDA graphs
        step = compiled_step(model, tuned)

        def looped():
            return decode_static(model, ids, mask, max_new_tokens=n, eos_ids=eos_ids, pad_id=0, step=step,
                                 graph=graph)
        first, second = looped(), looped()  # records the graphs, then replays them
        with torch.no_grad():  # weights written in place (as a blend writes them): the replay must see them
            saved = [p.detach().clone() for p in model.parameters()]
            for p in model.parameters():
                p.mul_(1.05)
            eager_w = decode_static(model, ids, mask, max_new_tokens=n, eos_ids=eos_ids, pad_id=0)
            replay_w = looped()
            for p, v in zip(model.parameters(), saved):
                p.copy_(v)
        gen = [r + [0] * (n - len(r)) for r in gen]  # generate stops when every row is done
        eager_p = [r + [0] * (n - len(r)) for r in eager]
        out[label] = {"eos_ids": eos_ids, "eager_equals_generate": eager_p == gen,
                      "compiled_first_equals_eager": first == eager, "compiled_replay_equals_eager": second == eager,
                      "replay_after_weight_write_equals_eager": replay_w == eager_w,
                      "weight_write_changed_tokens": eager_w != eager,
                      "rows_ended_by_eos": sum(eos_ids[0] in r[:-1] for r in eager) if eos_ids else None}
        out["eager_tokens"] = eager
    out.pop("eager_tokens")
    return out


def gsm8k_prompts(data: Path, k: int) -> list[str]:
    """The first ``k`` GSM8K test questions in lm-eval's gsm8k prompt (``Question: ...\nAnswer:``)."""
    lines = (data / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:k]
    return [f"Question: {json.loads(x)['question']}\nAnswer:" for x in lines]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tuned", action="store_true", help="also the max-autotune step")
    ap.add_argument("--real", type=Path, default=None,
                    help="also a real model folder (e.g. SmolLM2 converted by lm_arc_vs_lmeval.py --convert) on "
                         "GSM8K test questions from --data")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared/data/llm")
    ap.add_argument("--rows", type=int, default=8, help="GSM8K questions for --real")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    res: dict = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__}
    for tuned in (False, True) if a.tuned else (False,):
        for style in ("llama", "gpt2") + (("real",) if a.real else ()):
            key = f"{style}{'_tuned' if tuned else ''}"
            try:
                if style == "real":
                    from transformers import AutoModelForCausalLM, AutoTokenizer

                    tok = AutoTokenizer.from_pretrained(a.real)
                    model = AutoModelForCausalLM.from_pretrained(a.real, dtype=torch.float32).to(dev).eval()
                    res[key] = check(model, tok, gsm8k_prompts(a.data, a.rows), tuned)
                else:
                    tok = byte_bpe(style)
                    model = tiny_causal(style, tok, seed=1, n_positions=512).to(dev)
                    res[key] = check(model, tok, PROMPTS, tuned)
                    # one row: the tuned step's attention switch applies at batch 1 only
                    res[key + "_one_row"] = check(model, tok, PROMPTS[:1], tuned)
            except Exception as e:  # noqa: BLE001 - report and go on
                import traceback

                res[key] = {"error": f"{type(e).__name__}: {str(e)[:500]}", "tb": traceback.format_exc()[-3000:]}
            for k in (key, key + "_one_row"):
                if k in res:
                    print(k, json.dumps(res[k]), flush=True)
            if a.out:
                a.out.write_text(json.dumps(res, indent=1) + "\n")
    runs = [r for r in res.values() if isinstance(r, dict)]
    ok = all("error" not in r and all(x is not False for case in r.values() for k, x in case.items()
                                      if k != "weight_write_changed_tokens") for r in runs)
    print("all equal" if ok else "DIFFERENCES", flush=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
