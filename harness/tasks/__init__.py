"""The task seam: what a suite asks of a model, between the loaded rows and the per-example records.

A task (after EleutherAI lm-evaluation-harness's split of task / request / model, ``lm_eval/api/task.py``,
``lm_eval/api/instance.py``, ``lm_eval/api/model.py``; here with immutable records and one small module a task)

1. turns a loaded split (:class:`harness.records.SplitData`) into **requests** of one kind
   (:class:`harness.tasks.base.Prepared`): token ids to classify, (context, continuation) pairs to score,
   documents to score in rolling windows, or prompts to continue greedily;
2. hands them to a **runner** of that request kind (:mod:`harness.predict`), which owns the model;
3. turns the runner's outputs into **per-example records**: the columns its metrics read
   (:class:`harness.records.Predictions` ``outputs``).

Everything after the records (store, metrics and their bootstrap, selection, gate, report) reads columns and
metric names and never asks which task made them. Tasks are listed in one explicit table, :data:`TASKS`.
"""

from __future__ import annotations

from harness.errors import SpecError, unknown_name
from harness.tasks.base import REQUEST_KINDS, Prepared, Task
from harness.tasks.classification import ClassificationTask
from harness.tasks.generation import GenerationTask
from harness.tasks.multiple_choice import MultipleChoiceTask
from harness.tasks.perplexity import PerplexityTask

__all__ = ["Task", "Prepared", "REQUEST_KINDS", "TASKS", "task_for", "LM_TASKS"]

#: task name (a suite's ``task`` or ``task.kind``) -> task class
TASKS: dict[str, type[Task]] = {"classification": ClassificationTask, "multiple_choice": MultipleChoiceTask,
                                "generation": GenerationTask, "perplexity": PerplexityTask}
#: the tasks a causal language model serves (every task but classification)
LM_TASKS = frozenset(TASKS) - {"classification"}


def task_for(suite, fewshot_pool=None) -> Task:
    """The task object of a suite.

    Parameters
    ----------
    suite : Suite
        A validated suite.
    fewshot_pool : list of dict, default=None
        The rows of the suite's few-shot split (language-model suites with ``task.prompt.fewshot``).

    Raises
    ------
    SpecError
        For a task name without an implementation.
    """
    name = suite.task_name
    if name not in TASKS:
        raise SpecError(unknown_name("task", name, TASKS))
    return TASKS[name](suite) if name == "classification" else TASKS[name](suite, fewshot_pool=fewshot_pool)
