"""Training as a user runs it: the config loader, the learning-rate schedule, the store-threshold
calibration, and real ``training.train.main`` runs that checkpoint, resume and stop on a time budget."""

from __future__ import annotations

import itertools
import json
import logging
import math

import pytest
import torch

from tests.training.small_model import SMALL_OVERRIDES, tiny_run_arguments
from training.config import TrainConfig, load_config
from training.engine import lr_factor

pytestmark = pytest.mark.usefixtures("one_thread")

# ---------------------------------------------------------------------------------------- config


def test_load_config_defaults_presets_and_overrides(tmp_path):
    assert load_config().to_dict() == TrainConfig().to_dict()
    assert load_config("tiny").output_dir == "runs/tiny"  # a preset by name from training/presets/

    preset_file = tmp_path / "mine.json"
    preset_file.write_text(json.dumps({"optim": {"lr": 0.01, "steps": 50}, "model": {"hidden_dim": 64}, "tasks": ["detection", "mask"]}))
    config = load_config(preset_file, ["--optim.lr", "0.001", "--model.num_queries", "30", "--resume", "false"])
    assert config.optim.lr == 0.001 and config.optim.steps == 50  # the override wins, the rest of the preset stays
    assert config.model == {"hidden_dim": 64, "num_queries": 30}
    assert config.tasks == ["detection", "mask"] and config.resume is False
    assert config.optim.batch_size == TrainConfig().optim.batch_size

    assert load_config(None, ["--tasks", '["detection"]']).tasks == ["detection"]
    assert load_config(None, ["--optim.batch-size", "4"]).optim.batch_size == 4


@pytest.mark.parametrize("overrides, message", [
    (["--optim.lrr", "0.1"], "optim.lrr"),
    (["--nonsense", "1"], "nonsense"),
    (["--optim.lr", "fast"], "optim.lr"),
    (["--optim.steps", "2.5"], "optim.steps"),
    (["--resume", "maybe"], "resume"),
    (["--tasks", "detection"], "tasks"),
    (["--tasks", '["detection", "dancing"]'], "dancing"),
    (["--optim.lr"], "optim.lr"),
    (["--gradnorm.every", "0"], "gradnorm.every must be >= 1"),
    (["--gradnorm.start_step", "-1"], "gradnorm.start_step must be >= 0"),
    (["--phrase_bank", "-5"], "phrase_bank must be >= 0"),
    (["--data.repeat_factor_threshold", "-0.1"], "data.repeat_factor_threshold must be >= 0"),
])
def test_load_config_rejects_bad_keys_and_values_naming_them(overrides, message):
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        load_config(None, overrides)


def test_unknown_key_in_a_preset_file_is_rejected(tmp_path, capsys):
    preset_file = tmp_path / "bad.json"
    preset_file.write_text(json.dumps({"optim": {"learning_rate": 0.1}}))
    with pytest.raises(ValueError, match="optim.learning_rate"):
        load_config(preset_file)
    from training.train import main

    assert main([str(preset_file)]) == 2
    assert "optim.learning_rate" in capsys.readouterr().err


def test_lr_factor_warms_up_linearly_then_decays_to_five_percent():
    warmup, total = 10, 100
    assert lr_factor(0, warmup, total) == pytest.approx(0.1)
    assert lr_factor(4, warmup, total) == pytest.approx(0.5)
    assert lr_factor(9, warmup, total) == pytest.approx(1.0)
    assert lr_factor(warmup, warmup, total) == pytest.approx(1.0)
    assert lr_factor(55, warmup, total) == pytest.approx(0.05 + 0.95 * 0.5)  # half way through the cosine
    assert lr_factor(total, warmup, total) == pytest.approx(0.05)
    assert lr_factor(10 * total, warmup, total) == pytest.approx(0.05)
    curve = [lr_factor(s, warmup, total) for s in range(total + 1)]
    assert all(a < b for a, b in itertools.pairwise(curve[:warmup]))
    assert all(a >= b for a, b in itertools.pairwise(curve[warmup:]))
    assert lr_factor(0, 0, total) == pytest.approx(1.0)


def test_a_time_budget_that_outlasts_the_steps_leaves_the_schedule_to_the_steps():
    warmup, total = 10, 100
    # At step 50 with 40% of the budget spent, the budget lasts 125 steps: more than the run needs,
    # so the clock changes nothing (a rerun on a machine this fast follows the same schedule).
    for step, spent in [(50, 0.4), (10, 0.05), (99, 0.98), (55, 0.1)]:
        assert step / spent >= total
        assert lr_factor(step, warmup, total, spent=spent) == lr_factor(step, warmup, total)


def test_a_time_budget_that_ends_the_run_early_anneals_towards_its_projected_end():
    warmup, total = 10, 100
    # Half the budget spent by step 20: the run is projected to end at step 40, a third of its decay done.
    assert lr_factor(20, warmup, total, spent=0.5) == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi / 3)))
    assert lr_factor(20, warmup, total, spent=0.5) < lr_factor(20, warmup, total)
    assert lr_factor(20, warmup, total, spent=1.0) == pytest.approx(0.05)  # spent: the floor
    assert lr_factor(39, warmup, total, spent=39 / 40) == pytest.approx(0.05, abs=0.01)  # just before the end
    assert lr_factor(5, warmup, total, spent=0.9) == pytest.approx(0.6)  # warm-up is by steps only


# ---------------------------------------------------------------------------------------- a real run


def _script_detections(monkeypatch, synthetic_dir) -> None:
    """What "the model" detects in the run's evaluations (three steps find nothing), by image content,
    chosen so that the store threshold of best F1 can be worked out by hand:

    val (the calibration): each image's first object (by annotation id) at its exact box, score 0.9,
    every other object exactly at 0.7, a false positive over the whole image at 0.8, and in the first
    image also its first object's box shifted by half its width (IoU 1/3 with it: a miss) at 0.95.
    test: each image's first object exactly at 0.9, the others exactly at 0.3. Every detection's
    embedding is the text embedding of its object's category, so its label is right."""
    import hashlib

    import numpy as np
    from PIL import Image

    from objsearch.embedders.base import Detections
    from objsearch.embedders.objembed import ObjEmbedEmbedder
    from training.data.sources import synthetic_paths

    table: dict[str, tuple[str, list]] = {}

    def key(pixels) -> str:
        return hashlib.sha1(np.ascontiguousarray(pixels).tobytes()).hexdigest()

    def objects(pixels) -> tuple[str, list]:
        if not table:
            for split in ("val", "test"):
                paths = synthetic_paths(synthetic_dir, split)
                coco = json.loads(paths["instances_json"].read_text())
                names = {c["id"]: c["name"] for c in coco["categories"]}
                for record in coco["images"]:
                    with Image.open(paths["image_dir"] / record["file_name"]) as image:
                        found = sorted((a for a in coco["annotations"] if a["image_id"] == record["id"]), key=lambda a: a["id"])
                        table[key(np.asarray(image.convert("RGB")))] = (split, record["id"], [
                            ([x, y, x + w, y + h], names[a["category_id"]]) for a in found for x, y, w, h in [a["bbox"]]])
        return table[key(pixels)]

    def detect(self, images):
        results = []
        for pixels in images:
            split, image_id, gt = objects(pixels)
            first_image = image_id == min(i for s, i, _ in table.values() if s == split)
            rows = [(box, name, 0.9 if i == 0 else (0.7 if split == "val" else 0.3)) for i, (box, name) in enumerate(gt)]
            if split == "val":
                height, width = pixels.shape[:2]
                rows.append(([0, 0, width, height], gt[0][1], 0.8))
                if first_image:
                    (x1, y1, x2, y2), name = gt[0]
                    rows.append(([x1 + (x2 - x1) / 2, y1, x2 + (x2 - x1) / 2, y2], name, 0.95))
            rows = [row for row in rows if row[2] >= self.score_threshold]
            embeddings = self.embed_texts([name for _, name, _ in rows]) if rows else np.zeros((0, self.embed_dim))
            results.append(Detections(np.array([box for box, _, _ in rows]).reshape(-1, 4),
                                      [score for _, _, score in rows], [name for _, name, _ in rows], embeddings))
        return results

    monkeypatch.setattr(ObjEmbedEmbedder, "detect", detect)


def test_training_main_writes_a_checkpoint_and_metrics_then_resumes(tmp_path, caplog, capsys, monkeypatch):
    from objsearch.model.checkpoint import load_checkpoint
    from training.train import main

    _script_detections(monkeypatch, tmp_path / "synthetic")
    caplog.set_level(logging.INFO, logger="training.engine")
    run = tmp_path / "run"
    assert main(tiny_run_arguments(tmp_path, steps=3)) == 0
    val = json.loads((tmp_path / "synthetic" / "annotations" / "instances_val.json").read_text())
    assert (len(val["images"]), len(val["annotations"])) == (4, 11), "the hand-worked case below assumes it"
    # On val, keeping the detections scoring >= t, with its 11 objects in 4 images:
    #   t = 0.95: the shifted box only, no object found          F1 0
    #   t = 0.9:  4 found, 1 false positive: P 4/5,  R 4/11     F1 0.5
    #   t = 0.8:  4 found, 5 false positives: P 4/9, R 4/11     F1 0.4
    #   t = 0.7: 11 found, 5 false positives: P 11/16, R 1      F1 22/27 = 0.815  <- the best
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["model_type"] == "objembed" and config["training"]["steps"] == 3
    assert config["training"]["score_threshold"] == 0.7, "the calibrated threshold is carried in the checkpoint"
    assert (run / "final" / "model.safetensors").is_file()
    assert any(r.getMessage() == "store threshold 0.700: detection precision 0.688, recall 1.000 on the val split"
               for r in caplog.records), "11/16 of the detections kept are objects, and all 11 objects are found"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["images_seen"] == 6
    assert metrics["lr_schedule_clock_from_step"] is None  # no time budget: the steps set the schedule
    assert [point["step"] for point in metrics["curve"]] == [3], "the final weights are evaluated on val"
    assert metrics["curve"][-1]["best_f1_threshold"] == pytest.approx(0.7)
    # The test split, evaluated with the calibrated threshold: every object is found at its exact box
    # with its own label and no false positive, so AP is 1 (the ones at 0.3 are under the store
    # threshold but still count for AP); the index would store the 4 first objects (0.9), not the one at 0.3.
    test = metrics["test"]
    assert test["counts"] == {"images": 4, "objects": 5, "crowd_regions": 0, "stored_objects": 4}
    assert test["detection"]["AP"] == pytest.approx(1.0) and test["detection_class_agnostic"]["AP50"] == pytest.approx(1.0)
    assert test["best_f1_score_threshold"] == pytest.approx({"threshold": 0.3, "precision": 1.0, "recall": 1.0, "f1": 1.0})
    loaded = load_checkpoint(run / "final")  # the engine's loader accepts what training wrote
    assert loaded.config.image_size == SMALL_OVERRIDES["image_size"] and loaded.config.categories

    caplog.clear()
    assert main(tiny_run_arguments(tmp_path, steps=4)) == 0
    messages = [r.getMessage() for r in caplog.records if r.name == "training.engine"]
    assert any("resumed from" in m and "at step 3" in m for m in messages), messages
    assert not any(m.startswith("step 1/") for m in messages), "the second run restarted at step 0"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["images_seen"] == 8
    assert [point["step"] for point in metrics["curve"]] == [3, 4], "the first run's last point is kept"
    assert json.loads((run / "final" / "config.json").read_text())["training"]["steps"] == 4

    # A finished run started again trains nothing and evaluates its last step once more: still one point.
    assert main(tiny_run_arguments(tmp_path, steps=4)) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 4 and [point["step"] for point in metrics["curve"]] == [3, 4]

    # The same output_dir asked to train a different architecture: a clear refusal, nothing overwritten.
    weights = (run / "last" / "model.safetensors").read_bytes()
    other = tiny_run_arguments(tmp_path, steps=5) + ["--model.decoder_layers", "1"]
    assert main(other) == 2
    assert "differs in decoder_layers" in capsys.readouterr().err
    assert (run / "last" / "model.safetensors").read_bytes() == weights


def test_the_store_threshold_is_calibrated_on_val_at_the_final_weights(monkeypatch):
    from training.engine import Trainer

    trainer = Trainer.__new__(Trainer)  # only the calibration logic: no model, no data
    evaluated = []

    def fake_evaluation(split, score_threshold=None):
        evaluated.append(split)
        trainer._last_val = (trainer.step, {"best_f1_score_threshold": {"threshold": 0.123456, "precision": 0.9,
                                                                        "recall": 0.8, "f1": 0.85}})
        return trainer._last_val[1]

    monkeypatch.setattr(trainer, "record_evaluation", fake_evaluation)
    trainer.step, trainer._last_val = 700, (350, {"best_f1_score_threshold": {"threshold": 0.9}})
    assert trainer.calibrated_score_threshold() == 0.1235 and evaluated == ["val"], "stale val results re-evaluated"
    assert trainer.calibrated_score_threshold() == 0.1235 and evaluated == ["val"], "current val results reused"
    trainer.step, trainer._last_val = 800, (800, {"best_f1_score_threshold": None})
    assert trainer.calibrated_score_threshold() is None and evaluated == ["val"]


def test_gradnorm_leaves_the_weights_alone_until_its_start_step(tmp_path):
    from training.train import main

    def gradnorm_state(name: str, start_step: int) -> dict:
        arguments = tiny_run_arguments(tmp_path / name, steps=3) + ["--gradnorm.start_step", str(start_step)]
        assert main(arguments) == 0
        return torch.load(tmp_path / name / "run" / "last" / "trainer_state.pt", weights_only=False)["gradnorm"]

    waiting = gradnorm_state("waiting", start_step=3)  # steps 0-2 come before it
    assert torch.isnan(waiting["initial_losses"]).all()
    assert all(float(v) == 0.0 for k, v in waiting.items() if k.startswith("log_weights")), "weights moved"
    started = gradnorm_state("started", start_step=1)
    assert torch.isfinite(started["initial_losses"]).any()
    assert any(float(v) != 0.0 for k, v in started.items() if k.startswith("log_weights"))


def test_a_run_stops_when_its_time_budget_is_spent(tmp_path, caplog):
    from training.train import main

    caplog.set_level(logging.WARNING, logger="training.engine")
    assert main(tiny_run_arguments(tmp_path, steps=50) + ["--optim.max_minutes", "0.00001"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["steps"] == 1 and (tmp_path / "run" / "final" / "model.safetensors").is_file()
    assert any("budget is spent" in r.getMessage() for r in caplog.records)

    # Run again: the budget is still spent, so the run is finished and trains nothing more ...
    assert main(tiny_run_arguments(tmp_path, steps=50) + ["--optim.max_minutes", "0.00001"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 1
    # ... until the budget is raised: then it continues from where it stopped.
    assert main(tiny_run_arguments(tmp_path, steps=3) + ["--optim.max_minutes", "60"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 3


def test_repeat_factor_sampling_reaches_the_sampler_for_sources_that_list_categories(tmp_path):
    from training.engine import Trainer

    arguments = tiny_run_arguments(tmp_path, steps=2)
    plain = Trainer(load_config(None, arguments))
    # The loader's batch sampler is the mixing sampler wrapped by the flip sampler.
    assert plain.repeat_factors() == {} and plain.loader().batch_sampler.batches.repeat_factors == {}
    trainer = Trainer(load_config(None, arguments + ["--data.repeat_factor_threshold", "0.9"]))
    factors = trainer.loader().batch_sampler.batches.repeat_factors
    # The detection source lists its images' categories; the referring-expression source does not.
    assert set(factors) == {"synthetic"} and len(factors["synthetic"]) == 12
    # With t = 0.9 every category seen in fewer than 90% of the 12 images is repeated.
    assert factors["synthetic"].max() > 1.0 and factors["synthetic"].min() >= 1.0


def test_flip_probability_one_mirrors_every_training_image(tmp_path):
    from training.engine import Trainer

    arguments = tiny_run_arguments(tmp_path, steps=2)
    plain = next(iter(Trainer(load_config(None, arguments + ["--data.flip_probability", "0"])).loader()))
    flipped = next(iter(Trainer(load_config(None, arguments + ["--data.flip_probability", "1"])).loader()))
    assert [t.image_id for t in flipped["targets"]] == [t.image_id for t in plain["targets"]]
    for a, b, image_a, image_b in zip(plain["targets"], flipped["targets"], plain["images"], flipped["images"]):
        # The synthetic images are square, so the letterboxed input is the whole image, mirrored.
        torch.testing.assert_close(image_b.float(), image_a.float().flip(-1), atol=1, rtol=0)
        torch.testing.assert_close(b.boxes[:, 0], 1 - a.boxes[:, 0])  # cx mirrored; cy, w, h kept
        torch.testing.assert_close(b.boxes[:, 1:], a.boxes[:, 1:])
        if a.masks is not None:
            torch.testing.assert_close(b.masks, a.masks.flip(-1))
        swapped = [p.replace("left", "@").replace("right", "left").replace("@", "right") for p in a.phrases]
        assert b.phrases == swapped
    synthetic = [t for t in plain["targets"] if t.source == "synthetic"]
    assert synthetic and all(len(t.object_captions) == len(t.boxes) for t in synthetic), \
        "the synthetic set's captions reach the caption head"


def test_an_image_seen_again_in_a_run_draws_its_phrases_afresh(tmp_path):
    """Each synthetic object is described by its caption ("a small red star") or its size-free phrase
    ("a red star"), drawn per access: over one run, an object seen several times gets both."""
    from training.engine import Trainer

    trainer = Trainer(load_config(None, tiny_run_arguments(tmp_path, steps=60)))
    forms: dict[tuple[int, int], list[bool]] = {}  # (image, object) -> per visit: was the phrase the caption?
    for batch in trainer.loader():
        for target in (t for t in batch["targets"] if t.source == "synthetic"):
            for k, (phrase, caption) in enumerate(zip(target.phrases, target.object_captions)):
                forms.setdefault((target.image_id, k), []).append(phrase == caption)
    revisited = [visits for visits in forms.values() if len(visits) >= 4]
    assert len(revisited) > 10, "most objects come back several times in 120 draws of 12 images"
    mixed = sum(len(set(visits)) == 2 for visits in revisited)
    assert mixed > 0.5 * len(revisited), f"only {mixed} of {len(revisited)} revisited objects saw both forms"


def test_a_synthetic_directory_holding_another_set_is_refused_without_a_traceback(tmp_path, capsys):
    from training.train import main

    arguments = tiny_run_arguments(tmp_path, steps=1)
    (tmp_path / "synthetic").mkdir()
    (tmp_path / "synthetic" / "dataset.json").write_text(json.dumps({"generator_version": 1, "config": {}}))
    assert main(arguments) == 2
    error = capsys.readouterr().err
    assert error.startswith("error:") and "holds a different synthetic set" in error
    assert not (tmp_path / "run").exists()


def test_mixed_precision_runs_the_forward_in_bfloat16_and_keeps_float32_weights(tmp_path):
    from training.criterion import task_losses
    from training.denoising import build_denoising_queries
    from training.engine import Trainer

    arguments = tiny_run_arguments(tmp_path, steps=2)
    assert not Trainer(load_config(None, arguments + ["--amp", "false"])).mixed_precision
    trainer = Trainer(load_config(None, arguments))
    batch = next(iter(trainer.loader()))
    images = trainer.model.normalize(batch["images"])
    trainer.set_mixed_precision(True)  # as on a CPU with AVX512-BF16, whatever this machine has
    # ... which on CPU also swaps the ViT's fused attention for explicit attention in the training
    # forward pass: the same features, and timm's fused attention back afterwards.
    assert trainer.explicit_attention
    backbone = trainer.model.backbone
    attention_modules = [m for m in backbone.modules() if hasattr(m, "fused_attn")]
    assert attention_modules and all(m.fused_attn for m in attention_modules)
    with torch.no_grad():
        fused = backbone(images)
        with backbone.explicit_attention():
            assert not any(m.fused_attn for m in attention_modules)
            explicit = backbone(images)
    torch.testing.assert_close(explicit, fused, atol=1e-4, rtol=1e-4)
    assert all(m.fused_attn for m in attention_modules)
    extra, pairs = build_denoising_queries([t.boxes for t in batch["targets"]], 3, 0.4)

    def losses(autocast: bool) -> dict[str, float]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            terms = trainer.wrapped(images, batch["targets"], extra, 3, pairs)
        return {name: float(value) for name, value in task_losses(terms, trainer.config.loss).items()}

    # The same weights and batch give the same task losses in bfloat16 as in float32, within bf16's
    # precision: no loss term overflows or collapses under autocast.
    full, half = losses(False), losses(True)
    assert full.keys() == half.keys()
    for name in full:
        assert half[name] == pytest.approx(full[name], rel=0.05, abs=0.02), name

    dtypes = []
    linear = trainer.model.backbone.vit.blocks[0].mlp.fc1  # a matrix product: bf16 under autocast
    hook = linear.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters() if p.requires_grad}
    stats = trainer.train_step(batch)
    hook.remove()
    assert dtypes == [torch.bfloat16]
    assert all(map(math.isfinite, stats.values()))
    after = dict(trainer.model.named_parameters())
    assert all(after[name].dtype == torch.float32 for name in before)
    assert sum(not torch.equal(before[name], after[name]) for name in before) > 0.9 * len(before)


def test_a_budget_that_will_end_the_run_early_is_logged_once_when_it_takes_over_the_schedule(tmp_path, caplog):
    from training.engine import Trainer

    trainer = Trainer(load_config(None, tiny_run_arguments(tmp_path, steps=2000)))
    batches = iter(trainer.loader())
    caplog.set_level(logging.WARNING, logger="training.engine")
    trainer.step, trainer.spent = 5, 0.0001  # the budget lasts 50,000 steps: the steps rule
    trainer.train_step(next(batches))
    assert trainer.clock_from_step is None and not caplog.records
    trainer.step, trainer.spent = 6, 0.01  # it lasts 600 of the 2000 steps: the clock rules from here
    trainer.train_step(next(batches))
    trainer.step, trainer.spent = 7, 0.011
    trainer.train_step(next(batches))
    assert trainer.clock_from_step == 6
    assert [r.getMessage() for r in caplog.records] == [
        "from step 6 the time budget sets the learning rate: at this speed it ends the run near step 600 of 2000, "
        "so the schedule depends on the machine's speed"]


def test_bfloat16_is_chosen_only_where_the_device_runs_it_natively(monkeypatch):
    from training.engine import fast_bfloat16

    for avx512_bf16, amx, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda value=avx512_bf16: value)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda value=amx: value)
        assert fast_bfloat16(torch.device("cpu")) is expected


def test_no_arguments_trains_the_tiny_preset_for_the_steps_and_minutes_its_help_promises(monkeypatch, capsys):
    """``python -m training.train`` alone, and with overrides only: the run it starts (the Trainer is
    replaced by a recorder) is the one ``--help`` describes."""
    import training.engine
    from training.train import main

    started = []

    class Recorder:
        def __init__(self, config: TrainConfig) -> None:
            started.append(config)

        def fit(self) -> dict:
            return {"test": {}}

    monkeypatch.setattr(training.engine, "Trainer", Recorder)
    assert main([]) == 0 and main(["--optim.steps", "5"]) == 0
    default, overridden = started
    assert (default.preset, default.output_dir, default.optim.steps, default.optim.max_minutes) == ("tiny", "runs/tiny", 2000, 27)
    assert (overridden.preset, overridden.optim.steps, overridden.optim.max_minutes) == ("tiny", 5, 27)
    capsys.readouterr()
    assert main(["--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert "the tiny model on a freshly generated synthetic set" in shown and "writing ``runs/tiny/final``" in shown
    assert "It trains 2000 steps or for 27 minutes, whichever ends first" in shown


@pytest.mark.parametrize("name", ["tiny", "base", "large"])
def test_every_shipped_preset_file_loads_by_name(name):
    """`python -m training.train base` must find training/presets/base.json and name the model preset."""
    from objsearch.model.config import PRESETS
    from training.config import load_config

    config = load_config(name)
    assert config.preset == name and config.preset in PRESETS
    assert config.output_dir == f"runs/{name}"
