"""Do the static-cache paths write the same text as transformers' dynamic-cache ``generate`` on a real model?
(issue 20; random weights cannot tell: their logits are near ties at every step.)

SmolLM2-135M-Instruct from its GGUF file (``--gguf``), in ``--dtype`` on the available device; 32 short questions
written for this script (arithmetic, science, word problems), greedy, ``--new`` new tokens, stop sequences
``"\\n\\n"`` and ``"Question:"``, batches of ``--batch``. Compared, each against transformers' dynamic cache
(``CausalLMScorer`` with ``generation_cache=None``): the harness's sync-free loop (``generation_cache="static"``:
on CUDA the compiled step) and ``generate`` with ``cache_implementation="static"`` (transformers compiles its own
step on CUDA). Prints the share of identical texts and the first differing pair.

    python benchmarks/gen_agree.py --gguf /path/smollm2.gguf [--dtype bfloat16] [--batch 16] [--new 48]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTIONS = [
    "What is 12 + 7?", "What is 9 times 8?", "What is 100 minus 37?", "What is half of 64?",
    "Which planet is closest to the Sun?", "What gas do plants take in from the air?", "What is ice made of?",
    "How many legs does a spider have?", "What is the boiling point of water in Celsius?",
    "Tom has 5 apples and buys 3 more. How many apples does he have?",
    "A train travels 60 miles in one hour. How far does it travel in 3 hours?",
    "Sara had 20 stickers and gave 8 to her friend. How many are left?",
    "What is the capital of France?", "What do bees make?", "Which organ pumps blood through the body?",
    "What is the largest ocean on Earth?", "What force pulls objects toward the Earth?",
    "How many days are in a week?", "What is 15 divided by 3?", "What is 7 squared?",
    "Name a mammal that can fly.", "What is the freezing point of water in Fahrenheit?",
    "A box holds 6 eggs. How many eggs are in 4 boxes?", "What is 250 plus 250?",
    "What part of the plant makes food?", "Which is heavier, a kilogram of feathers or a kilogram of iron?",
    "What is the opposite of hot?", "How many minutes are in two hours?", "What color do you get by mixing "
    "blue and yellow?", "Why do we see lightning before we hear thunder?", "What is 3 + 4 times 2?",
    "A shirt costs 20 dollars and is 25 percent off. What is the new price?",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gguf", type=Path, required=True)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new", type=int, default=48)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.models.causal import CausalLMScorer
    from harness.models.causal_decode import graph_loop_unavailable

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tok = AutoTokenizer.from_pretrained(a.gguf.parent, gguf_file=a.gguf.name)
    model = AutoModelForCausalLM.from_pretrained(a.gguf.parent, gguf_file=a.gguf.name,
                                                 dtype=getattr(torch, a.dtype)).to(device).eval()
    model.hf_quantizer = None  # dequantized on load: plain tensors, as the harness's converted copy has them
    prompts = [f"Question: {q}\nAnswer:" for q in QUESTIONS]
    stop = ["\n\n", "Question:"]
    res: dict = {"device": device, "dtype": a.dtype, "loop": graph_loop_unavailable(model) or "applies"}
    texts = {}
    for name, cache in (("dynamic", None), ("harness_static", "static"), ("generate_static", "static")):
        sc = CausalLMScorer(model, tok, batch_size=a.batch, generation_cache=cache)
        if name == "generate_static":  # transformers' own static path: the loop switched off
            import harness.models.causal_generate as cg

            cg.graph_loop_unavailable = lambda m: "switched off by gen_agree.py"
        t0 = time.perf_counter()
        sc.generate_until(prompts, stop=stop, max_new_tokens=a.new)  # warm-up (compilation on CUDA)
        t1 = time.perf_counter()
        texts[name] = sc.generate_until(prompts, stop=stop, max_new_tokens=a.new)
        res[name] = {"first_call_s": t1 - t0, "second_call_s": time.perf_counter() - t1}
    for name in ("harness_static", "generate_static"):
        same = [x == y for x, y in zip(texts[name], texts["dynamic"])]
        res[name]["same_text_as_dynamic"] = sum(same) / len(same)
        diff = [i for i, s in enumerate(same) if not s]
        if diff:
            res[name]["first_difference"] = {"prompt": prompts[diff[0]], name: texts[name][diff[0]],
                                             "dynamic": texts["dynamic"][diff[0]]}
    res["loop_vs_generate_static"] = sum(x == y for x, y in zip(texts["harness_static"], texts["generate_static"])
                                         ) / len(prompts)
    res["examples"] = [{"prompt": p, "dynamic": t} for p, t in zip(prompts[:3], texts["dynamic"])]
    print(json.dumps(res, indent=1))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
