"""Built-in xferbench plugin: the heads trained on frozen bottleneck features.

``softmax`` is the retrain.py tutorial layer, ``logreg`` the L2-tuned logistic
regression of the Kornblith et al. linear-evaluation protocol, and ``mlp`` one
hidden layer. Nothing heavy is imported here: factories are lazy strings.
"""

from __future__ import annotations

from collections.abc import Callable

from xferbench import HeadSpec, Option, hookimpl

#: the C values tried by ``logreg`` unless ``grid`` says otherwise: 1e-5 .. 1e5, two per decade. Each C is one
#: point of the head's validation curve, so 21 of them give the curve the 20+ points that time-to-accuracy
#: needs; with warm starts from neighbouring C, the finer grid costs about 1.7 times the old 9-value one.
DEFAULT_C_GRID = ",".join(f"{10 ** (e / 2):.3g}" for e in range(-10, 11))

SOFTMAX_OPTIONS = (
    Option("learning_rate", float, 0.01, "SGD step size (retrain.py: 0.01)", gt=0),
    Option("batch_size", int, 100, "examples per step, drawn at random like retrain.py", min=1),
    Option("steps", int, 4000, "training steps (retrain.py: 4000)", min=1),
    Option("eval_every", int, 10, "steps between validation evaluations (progress curve)", min=1),
    Option("early_stopping", bool, False, "stop when validation accuracy stops improving; keep the best weights"),
    Option("patience", int, 20, "with early_stopping: evaluations without improvement before stopping", min=1),
)

LOGREG_OPTIONS = (
    Option("grid", str, DEFAULT_C_GRID, "comma-separated inverse L2 strengths C to choose from on validation"),
    Option("refit", str, "train", "what the chosen C is refitted on", choices=("train", "train+val")),
    Option("max_iter", int, 1000, "L-BFGS iteration limit per C", min=1),
)

MLP_OPTIONS = (
    Option("hidden", int, 512, "hidden units", min=1),
    Option("dropout", float, 0.5, "dropout rate on the hidden layer while training", min=0, max=0.95),
    Option("optimizer", str, "adam", "update rule", choices=("adam", "sgd")),
    Option("learning_rate", float, 1e-3, "step size", gt=0),
    Option("epochs", int, 30, "passes over the training set", min=1),
    Option("batch_size", int, 64, "examples per step", min=1),
    Option("weight_decay", float, 0.0, "L2 penalty on the weights", min=0),
    Option("keep_best", bool, True, "keep the weights of the epoch with the best validation accuracy"),
)


@hookimpl
def xferbench_register_heads(register: Callable[[HeadSpec], None]) -> None:
    register(HeadSpec("softmax", "one new softmax layer trained by mini-batch gradient descent (retrain.py)",
                      factory="xferbench_heads.softmax:SoftmaxHead", options=SOFTMAX_OPTIONS))
    register(HeadSpec("logreg", "multinomial logistic regression by L-BFGS, L2 strength chosen on validation",
                      factory="xferbench_heads.logreg:LogRegHead", options=LOGREG_OPTIONS))
    register(HeadSpec("mlp", "one ReLU hidden layer with dropout, trained by Adam or SGD",
                      factory="xferbench_heads.mlp:MLPHead", options=MLP_OPTIONS))
