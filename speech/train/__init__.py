"""CTC fine-tuning, without Ray: data, vocabulary, the model, one epoch and an evaluation.

jobs/finetune.py runs these in Ray Train workers; they work the same in a single process.
"""

from speech.train.model import TrainingError

__all__ = ["TrainingError"]
