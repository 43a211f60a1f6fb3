"""Where the 2015 graph comes from: --weights, the cache, ``xferbench fetch``, or a download."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xferbench.errors import UserError

if TYPE_CHECKING:
    from xferbench.context import RunContext
    from xferbench.download import Artifact

ZIP_NAME = "inception_dec_2015.zip"
TGZ_NAME = "inception-2015-12-05.tgz"
#: a bare graph the user imported with ``xferbench fetch inception_2015 --from FILE.pb``
PB_NAME = "inception_2015_graph.pb"
URLS = {
    ZIP_NAME: ("https://storage.googleapis.com/download.tensorflow.org/models/inception_dec_2015.zip",
               "https://download.tensorflow.org/models/inception_dec_2015.zip"),
    # download.tensorflow.org is served from the same bucket, so its https form is tried first.
    TGZ_NAME: ("https://storage.googleapis.com/download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz",
               "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz"),
    PB_NAME: (),
}
ARCHIVES = {"zip": ZIP_NAME, "tgz": TGZ_NAME}


def artifact(name: str) -> Artifact:
    from xferbench.download import Artifact

    # No built-in digest: none is published for these files, and a guessed one would reject
    # the real file. The first verified fetch is pinned in the cache manifest instead.
    return Artifact(name, URLS[name], component="inception_2015")


def _expected(options: Mapping[str, Any]) -> str | None:
    value = options.get("sha256")
    return str(value).strip().lower() if value else None


def fetch(arg: str | None, options: Mapping[str, Any], context: RunContext, source: Path | None = None) -> Path:
    """``xferbench fetch inception_2015 [--from FILE]``: download or import, verify, pin; return the path.

    ``source`` may be either archive or a bare .pb; its kind is read from its content.
    """
    from xferbench import download
    from xferbench_inception.graph import file_kind, verify_file

    expected = _expected(options)
    if source is not None:
        kind = file_kind(Path(source))
        name = ARCHIVES.get(kind, PB_NAME)
        return download.import_file(artifact(name), source, context.cache_dir, expected_sha256=expected,
                                    verify=verify_file)
    name = ARCHIVES[options.get("archive") or "zip"]
    return download.fetch(artifact(name), context.cache_dir, expected_sha256=expected, verify=verify_file,
                          progress=not context.progress.quiet)


def resolve(options: Mapping[str, Any], context: RunContext) -> Path:
    """The graph file to load: ``--weights``, else a fetched/imported copy in the cache, else a download."""
    from xferbench import download

    expected = _expected(options)
    if context.weights is not None:
        path = Path(context.weights).expanduser()
        if not path.is_file():
            raise UserError(f"inception_2015: --weights {path} does not exist or is not a file")
        if expected:
            got = download.sha256_file(path)
            if got != expected:
                raise UserError(f"inception_2015: --weights {path} has sha256 {got}, but option sha256 is "
                                f"{expected}; check the file or the digest")
        return path
    preferred = ARCHIVES[options.get("archive") or "zip"]
    downloads = Path(context.cache_dir) / download.DOWNLOADS_DIR
    for name in (preferred, *[n for n in (ZIP_NAME, TGZ_NAME, PB_NAME) if n != preferred]):
        if (downloads / name).is_file():
            from xferbench_inception.graph import verify_file

            # fetch() re-checks the cached file against its pinned digest without the network.
            return download.fetch(artifact(name), context.cache_dir, expected_sha256=expected, verify=verify_file,
                                  progress=not context.progress.quiet)
    return fetch(None, options, context)
