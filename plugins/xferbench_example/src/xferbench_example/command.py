"""``xferbench bars-folder``: a subcommand of this plugin's own.

It writes the generated bars as PNG files in one folder per class, so the same images can be
read back with the built-in ``folder:`` dataset, or by any other tool.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from xferbench import RunContext, UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write (must not exist)")
    parser.add_argument("--n-per-class", type=int, default=20, help="images per class (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="the bars dataset's split_seed (default 0)")


def bars_folder(args: argparse.Namespace, context: RunContext) -> int:
    from PIL import Image

    from xferbench_example.bars import CLASSES, draw_bars

    if args.out.exists():
        raise UserError(f"--out {args.out} exists already; name a new folder")
    if args.n_per_class < 1:
        raise UserError(f"--n-per-class {args.n_per_class}: write at least 1")
    for label, name in enumerate(CLASSES):
        folder = args.out / name
        folder.mkdir(parents=True)
        for index in range(args.n_per_class):
            pixels = draw_bars(label, index, seed=args.seed, noise=0.15)
            Image.fromarray(pixels, mode="L").save(folder / f"bar_{index:04d}.png")
    print(f"{args.out}: {args.n_per_class * len(CLASSES)} images in {len(CLASSES)} class folders")
    return 0
