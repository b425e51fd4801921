"""VOC devkit mAP: hand-computed cases and a plain-loop transcription of the devkit."""

import math

import numpy as np
import pytest
import torch

from ablate.errors import AblateError
from ablate.eval.voc_map import VOCEvaluator, box_iou_voc, voc_ap, voc_eval

A = [0, 0, 9, 9]        # 10x10 pixels (inclusive)
B = [20, 20, 29, 29]
FAR = [50, 50, 59, 59]


def gt(boxes, labels, difficult=None):
    d = {"boxes": np.array(boxes, float).reshape(-1, 4), "labels": np.array(labels, int)}
    if difficult is not None:
        d["difficult"] = np.array(difficult, bool)
    return d


def det(boxes, scores, labels):
    return {"boxes": np.array(boxes, float).reshape(-1, 4), "scores": np.array(scores, float),
            "labels": np.array(labels, int)}


def both(gts, dets, n=1, **kw):
    return (voc_eval(gts, dets, n, metric="voc07", **kw)["ap"],
            voc_eval(gts, dets, n, metric="voc2010", **kw)["ap"])


def test_tp_duplicate_fp():
    # 2 GT (npos=2). Ranked: A exact (TP), near-copy of A (IoU 100/110, duplicate -> FP), FAR (FP).
    # rec = [.5, .5, .5], prec = [1, 1/2, 1/3].
    # 11-point: t = 0..0.5 (6 points) -> 1, t = 0.6..1 (5 points) -> 0  => AP = 6/11.
    # area: envelope 1 on recall [0, .5], nothing above .5  => AP = 0.5.
    g = [gt([A, B], [0, 0])]
    d = [det([A, [0, 0, 9, 10], FAR], [0.9, 0.8, 0.7], [0, 0, 0])]
    ap07, ap10 = both(g, d)
    assert ap07[0] == pytest.approx(6 / 11, abs=1e-12)
    assert ap10[0] == pytest.approx(0.5, abs=1e-12)
    r = voc_eval(g, d, 1)
    np.testing.assert_allclose(r["recall"][0], [0.5, 0.5, 0.5])
    np.testing.assert_allclose(r["precision"][0], [1, 0.5, 1 / 3])
    assert r["map"] == pytest.approx(6 / 11, abs=1e-12)


def test_tp_fp_tp_envelope():
    # Ranked TP(A), FP(FAR), TP(B): rec = [.5, .5, 1], prec = [1, 1/2, 2/3].
    # 11-point: 6 * 1 + 5 * 2/3 = 28/3, / 11 => 28/33.
    # area: 0.5 * 1 + 0.5 * 2/3 (envelope lifts the 1/2 to 2/3) => 5/6.
    g = [gt([A, B], [0, 0])]
    d = [det([A, FAR, B], [0.9, 0.8, 0.7], [0, 0, 0])]
    ap07, ap10 = both(g, d)
    assert ap07[0] == pytest.approx(28 / 33, abs=1e-12)
    assert ap10[0] == pytest.approx(5 / 6, abs=1e-12)


def test_detection_on_difficult_gt_is_ignored():
    # The top detection hits a difficult GT: ignored, so precision stays 1 -> AP 1 (an FP there
    # would give prec [0, 1/2] and AP < 1).
    g = [gt([A, FAR], [0, 0], [False, True])]
    d = [det([FAR, A], [0.95, 0.9], [0, 0])]
    ap07, ap10 = both(g, d)
    assert ap07[0] == pytest.approx(1.0, abs=1e-12) and ap10[0] == pytest.approx(1.0, abs=1e-12)


def test_difficult_gt_not_counted_in_npos():
    # Missing the difficult B costs nothing: npos = 1, recall reaches 1.
    g = [gt([A, B], [0, 0], [False, True])]
    r = voc_eval(g, [det([A], [0.9], [0])], 1)
    assert r["npos"][0] == 1 and r["ap"][0] == pytest.approx(1.0, abs=1e-12)
    # Without the flag, recall stops at 0.5 -> 6/11.
    r = voc_eval([gt([A, B], [0, 0])], [det([A], [0.9], [0])], 1)
    assert r["ap"][0] == pytest.approx(6 / 11, abs=1e-12)


def test_strict_threshold_at_exactly_half():
    # Inclusive pixels: GT 10x10 = 100, det 20x10 = 200, intersection 100 -> IoU = 100/200 = 0.5.
    g, d = [gt([A], [0])], [det([[0, 0, 19, 9]], [0.9], [0])]
    assert box_iou_voc(d[0]["boxes"], g[0]["boxes"])[0, 0] == 0.5
    assert voc_eval(g, d, 1)["ap"][0] == 0.0                 # devkit: IoU > 0.5 -> FP
    # GluonCV: IoU >= 0.5 -> TP. (11 * (1/11) sums to 1 + 2**-52, as in the devkit.)
    assert voc_eval(g, d, 1, strict=False)["ap"][0] == pytest.approx(1.0, abs=1e-12)
    # Continuous coordinates: the same 0.5 without the +1.
    g, d = [gt([[0, 0, 10, 10]], [0])], [det([[0, 0, 20, 10]], [0.9], [0])]
    assert box_iou_voc(d[0]["boxes"], g[0]["boxes"], pixel_inclusive=False)[0, 0] == 0.5
    assert voc_eval(g, d, 1, pixel_inclusive=False)["ap"][0] == 0.0
    r = voc_eval(g, d, 1, pixel_inclusive=False, strict=False, metric="voc2010")
    assert r["ap"][0] == 1.0


def test_inclusive_iou_value():
    # [0,0,9,9] vs [5,5,14,14]: inclusive intersection 5x5 = 25, union 100 + 100 - 25 = 175.
    assert box_iou_voc([A], [[5, 5, 14, 14]])[0, 0] == pytest.approx(1 / 7, abs=1e-15)
    # Continuous: 4x4 = 16 over 81 + 81 - 16 = 146.
    iou = box_iou_voc([A], [[5, 5, 14, 14]], pixel_inclusive=False)[0, 0]
    assert iou == pytest.approx(16 / 146, abs=1e-15)
    assert box_iou_voc(torch.tensor([A]), torch.tensor([FAR])).tolist() == [[0.0]]


def test_class_without_gt_is_excluded():
    # Class 0: AP 1. Class 1: GT but no detection -> AP 0 (counts). Class 2: detections, no GT
    # -> NaN, excluded. Class 3: only a difficult GT -> NaN. mAP = (1 + 0) / 2.
    g = [gt([A, B, FAR], [0, 1, 3], [False, False, True])]
    d = [det([A, FAR], [0.9, 0.8], [0, 2])]
    for metric in ("voc07", "voc2010"):
        r = voc_eval(g, d, 4, metric=metric)
        assert r["ap"][0] == pytest.approx(1.0, abs=1e-12) and r["ap"][1] == 0.0
        assert math.isnan(r["ap"][2]) and math.isnan(r["ap"][3])
        assert r["map"] == pytest.approx(0.5, abs=1e-12)


def test_duplicate_does_not_fall_back_to_second_best_gt():
    # Two overlapping GTs; both detections prefer the first one. Devkit: second is a duplicate
    # FP even though it overlaps the other GT by more than 0.5.
    g = [gt([A, [0, 0, 9, 8]], [0, 0])]        # IoU(A, 2nd) = 90/100
    d = [det([A, A], [0.9, 0.8], [0, 0])]
    r = voc_eval(g, d, 1, metric="voc2010")
    np.testing.assert_allclose(r["precision"][0], [1.0, 0.5])
    assert r["ap"][0] == pytest.approx(0.5, abs=1e-12)


def test_empty_inputs():
    assert voc_eval([gt([A], [0])], [det([], [], [])], 1)["ap"][0] == 0.0
    r = voc_eval([gt([], [])], [det([A], [0.5], [0])], 2)
    assert np.isnan(r["ap"]).all() and math.isnan(r["map"])
    assert math.isnan(voc_eval([], [], 3)["map"])


def test_bad_input_raises():
    with pytest.raises(AblateError, match="did you mean 'voc07'"):
        voc_eval([], [], 1, metric="voc7")
    with pytest.raises(AblateError, match="out of range"):
        voc_eval([gt([A], [3])], [det([], [], [])], 2)
    with pytest.raises(AblateError, match="images"):
        voc_eval([gt([A], [0])], [], 2)
    with pytest.raises(AblateError, match="lengths differ"):
        voc_eval([gt([A], [0, 1])], [det([], [], [])], 2)


def test_voc_ap_direct():
    assert voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], "voc2010") == pytest.approx(5 / 6)
    assert voc_ap([], [], "voc07") == 0.0


# ----------------------------------------------------------------------------------------------
# Reference: py-faster-rcnn's voc_eval/voc_ap (transcribing VOCevaldet.m), plain loops.

def ref_voc_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            p = 0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])
            ap = ap + p / 11.0
        return ap
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def ref_voc_eval(gts, dets, cls, use_07_metric, thresh=0.5, strict=True, one=1.0):
    class_recs, npos = {}, 0
    for i, g in enumerate(gts):
        m = g["labels"] == cls
        diff = g["difficult"][m]
        class_recs[i] = {"bbox": g["boxes"][m], "difficult": diff, "det": [False] * int(m.sum())}
        npos += int((~diff).sum())
    image_ids, confidence, BB = [], [], []
    for i, d in enumerate(dets):
        for b, s, lab in zip(d["boxes"], d["scores"], d["labels"]):
            if lab == cls:
                image_ids.append(i), confidence.append(s), BB.append(b)
    if npos == 0:
        return float("nan")
    confidence, BB = np.array(confidence), np.array(BB).reshape(-1, 4)
    sorted_ind = np.argsort(-confidence, kind="stable")
    BB = BB[sorted_ind, :]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d, :].astype(float)
        ovmax = -np.inf
        BBGT = R["bbox"].astype(float)
        if BBGT.size > 0:
            ixmin = np.maximum(BBGT[:, 0], bb[0])
            iymin = np.maximum(BBGT[:, 1], bb[1])
            ixmax = np.minimum(BBGT[:, 2], bb[2])
            iymax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin + one, 0.0)
            ih = np.maximum(iymax - iymin + one, 0.0)
            inters = iw * ih
            uni = ((bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                   + (BBGT[:, 2] - BBGT[:, 0] + one) * (BBGT[:, 3] - BBGT[:, 1] + one) - inters)
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if (ovmax > thresh) if strict else (ovmax >= thresh):
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return ref_voc_ap(rec, prec, use_07_metric)


def random_dataset(n_images, n_classes, seed):
    """Integer boxes, repeated GT and tied scores, so argmax/sort tie-breaking is exercised."""
    rng = np.random.default_rng(seed)
    gts, dets = [], []
    for _ in range(n_images):
        g = int(rng.integers(0, 6))
        xy = rng.integers(0, 80, (g, 2))
        wh = rng.integers(4, 40, (g, 2))
        boxes = np.concatenate([xy, xy + wh], 1).astype(float)
        labels = rng.integers(0, n_classes, g)
        if g >= 2 and rng.random() < 0.2:       # exact duplicate GT
            boxes[1], labels[1] = boxes[0], labels[0]
        gts.append({"boxes": boxes, "labels": labels, "difficult": rng.random(g) < 0.15})
        k = int(rng.integers(0, 3)) * g           # 0-2 jittered copies per GT
        src = rng.integers(0, max(g, 1), k)
        jb = (boxes[src] + rng.integers(-4, 5, (k, 4))) if g else np.zeros((0, 4))
        jl = labels[src] if g else np.zeros(0, int)
        jl = np.where(rng.random(k) < 0.1, rng.integers(0, n_classes, k), jl)
        r = int(rng.integers(0, 5))
        rxy = rng.integers(0, 100, (r, 2))
        rb = np.concatenate([rxy, rxy + rng.integers(2, 50, (r, 2))], 1)
        dets.append({"boxes": np.concatenate([jb, rb]).astype(float),
                     "scores": np.round(rng.random(k + r), 2),   # many ties
                     "labels": np.concatenate([jl, rng.integers(0, n_classes, r)]).astype(int)})
    return gts, dets


@pytest.mark.parametrize("metric", ["voc07", "voc2010"])
@pytest.mark.parametrize("strict,inclusive", [(True, True), (False, True), (True, False)])
def test_matches_reference_on_random_data(metric, strict, inclusive):
    gts, dets = random_dataset(300, 6, seed=0)
    r = voc_eval(gts, dets, 6, metric=metric, strict=strict, pixel_inclusive=inclusive)
    ref = np.array([ref_voc_eval(gts, dets, c, metric == "voc07", strict=strict,
                                 one=1.0 if inclusive else 0.0) for c in range(6)])
    np.testing.assert_allclose(r["ap"], ref, rtol=0, atol=1e-12)
    assert r["map"] == pytest.approx(np.nanmean(ref), abs=1e-12)
    assert 0.1 < r["map"] < 0.95     # the data is neither trivial nor hopeless


def test_streaming_equals_batch_with_tensors():
    gts, dets = random_dataset(120, 4, seed=1)
    ev = VOCEvaluator(4, metric="voc2010")
    for g, d in zip(gts[:50], dets[:50]):                 # one image at a time, torch tensors
        ev.update({k: torch.as_tensor(v) for k, v in g.items()},
                  {k: torch.as_tensor(v) for k, v in d.items()})
    ev.update(gts[50:], dets[50:])                        # then a batch
    assert len(ev) == 120
    got, want = ev.compute(), voc_eval(gts, dets, 4, metric="voc2010")
    np.testing.assert_array_equal(got["ap"], want["ap"])
    assert got["map"] == want["map"]
    ev.reset()
    assert len(ev) == 0 and math.isnan(ev.compute()["map"])
