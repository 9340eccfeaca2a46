"""CUDA check of every task: CUDA predictions match CPU, input gradients are finite and nonzero on CUDA.

Run on a machine with a GPU and fetched weights: `PYTHONPATH=src python scripts/check_tasks_cuda.py`.
The task modules are imported one by one so that a machine without pycocotools (used only by the metrics) runs it.
"""

import importlib
import time
import traceback

import numpy as np
import torch
from PIL import Image

from prepcodec.tasks import registry

TASK_MODULES = ["classification", "detection", "pose", "segmentation"]
TASKS = ["effnet-lite0", "centernet", "nanodet", "movenet", "selfie"]


def summary(pred: dict) -> tuple:
    """A short, comparable digest of one image's prediction."""
    if "probs" in pred:
        return ("top1", int(torch.as_tensor(pred["probs"]).argmax()), pred["top5"][0]["name"])
    if "boxes" in pred:
        return ("boxes", len(pred["boxes"]), [round(float(s), 3) for s in pred["scores"][:3]])
    if "keypoints" in pred:
        kp = torch.as_tensor(pred["keypoints"])[:3, :2].flatten()
        return ("keypoints", [round(float(v), 1) for v in kp])
    return tuple(sorted(pred))


def main() -> None:
    for module in TASK_MODULES:
        importlib.import_module(f"prepcodec.tasks.{module}")
    print("torch", torch.__version__, torch.cuda.get_device_name(0))
    rgb = np.asarray(Image.open("src/prepcodec/data/samples/astronaut.png").convert("RGB"))
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float() / 255
    for name in TASKS:
        try:
            cpu = registry.create_task(name, device="cpu")
            gpu = registry.create_task(name, device="cuda")
            pred_cpu, pred_gpu = cpu.predict(x)[0], gpu.predict(x.cuda())[0]
            targets = gpu.pseudo_targets(x.cuda())
            xg = (x.cuda() * 0.9 + 0.05).requires_grad_(True)
            gpu.loss(xg, targets).backward()
            grad = xg.grad
            torch.cuda.synchronize()
            t0 = time.time()
            for _ in range(10):
                gpu.predict(x.cuda())
            torch.cuda.synchronize()
            ms = (time.time() - t0) * 100
            print(f"{name}: cpu {summary(pred_cpu)} cuda {summary(pred_gpu)} grad finite "
                  f"{bool(torch.isfinite(grad).all())} nonzero {bool(grad.abs().sum() > 0)} cuda {ms:.1f} ms/image")
        except Exception as exc:  # report every task, even when one fails
            traceback.print_exc()
            print(name, "FAILED", repr(exc))


if __name__ == "__main__":
    main()
