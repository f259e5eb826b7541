import pandas as pd
import pytest

from emovox.errors import ConfigError
from emovox.labels import BUILTIN_LABEL_SETS, CANONICAL_EMOTIONS, LabelSet, get_label_set


def _table(emotions, genders=None):
    genders = genders or ["male"] * len(emotions)
    return pd.DataFrame({"path": [f"f{i}.wav" for i in range(len(emotions))],
                         "emotion": emotions, "speaker": "s", "gender": genders,
                         "corpus": "c"})


def test_builtin_sets_have_the_published_classes():
    assert BUILTIN_LABEL_SETS["ravdess8"].classes == [
        "neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    assert set(BUILTIN_LABEL_SETS["four"].classes) == {"angry", "sad", "disgust", "happy"}
    assert set(BUILTIN_LABEL_SETS["five"].classes) == {"angry", "calm", "fearful", "happy",
                                                        "sad"}
    assert set(BUILTIN_LABEL_SETS["common6"].classes) == {
        "angry", "disgust", "fearful", "happy", "neutral", "sad"}
    assert len(BUILTIN_LABEL_SETS["gender_emotion10"].classes) == 10
    assert "female_sad" in BUILTIN_LABEL_SETS["gender_emotion10"].classes


def test_valence_groupings_map_and_drop():
    table = _table(["happy", "calm", "angry", "fearful", "sad", "neutral", "disgust"])
    two, dropped = get_label_set("valence2").apply(table)
    assert two["label"].tolist() == ["positive", "positive", "negative", "negative", "negative"]
    assert dropped == {"neutral": 1, "disgust": 1}
    three, dropped = get_label_set("valence3").apply(table)
    assert three["label"].tolist() == ["positive", "neutral", "negative", "negative",
                                       "negative", "neutral"]
    assert dropped == {"disgust": 1}


def test_gender_emotion_needs_gender():
    table = _table(["angry", "sad", "angry", "neutral"], ["male", "female", None, "female"])
    out, dropped = get_label_set("gender_emotion10").apply(table)
    assert out["label"].tolist() == ["male_angry", "female_sad"]
    assert dropped == {"unknown gender": 1, "neutral": 1}


def test_label_column_is_ordered_categorical():
    out, _ = get_label_set("common6").apply(_table(["sad", "angry"]))
    assert list(out["label"].cat.categories) == BUILTIN_LABEL_SETS["common6"].classes


def test_custom_yaml_mapping(tmp_path):
    path = tmp_path / "arousal.yaml"
    path.write_text("classes:\n  high: [angry, happy, fearful]\n  low: [sad, calm, neutral]\n")
    label_set = get_label_set(str(path))
    assert label_set.name == "arousal"
    assert label_set.classes == ["high", "low"]
    assert label_set.map_row("fearful") == "high"
    assert LabelSet.from_dict(label_set.to_dict()) == label_set


@pytest.mark.parametrize("bad, message", [
    ({"classes": {"x": ["joy"]}}, "unknown emotion 'joy'"),
    ({"classes": {"x": ["sad"], "y": ["sad"]}}, "in both"),
    ({"classes": {"x": "sad"}}, "must list emotions"),
    ({}, "needs 'classes'"),
])
def test_bad_mappings_are_clear_errors(bad, message):
    with pytest.raises(ConfigError, match=message):
        get_label_set(bad)


def test_a_bad_value_is_quoted_on_one_line():
    """Found by fuzz/fuzz_bundle.py: a bundle.json class given as a string with a
    newline made the error span two lines."""
    with pytest.raises(ConfigError) as excinfo:
        get_label_set({"classes": {"x": "sad\nangry"}})
    assert "\n" not in str(excinfo.value) and "['sad\\nangry']" in str(excinfo.value)


def test_unknown_name():
    with pytest.raises(ConfigError, match="unknown label set"):
        get_label_set("nine")


def test_all_keeps_every_canonical_emotion():
    out, dropped = get_label_set("all").apply(_table(list(CANONICAL_EMOTIONS)))
    assert len(out) == len(CANONICAL_EMOTIONS) and not dropped
