"""In-training COCO mAP is the official figure: the task scores against the annotation file
itself (boxes as annotated, tiny boxes kept, annotation areas, crowd flags) and equals
``ablate evaluate --data coco`` on the same detections; without an annotation file the rebuilt
ground truth is labelled approximate."""

from __future__ import annotations

import json

import numpy as np
import pytest
from torch.utils.data import Subset

from ablate.data.datasets.coco import COCODetection, official_ground_truth
from ablate.data.pipelines.detection import build_detection_loaders
from ablate.eval.coco_map import detections_to_coco_results
from ablate.eval.evaluate_cmd import evaluate
from ablate.tasks.yolo import coco_metrics
from tests.data.test_coco import make_coco

# per image id (sorted: 7, 9, 42, 100), xyxy in original pixels, 0-based labels
# (person 0, car 1, toaster 2)
DETECTIONS = {
    7: [],
    9: [([1.0, 2, 4, 6], 0.8, 1)],  # the car exactly; the 0.5-px-wide person is missed
    42: [([10.5, 20.25, 40.5, 32.25], 0.9, 2),  # the toaster exactly
         ([50.0, 40, 70, 50], 0.7, 1)],  # the car as annotated, past the image border
    100: [([2.0, 2, 8, 8], 0.95, 1)],  # a false positive car, scored above the true ones
}


def _dets(ids):
    out = []
    for i in ids:
        d = DETECTIONS[i]
        out.append({"boxes": np.array([b for b, _, _ in d], np.float32).reshape(-1, 4),
                    "scores": np.array([s for _, s, _ in d], np.float32),
                    "labels": np.array([k for _, _, k in d], np.int64)})
    return out


def test_the_trainer_number_equals_ablate_evaluate(tmp_path):
    root = make_coco(tmp_path)
    ds = COCODetection(root, "val2017", remove_crowd=False)
    targets = [ds.get_target(i) for i in range(len(ds))]
    gts = [{"boxes": t["boxes"].numpy(), "labels": t["labels"].numpy(),
            "difficult": t["difficult"].numpy(), "image_id": t["image_id"]} for t in targets]
    dets = _dets(ds.ids)
    official = coco_metrics(gts, dets, 3, (ds.coco, ds.cat_ids))
    results = detections_to_coco_results(dets, ds.ids, ds.cat_ids)
    (tmp_path / "dets.json").write_text(json.dumps(results))
    cli = evaluate("coco", root, "val2017", tmp_path / "dets.json")
    assert official["coco_official"] == 1.0
    for ours, theirs in (("map", "AP"), ("ap50", "AP50"), ("ap75", "AP75"), ("aps", "APs")):
        assert official[ours] == pytest.approx(cli["stats"][theirs], abs=1e-9), ours
    # the rebuilt ground truth clips the car and drops the tiny person: another number
    rebuilt = coco_metrics(gts, dets, 3)
    assert rebuilt["coco_official"] == 0.0 and rebuilt["map"] != pytest.approx(official["map"])


def test_the_evaluated_images_only_and_the_loader_finds_the_file(tmp_path):
    root = make_coco(tmp_path)
    ds = COCODetection(root, "val2017", remove_crowd=False)
    _, loader = build_detection_loaders(ds, Subset(ds, [1, 2]), batch_size=2, train_size=64,
                                        eval_size=64)
    coco, cat_ids = official_ground_truth(loader)
    assert coco is ds.coco and cat_ids == [1, 3, 7]
    assert official_ground_truth(object()) is None
    ids = [9, 42]  # the subset: images 7 and 100 are not scored
    gts = [{"image_id": i} for i in ids]
    sub = coco_metrics(gts, _dets(ids), 3, (coco, cat_ids))
    results = detections_to_coco_results(_dets(ids), ids, cat_ids)
    from ablate.eval.coco_map import coco_eval

    want = coco_eval(ds.coco, results, img_ids=ids)["stats"]["AP"]
    assert sub["map"] == pytest.approx(100 * want, abs=1e-9)
    full = coco_metrics([{"image_id": i} for i in ds.ids], _dets(ds.ids), 3, (coco, cat_ids))
    assert sub["map"] != pytest.approx(full["map"])  # image 100's false positive is left out
