"""A verifier learned from the policy's own rollouts (outcome- and tree-supervised value model).

    rollouts (ets-async run on training problems) -> labels.py (value of every node) ->
    features.py (the policy's hidden states at step ends) -> head.py (a small ranking head) ->
    ../verifier_checkpoint.py (the head file, and the head in Qwen2.5-Math-PRM's layout over the
    policy's weights, served by vLLM)

``ets-async train-verifier`` runs the recipe (train.py); ``EngineConfig(prm="verifier")`` serves it.
"""

from ..verifier_checkpoint import TrainedHead, build_checkpoint, load_head, save_head
from .head import TrainSettings
from .labels import LabeledTree, label_trees

__all__ = ["LabeledTree", "TrainSettings", "TrainedHead", "build_checkpoint", "label_trees", "load_head", "save_head"]
