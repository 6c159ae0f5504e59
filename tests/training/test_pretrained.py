"""A pretrained part that cannot be fetched (no network, nothing in the Hugging Face cache): training stops
at once with one line that names the part and the key to go on with, exit status 2, no traceback.

No test here touches the network: ``HF_HUB_OFFLINE`` makes the hub client read only the (empty) cache."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from objsearch.errors import PretrainedUnavailable
from objsearch.model.config import preset
from tests.conftest import REPO


def _small_data(directory) -> list[str]:
    """A few synthetic images, so a run that failed to stop early gets to the model quickly too."""
    return ["--data.synthetic_dir", str(directory), "--data.synthetic_train", "4", "--data.synthetic_val", "2",
            "--data.synthetic_test", "2"]


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    """In this process: the hub client in offline mode over an empty cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_offline_base_training_stops_at_once_naming_the_image_encoder_and_its_key(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_HUB_CACHE", None)
    synthetic = tmp_path / "synthetic"
    done = subprocess.run([sys.executable, "-m", "training.train", "base", *_small_data(synthetic),
                           "--output_dir", str(tmp_path / "run")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "image encoder" in errors[0] and "vit_base_patch16_224" in errors[0]
    assert "--model.backbone_pretrained false" in errors[0] and "HF_HUB_OFFLINE" in errors[0]
    assert not synthetic.exists(), "it should stop before generating the training data"


def test_offline_training_with_a_hub_text_model_names_the_text_encoder_and_its_key(tmp_path, capsys,
                                                                                   offline_empty_cache):
    from training.train import main

    synthetic = tmp_path / "synthetic"
    code = main(["base", "--model.backbone_pretrained", "false", *_small_data(synthetic),
                 "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert "text encoder 'bert-base-uncased'" in errors[0] and "--model.text_model" in errors[0]
    assert "image encoder" not in errors[0]
    assert not synthetic.exists()


def test_the_model_itself_reports_a_part_it_cannot_fetch(offline_empty_cache):
    """Past the early check (the cache emptied meanwhile, a proxy that answers HEAD only): the load fails,
    and the model build turns the hub's error into the same domain error."""
    from objsearch.model.backbone import ViTBackbone
    from objsearch.model.text import TextEncoder

    with pytest.raises(PretrainedUnavailable, match="image encoder.*--model.backbone_pretrained false") as caught:
        ViTBackbone(preset("tiny", backbone_pretrained=True))
    assert caught.value.part == "image encoder" and "\n" not in str(caught.value)
    with pytest.raises(PretrainedUnavailable, match="text encoder 'objsearch-tests/no-such-model'.*--model.text_model"):
        TextEncoder(preset("tiny", text_model="objsearch-tests/no-such-model"))


def test_parts_that_need_nothing_fetched_pass_the_check(offline_empty_cache, tmp_path):
    from objsearch.model.pretrained import check_pretrained

    check_pretrained(preset("tiny"))  # from-scratch ViT, the MiniLM shipped in a package
    check_pretrained(preset("base", backbone_pretrained=False, text_config={"model_type": "bert"}))  # a checkpoint's
    with pytest.raises(PretrainedUnavailable, match="does not exist"):
        check_pretrained(preset("base", text_config={"model_type": "bert"},
                                backbone_kwargs={"pretrained_cfg_overlay": {"file": str(tmp_path / "vit.pth")}}))
