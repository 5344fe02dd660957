"""The pil_* resize of the manifest: torchvision's Resize + CenterCrop on PIL images to the pixel (what
torchvision-trained weights expect), and old manifests still read as OpenCV's INTER_AREA."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.manifest import InputSpec, Manifest
from edgekit.vision.preprocess import preprocess_classify, resize_crop
from tests.imports.photos import load_rgb, photo_paths, reference_transform


def _tv_resize_crop(pil_img, resize: int, crop: int, mode: str) -> np.ndarray:
    from torchvision import transforms as T

    m = getattr(T.InterpolationMode, mode)
    return np.asarray(T.CenterCrop(crop)(T.Resize(resize, interpolation=m)(pil_img)))


@pytest.mark.parametrize("interpolation,mode", [("pil_bilinear", "BILINEAR"), ("pil_bicubic", "BICUBIC")])
def test_pil_resize_crop_is_torchvisions_to_the_pixel(interpolation, mode):
    from PIL import Image

    rng = np.random.default_rng(0)
    pictures = [load_rgb(p)[0] for p in photo_paths()[:3]]
    # odd sizes: the long side truncates (not rounds) and the crop offset rounds half to even in torchvision
    pictures += [Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)) for h, w in
                 ((301, 457), (457, 301), (255, 256), (999, 263), (224, 224), (100, 150))]
    for pic in pictures:
        for resize, crop in ((256, 224), (232, 224), (73, 64)):
            want = _tv_resize_crop(pic, resize, crop, mode)
            got = resize_crop(np.asarray(pic), resize, [crop, crop], interpolation)
            np.testing.assert_array_equal(got, want, err_msg=f"{pic.size} resize {resize} crop {crop}")


def test_preprocess_with_pil_bilinear_matches_the_torchvision_reference():
    spec = InputSpec("input", [1, 3, 224, 224], resize=256, interpolation="pil_bilinear")
    ref = reference_transform(256, 224, spec.mean, spec.std, spec.scale)
    for path in photo_paths():
        pil, bgr = load_rgb(path)
        np.testing.assert_allclose(preprocess_classify(bgr, spec), ref(pil).numpy(), atol=2e-6, rtol=0)


def test_opencv_area_is_not_what_torchvision_computes():
    """Why the field exists: INTER_AREA (the default) gives other pixels than PIL's antialiased bilinear."""
    pil, bgr = load_rgb(photo_paths()[0])
    area = resize_crop(np.asarray(pil), 256, [224, 224])
    want = _tv_resize_crop(pil, 256, 224, "BILINEAR")
    assert np.abs(area.astype(int) - want.astype(int)).max() > 10


def test_old_manifests_read_as_area_and_unknown_interpolation_is_refused(tmp_path):
    data = {"schema_version": 1, "name": "m", "task": "classify", "labels": ["a"],
            "input": {"name": "input", "shape": [1, 3, 8, 8]}, "outputs": [{"name": "y", "shape": [1, 1]}]}
    assert Manifest.from_dict(data).input.interpolation == "area"
    data["input"]["interpolation"] = "lanczos"
    with pytest.raises(EdgekitError, match="interpolation"):
        Manifest.from_dict(data)


def test_training_an_efficientnet_lite0_normalises_as_its_weights_were_trained():
    """The packaged EfficientNet-Lite0 was trained on (x - 127) / 128, not ImageNet mean/std."""
    from edgekit.train.classify import input_spec
    from edgekit.train.classify_config import ClassifyConfig

    spec = input_spec(ClassifyConfig(arch="efficientnet_lite0"))
    x = preprocess_classify(np.full((300, 300, 3), 255, np.uint8), spec)
    np.testing.assert_allclose(x, (255 - 127) / 128, rtol=1e-6)
    assert input_spec(ClassifyConfig(arch="resnet18")).mean == [0.485, 0.456, 0.406]


def test_the_cameras_crop_batch_resizes_as_the_manifest_says():
    """The camera's batched crop path (edgekit.camera.pipeline.CropBatch) takes the same interpolation."""
    from edgekit.camera.pipeline import CropBatch, crop_box

    spec = InputSpec("input", [1, 3, 64, 64], resize=73, interpolation="pil_bilinear")
    frame = np.ascontiguousarray(load_rgb(photo_paths()[1])[1])
    boxes = [[10.0, 20.0, 200.0, 260.0], [100.0, 50.0, 180.0, 90.0]]
    want = np.stack([preprocess_classify(crop_box(frame, b, CropBatch(spec).pad), spec) for b in boxes])
    np.testing.assert_allclose(CropBatch(spec)(frame, boxes), want, atol=1e-6, rtol=0)
