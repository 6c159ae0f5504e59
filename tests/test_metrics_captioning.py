"""objsearch.metrics CIDEr-D and caption tokenisation against pycocoevalcap."""

from __future__ import annotations

import contextlib
import io
import math
import shutil

import numpy as np
import pytest

from objsearch import metrics

# ---------------------------------------------------------------------------------------------
# Captioning: CIDEr-D
# ---------------------------------------------------------------------------------------------

VOCAB = ["a", "the", "man", "dog", "red", "ball", "on", "grass", "runs", "with", "two", "small"]


def _sentence(rng, min_len: int = 1) -> str:
    return " ".join(rng.choice(VOCAB, size=int(rng.integers(min_len, 11))))


@pytest.mark.parametrize("seed", range(5))
def test_cider_d_matches_pycocoevalcap(seed):
    from pycocoevalcap.cider.cider import Cider

    rng = np.random.default_rng(seed)
    keys = [f"img{i}" for i in range(int(rng.integers(2, 25)))]
    candidates = {key: _sentence(rng) for key in keys}
    candidates[keys[0]] = ""  # an empty caption scores 0 in both
    references = {key: [_sentence(rng) for _ in range(int(rng.integers(1, 6)))] for key in keys}
    candidates[keys[1]] = references[keys[1]][0]  # one exact match

    ref_score, ref_scores = Cider().compute_score(references, {key: [candidates[key]] for key in keys})
    score, scores = metrics.cider_d(candidates, references, tokenize=False)
    assert score == pytest.approx(ref_score, abs=1e-6)
    assert scores == pytest.approx(np.asarray(ref_scores), abs=1e-6)
    assert scores[0] == 0.0 and scores[1] > 0


def test_cider_d_of_raw_captions_by_hand():
    references = {1: ["A dog."], 2: ["A cat."], 3: ["A fish."]}
    candidates = {1: "a DOG!", 2: "a cat purrs", 3: "the bird"}
    # Tokenised: "a" is in all 3 documents (weight log 3 - log 3 = 0); every other n-gram weighs log 3
    # (document frequency 1, or unseen). 1: unigram and bigram cosines 1, no 3- or 4-grams: 10 x 2/4.
    # 2: unigrams {cat, purrs} and bigrams {a cat, cat purrs} against {cat} and {a cat}: cosine 1/sqrt 2
    # each, the trigram meets nothing; 2 bigrams against 1: length penalty exp(-1 / (2 x 6^2)).
    # 3: nothing in common.
    expected = [5.0, 10 * (2 / math.sqrt(2)) / 4 * math.exp(-1 / 72), 0.0]
    score, scores = metrics.cider_d(candidates, references)
    assert scores == pytest.approx(expected, abs=1e-12) and score == pytest.approx(sum(expected) / 3, abs=1e-12)
    # Untokenised, "DOG!" is not "dog" and "cat." not "cat": no candidate scores.
    assert metrics.cider_d(candidates, references, tokenize=False)[1] == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)
    with pytest.raises(ValueError):
        metrics.cider_d({1: "a dog"}, {2: ["a dog"]})


def test_tokenizer_matches_ptb_tokenizer():
    assert shutil.which("java"), "Java is required to run pycocoevalcap's PTBTokenizer (install a JRE, e.g. openjdk-17)"
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    sentences = [
        "A man riding a wave on top of a surfboard.",
        "Two dogs, one black-and-white, playing in the snow!",
        "Isn't that the cat's toy? It's on the 2nd floor.",
        "The kids' bikes and we're done -- they'll go at 5:30pm, I'd say.",
        'A "red" bus (double-decker) parked: near 3.5 m; of the U.S. road...',
        "Three people are sitting at a table, eating pizza.",
        "There's a clock tower in the city's center at 12:45.",
        "Hello   WORLD\tagain  ",
    ]
    with contextlib.redirect_stderr(io.StringIO()):
        expected = PTBTokenizer().tokenize({i: [{"caption": s}] for i, s in enumerate(sentences)})
    for i, sentence in enumerate(sentences):
        assert metrics.tokenize_caption(sentence) == expected[i][0], sentence
