"""Training stage: fine-tunes a base model on a suite's ID train split and writes an ordinary checkpoint or PEFT
adapter folder with a training record (``harness train``, :func:`harness.run_train`).

Modules:

- :mod:`harness.train.loop`: what every trainer shares: AdamW with linear warmup / decay, progress (tqdm on a
  terminal, one log line per step otherwise), writing a model folder whole (temporary sibling, then rename).
- :mod:`harness.train.classifier`: sentence classifiers: linear probe (scikit-learn ``LogisticRegression`` on
  frozen pooled features, C chosen on validation accuracy), full fine-tuning (LP-FT from a probe) and LoRA.
- :mod:`harness.train.causal`: causal language models: prompt -> answer pairs, answer-token loss, LoRA or full.
- :mod:`harness.train.command`: the command's checks (:func:`~harness.train.command.plan`, no model loaded) and
  entry point (:func:`~harness.train.command.train_model`): training spec + suite + base -> model folder(s).
- :mod:`harness.train.builders`: the runs per task and method, and ``training.json``.

The demos (:mod:`harness.demo.train`, :mod:`harness.demo.lm_train`) call the same functions. Importing this
package imports nothing (torch is loaded by the modules above, when used).
"""

__all__: list[str] = []
