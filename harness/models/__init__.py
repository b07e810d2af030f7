"""Stage 4, model and blend: loading checkpoints, the harness model classes, and weight-space interpolation.

Nothing is imported here, so ``import harness.models`` stays free of torch and of registration side effects;
import the submodules you need (for example :mod:`harness.models.pooling`).
"""
