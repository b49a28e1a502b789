"""The output handlers of a trained bundle: Grad-CAM maps and overlays, the writer of other ranks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import resnet18
from monai.visualize import GradCAM
from PIL import Image

from monai_danil.handlers import GradCAMSaver, NullSummaryWriter, gradcam_overlay, rank_zero_summary_writer
from monai_danil.handlers.gradcam import _unit_range


def _retina_images(retina_dir, count: int) -> torch.Tensor:
    paths = sorted((retina_dir / "images" / "val").glob("*.png"))[:count]
    return torch.stack([torch.tensor(np.asarray(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths]) / 255.0


def test_batched_maps_are_each_images_own_class_map(retina_dir, tmp_path):
    torch.manual_seed(0)
    net = resnet18(spatial_dims=2, n_input_channels=3, num_classes=5, conv1_t_size=3, conv1_t_stride=1).eval()
    images = _retina_images(retina_dir, 6)
    classes = torch.tensor([0, 3, 3, 1, 4, 0])
    saver = GradCAMSaver(net, tmp_path / "gradcam", target_layer="layer4")
    maps = saver.maps(images, classes)
    assert maps.shape == (6, 1, 28, 28) and float(maps.min()) >= 0.0 and float(maps.max()) <= 1.0
    # one image at a time, its own class: what the batched call must equal
    single = GradCAM(nn_module=net, target_layers="layer4", postprocessing=_unit_range)
    for i, c in enumerate(classes.tolist()):
        torch.testing.assert_close(maps[i : i + 1], single(images[i : i + 1], class_idx=c), rtol=1e-4, atol=1e-5)
    # the last block of a stride-1 ResNet18 at 28 px is 2 x 2: the map is upsampled from it
    assert single.feature_map_size((1, 3, 28, 28)) == (1, 1, 2, 2)
    with pytest.raises(ValueError, match="no layer 'layer9'"):
        GradCAMSaver(net, tmp_path, target_layer="layer9")


def test_overlay_blends_the_jet_map_over_the_image():
    image = torch.zeros(1, 4, 4)  # grey input shown as RGB
    cam = torch.zeros(4, 4)
    cam[0, 0] = 1.0
    overlay = gradcam_overlay(image, cam, alpha=1.0)
    assert overlay.shape == (4, 4, 3) and overlay.dtype == np.uint8
    assert tuple(overlay[0, 0]) == (128, 0, 0) and tuple(overlay[3, 3]) == (0, 0, 128)  # jet: red high, blue low
    assert tuple(gradcam_overlay(torch.ones(3, 4, 4), cam, alpha=0.0)[2, 2]) == (255, 255, 255)
    with pytest.raises(ValueError, match="differ in spatial size"):
        gradcam_overlay(image, torch.zeros(3, 3))


def test_other_ranks_get_a_writer_that_writes_nothing(tmp_path):
    writer = NullSummaryWriter(tmp_path / "logs")
    writer.add_scalar("loss", 1.0, 1)
    writer.add_image("x", np.zeros((3, 2, 2)), 1)
    writer.flush()
    writer.close()
    assert not (tmp_path / "logs").exists()
    with pytest.raises(AttributeError):
        writer.file_writer  # noqa: B018
    real = rank_zero_summary_writer(tmp_path / "real")  # no process group: rank 0's writer
    real.add_scalar("loss", 1.0, 1)
    real.close()
    assert list((tmp_path / "real").glob("events.out.tfevents.*"))
