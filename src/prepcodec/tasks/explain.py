"""Where a classifier looks on an image, by the `grad-cam` package (an implementation independent of ours).

The pictures of `prepcodec pictures` show Grad-CAM of the classifier on the plain decode and on the NPP's decode:
if the network removed what the classifier needs, the map moves or fades. The ROI baselines and networks compute
their own forward-only CAM (`npp.features.TaskCAM`); the figure uses the package so that what it shows does not
depend on the code under test. The package is an optional extra (`pip install 'prepcodec[figures]'`).
"""

from __future__ import annotations

import numpy as np
import torch

from prepcodec.errors import InputError


def _package():
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise InputError("Grad-CAM pictures need the grad-cam package: pip install 'prepcodec[figures]'") from None
    return GradCAM, ClassifierOutputTarget


class _OnCrop(torch.nn.Module):
    """The classifier on its own (already resized and cropped) input, as the package wants a plain module."""

    def __init__(self, task) -> None:
        super().__init__()
        self.task = task
        self.model = task.model

    def forward(self, crop: torch.Tensor) -> torch.Tensor:
        return self.model(self.task.normalise(crop))


def classifier_grad_cam(task, rgb: np.ndarray, class_index: int) -> np.ndarray:
    """Grad-CAM (H, W) in [0, 1] of `class_index` at the classifier's last convolution, on the image's pixels: the
    map over the classifier's centre crop placed back through its resize + crop (0 where it never looks)."""
    from prepcodec.npp.preprocessors import to_tensor
    from prepcodec.tasks.resize import resize_center_crop

    if getattr(task, "kind", None) != "classification" or not hasattr(task.model, "_conv_head"):
        raise InputError(f"{getattr(task, 'name', task)}: Grad-CAM pictures need an EfficientNet-Lite classifier")
    grad_cam, target = _package()
    x = to_tensor(rgb).to(task.device)
    crop = resize_center_crop(x, task.resolution, task.crop_ratio).requires_grad_()  # the weights are frozen
    with grad_cam(model=_OnCrop(task), target_layers=[task.model._conv_head]) as cam:
        on_crop = cam(input_tensor=crop, targets=[target(int(class_index))])  # (1, h, w), scaled to [0, 1]
    m = task.map_to_image(torch.from_numpy(on_crop)[None].float(), tuple(x.shape[-2:]))
    return m[0, 0].clamp(0, 1).cpu().numpy()
