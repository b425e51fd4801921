"""Proposal recall (AR@N): MMDetection's greedy one-to-one matching on hand-made cases,
COCOeval's ``useCats = 0`` variant on the same case, and the trainer's number equal to
``ablate evaluate --metric proposals`` on the same proposals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ablate.data.datasets.coco import COCODetection
from ablate.errors import AblateError
from ablate.eval.coco_map import detections_to_coco_results
from ablate.eval.evaluate_cmd import evaluate, format_table
from ablate.eval.proposal_recall import (average_recall, box_iou, coco_average_recall,
                                         matched_ious, proposal_nums, recalls)
from ablate.tasks.rcnn import proposal_metrics
from tests.data.test_coco import make_coco


def test_greedy_matching_takes_the_best_pair_first():
    # box 0's best proposal (0.9) is also box 1's best (0.6): box 0 takes it, box 1 gets its
    # second choice (0.55) — not 0.6, which a per-box maximum would give
    assert matched_ious(np.array([[0.9, 0.5], [0.6, 0.55]])).tolist() == [0.9, 0.55]
    # more boxes than proposals: the last box finds none left (−1); no proposal: 0
    assert matched_ious(np.array([[0.3], [0.7]])).tolist() == [0.7, -1.0]
    assert matched_ious(np.zeros((2, 0))).tolist() == [0.0, 0.0]
    # recall over t = 0.5 … 0.95 of IoUs 0.9 and 0.55: 1, 1, then ½ up to t = 0.9, 0 at 0.95
    assert box_iou([[0, 0, 9, 9]], [[0, 0, 9, 4]], pixel_inclusive=True).item() == 0.5
    assert box_iou([[0, 0, 10, 10]], [[0, 0, 10, 5]]).item() == 0.5


def test_average_recall_ranks_by_score_and_cuts_at_n():
    gt = [np.array([[0.0, 0, 10, 10]])]
    props = [np.array([[0.0, 0, 10, 10], [0, 0, 10, 5]])]  # IoU 1 and 0.5
    scores = [np.array([0.2, 0.9])]  # the half box ranks first
    # N = 1: IoU 0.5 recalls only at t = 0.5 → AR 1/10; N = 2: the exact box → AR 1
    assert average_recall(gt, props, scores, nums=(1, 2)) == pytest.approx({1: 0.1, 2: 1.0})
    r = recalls(gt, props, scores, nums=(1,))
    assert r.tolist() == [[1.0] + [0.0] * 9]
    assert coco_average_recall({"images": [{"id": 1, "width": 20, "height": 20}],
                                "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                                 "bbox": [0, 0, 10, 10], "area": 100,
                                                 "iscrowd": 0}],
                                "categories": [{"id": 1, "name": "x"}]},
                               [{"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10],
                                 "score": 0.2},
                                {"image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 5],
                                 "score": 0.9}], nums=(1, 2)) == pytest.approx({1: 0.1, 2: 1.0})
    with pytest.raises(AblateError, match="must be a list of positive integers"):
        proposal_nums([100, 0])
    assert proposal_nums([1000, 100, 300, 100]) == (100, 300, 1000)


# per COCO image id (sorted 7, 9, 42, 100): proposals (x1y1x2y2) and scores
PROPOSALS = {
    7: [],  # its only box is a crowd region
    9: [([1.0, 2, 4, 4], 0.8)],  # half of the car (IoU 0.5); the thin person is missed
    42: [([10.5, 20.25, 40.5, 32.25], 0.9),  # the toaster exactly
         ([50.0, 40, 70, 50], 0.7)],  # the car as annotated (past the image border)
    100: [([2.0, 2, 8, 8], 0.95)],  # nothing there
}


def test_the_trainer_number_equals_ablate_evaluate(tmp_path):
    root = make_coco(tmp_path)
    ds = COCODetection(root, "val2017", remove_crowd=False)
    dets = [{"boxes": np.array([b for b, _ in PROPOSALS[i]], np.float32).reshape(-1, 4),
             "scores": np.array([s for _, s in PROPOSALS[i]], np.float32)} for i in ds.ids]
    ours = proposal_metrics([{"image_id": i} for i in ds.ids], dets, (1, 2),
                            (ds.coco, ds.cat_ids))
    # 4 non-crowd boxes. N = 1: toaster 1.0, car (42) none left, car (9) 0.5, person none:
    # recall 2/4 at t = 0.5, 1/4 above → AR (0.5 + 9 · 0.25) / 10; N = 2: 3/4, then 2/4
    assert ours == pytest.approx({"ar1": 27.5, "ar2": 52.5, "coco_ar1": 27.5, "coco_ar2": 52.5},
                                 abs=1e-6)
    labelled = [{**d, "labels": np.zeros(len(d["scores"]), np.int64)} for d in dets]
    (tmp_path / "proposals.json").write_text(json.dumps(
        detections_to_coco_results(labelled, ds.ids, [1])))
    cli = evaluate("coco", root, "val2017", tmp_path / "proposals.json", metric="proposals",
                   proposal_nums=(1, 2))
    assert cli["ar"] == pytest.approx({1: ours["ar1"], 2: ours["ar2"]}, abs=1e-9)
    assert cli["coco_ar"] == pytest.approx({1: ours["coco_ar1"], 2: ours["coco_ar2"]}, abs=1e-9)
    assert format_table(cli).splitlines()[-1] == "| 2 | 52.50 | 52.50 |"
    with pytest.raises(AblateError, match="use --data coco"):
        evaluate("voc", root, "val2017", tmp_path / "proposals.json", metric="proposals")


def test_without_an_annotation_file_difficult_boxes_are_left_out():
    gts = [{"boxes": np.array([[0.0, 0, 10, 10], [20, 20, 30, 30]]), "labels": np.array([0, 1]),
            "difficult": np.array([False, True]), "image_id": 5}]
    dets = [{"boxes": np.array([[0.0, 0, 10, 10]]), "scores": np.array([0.5])}]
    assert proposal_metrics(gts, dets, (1,)) == pytest.approx({"ar1": 100.0, "coco_ar1": 100.0})
