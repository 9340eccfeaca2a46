"""The shipped networks: each loads weights-only with its training summary, and is a trained network, not its start."""

from __future__ import annotations

import pytest
import torch

from prepcodec.npp.model import create_npp
from prepcodec.npp.zoo import list_npps, load_npp


@pytest.mark.weights
@pytest.mark.parametrize("name", list_npps())
def test_every_shipped_network_loads_with_its_training_summary(name):
    net = load_npp(name)
    training = net.meta["training"]
    assert training["steps"] > 0 and training["task"] and training["codec"] == "hevc"
    assert training["data"]["train_images"] > 0 and training["cpu_hours"] > 0
    assert len(net.sha256) == 64


@pytest.mark.weights
@pytest.mark.parametrize("name", ["det", "det-roi"])
def test_npp_det_learned_to_keep_objects_sharper_than_the_background(name):
    """npp:det-roi (run det-B; npp:det is it grown by the evidence stage) started near blur:1 everywhere; trained, the
    boxes' mix moved to sharper blurs than the background's at every QP (what `docs/training.md` reads from its
    weights)."""
    if name not in list_npps():
        pytest.skip(f"npp:{name} is not shipped")
    roi = load_npp(name).model.roi
    start = create_npp("roi-det").roi
    with torch.no_grad():
        for qp in (22.0, 34.0, 44.0):
            q = torch.tensor([qp])
            background, keep = roi.mix_weights(q)
            keep_sigma = float(keep[0] @ torch.tensor(roi.keep_sigmas))
            background_sigma = float(background[0] @ torch.tensor(roi.sigmas))
            start_keep = float(start.mix_weights(q)[1][0] @ torch.tensor(start.keep_sigmas))
            assert keep_sigma < 0.6 < start_keep and background_sigma - keep_sigma > 0.4


@pytest.mark.weights
@pytest.mark.parametrize("name", ["cls", "cls-roi"])
def test_npp_cls_moved_its_keep_cut_with_the_qp(name):
    """npp:cls-roi (run J; npp:cls is J grown by the evidence stage) started as roi:graded:2 with the keep cut at 0.5
    for every QP; trained, it keeps more of the attended object at high rates and less at low ones
    (`docs/training.md`, run J), and its background blur grew."""
    if name not in list_npps():
        pytest.skip(f"npp:{name} is not shipped")
    roi = load_npp(name).model.roi
    start = create_npp("roi-graded-mild").roi  # its start (tests/test_npp_bridge.py: = roi:graded:2)
    with torch.no_grad():
        cut = {qp: float(roi.keep_cut(torch.tensor([qp]))[0]) for qp in (22.0, 44.0)}
        assert abs(float(start.keep_cut(torch.tensor([22.0]))[0]) - 0.5) < 0.02
        assert cut[22.0] < 0.45 and cut[44.0] > 0.7
        background = float(roi.mix_weights(torch.tensor([22.0]))[0][0] @ torch.tensor(roi.sigmas))
        assert background > float(start.mix_weights(torch.tensor([22.0]))[0][0] @ torch.tensor(start.sigmas)) + 0.5


@pytest.mark.weights
def test_npp_show_reads_the_learned_knobs_per_qp(cli, tmp_path):
    """`prepcodec npp show` prints one line per QP with the cuts and mixes the weights hold (npp:cls's keep cut
    rose with the QP: the line at 44 differs from the one at 22); a non-ROI network is refused in one line."""
    from prepcodec.npp.zoo import export_npp

    if "cls" not in list_npps():
        pytest.skip("npp:cls is not shipped")
    rc, out, _ = cli("npp", "show", "cls", "--qps", "22,44")
    lines = out.strip().splitlines()
    assert rc == 0 and len(lines) == 3 and lines[1].startswith("QP 22: keep_cut") and "background_mix" in lines[2]
    assert lines[1].split(";")[0] != lines[2].split(";")[0].replace("QP 44", "QP 22")
    plain = export_npp(create_npp("small"), tmp_path / "small.pt")
    rc, out, err = cli("npp", "show", str(plain))
    assert rc == 2 and out == "" and "not an ROI-guided network" in err and len(err.strip().splitlines()) == 1


@pytest.mark.weights
@pytest.mark.parametrize(("name", "trained", "size"), [("cls", "cls-roi", "roi-graded-amp"),
                                                       ("det", "det-roi", "roi-det-amp")])
def test_a_shipped_evidence_network_is_its_trained_network_grown(name, trained, size):
    """npp:cls = `prepcodec npp grow cls-roi --size roi-graded-amp` (run J), npp:det = `npp grow det-roi --size
    roi-det-amp` (run det-B): the trained weights unchanged, and the JSON says so (docs/training.md, "Session 11",
    "Session 12"). The evidence gain is at its start (1 at every QP) unless the JSON records a per-QP fit
    (`scripts/probe_evidence_gain.py --fit`, det-E in "Session 13"); then the weights give the fitted gains."""
    from prepcodec.npp.model import grow_npp

    if not {name, trained} <= set(list_npps()):
        pytest.skip(f"npp:{name} / npp:{trained} are not shipped")
    shipped, base = load_npp(name), load_npp(trained)
    assert shipped.model.config.evidence_levels == 16.0 and not base.model.config.evidence_levels
    grown = grow_npp(base.model, size).state_dict()
    assert grown.keys() == shipped.model.state_dict().keys()
    for key, value in base.model.state_dict().items():  # the new stage's first layer is randomly initialised
        assert torch.equal(value, shipped.model.state_dict()[key]), key
    assert shipped.meta["training"]["grown"]["size"] == size
    assert shipped.meta["training"]["grown"]["from_sha256"] == base.sha256
    fit = shipped.meta["training"].get("gain_fit")
    expected = {float(qp): g for qp, g in fit["fitted"].items()} if fit else {22.0: 1.0, 44.0: 1.0}
    for qp, gain in expected.items():
        assert shipped.model.roi.knobs(qp)["evidence_gain"] == pytest.approx(gain, abs=1e-4), qp
    if fit:  # the fit hit its per-QP targets and moved the gain off its start somewhere
        assert all(abs(expected[float(qp)] - t) < 0.01 for qp, t in fit["targets"].items())
        assert max(abs(g - 1.0) for g in expected.values()) > 0.5


def test_a_shipped_name_resolves_with_or_without_the_pre_prefix():
    from prepcodec.npp.zoo import resolve

    for name in list_npps():
        assert resolve(f"npp:{name}") == resolve(name)


@pytest.mark.weights
def test_npp_list_names_what_a_grown_network_grew_from(cli):
    import json

    rc, out, _ = cli("npp", "list", "--json")
    rows = {r["name"]: r for r in map(json.loads, out.splitlines())}
    assert rc == 0 and rows["npp:cls"]["grown_from"] == rows["npp:cls-roi"]["sha256"]
    assert rows["npp:cls"]["grown_into"] == "roi-graded-amp" and "grown_from" not in rows["npp:cls-roi"]
    assert rows["npp:det"]["gain_fit"] == "32 training crops"  # det-E
    assert rows["npp:cls"]["gain_fit"] == "64 training crops" and "gain_fit" not in rows["npp:cls-roi"]  # cls-fit


@pytest.mark.weights
def test_npp_steps_sets_the_ascent_length_and_nothing_else(cli, tmp_path, sample_image):
    """`prepcodec npp steps cls --steps 1`: the same weights (and so the same ROI part and fitted gains), a one-step
    ascent (a fifth of the stage's cost); the JSON says where it came from; a network without the stage is refused."""
    import json

    from prepcodec.npp.preprocessors import to_tensor

    if "cls" not in list_npps():
        pytest.skip("npp:cls is not shipped")
    out = tmp_path / "cls-s1.pt"
    rc, _, err = cli("npp", "steps", "cls", "--steps", "1", "--out", str(out))
    assert rc == 0, err
    shipped, derived = load_npp("cls"), load_npp(str(out))
    assert derived.model.config.evidence_steps == 1 and shipped.model.config.evidence_steps == 5
    for key, value in shipped.model.state_dict().items():
        assert torch.equal(value, derived.model.state_dict()[key]), key
    assert derived.meta["training"]["steps_changed"] == {"from": "cls", "from_sha256": shipped.sha256,
                                                         "from_steps": 5, "steps": 1}
    x = to_tensor(sample_image("chelsea").copy())[..., :224, :224]
    qp = torch.tensor([38.0])
    with torch.no_grad():
        five, one = shipped.model(x, qp), derived.model(x, qp)
        base = shipped.model.roi.suppressed(x, qp)
    assert torch.equal(base, derived.model.roi.suppressed(x, qp))  # the ROI part is the same network
    gain = float(shipped.model.roi.gain(qp)[0].detach())
    assert 0 < (one - base).abs().max() <= gain * 16 / 255 + 1e-5  # one step still moves, inside the ball
    assert (one - five).abs().max() > 1 / 255  # and is not the five-step change
    rows = {r["name"]: r for r in map(json.loads, cli("npp", "list", "--json")[1].splitlines())}
    assert "steps_from" not in rows["npp:cls"]
    rc, _, err = cli("npp", "steps", "cls-roi", "--steps", "1", "--out", str(tmp_path / "x.pt"))
    assert rc != 0 and "no evidence stage" in err and not (tmp_path / "x.pt").exists()


def test_the_cache_keys_a_network_by_its_weights_and_its_config(tmp_path):
    """The same files under another name are the same network (same key); the same weights with another config
    (here `npp steps`' ascent length, written by hand into a copy of the JSON) are not."""
    import json
    import shutil

    from prepcodec.npp.preprocessors import npp_preprocessor
    from prepcodec.npp.zoo import resolve

    if "cls" not in list_npps():
        pytest.skip("npp:cls is not shipped")
    src = resolve("cls")
    for stem in ("same", "other"):
        shutil.copy(src, tmp_path / f"{stem}.pt")
        shutil.copy(src.with_suffix(".json"), tmp_path / f"{stem}.json")
    meta = json.loads((tmp_path / "other.json").read_text())
    meta["config"]["evidence_steps"] = 2
    (tmp_path / "other.json").write_text(json.dumps(meta))
    shipped, same, other = (npp_preprocessor(str(p)) for p in (src, tmp_path / "same.pt", tmp_path / "other.pt"))
    assert shipped.cache_spec == same.cache_spec and shipped.spec.split("@")[1] == other.spec.split("@")[1]
    assert other.cache_spec != shipped.cache_spec


@pytest.mark.weights
def test_npp_cls_fast_is_npp_cls_with_three_ascent_steps():
    """npp:cls-fast = `prepcodec npp steps cls --steps 3` (docs/training.md, "Session 21"): cls-fit's weights and
    fitted gains unchanged, the evidence ascent 3 steps instead of 5 (~3/5 of the stage's cost)."""
    if not {"cls", "cls-fast"} <= set(list_npps()):
        pytest.skip("npp:cls / npp:cls-fast are not shipped")
    shipped, fast = load_npp("cls"), load_npp("cls-fast")
    assert fast.model.config.evidence_steps == 3 and shipped.model.config.evidence_steps == 5
    for key, value in shipped.model.state_dict().items():
        assert torch.equal(value, fast.model.state_dict()[key]), key
    assert fast.meta["training"]["steps_changed"]["from_sha256"] == shipped.sha256
