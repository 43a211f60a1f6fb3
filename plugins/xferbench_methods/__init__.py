"""Built-in methods: ``transfer`` (a new head on cached bottlenecks), ``full`` and ``finetune``.

They are registered through the same hook as any third-party method.
"""

from xferbench import MethodSpec, Option, hookimpl

_NETWORK_OPTIONS = (
    Option("batch_size", int, 32, "images per training step", min=1),
    Option("ema_decay", float, 0.99, "decay of the moving average of the weights that is evaluated", min=0, lt=1),
    Option("checkpoint_every", int, 5, "epochs between checkpoints (for --resume and evaluate --watch)", min=1),
    Option("strategy", str, "auto", "tf.distribute: mirrored (one replica per visible GPU, per logical CPU device "
           "without GPUs; the global batch stays batch_size), none (one device), auto (mirrored with 2+ GPUs)",
           choices=("auto", "mirrored", "none")),
)


@hookimpl
def xferbench_register_methods(register):
    register(MethodSpec(
        "transfer", "frozen backbone, cached bottlenecks, a new head trained on them (one run per --head)",
        factory="xferbench_methods.transfer:Transfer"))
    register(MethodSpec(
        "full", "the backbone's architecture trained from random initialisation on the same images",
        factory="xferbench_methods.network:FullTraining",
        options=(Option("learning_rate", float, 1e-3, "Adam learning rate", gt=0),
                 *_NETWORK_OPTIONS)))
    register(MethodSpec(
        "finetune", "LP-FT: train a new softmax layer on the frozen network, then unfreeze all at a low rate",
        factory="xferbench_methods.network:FineTuning",
        options=(Option("learning_rate", float, 1e-4, "Adam learning rate of the unfrozen network", gt=0),
                 Option("probe_learning_rate", float, 1e-3, "Adam learning rate of the linear probe stage", gt=0),
                 *_NETWORK_OPTIONS)))
