"""``xferbench fetch kerashub:<preset> [--from DIR-or-ARCHIVE]``.

Without ``--from``, KerasHub downloads the preset itself (kagglehub, with its own progress bar) into its
cache, where later runs find it offline. With ``--from``, a copy of the preset folder (a folder, or a
``.tar.gz``/``.zip`` of one, e.g. what Kaggle's download button gives) is checked, loaded once, and
put under ``<cache>/kerashub/<preset>``, which ``kerashub:<preset>`` then uses before asking KerasHub.
Either way the preset's sha256 (of the archive, or of the folder's files) is pinned in the cache manifest.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xferbench.download import Artifact, Manifest, import_file
from xferbench.errors import UserError
from xferbench_kerashub.backbone import (
    KerasHubBackbone,
    download_preset,
    imported_folder,
    is_preset_folder,
    sha256_tree,
)

if TYPE_CHECKING:
    from xferbench.context import RunContext

_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".zip")


def manifest_key(preset: str) -> str:
    return f"kerashub-{imported_folder(Path('.'), preset).name}"


def preset_root(folder: Path) -> Path | None:
    """``folder`` or its only subfolder, whichever holds ``config.json``."""
    if (folder / "config.json").is_file():
        return folder
    children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if len(children) == 1 and (children[0] / "config.json").is_file():
        return children[0]
    return None


def _tree_size(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _pin_tree(context: RunContext, preset: str, root: Path, source: str) -> None:
    Manifest(context.cache_dir).pin(manifest_key(preset), sha256=sha256_tree(root), size=_tree_size(root),
                                    source=source)


def _install(staged: Path, target: Path) -> None:
    """Put ``staged`` where ``target`` is, replacing an older import (never a half-copied one)."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.replaced")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
    staged.rename(target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def fetch_preset(arg: str | None, options: Mapping[str, Any], context: RunContext, source: Path | None) -> Path:
    """Download the preset through KerasHub, or import ``source`` (a preset folder or an archive of one)."""
    preset = (arg or "").strip()
    if not preset:
        raise UserError("write xferbench fetch kerashub:<preset name>")
    if is_preset_folder(preset):
        raise UserError(f"kerashub:{preset} is a local folder already; nothing to fetch (to import it under a "
                        f"preset name, write xferbench fetch kerashub:<name> --from {preset})")
    if source is None:
        folder = download_preset(preset)
        KerasHubBackbone(str(folder), options, context).prepare(context)  # the download loads
        _pin_tree(context, preset, folder, f"kerashub:{preset}")
        return folder
    source = Path(source).expanduser()
    target = imported_folder(context.cache_dir, preset)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".import-", ignore_cleanup_errors=True) as scratch:
        staged = Path(scratch) / "preset"
        if source.is_dir():
            root = preset_root(source)
            if root is None:
                raise UserError(f"{source} holds no config.json; give a folder written by save_to_preset "
                                f"(or an archive of one)")
            shutil.copytree(root, staged, ignore=shutil.ignore_patterns(".*"))
            origin = str(source.resolve())
        else:
            if not source.name.lower().endswith(_ARCHIVE_SUFFIXES):
                raise UserError(f"{source} is neither a preset folder nor a {', '.join(_ARCHIVE_SUFFIXES)} archive")
            from xferbench.archive import safe_extract

            suffix = next(s for s in _ARCHIVE_SUFFIXES if source.name.lower().endswith(s))
            artifact = Artifact(manifest_key(preset) + suffix, (), component=f"kerashub:{preset}")
            archive = import_file(artifact, source, context.cache_dir)  # pins the archive's sha256
            unpacked = Path(scratch) / "unpacked"
            safe_extract(archive, unpacked)  # refuses absolute paths, ../ escapes and links out
            root = preset_root(unpacked)
            if root is None:
                raise UserError(f"{source} holds no config.json; it is not an archive of a KerasHub preset folder")
            shutil.copytree(root, staged, ignore=shutil.ignore_patterns(".*"))
            origin = f"{source.resolve()} (archive sha256 in {artifact.name})"
        # Loaded once before it replaces anything: a preset that does not load is refused.
        KerasHubBackbone(str(staged), options, context).prepare(context)
        _install(staged, target)
    _pin_tree(context, preset, target, origin)
    return target


fetch_preset.accepts_folders = True  # type: ignore[attr-defined]
