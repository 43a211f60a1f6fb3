"""inception_2015: the rewritten, batched graph against the original graph run as retrain.py ran it.

The real graph cannot be downloaded here; a generated stand-in with the same 2015 format
(producer 5, BatchNormWithGlobalNormalization, DT_STRING JPEG input, [1, 2048] reshape) and
random weights takes its place. The reference is always the stand-in itself, imported as is
into a TF1 Session and fed one image at a time.
"""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xferbench.context import RunContext
from xferbench.errors import OptionError, UserError
from xferbench.plugin_manager import load_catalog
from xferbench.progress import Progress

try:
    from support.inception_standin import ReferenceSession, build_graph, cached_standin, graph_bytes_of, pack
except ImportError:  # tests/ is a package, or pytest runs in importlib mode from the repo root
    from tests.support.inception_standin import ReferenceSession, build_graph, cached_standin, graph_bytes_of, pack

RTOL = 1e-4  # the acceptance bar: relative to the largest feature of the reference


def assert_faithful(got: np.ndarray, want: np.ndarray) -> None:
    """Equal within 1e-4 of the reference's scale, and not trivially (features vary and are finite)."""
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.isfinite(got).all()
    scale = float(np.abs(want).max())
    assert scale > 0
    worst = float(np.abs(got - want).max()) / scale
    assert worst <= RTOL, f"max deviation {worst:.2e} of the feature scale"


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_graph() -> bytes:
    return build_graph("tiny", seed=0).graph_bytes


@pytest.fixture(scope="module")
def standin_files(tiny_graph: bytes, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("standin")
    return {
        "zip": pack(tiny_graph, root / "inception_dec_2015.zip", "zip"),
        "tgz": pack(tiny_graph, root / "inception-2015-12-05.tgz", "tgz"),
        "pb": pack(tiny_graph, root / "tensorflow_inception_graph.pb", "pb"),
    }


@pytest.fixture(scope="module")
def reference(tiny_graph: bytes):
    with ReferenceSession(tiny_graph) as ref:
        yield ref


def _context(tmp: Path, weights: Path | None) -> RunContext:
    return RunContext(catalog=load_catalog(), cache_dir=tmp, weights=weights, progress=Progress(quiet=True))


def _make(options: dict[str, str], context: RunContext):
    spec, _ = context.catalog.backbones.resolve("inception_2015")
    backbone = spec.load_factory()(None, spec.validate(options), context)
    backbone.prepare(context)
    return backbone


@pytest.fixture(scope="module")
def backbone(standin_files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Made the way the harness makes it: catalog -> spec -> factory -> prepare(context)."""
    context = _context(tmp_path_factory.mktemp("cache"), standin_files["zip"])
    return _make({"batch_size": "4"}, context)


@pytest.fixture(scope="module")
def flowers(shared_data: Path) -> list[bytes]:
    root = shared_data / "flower_photos_mini"
    # Two per class, from different classes, so the batch holds varied sizes and contents.
    paths = [p for cls in sorted(root.iterdir()) if cls.is_dir() for p in sorted(cls.glob("*.jpg"))[:2]]
    assert len(paths) == 10
    return [p.read_bytes() for p in paths]


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


# -- fidelity ------------------------------------------------------------------------------------
@pytest.mark.realdata
def test_real_jpegs_match_the_original_graph_run_one_at_a_time(backbone, reference, flowers):
    got = backbone.extract(flowers)  # batches of 4: three batches, the last one short
    want = np.stack([reference.bottleneck(jpeg) for jpeg in flowers])
    assert_faithful(got, want)
    # Different photos give different features (a constant network would pass the check above).
    assert np.abs(want[0] - want[5]).max() > 0.05 * np.abs(want).max()


@pytest.mark.realdata
def test_grayscale_and_cmyk_jpegs_match_the_graph_decoding_them_itself(backbone, reference, flowers):
    photo = Image.open(io.BytesIO(flowers[3]))
    jpegs = [_encode(photo.convert("L"), "JPEG", quality=90), _encode(photo.convert("CMYK"), "JPEG", quality=90)]
    want = np.stack([reference.bottleneck(jpeg) for jpeg in jpegs])
    assert_faithful(backbone.extract(jpegs), want)


@pytest.mark.realdata
def test_png_gif_bmp_and_arrays_match_the_graph_fed_the_decoded_rgb(backbone, reference, flowers):
    photo = Image.open(io.BytesIO(flowers[7])).convert("RGB")
    gray = photo.convert("L")
    rgba = photo.copy()
    rgba.putalpha(Image.linear_gradient("L").resize(photo.size))
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE)
    cases: list[tuple[object, np.ndarray]] = [
        (_encode(photo, "PNG"), np.asarray(photo)),
        (_encode(gray, "PNG"), np.asarray(gray.convert("RGB"))),
        (_encode(rgba, "PNG"), np.asarray(photo)),  # alpha is dropped, not composited
        (_encode(palette, "GIF"), np.asarray(palette.convert("RGB"))),
        (_encode(photo, "BMP"), np.asarray(photo)),
        (np.asarray(photo), np.asarray(photo)),
        (np.asarray(gray), np.asarray(gray.convert("RGB"))),
        (np.asarray(gray)[:, :, None], np.asarray(gray.convert("RGB"))),
        (np.asarray(rgba), np.asarray(photo)),
    ]
    got = backbone.extract([image for image, _ in cases])
    want = np.stack([reference.bottleneck_from_rgb(rgb) for _, rgb in cases])
    assert_faithful(got, want)


@pytest.mark.realdata
def test_bad_images_give_nan_rows_and_the_others_stay_in_place(backbone, reference, flowers):
    good = flowers[:2]
    images = [
        b"definitely not an image",
        good[0],
        flowers[2][: len(flowers[2]) // 2],  # truncated JPEG: the graph rejects it too
        b"",
        np.zeros((8, 8, 3), dtype=np.float64),  # decoded pixels must be uint8
        np.zeros((8, 8, 2), dtype=np.uint8),
        good[1],
        "a string is not image data",
    ]
    got = backbone.extract(images)
    assert got.shape == (len(images), 2048)
    bad = [0, 2, 3, 4, 5, 7]
    assert np.isnan(got[bad]).all()
    assert_faithful(got[[1, 6]], np.stack([reference.bottleneck(jpeg) for jpeg in good]))
    assert backbone.extract([]).shape == (0, 2048)


@pytest.mark.realdata
def test_batch_size_does_not_change_the_features(standin_files, backbone, flowers, tmp_path):
    one_by_one = _make({"batch_size": "1"}, _context(tmp_path, standin_files["pb"]))
    assert_faithful(one_by_one.extract(flowers[:5]), backbone.extract(flowers[:5]))


@pytest.mark.realdata
def test_prefetching_the_next_batch_changes_nothing(standin_files, backbone, flowers, tmp_path):
    # prefetch=yes is what a GPU gets by default: decoding on a worker thread, one batch ahead.
    ahead = _make({"batch_size": "3", "prefetch": "yes"}, _context(tmp_path, standin_files["zip"]))
    assert ahead.info()["prefetch"] is True and backbone.info()["prefetch"] is False
    images = [flowers[0], b"corrupt", *flowers[1:6], np.zeros((4, 4, 2), dtype=np.uint8), flowers[6]]
    got, want = ahead.extract(images), backbone.extract(images)
    assert np.isnan(got[[1, 7]]).all() and not np.isnan(np.delete(got, [1, 7], axis=0)).any()
    assert_faithful(np.delete(got, [1, 7], axis=0), np.delete(want, [1, 7], axis=0))


@pytest.mark.realdata
def test_bfloat16_stays_close_and_keeps_its_own_cache_namespace(standin_files, backbone, reference, flowers,
                                                                tmp_path):
    bf16 = _make({"precision": "bfloat16"}, _context(tmp_path, standin_files["zip"]))
    got = bf16.extract(flowers[:4])
    want = np.stack([reference.bottleneck(jpeg) for jpeg in flowers[:4]])
    assert got.dtype == np.float32
    cosine = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
    assert cosine.min() >= 0.99
    assert not np.array_equal(got, want)  # it really computed in bfloat16
    assert bf16.precision() == "bfloat16" and backbone.precision() == "float32"
    assert bf16.weights_sha256 == backbone.weights_sha256
    assert bf16.cache_namespace() != backbone.cache_namespace()


@pytest.mark.slow  # XLA compiles the whole network on the CPU: ~5 s on an idle machine, ~25 s on a busy one
@pytest.mark.realdata
def test_xla_compiled_graph_matches(standin_files, reference, flowers, tmp_path):
    xla = _make({"xla": "true", "batch_size": "4"}, _context(tmp_path, standin_files["tgz"]))
    images = flowers[:5]  # a full batch and a padded tail of one
    assert_faithful(xla.extract(images), np.stack([reference.bottleneck(jpeg) for jpeg in images]))


# -- the graph rewrite ---------------------------------------------------------------------------
def test_rewrite_leaves_no_removed_op_and_folds_every_batch_norm(tiny_graph):
    from xferbench_inception import graph as graphs

    original = graphs.parse(graphs.GraphFile(tiny_graph, Path("standin.pb"), None))
    assert original.versions.producer < 9
    interface = graphs.verify(original)
    assert interface.size == (299, 299) and not interface.align_corners and not interface.half_pixel_centers
    assert interface.decode_attrs["channels"] == 3 and interface.decode_attrs["fancy_upscaling"] is True
    for precision in ("float32", "bfloat16"):
        rewritten = graphs.rewrite(original, interface, precision=precision)
        ops = {node.op for node in rewritten.graph_def.node}
        assert not ops & {"BatchNormWithGlobalNormalization", "CheckNumerics", "DecodeJpeg"}
        batchnorms = sum(node.op == "BatchNormWithGlobalNormalization" for node in original.node)
        assert rewritten.folded == batchnorms > 0
        assert sum(node.op == "BiasAdd" for node in rewritten.graph_def.node) == batchnorms


# -- checking what is loaded ---------------------------------------------------------------------
def _without(graph: bytes, name: str) -> bytes:
    from tensorflow.core.framework import graph_pb2

    graph_def = graph_pb2.GraphDef()
    graph_def.ParseFromString(graph)
    kept = [node for node in graph_def.node if node.name != name]
    del graph_def.node[:]
    graph_def.node.extend(kept)
    return graph_def.SerializeToString()


def test_verifier_rejects_a_graph_without_pool_3(tiny_graph, tmp_path):
    from xferbench_inception.backbone import Inception2015

    broken = pack(_without(tiny_graph, "pool_3"), tmp_path / "inception_dec_2015.zip", "zip")
    with pytest.raises(UserError, match=r"not the Inception-v3 \(Dec 2015\) graph: node 'pool_3' is missing"):
        Inception2015({}).load(broken)


@pytest.mark.parametrize("content, message", [
    (b"this is a text file, not a graph", "not a TensorFlow GraphDef|not the Inception-v3"),
    (b"PK\x03\x04 truncated zip", "cannot read the zip file"),
])
def test_files_that_are_not_the_graph_are_one_line_user_errors(tmp_path, content, message):
    from xferbench_inception.backbone import Inception2015

    path = tmp_path / "model.pb"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        Inception2015({}).load(path)
    assert "\n" not in str(info.value)


def test_an_archive_without_the_graph_is_rejected(tmp_path):
    from xferbench_inception.backbone import Inception2015

    path = tmp_path / "inception_dec_2015.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("LICENSE", "nothing else here")
    with pytest.raises(UserError, match="holds no tensorflow_inception_graph.pb"):
        Inception2015({}).load(path)


def test_the_three_packagings_load_the_same_graph(standin_files, tiny_graph):
    from xferbench_inception.backbone import Inception2015

    digests = set()
    for kind, path in standin_files.items():
        assert graph_bytes_of(path) == tiny_graph
        loaded = Inception2015({})
        loaded.load(path)
        digests.add(loaded.weights_sha256)
        assert loaded.info()["member"] == {"zip": "tensorflow_inception_graph.pb",
                                           "tgz": "classify_image_graph_def.pb", "pb": None}[kind]
    assert digests == {hashlib.sha256(tiny_graph).hexdigest()}


def test_using_the_backbone_before_prepare_is_a_clear_error():
    from xferbench_inception.backbone import Inception2015

    with pytest.raises(RuntimeError, match="prepare"):
        Inception2015({}).extract([b""])


# -- options, fetching, the cache ----------------------------------------------------------------
def test_options_are_validated():
    spec, _ = load_catalog().backbones.resolve("inception_2015")
    assert spec.validate({}) == {"precision": "float32", "batch_size": 0, "archive": "zip", "sha256": None,
                                 "xla": False, "prefetch": "auto", "int8_calibration_images": 100}
    for bad in ({"precision": "float16"}, {"batch_size": "-1"}, {"archive": "tar"}, {"batchsize": "8"},
                {"prefetch": "always"}):
        with pytest.raises(OptionError):
            spec.validate(bad)


def test_listing_the_plugin_does_not_import_tensorflow():
    code = ("import sys, xferbench_inception; from xferbench.plugin_manager import load_catalog; "
            "load_catalog().backbones.resolve('inception_2015'); print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fetch_from_a_file_imports_it_and_prepare_then_uses_the_cache(standin_files, tiny_graph, tmp_path):
    context = _context(tmp_path, None)
    spec, _ = context.catalog.backbones.resolve("inception_2015")
    fetcher = spec.load_fetcher()
    cached = fetcher(None, spec.validate({}), context, standin_files["tgz"])
    assert cached == tmp_path / "downloads" / "inception-2015-12-05.tgz"
    # No --weights and no network: prepare finds the imported archive (though archive=zip is the default).
    backbone = _make({}, context)
    assert backbone.weights_sha256 == hashlib.sha256(tiny_graph).hexdigest()
    assert backbone.info()["source"] == str(cached)


def test_fetch_refuses_a_file_that_is_not_the_graph_and_caches_nothing(tiny_graph, tmp_path):
    context = _context(tmp_path / "cache", None)
    spec, _ = context.catalog.backbones.resolve("inception_2015")
    broken = pack(_without(tiny_graph, "Mul"), tmp_path / "broken.zip", "zip")
    with pytest.raises(UserError, match="node 'Mul' is missing"):
        spec.load_fetcher()(None, spec.validate({}), context, broken)
    assert not (tmp_path / "cache" / "downloads" / "inception_dec_2015.zip").exists()


def test_a_wrong_expected_digest_is_refused(standin_files, tmp_path):
    wrong = "0" * 64
    with pytest.raises(UserError, match="sha256"):
        _make({"sha256": wrong}, _context(tmp_path, standin_files["zip"]))
    context = _context(tmp_path, None)
    spec, _ = context.catalog.backbones.resolve("inception_2015")
    with pytest.raises(UserError, match="sha256"):
        spec.load_fetcher()(None, spec.validate({"sha256": wrong}), context, standin_files["pb"])


def _fixture_server():
    try:
        from support.http_server import FixtureServer
    except ImportError:
        from tests.support.http_server import FixtureServer
    return FixtureServer


def test_download_goes_through_a_mirror_and_is_verified(standin_files, tiny_graph, tmp_path, monkeypatch):
    with _fixture_server()(files={"inception_dec_2015.zip": standin_files["zip"].read_bytes()}) as server:
        monkeypatch.setenv("XFERBENCH_MIRROR", server.base_url)
        backbone = _make({}, _context(tmp_path, None))
    assert backbone.weights_sha256 == hashlib.sha256(tiny_graph).hexdigest()
    assert (tmp_path / "downloads" / "inception_dec_2015.zip").is_file()


def test_an_interrupted_download_resumes_and_a_wrong_digest_is_refused(standin_files, tiny_graph, tmp_path,
                                                                        monkeypatch):
    archive = standin_files["zip"].read_bytes()
    with _fixture_server()(files={"inception_dec_2015.zip": archive}) as server:
        monkeypatch.setenv("XFERBENCH_MIRROR", server.base_url)
        # The checksum the user gives is checked against the download, which is then deleted.
        with pytest.raises(UserError, match="sha256"):
            _make({"sha256": "f" * 64}, _context(tmp_path / "wrong", None))
        assert not (tmp_path / "wrong" / "downloads" / "inception_dec_2015.zip").exists()
        server.truncate_after = len(archive) // 2
        with pytest.raises(UserError, match="interrupted"):
            _make({}, _context(tmp_path, None))
        server.truncate_after = None
        backbone = _make({"sha256": hashlib.sha256(archive).hexdigest()}, _context(tmp_path, None))
        assert server.hits[-1].range == f"bytes={len(archive) // 2}-" and server.hits[-1].status == 206
    assert backbone.weights_sha256 == hashlib.sha256(tiny_graph).hexdigest()


def test_an_archive_with_a_path_traversal_member_is_refused_and_not_kept(tiny_graph, tmp_path, monkeypatch):
    hostile = io.BytesIO()
    with zipfile.ZipFile(hostile, "w") as zf:
        zf.writestr("tensorflow_inception_graph.pb", tiny_graph)
        zf.writestr("../../outside.txt", b"escaped")
    with _fixture_server()(files={"inception_dec_2015.zip": hostile.getvalue()}) as server:
        monkeypatch.setenv("XFERBENCH_MIRROR", server.base_url)
        with pytest.raises(UserError, match=r"refusing to use .*'\.\./\.\./outside\.txt'.*'\.\.' component"):
            _make({}, _context(tmp_path / "cache", None))
    assert not (tmp_path / "cache" / "downloads" / "inception_dec_2015.zip").exists()
    assert not list(tmp_path.rglob("outside.txt"))


# -- the full-size stand-in ----------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.realdata
def test_full_size_graph_matches_the_original(flowers, tmp_path):
    """The real topology (~24 M parameters, 94 batch norms), generated once and cached outside the repo."""
    path = cached_standin("full", seed=0, archive="zip")
    graph = graph_bytes_of(path)
    photo = Image.open(io.BytesIO(flowers[4])).convert("RGB")
    images = [flowers[0], flowers[9], _encode(photo, "PNG")]
    with ReferenceSession(graph) as ref:
        want = np.stack([ref.bottleneck(flowers[0]), ref.bottleneck(flowers[9]),
                         ref.bottleneck_from_rgb(np.asarray(photo))])
    backbone = _make({"batch_size": "2"}, _context(tmp_path, path))
    assert backbone.info()["batchnorms_folded"] == 94
    assert_faithful(backbone.extract(images), want)
