"""kerashub:<preset-or-dir>: tiny KerasHub presets (ViT, DINOv2, CLIP, ResNet) built here, loaded as a user would.

No download: the presets are randomly initialised and written with ``save_to_preset``. The embedding
of each architecture is checked against the model's own outputs, computed by hand from KerasHub's
image converter and backbone.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

keras_hub = pytest.importorskip("keras_hub")
tf = pytest.importorskip("tensorflow")
Image = pytest.importorskip("PIL.Image")

import xferbench_kerashub  # noqa: E402
import xferbench_kerashub.presets  # noqa: E402
from support.cli import assert_one_line_error  # noqa: E402
from support.kerashub_presets import KINDS, WIDTHS, save_preset  # noqa: E402
from support.saved_model import assert_tf_features_round_trip  # noqa: E402
from xferbench.context import RunContext  # noqa: E402
from xferbench.download import Manifest  # noqa: E402
from xferbench.errors import OptionError, UserError  # noqa: E402
from xferbench.plugin_manager import load_catalog  # noqa: E402


@pytest.fixture(scope="module")
def catalog():
    return load_catalog(extra_plugins=[("kerashub", xferbench_kerashub)], load_entry_points=False)


@pytest.fixture(scope="module")
def presets(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("presets")
    return {kind: save_preset(kind, root / kind) for kind in KINDS}


def make_backbone(catalog, token: str, cache: Path, **options: str):
    spec, arg = catalog.backbones.resolve(token)
    return spec.load_factory()(arg, spec.validate(options), RunContext(catalog=catalog, cache_dir=cache))


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def sample_pixels() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, np.uint8) for shape in ((40, 30, 3), (32, 32, 3), (20, 50, 3), (9, 64, 3))]


def by_hand(folder: Path, kind: str, embedding: str, pixels: list[np.ndarray]) -> np.ndarray:
    """The embedding from KerasHub's own converter and backbone, computed from the model's outputs."""
    converter = keras_hub.layers.ImageConverter.from_preset(str(folder))
    model = keras_hub.models.Backbone.from_preset(str(folder))
    images = np.concatenate([np.asarray(converter(p.astype(np.float32)[None])) for p in pixels])
    if kind == "clip":
        pooled = np.asarray(model.vision_encoder({"images": images}))[:, 0]  # CLIP pools its class token
        return np.asarray(model.vision_projection(pooled)) if embedding == "projected" else pooled
    outputs = np.asarray(model({"images": images} if kind == "dinov2" else images))
    if kind == "resnet":
        return outputs.mean(axis=(1, 2))
    cls = outputs[:, 0]
    if embedding == "cls":
        return cls
    patches = outputs[:, 1 + model.num_register_tokens if kind == "dinov2" else 1:]
    assert patches.shape[1] == 16  # 32x32 in 8x8 patches: registers and class token left out
    return np.concatenate([cls, patches.mean(axis=1)], axis=1)


CASES = [("vit", "cls", 16), ("vit", "cls_patch_mean", 32), ("dinov2", "cls", 16), ("dinov2", "cls_patch_mean", 32),
         ("clip", "projected", 12), ("clip", "pooled", 16), ("resnet", "gap", 32)]


@pytest.mark.parametrize(("kind", "embedding", "width"), CASES)
def test_features_are_the_architectures_embedding(catalog, presets, tmp_path, kind, embedding, width) -> None:
    backbone = make_backbone(catalog, f"kerashub:{presets[kind]}", tmp_path, embedding=embedding)
    backbone.prepare(RunContext(catalog=catalog, cache_dir=tmp_path))
    pixels = sample_pixels()
    files = [png(p) for p in pixels]
    features = backbone.extract([files[0], b"not an image", *files[1:], pixels[0][:, :, 0]])

    assert backbone.feature_dim == width and features.shape == (len(files) + 2, width)
    assert np.isnan(features[1]).all() and not np.isnan(np.delete(features, 1, axis=0)).any()
    want = by_hand(presets[kind], kind, embedding, pixels)
    np.testing.assert_allclose(np.delete(features, [1, 5], axis=0), want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features[5], by_hand(presets[kind], kind, embedding, [np.dstack([pixels[0][:, :, 0]] * 3)])[0],
                               rtol=1e-4, atol=1e-5)  # gray replicated, as for files
    one_at_a_time = np.concatenate([backbone.extract([f]) for f in files])
    np.testing.assert_allclose(np.delete(features, [1, 5], axis=0), one_at_a_time, rtol=0, atol=1e-5)
    info = backbone.info()
    assert info["embedding"] == embedding and info["source"] == "folder" and embedding in info["embeddings_available"]


def test_default_embedding_per_architecture_and_its_record(catalog, presets, tmp_path) -> None:
    defaults = {kind: make_backbone(catalog, f"kerashub:{presets[kind]}", tmp_path) for kind in KINDS}
    assert {kind: (b.feature_dim, b.info()["embedding"]) for kind, b in defaults.items()} == {
        "vit": (WIDTHS["vit"], "cls"), "dinov2": (WIDTHS["dinov2"], "cls"), "clip": (WIDTHS["clip"], "projected"),
        "resnet": (WIDTHS["resnet"], "gap")}
    info = defaults["dinov2"].info()
    assert info["architecture"] == "DINOV2Backbone" and info["image_size"] == 32
    assert info["image_converter"]["interpolation"] == "bicubic" and info["image_converter"]["crop_to_aspect_ratio"]
    assert defaults["dinov2"].preprocessing.resize == "bicubic" and defaults["dinov2"].preprocessing.crop_to_aspect_ratio


def test_options_that_do_not_fit_the_architecture_are_one_line_errors(catalog, presets, tmp_path) -> None:
    with pytest.raises(OptionError, match="embedding=gap does not apply.*choose one of: cls, cls_patch_mean"):
        make_backbone(catalog, f"kerashub:{presets['vit']}", tmp_path, embedding="gap").prepare(None)
    with pytest.raises(OptionError, match="embedding=cls does not apply.*choose one of: projected, pooled"):
        make_backbone(catalog, f"kerashub:{presets['clip']}", tmp_path, embedding="cls").prepare(None)
    with pytest.raises(OptionError, match="image_size does not apply.*fixed size"):
        make_backbone(catalog, f"kerashub:{presets['vit']}", tmp_path, image_size="64").prepare(None)
    with pytest.raises(OptionError, match="multiple of .* patch size 8"):
        make_backbone(catalog, f"kerashub:{presets['dinov2']}", tmp_path, image_size="36").prepare(None)
    with pytest.raises(UserError, match="does not exist"):
        make_backbone(catalog, "kerashub:./no/such/preset", tmp_path).prepare(None)


def test_image_size_where_the_architecture_allows_it(catalog, presets, tmp_path) -> None:
    """DINOv2 interpolates its position embeddings and a CNN takes any size: 48 px instead of the preset's 32."""
    pixels = sample_pixels()
    for kind in ("dinov2", "resnet"):
        base = make_backbone(catalog, f"kerashub:{presets[kind]}", tmp_path)
        large = make_backbone(catalog, f"kerashub:{presets[kind]}", tmp_path, image_size="48")
        assert large.preprocessing.size == (48, 48) and large.feature_dim == base.feature_dim
        assert large.cache_namespace() != base.cache_namespace()
        features = large.extract([png(p) for p in pixels])
        assert not np.isnan(features).any()
        assert not np.allclose(features, base.extract([png(p) for p in pixels]), atol=1e-3)


def test_cache_keys_change_with_the_weights_embedding_and_precision(catalog, presets, tmp_path) -> None:
    copy = shutil.copytree(presets["vit"], tmp_path / "vit-copy")
    token = f"kerashub:{copy}"
    before = make_backbone(catalog, token, tmp_path)
    namespace = before.cache_namespace()
    assert make_backbone(catalog, token, tmp_path).cache_namespace() == namespace
    save_preset("vit", tmp_path / "vit-copy", seed=1)  # the same architecture, other weights
    after = make_backbone(catalog, token, tmp_path)
    assert after.weights_sha256 != before.weights_sha256 and after.cache_namespace() != namespace
    others = {make_backbone(catalog, token, tmp_path, embedding="cls_patch_mean").cache_namespace(),
              make_backbone(catalog, token, tmp_path, precision="bfloat16").cache_namespace()}
    assert after.cache_namespace() not in others and len(others) == 2


def test_bfloat16_features_track_float32_ones(catalog, presets, tmp_path) -> None:
    files = [png(p) for p in sample_pixels()]
    for kind in ("dinov2", "resnet"):
        full = make_backbone(catalog, f"kerashub:{presets[kind]}", tmp_path)
        half = make_backbone(catalog, f"kerashub:{presets[kind]}", tmp_path, precision="bfloat16")
        assert half.precision() == "bfloat16" and half.info()["precision"] == "bfloat16"
        want, got = full.extract(files), half.extract(files)
        assert got.dtype == np.float32 and not np.array_equal(got, want)
        assert np.corrcoef(got.ravel(), want.ravel())[0, 1] > 0.99


@pytest.mark.parametrize("kind", ["vit", "clip"])
def test_tf_features_match_extract_and_survive_saving(catalog, presets, tmp_path, kind) -> None:
    backbone = make_backbone(catalog, f"kerashub:{presets[kind]}", tmp_path)
    files = [png(p) for p in sample_pixels()]
    assert_tf_features_round_trip(backbone, files, backbone.extract(files), tmp_path, rtol=1e-4)


def test_flops_per_image_counts_the_transformer_by_its_shape(catalog, presets, tmp_path) -> None:
    """The tiny ViT (32 px, 8-px patches: 16 patches + class token, width 16, MLP 32, 2 layers), counted from the
    graph, against the layer shapes: patch embedding, 4·N·d² projections, 2·N·d·m MLP, 2·N²·d attention."""
    patches, tokens, width, mlp, layers = 16, 17, 16, 32, 2
    macs = patches * (8 * 8 * 3) * width + layers * (4 * tokens * width**2 + 2 * tokens * width * mlp
                                                      + 2 * tokens**2 * width)
    backbone = make_backbone(catalog, f"kerashub:{presets['vit']}", tmp_path)
    assert backbone.flops_per_image() == 2 * macs
    with_mean = make_backbone(catalog, f"kerashub:{presets['vit']}", tmp_path, embedding="cls_patch_mean")
    assert with_mean.flops_per_image() == 2 * macs  # pooling is not counted


def test_build_model_pretrained_and_from_scratch(catalog, presets, tmp_path) -> None:
    backbone = make_backbone(catalog, f"kerashub:{presets['dinov2']}", tmp_path)
    assert backbone.supports("full") and backbone.supports("finetune")
    files = [png(p) for p in sample_pixels()]
    inputs = backbone.model_inputs(files)
    assert inputs.shape == (len(files), 32, 32, 3)
    pretrained = backbone.build_model(3, pretrained=True, seed=0)
    scratch = backbone.build_model(3, pretrained=False, seed=7)  # the preset itself was drawn with seed 0
    assert pretrained.output_shape == (None, 3) and all(layer.trainable for layer in pretrained.layers)
    embedding = pretrained.get_layer("kerashub_embedding")
    np.testing.assert_allclose(np.asarray(embedding(inputs)), backbone.extract(files), rtol=1e-4, atol=1e-5)
    assert not np.allclose(np.asarray(scratch.get_layer("kerashub_embedding")(inputs)), backbone.extract(files),
                           atol=1e-3)


# -- preset names, fetch, offline ----------------------------------------------------------------

def _kerashub_env(tmp_path: Path) -> dict[str, str]:
    """KerasHub's download cache in the test's folder, and no route to Kaggle."""
    return {"KAGGLEHUB_CACHE": str(tmp_path / "kagglehub"), "HTTPS_PROXY": "http://127.0.0.1:9",
            "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": ""}


def test_offline_missing_preset_is_one_line_naming_the_fetch_command(catalog, tmp_path, monkeypatch) -> None:
    for name, value in _kerashub_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError) as caught:
        make_backbone(catalog, "kerashub:dinov2_small", tmp_path).prepare(None)
    message = str(caught.value)
    assert "\n" not in message and "cannot download KerasHub preset 'dinov2_small'" in message
    assert "`xferbench fetch kerashub:dinov2_small`" in message
    assert "`xferbench fetch kerashub:dinov2_small --from DIR-or-ARCHIVE`" in message


def test_unknown_preset_name_points_at_the_list(catalog, tmp_path, monkeypatch) -> None:
    for name, value in _kerashub_env(tmp_path).items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match="kerashub:no_such_preset.*see xferbench list backbones --all"):
        make_backbone(catalog, "kerashub:no_such_preset", tmp_path).prepare(None)


def _fetch(catalog, token: str, cache: Path, source: Path) -> Path:
    spec, arg = catalog.backbones.resolve(token)
    return spec.load_fetcher()(arg, spec.validate({}), RunContext(catalog=catalog, cache_dir=cache), source)


def test_fetch_from_folder_and_archive_imports_under_the_preset_name(catalog, cli, presets, tmp_path) -> None:
    env = _kerashub_env(tmp_path)
    cache = tmp_path / "cache"
    result = cli("fetch", "kerashub:tiny_dinov2", "--from", str(presets["dinov2"]), env=env)
    assert result.returncode == 0, result.stderr
    imported = cache / "kerashub" / "tiny_dinov2"
    assert (imported / "config.json").is_file() and str(imported) in result.stdout
    pin = Manifest(cache).get("kerashub-tiny_dinov2")
    assert pin is not None and pin["source"] == str(presets["dinov2"].resolve())

    # An archive of another preset, replacing the first import: its sha256 is pinned, the tree's too.
    archive = tmp_path / "resnet.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(presets["resnet"], arcname="resnet_preset")
    assert _fetch(catalog, "kerashub:tiny_dinov2", cache, archive) == imported
    assert json.loads((imported / "config.json").read_text())["class_name"] == "ResNetBackbone"
    manifest = Manifest(cache)
    assert manifest.get("kerashub-tiny_dinov2.tar.gz") is not None
    assert manifest.get("kerashub-tiny_dinov2")["sha256"] != pin["sha256"]
    assert not [p for p in imported.parent.iterdir() if p.name.startswith(".")]  # no scratch left behind

    # kerashub:<name> now runs offline from the imported copy.
    result = cli("extract", "--backbone", "kerashub:tiny_dinov2", "--dataset", "digits:0-1", "--out",
                 str(tmp_path / "f.npz"), "--quiet", env=env)
    assert result.returncode == 0, result.stderr
    assert np.load(tmp_path / "f.npz")["features"].shape[1] == WIDTHS["resnet"]


def test_fetch_refuses_unsafe_archives_and_folders_that_are_not_presets(catalog, cli, tmp_path) -> None:
    cache = tmp_path / "cache"
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"{}"
        member = tarfile.TarInfo("../escape/config.json")
        member.size = len(data)
        tar.addfile(member, io.BytesIO(data))
    with pytest.raises(UserError, match="refusing to extract"):
        _fetch(catalog, "kerashub:tiny", cache, evil)
    assert not (cache / "escape").exists() and not (cache / "kerashub" / "escape").exists()
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="holds no config.json"):
        _fetch(catalog, "kerashub:tiny", cache, tmp_path / "empty")
    assert not (cache / "kerashub" / "tiny").exists()
    # A fetcher that imports files only is not handed a folder.
    assert_one_line_error(cli("fetch", "keras:MobileNet", "--from", str(tmp_path / "empty")), "is a folder")


class FakeKaggle:
    """Kaggle's model-download call on ``localhost:7777``, where ``KAGGLE_API_ENVIRONMENT=TEST`` points kagglehub.

    It answers ``POST /api/v1/models.ModelApiService/DownloadModelInstanceVersion`` (one file of a
    model version, named in the JSON body) with the file from ``folder``, and records what was asked.
    kagglehub cannot be pointed at another port, so the test is skipped while the port is taken.
    """

    PATH = "/api/v1/models.ModelApiService/DownloadModelInstanceVersion"

    def __init__(self, folder: Path) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        fake = self
        self.requests: list[dict[str, object]] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base class signature
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                fake.requests.append(body)
                path = folder / str(body.get("path", ""))
                found = self.path == fake.PATH and path.is_file() and path.parent == folder
                data = path.read_bytes() if found else b""
                self.send_response(200 if found else 404)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Content-Type", "application/octet-stream")
                self.end_headers()
                self.wfile.write(data)

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", 7777), Handler)
        except OSError as exc:
            pytest.skip(f"port 7777 (kagglehub's test endpoint) is taken: {exc}")
        self.server.daemon_threads = True
        import threading

        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_preset_name_downloads_through_kagglehub_then_runs_offline(cli, presets, tmp_path) -> None:
    """``kerashub:dinov2_small`` the way users get it: KerasHub's name, kagglehub's download, its cache.

    The fake server hands out the tiny DINOv2 preset as ``dinov2_small``. After the fetch it is
    stopped: the run then finds everything in KerasHub's cache, and a preset never fetched is one line.
    """
    kaggle = FakeKaggle(presets["dinov2"])
    env = {"KAGGLE_API_ENVIRONMENT": "TEST", "KAGGLEHUB_CACHE": str(tmp_path / "kagglehub"),
           "NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}
    try:
        fetched = cli("fetch", "kerashub:dinov2_small", env=env)
    finally:
        kaggle.stop()
    assert fetched.returncode == 0, fetched.stderr[-2000:]
    asked = {str(request["path"]) for request in kaggle.requests}
    assert {"config.json", "model.weights.h5", "image_converter.json"} <= asked
    assert {request["instanceSlug"] for request in kaggle.requests} == {"dinov2_small"}
    folder = tmp_path / "kagglehub" / "models" / "keras" / "dinov2" / "keras" / "dinov2_small" / "1"
    assert f"kerashub: ready at {folder}" in fetched.stdout
    pin = Manifest(tmp_path / "cache").get("kerashub-dinov2_small")
    assert pin is not None and pin["source"] == "kerashub:dinov2_small"

    offline = {**env, "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "",
               "no_proxy": ""}
    result = cli("extract", "--backbone", "kerashub:dinov2_small", "--dataset", "digits:0-1", "--out",
                 str(tmp_path / "f.npz"), "--quiet", env=offline)
    assert result.returncode == 0, result.stderr[-2000:]
    assert np.load(tmp_path / "f.npz")["features"].shape[1] == WIDTHS["dinov2"]
    assert_one_line_error(cli("extract", "--backbone", "kerashub:dinov2_base", "--dataset", "digits:0-1", "--out",
                              str(tmp_path / "g.npz"), "--quiet", env=offline),
                          "xferbench fetch kerashub:dinov2_base")


# -- listing -----------------------------------------------------------------------------------

def test_listing_imports_no_keras_and_all_lists_the_image_presets() -> None:
    code = ("import sys; from xferbench.plugin_manager import load_catalog; c = load_catalog(); "
            "s, _ = c.backbones.resolve('kerashub:x'); print(s.description); "
            "print(sorted(m for m in ('keras_hub', 'keras', 'tensorflow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    description, imported = result.stdout.splitlines()
    assert imported == "[]" and "dinov2_small" in description and "--all" in description
    variants = dict(xferbench_kerashub.presets.image_presets())
    assert {"dinov2_small", "dinov3_vit_small_lvd1689m", "siglip2_base_patch16_224", "clip_vit_base_patch16",
            "resnet_50_imagenet", "efficientnet_b0_ra_imagenet", "vit_base_patch16_224_imagenet"} <= set(variants)
    assert not any(name.startswith(("gemma", "bert", "llama")) for name in variants)
    assert set(xferbench_kerashub.RECOMMENDED) <= set(variants)


def test_list_all_shows_presets_only_when_asked(cli) -> None:
    wide = {"COLUMNS": "300"}  # one row per preset, names unwrapped
    plain = cli("list", "backbones", env=wide)
    assert plain.returncode == 0 and "kerashub:<arg>" in plain.stdout and "kerashub:dinov2_giant" not in plain.stdout
    full = cli("list", "backbones", "--all", env=wide)
    assert full.returncode == 0 and full.stderr == "", full.stderr
    assert "kerashub:dinov2_giant" in full.stdout and "kerashub:siglip2_so400m_patch14_384" in full.stdout


# -- end to end ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_run_transfer_full_and_finetune_through_the_cli(cli, presets, tmp_path) -> None:
    """The tiny ViT, DINOv2, CLIP and ResNet presets, each with transfer, full and finetune, in one sweep."""
    out = tmp_path / "r.json"
    result = cli("run", "--backbone", ",".join(f"kerashub:{presets[kind]}" for kind in KINDS), "--dataset",
                 "digits:0-2", "--compare", "transfer,full,finetune", "--shots", "5", "--full-epochs", "1",
                 "--head-opt", "steps=50", "--output", str(out), "--quiet", env=_kerashub_env(tmp_path))
    assert result.returncode == 0, result.stderr
    runs = json.loads(out.read_text())["runs"]
    assert all(run["status"] == "ok" for run in runs), [run.get("error") for run in runs]
    for kind in KINDS:
        mine = [run for run in runs if run["backbone"] == f"kerashub:{presets[kind]}"]
        assert sorted(run["method"] for run in mine) == ["finetune", "full", "transfer"]
        transfer = next(run for run in mine if run["method"] == "transfer")
        assert transfer["backbone_info"]["embedding"] == {"clip": "projected", "resnet": "gap"}.get(kind, "cls")
        assert transfer["gflops_per_image"] > 0
        assert transfer["backbone_info"]["architecture"] in ("ViTBackbone", "DINOV2Backbone", "CLIPBackbone",
                                                             "ResNetBackbone")
    # export writes the transfer run (the CLIP preset: projected image embedding + head) as one SavedModel
    # that predicts from image files, as the harness measured.
    clip_transfer = next(run for run in runs if run["backbone"] == f"kerashub:{presets['clip']}"
                         and run["method"] == "transfer")
    model_dir = tmp_path / "exported"
    exported = cli("export", "--run", clip_transfer["run_dir"], "--out", str(model_dir), "--quiet")
    assert exported.returncode == 0, exported.stderr[-2000:]
    image = tmp_path / "probe.png"
    image.write_bytes(png(sample_pixels()[0]))
    predicted = cli("predict", "--model", str(model_dir), "--top-k", "2", str(image))
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert "probe.png" in predicted.stdout

    # TFLite: the ViT transfer run converts (LiteRT runs it), with the features the harness measured.
    vit_transfer = next(run for run in runs if run["backbone"] == f"kerashub:{presets['vit']}"
                        and run["method"] == "transfer")
    lite = tmp_path / "vit.tflite"
    exported = cli("export", "--run", vit_transfer["run_dir"], "--out", str(lite), "--format", "tflite", "--quiet")
    assert exported.returncode == 0, exported.stderr[-2000:]
    predicted = cli("predict", "--model", str(lite), "--top-k", "2", str(image))
    assert predicted.returncode == 0 and "probe.png" in predicted.stdout, predicted.stderr[-2000:]
