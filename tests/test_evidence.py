"""Evidence amplification (`npp.evidence`, `--pre SPEC+amp`, the `roi-graded-amp` / `roi-det-amp` networks) on real
photos: a classifier's top-1 and a detector's confident detections."""

from __future__ import annotations

import pytest
import torch

from prepcodec.errors import InputError
from prepcodec.npp.evidence import amplify_evidence
from prepcodec.npp.model import create_npp, grow_npp
from prepcodec.npp.preprocessors import parse_pre, to_tensor
from prepcodec.tasks.registry import create_task


@pytest.fixture(scope="module")
def lite0():
    return create_task("effnet-lite0")


@pytest.fixture(scope="module")
def photos(sample_image):
    return torch.cat([to_tensor(sample_image(n).copy())[..., :256, :256] for n in ("chelsea", "coffee")])


def _margin(task, x, classes):
    """Top-1 logit minus the best other one: what the codec's error must overcome to change the decision."""
    with torch.no_grad():
        logits = task.logits(x)
    own = logits.gather(1, classes[:, None])[:, 0]
    return own - logits.scatter(1, classes[:, None], float("-inf")).amax(dim=1)


@pytest.mark.weights
def test_amplification_stays_in_its_ball_and_raises_the_top1_evidence(lite0, photos):
    classes = lite0.logits(photos).argmax(dim=1)
    delta = amplify_evidence(lite0, photos, levels=8.0, sigma=4.0, steps=3)
    assert delta.abs().max() <= 8 / 255 + 1e-6 and delta.abs().max() > 4 / 255
    assert ((photos + delta) >= 0).all() and ((photos + delta) <= 1).all()
    before, after = _margin(lite0, photos, classes), _margin(lite0, photos + delta, classes)
    assert (after > before + 1.0).all(), (before, after)
    # low-passed σ 4: neighbouring pixels move together (the change lives where the codec keeps it), unlike the raw
    # gradient's ascent
    def rough(d):
        return (d[..., 1:, :] - d[..., :-1, :]).abs().mean() / d.abs().mean()

    raw = amplify_evidence(lite0, photos, levels=8.0, sigma=0.0, steps=3)
    assert rough(delta) < 0.5 * rough(raw), (rough(delta), rough(raw))


@pytest.mark.weights
def test_amp_spec_composes_reads_the_original_class_and_refuses_bad_values(lite0, sample_image):
    pre = parse_pre("roi:graded:2+amp:8:2:2", lite0)
    assert pre.spec == "roi:graded:2+amp:8:2:2" and pre.cache_spec.endswith("#cam2")
    assert parse_pre("none+amp", lite0).spec == "none+amp:16:4:5"
    assert parse_pre("none+unseen+amp:4", lite0).spec == "none+unseen+amp:4:4:5"
    # REACH appears in the spec (and the cache key) only when it is not the default, so older keys stay valid
    assert parse_pre("none+amp:16:4:5:2", lite0).spec == "none+amp:16:4:5"
    assert parse_pre("none+amp:16:4:1:6", lite0).spec == "none+amp:16:4:1:6"
    rgb = sample_image("chelsea")[:256, :256]
    base, amped = parse_pre("roi:graded:2", lite0)(rgb), pre(rgb)
    assert 0 < abs(amped.astype(int) - base.astype(int)).max() <= 9  # 8 levels, plus rounding
    for bad in ("none+amp:0", "none+amp:100", "none+amp:8:4:2.5", "none+amp:8:4:5:0",
                "none+amp:8:4:5:1:1", "none+amp:8:4:5:65", "none+amp:x"):
        with pytest.raises(InputError):
            parse_pre(bad, lite0)
    with pytest.raises(InputError, match="classifier"):
        parse_pre("none+amp", None)


@pytest.mark.weights
def test_a_longer_reach_fills_more_of_the_ball_in_one_step(lite0, photos):
    """One step of reach 2 saturates only where the low-passed gradient is above half its peak; reach 6 wherever it
    is above a sixth: more of the picture moves by the full LEVELS, still inside the ball, still up the evidence
    (though not more than reach 2 on these photos: the first step's gradient is not the whole ascent's)."""
    classes = lite0.logits(photos).argmax(dim=1)
    eps = 8 / 255
    short = amplify_evidence(lite0, photos, levels=8.0, sigma=4.0, steps=1)
    long = amplify_evidence(lite0, photos, levels=8.0, sigma=4.0, steps=1, reach=6.0)
    assert long.abs().max() <= eps + 1e-6
    full = [(d.abs() >= eps - 1e-4).float().mean().item() for d in (short, long)]
    assert full[1] > 2 * full[0], full
    assert (_margin(lite0, photos + long, classes) > _margin(lite0, photos, classes) + 0.5).all()


@pytest.mark.weights
def test_grown_network_starts_as_its_init_followed_by_the_fixed_amplification(lite0, photos):
    from prepcodec.npp.zoo import load_npp

    j = load_npp("cls-roi").model
    grown = grow_npp(j, "roi-graded-amp").eval()
    assert grown.roi.knobs(34.0)["evidence_gain"] == pytest.approx(1.0)
    spec = parse_pre("npp:cls-roi+amp:16:4:5", lite0)
    with torch.no_grad():
        for qp in (22.0, 40.0):
            expected = spec.tensor(photos[:1], qp)
            assert (grown(photos[:1], qp) - expected).abs().max() < 1e-5
    with pytest.raises(InputError, match="more than evidence"):
        grow_npp(create_npp("roi-blend"), "roi-graded-amp")


def test_evidence_config_is_refused_outside_a_classifier_or_detector_roi_network():
    from prepcodec.npp.model import NPPConfig

    with pytest.raises(InputError):
        NPPConfig(evidence_levels=8.0)
    with pytest.raises(InputError, match="classifier or detector"):
        NPPConfig(base_channels=16, blend_sigmas=(1.0,), residual=False, roi="movenet", evidence_levels=8.0)
    NPPConfig(base_channels=16, blend_sigmas=(1.0,), residual=False, roi="centernet", evidence_levels=8.0)


@pytest.fixture(scope="module")
def centernet():
    return create_task("centernet")


@pytest.mark.weights
def test_detector_amplification_raises_its_confident_detections_scores(centernet, sample_image):
    x = to_tensor(sample_image("kodim23").copy())  # two parrots: CenterNet's confident birds
    reading = centernet.evidence_read(x)
    assert int(reading[0].sum()) >= 1
    delta = amplify_evidence(centernet, x, levels=8.0, sigma=4.0, steps=3)
    assert 4 / 255 < delta.abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        before, after = centernet.evidence_score(x, reading), centernet.evidence_score(x + delta, reading)
    assert after > before + 0.1 * abs(before), (before, after)
    # the detections themselves: every confident one scores higher on the amplified picture (its peak may move to a
    # neighbouring heatmap cell: the best score within one cell of it)
    def near(z):
        with torch.no_grad():
            heat = torch.sigmoid(centernet._heads(z)[0][0]).permute(0, 3, 1, 2)
        return torch.nn.functional.max_pool2d(heat, 3, 1, 1).permute(0, 2, 3, 1)[reading[0]]

    assert (near(x + delta) > near(x)).all(), (near(x), near(x + delta))


@pytest.mark.weights
def test_a_picture_with_nothing_detected_is_left_alone(centernet):
    x = torch.full((1, 3, 128, 160), 0.5)  # nothing to detect: what is read is empty, so nothing is amplified
    assert int(sum(m.sum() for m in centernet.evidence_read(x))) == 0
    assert amplify_evidence(centernet, x, levels=8.0, sigma=4.0, steps=2).abs().max() == 0


@pytest.mark.weights
def test_amp_spec_needs_a_classifier_or_detector(centernet):
    assert parse_pre("blur:1+amp:8", centernet).spec == "blur:1+amp:8:4:5"
    with pytest.raises(InputError, match="classifier or detection"):
        parse_pre("none+amp", create_task("movenet"))
    with pytest.raises(InputError, match="classifier task"):
        parse_pre("none+unseen", centernet)


@pytest.mark.weights
def test_detector_network_grows_into_npp_det_followed_by_the_amplification(centernet, sample_image):
    from prepcodec.npp.zoo import load_npp

    det = load_npp("det-roi").model.eval()
    grown = grow_npp(det, "roi-det-amp").eval()
    assert grown.roi.knobs(34.0)["evidence_gain"] == pytest.approx(1.0)
    x = to_tensor(sample_image("kodim23").copy())
    with torch.no_grad():
        base, out = det(x, 34.0), grown(x, 34.0)
    delta = out - base
    assert 0 < delta.abs().max() <= 16 / 255 + 1e-5
    expected = parse_pre("npp:det-roi+amp:16:4:5", centernet).tensor(x, 34.0)
    assert (out - expected).abs().max() < 1e-5


@pytest.mark.weights
def test_a_gain_below_gain_off_skips_the_stage_at_inference_only(sample_image, monkeypatch):
    """A per-QP gain under GAIN_OFF (at most 0.16 of a level) spends no task pass at inference and returns the
    network without the stage; a batch mixing such QPs with live ones runs the ascent on the live images only; in
    training the stage always runs (the gain keeps its gradient)."""
    from prepcodec.npp.model import GAIN_OFF
    from prepcodec.npp.zoo import load_npp

    det = load_npp("det-roi").model.eval()
    grown = grow_npp(det, "roi-det-amp").eval()
    with torch.no_grad():  # gain ~0 below QP 30, ~1 above: the shape of run det-E's fitted gain
        grown.roi.evidence_gain.fc1.weight.fill_(1.0)
        grown.roi.evidence_gain.fc1.bias.zero_()
        grown.roi.evidence_gain.fc2.weight.fill_(20.0)
        grown.roi.evidence_gain.fc2.bias.fill_(-10.0)
    qps = torch.tensor([22.0, 44.0])
    with torch.no_grad():
        assert float(grown.roi.gain(qps[:1])) < GAIN_OFF < float(grown.roi.gain(qps[1:]))
    x = to_tensor(sample_image("kodim23").copy())[..., :256, :256].repeat(2, 1, 1, 1)
    seen = []
    ascent = type(grown.roi.evidence).__call__
    monkeypatch.setattr(type(grown.roi.evidence), "__call__",
                        lambda self, z, r: seen.append(len(z)) or ascent(self, z, r))
    with torch.no_grad():
        out = grown(x, qps)
        base = det(x, qps)
    assert seen == [1]  # the QP-44 image only
    assert torch.equal(out[0], base[0]) and float((out[1] - base[1]).abs().max()) > 0
    grown.train()
    with torch.no_grad():
        grown(x, qps)
    assert seen == [1, 2]


@pytest.mark.weights
def test_batched_preprocessing_matches_one_image_at_a_time(lite0, sample_image):
    """The sweep preprocesses same-sized images in batches (`Preprocessor.many`); every image comes out as it does
    alone (float summation order aside: at most one level here and there)."""
    images = [sample_image(n)[:256, :256].copy() for n in ("chelsea", "coffee", "astronaut")] + \
        [sample_image("kodim23")[:200, :240].copy()]
    for spec, qp in (("roi:graded:2+amp:8:4:2", None), ("npp:cls-roi", 37.0)):
        pre = parse_pre(spec, lite0)
        alone = [pre(im, qp) for im in images]
        batched = pre.many(images, qp, batch=2)
        for a, b in zip(alone, batched, strict=True):
            assert a.shape == b.shape
            diff = abs(a.astype(int) - b.astype(int))
            assert diff.max() <= 1 and diff.mean() < 0.01, (spec, diff.max(), diff.mean())


@pytest.mark.weights
def test_onnx_export_refuses_the_evidence_network_in_one_line(tmp_path):
    """npp:cls runs the classifier's backward pass, which has no ONNX graph: refused before anything is written
    (the torch-free edge uses npp:cls-roi)."""
    pytest.importorskip("onnx")
    from prepcodec.export.onnx_export import export_onnx

    with pytest.raises(InputError, match="backward pass"):
        export_onnx("cls", tmp_path / "cls.onnx", [torch.rand(1, 3, 64, 64)])
    assert not any(tmp_path.iterdir())


@pytest.mark.weights
@pytest.mark.parametrize("name", ["cls", "det"])
def test_a_sweep_reads_the_task_once_for_all_levels_with_identical_output(name, photos, monkeypatch):
    """At inference an evidence network reuses what the task read on a recent batch (its Grad-CAM or boxes, and its
    top-1 or detections from the same forward pass) when the same batch comes at another level, as in a sweep; the
    pictures are bit-identical to a fresh network's. In training nothing is reused. The evidence stage never runs
    the task's read on its own: the attention brings it."""
    from prepcodec.npp.zoo import load_npp

    net = load_npp(name).model.eval()
    calls = {"cam": 0, "read": 0}
    cam = net.roi.attention_maps
    monkeypatch.setattr(net.roi, "attention_maps", lambda x: calls.__setitem__("cam", calls["cam"] + 1) or cam(x))
    read = net.roi.evidence.read
    monkeypatch.setattr(net.roi.evidence, "read", lambda x: calls.__setitem__("read", calls["read"] + 1) or read(x))
    with torch.no_grad():
        outs = [net(photos, qp) for qp in (30.0, 38.0)]
        assert calls == {"cam": 1, "read": 0}
        assert torch.equal(net(photos, 30.0), outs[0]) and calls == {"cam": 1, "read": 0}
        net(photos[:1], 30.0)  # another batch: read again
        assert calls == {"cam": 2, "read": 0}
        for qp, out in zip((30.0, 38.0), outs, strict=True):
            assert torch.equal(load_npp(name).model.eval()(photos, qp), out)
        net.roi.memo = False  # switched off (to time what it saves): every level reads again, the same pictures
        assert torch.equal(net(photos, 30.0), outs[0]) and torch.equal(net(photos, 30.0), outs[0])
        assert calls == {"cam": 4, "read": 0}
        net.roi.memo = True
    net.train()
    with torch.no_grad():
        net(photos, 30.0)
        net(photos, 30.0)
    assert calls == {"cam": 6, "read": 0}


@pytest.mark.weights
@pytest.mark.parametrize("name", ["cls", "det"])
def test_the_attention_reads_what_the_evidence_stage_would_read_on_its_own(name, photos):
    """The top-1 class (classifier) or confident detections (detector) that come with the attention, from its one
    forward pass, are the task's own `evidence_read` of the same pictures."""
    from prepcodec.npp.zoo import load_npp

    roi = load_npp(name).model.eval().roi
    with torch.no_grad():
        shared = roi.attention_maps(photos).reading
        alone = roi.evidence.read(photos)
    if name == "cls":
        assert torch.equal(shared, alone)
    else:
        assert len(shared) == len(alone) and all(torch.equal(a, b) for a, b in zip(shared, alone, strict=True))
        assert any(bool(m.any()) for m in shared)  # something is read on the photos


def test_the_memo_keeps_recent_inputs_within_its_budget():
    """One entry per batch of a sweep's chunk (one per image size), the oldest dropped past the byte budget; the
    newest is always kept; inactive (training) it computes every time and forgets."""
    from prepcodec.npp.model import RecentInputMemo

    calls = []

    def fn(x):
        calls.append(tuple(x.shape))
        return x.sum()

    a, b, c = torch.ones(10), torch.zeros(10), torch.ones(5)  # 40, 40, 20 bytes
    roomy, tight = RecentInputMemo(budget_bytes=100), RecentInputMemo(budget_bytes=50)
    for x in (a, b, c, a, b, c):
        roomy(x, fn, True)
    assert len(calls) == 3
    for x in (a, b, a, b):
        tight(x, fn, True)
    assert len(calls) == 7
    assert tight(b, fn, True) == 0 and len(calls) == 7  # the newest stays
    tight(b, fn, False)
    tight(b, fn, True)
    assert len(calls) == 9
