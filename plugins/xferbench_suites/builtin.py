"""The built-in suites: VTAB-1k (Zhai et al. 2019) on TensorFlow Datasets, and a small offline suite.

VTAB-1k task definitions follow google-research/task_adaptation (``task_adaptation/data/*.py``):
each task has a train / val / test split of a TFDS dataset; VTAB-1k trains on the first 800
images of the task's train split and validates on the first 200 of its val split; the final model
is fitted on all 1000 (``logreg`` with ``refit=train+val``) and tested on the task's whole test split.
"""

from __future__ import annotations

from xferbench.specs import SuiteSpec
from xferbench.suites import Protocol, Task

NATURAL, SPECIALIZED, STRUCTURED = "natural", "specialized", "structured"


def _vtab(name: str, dataset: str, group: str, train: str, val: str, test: str, note: str = "",
          **options: str) -> Task:
    return Task(name=name, dataset=f"tfds:{dataset}", group=group, note=note, options={
        "split_train": train, "split_val": val, "split_test": test, "train_examples": "800", "val_examples": "200",
        **options})


_OFFICIAL = ("train", "validation", "test")
VTAB1K_TASKS = (
    _vtab("caltech101", "caltech101", NATURAL, "train[:90%]", "train[90%:]", "test"),
    _vtab("cifar100", "cifar100", NATURAL, "train[:90%]", "train[90%:]", "test"),
    _vtab("dtd", "dtd", NATURAL, *_OFFICIAL),
    _vtab("oxford_flowers102", "oxford_flowers102", NATURAL, *_OFFICIAL),
    _vtab("oxford_iiit_pet", "oxford_iiit_pet", NATURAL, "train[:80%]", "train[80%:]", "test"),
    _vtab("svhn", "svhn_cropped", NATURAL, "train[:90%]", "train[90%:]", "test"),
    _vtab("sun397", "sun397/tfds", NATURAL, *_OFFICIAL, note="large download (about 37 GB)"),
    _vtab("patch_camelyon", "patch_camelyon", SPECIALIZED, *_OFFICIAL),
    _vtab("eurosat", "eurosat/rgb", SPECIALIZED, "train[:60%]", "train[60%:80%]", "train[80%:]"),
    _vtab("resisc45", "resisc45", SPECIALIZED, "train[:60%]", "train[60%:80%]", "train[80%:]",
          note="manual download"),
    _vtab("diabetic_retinopathy", "diabetic_retinopathy_detection/btgraham-300", SPECIALIZED, *_OFFICIAL,
          note="manual download (Kaggle)"),
    _vtab("clevr_count", "clevr", STRUCTURED, "train[:90%]", "train[90%:]", "validation",
          label_transform="clevr_count"),
    _vtab("clevr_distance", "clevr", STRUCTURED, "train[:90%]", "train[90%:]", "validation",
          label_transform="clevr_distance"),
    _vtab("dmlab", "dmlab", STRUCTURED, *_OFFICIAL),
    _vtab("dsprites_location", "dsprites", STRUCTURED, "train[:80%]", "train[80%:90%]", "train[90%:]",
          label_transform="dsprites_location"),
    _vtab("dsprites_orientation", "dsprites", STRUCTURED, "train[:80%]", "train[80%:90%]", "train[90%:]",
          label_transform="dsprites_orientation"),
    _vtab("smallnorb_azimuth", "smallnorb", STRUCTURED, "train", "test[:50%]", "test[50%:]",
          label_key="label_azimuth"),
    _vtab("smallnorb_elevation", "smallnorb", STRUCTURED, "train", "test[:50%]", "test[50%:]",
          label_key="label_elevation"),
    _vtab("kitti_distance", "kitti", STRUCTURED, *_OFFICIAL, label_transform="kitti_distance"),
)

VTAB1K = SuiteSpec(
    "vtab1k", "VTAB-1k: 19 TFDS tasks (natural, specialized, structured), 800 train + 200 val images each",
    tasks=VTAB1K_TASKS,
    protocol=Protocol(heads=("logreg",), head_options={"refit": "train+val"}, methods=("transfer",),
                      description="linear probe: L2 strength chosen on train800/val200, refitted on all 1000, "
                                  "tested on the task's test split"))

OFFLINE = SuiteSpec(
    "offline", "digits, MNIST and the shipped flower photos, 1k protocol: runs offline in minutes "
               "(MNIST's four files via xferbench fetch mnist or --data-dir)",
    tasks=(
        Task("digits", "digits", group="handwriting", train=800, val=200),
        Task("mnist", "mnist", group="handwriting", options={"val_size": "1000"}, train=800, val=200, test=2000,
             note="the four MNIST files: xferbench fetch mnist, or --data-dir"),
        Task("flowers", "flowers-mini", group="photos", train=800, val=200),
    ),
    protocol=Protocol(heads=("logreg",), head_options={"refit": "train+val"}, methods=("transfer",),
                      backbones=("lenet5", "keras:MobileNet"),
                      backbone_options={"alpha": "0.25", "input_size": "128"},
                      description="linear probe as VTAB-1k; lenet5 against ImageNet MobileNet alpha 0.25"))
