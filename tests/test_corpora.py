"""Corpus adapters on synthetic trees with the real naming, and on the real corpora."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import real_corpus, requires_corpora, write_tone

from emovox.audio import load_audio
from emovox.corpora import (
    REQUIRED_COLUMNS,
    adapters,
    cremad,
    describe,
    detect_corpus,
    emodb,
    folder,
    load_corpus,
    manifest,
    plot_counts,
    savee,
    tess,
)
from emovox.corpora.names import normalise_emotion, normalise_gender
from emovox.errors import CorpusError

SHORT = 0.15  # seconds: every synthetic file is tiny


def _tone(path: Path, **kwargs) -> Path:
    return write_tone(path, duration=SHORT, **kwargs)


def _rows(table: pd.DataFrame) -> dict[str, dict]:
    """Rows keyed by file name, NaN turned into None."""
    table = table.astype(object).where(table.notna(), None)
    return {Path(r["path"]).name: r for r in table.to_dict(orient="records")}


def _failed(corpus) -> dict[str, str]:
    return {Path(p).name: reason for p, reason in corpus.failures}


# --------------------------------------------------------------------------- registry


def test_registry_order_puts_generic_adapters_last():
    assert list(adapters()) == [
        "ravdess",
        "crema-d",
        "emodb",
        "tess",
        "savee",
        "manifest",
        "folder",
    ]


def test_undetectable_folder_raises(tmp_path):
    _tone(tmp_path / "stuff" / "recording.wav")
    with pytest.raises(CorpusError, match="cannot tell which corpus"):
        detect_corpus(tmp_path)


def test_only_unparseable_files_is_an_error(tmp_path):
    _tone(tmp_path / "hello.wav")
    with pytest.raises(CorpusError, match=r"no utterances found as emodb \(1 files could not"):
        load_corpus(tmp_path, "emodb")


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Anger", "angry"),
        ("angry", "angry"),
        (" HAPPINESS ", "happy"),
        ("fear", "fearful"),
        ("Sadness", "sad"),
        ("disgusted", "disgust"),
        ("Surprise", "surprised"),
        ("pleasant surprise", "surprised"),
        ("Pleasant-Surprised", "surprised"),
        ("bored", "boredom"),
        ("calm", "calm"),
        ("NEU", "neutral"),
        ("excited", None),
        ("ps", None),
        ("", None),
        (None, None),
    ],
)
def test_normalise_emotion(name, expected):
    assert normalise_emotion(name) == expected


def test_normalise_emotion_extra_spellings():
    assert normalise_emotion("PS", extra={"ps": "surprised"}) == "surprised"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("M", "male"), ("female", "female"), ("Woman", "female"), ("", None), ("x", None)],
)
def test_normalise_gender(value, expected):
    assert normalise_gender(value) == expected


# --------------------------------------------------------------------------- CREMA-D


def _crema_tree(root: Path, demographics: bool) -> Path:
    audio = root / "AudioWAV"
    for stem in (
        "1001_DFA_ANG_XX",
        "1002_IEO_HAP_HI",
        "1002_IEO_NEU_XX",
        "1091_WSI_SAD_LO",
        "1003_TIE_FEA_MD",
        "1003_ITS_DIS_XX",
        # bad names
        "1001_XYZ_ANG_XX",
        "1001_DFA_ANG_ZZ",
        "1001_DFA_BOR_XX",
        "0999_DFA_ANG_XX",
        "hello",
    ):
        _tone(audio / f"{stem}.wav")
    if demographics:
        (root / "VideoDemographics.csv").write_text(
            '"ActorID","Age","Sex","Race","Ethnicity"\n'
            '1001,51,"Male","Caucasian","Not Hispanic"\n'
            '1002,21,"Female","African American","Hispanic"\n'
            '1003,,"Female","Asian","Not Hispanic"\n'
        )
    return root


def test_cremad_parse_name():
    assert cremad.parse_name("1001_DFA_ANG_XX") == {
        "emotion": "angry",
        "speaker": "crema-d:1001",
        "actor": 1001,
        "sentence": "DFA",
        "sentence_text": "Don't forget a jacket",
        "level": "unspecified",
    }
    assert len(cremad.SENTENCES) == 12
    with pytest.raises(ValueError, match="unknown sentence code XYZ"):
        cremad.parse_name("1001_XYZ_ANG_XX")


@pytest.mark.parametrize("sub", ["", "AudioWAV"])
def test_cremad_with_demographics(tmp_path, sub):
    root = _crema_tree(tmp_path / "crema-d", demographics=True)
    assert detect_corpus(root / sub) == "crema-d"
    corpus = load_corpus(root / sub)
    table = corpus.table
    assert list(table.columns[:5]) == list(REQUIRED_COLUMNS)
    rows = _rows(table)
    assert sorted(rows) == [
        "1001_DFA_ANG_XX.wav",
        "1002_IEO_HAP_HI.wav",
        "1002_IEO_NEU_XX.wav",
        "1003_ITS_DIS_XX.wav",
        "1003_TIE_FEA_MD.wav",
        "1091_WSI_SAD_LO.wav",
    ]
    first = rows["1001_DFA_ANG_XX.wav"]
    assert first["path"] == str((root / "AudioWAV" / "1001_DFA_ANG_XX.wav").resolve())
    assert first["emotion"] == "angry"
    assert first["speaker"] == "crema-d:1001"
    assert first["gender"] == "male"
    assert first["corpus"] == "crema-d"
    assert first["level"] == "unspecified"
    assert first["age"] == 51
    assert first["race"] == "Caucasian"
    assert first["ethnicity"] == "Not Hispanic"
    happy = rows["1002_IEO_HAP_HI.wav"]
    assert (happy["emotion"], happy["gender"], happy["level"]) == ("happy", "female", "high")
    assert (happy["race"], happy["ethnicity"]) == ("African American", "Hispanic")
    fear = rows["1003_TIE_FEA_MD.wav"]
    assert (fear["emotion"], fear["level"], fear["age"]) == ("fearful", "medium", None)
    sad = rows["1091_WSI_SAD_LO.wav"]  # actor not in the demographics file
    assert (sad["emotion"], sad["level"], sad["gender"]) == ("sad", "low", None)
    assert rows["1003_ITS_DIS_XX.wav"]["emotion"] == "disgust"
    assert rows["1002_IEO_NEU_XX.wav"]["emotion"] == "neutral"
    failed = _failed(corpus)
    assert set(failed) == {
        "1001_XYZ_ANG_XX.wav",
        "1001_DFA_ANG_ZZ.wav",
        "1001_DFA_BOR_XX.wav",
        "0999_DFA_ANG_XX.wav",
        "hello.wav",
    }
    assert "unknown emotion level ZZ" in failed["1001_DFA_ANG_ZZ.wav"]
    assert "unknown emotion code BOR" in failed["1001_DFA_BOR_XX.wav"]
    assert "actor 0999 outside" in failed["0999_DFA_ANG_XX.wav"]


def test_cremad_without_demographics(tmp_path):
    root = _crema_tree(tmp_path / "crema-d", demographics=False)
    table = load_corpus(root, "crema-d").table
    assert len(table) == 6
    assert table["gender"].isna().all()
    assert {"age", "race", "ethnicity", "level", "sentence"} <= set(table.columns)


def test_cremad_prefers_audiowav_and_reports_duplicates(tmp_path):
    root = _crema_tree(tmp_path / "crema-d", demographics=True)
    _tone(root / "AudioMP3" / "1001_DFA_ANG_XX.flac")  # not read: AudioWAV wins
    _tone(root / "AudioWAV" / "copies" / "1001_DFA_ANG_XX.flac")
    corpus = load_corpus(root)
    assert len(corpus.table) == 6
    assert not any("AudioMP3" in p for p in corpus.table["path"])
    duplicates = [r for p, r in corpus.failures if "copies" in p]
    assert len(duplicates) == 1 and duplicates[0].startswith("duplicate utterance")


def test_cremad_bad_demographics_raises(tmp_path):
    root = _crema_tree(tmp_path / "crema-d", demographics=False)
    (root / "VideoDemographics.csv").write_text("ActorID,Age\n1001,51\n")
    with pytest.raises(CorpusError, match=r"missing column.*Sex, Race, Ethnicity"):
        load_corpus(root, "crema-d")


# --------------------------------------------------------------------------- EmoDB


def test_emodb_parse_and_load(tmp_path):
    root = tmp_path / "emodb" / "wav"
    for stem in ("03a01Fa", "08b10Wc", "16a07Lb", "11b09Nd", "13a04Ea", "09b02Ab", "12a05Ta"):
        _tone(root / f"{stem}.wav")
    for stem in ("04a01Fa", "03a03Fa", "03a01Xa", "readme"):
        _tone(root / f"{stem}.flac")
    assert detect_corpus(tmp_path / "emodb") == "emodb"
    corpus = load_corpus(tmp_path / "emodb")
    rows = _rows(corpus.table)
    assert rows["03a01Fa.wav"] == {
        "path": str((root / "03a01Fa.wav").resolve()),
        "emotion": "happy",
        "speaker": "emodb:03",
        "gender": "male",
        "corpus": "emodb",
        "text": "a01",
        "version": "a",
    }
    expected = {
        "08b10Wc.wav": ("angry", "emodb:08", "female", "b10", "c"),
        "16a07Lb.wav": ("boredom", "emodb:16", "female", "a07", "b"),
        "11b09Nd.wav": ("neutral", "emodb:11", "male", "b09", "d"),
        "13a04Ea.wav": ("disgust", "emodb:13", "female", "a04", "a"),
        "09b02Ab.wav": ("fearful", "emodb:09", "female", "b02", "b"),
        "12a05Ta.wav": ("sad", "emodb:12", "male", "a05", "a"),
    }
    for name, values in expected.items():
        row = rows[name]
        assert (row["emotion"], row["speaker"], row["gender"], row["text"], row["version"]) == (
            values
        )
    failed = _failed(corpus)
    assert set(failed) == {"04a01Fa.flac", "03a03Fa.flac", "03a01Xa.flac", "readme.flac"}
    assert "unknown speaker 04" in failed["04a01Fa.flac"]
    assert "unknown text code a03" in failed["03a03Fa.flac"]
    assert "unknown emotion letter X" in failed["03a01Xa.flac"]


# --------------------------------------------------------------------------- TESS

TESS_FOLDERS = {
    "OAF_angry": ("OAF", "angry", "angry"),
    "OAF_disgust": ("OAF", "disgust", "disgust"),
    "OAF_Fear": ("OAF", "fearful", "fear"),
    "OAF_happy": ("OAF", "happy", "happy"),
    "OAF_neutral": ("OAF", "neutral", "neutral"),
    "OAF_Pleasant_surprise": ("OAF", "surprised", "ps"),
    "OAF_Sad": ("OAF", "sad", "sad"),
    "YAF_angry": ("YAF", "angry", "angry"),
    "YAF_disgust": ("YAF", "disgust", "disgust"),
    "YAF_fear": ("YAF", "fearful", "fear"),
    "YAF_happy": ("YAF", "happy", "happy"),
    "YAF_neutral": ("YAF", "neutral", "neutral"),
    "YAF_pleasant_surprised": ("YAF", "surprised", "ps"),
    "YAF_sad": ("YAF", "sad", "sad"),
}


@pytest.fixture
def tess_root(tmp_path) -> Path:
    data = tmp_path / "TESS Toronto emotional speech set data"
    for folder_name, (speaker, _, word) in TESS_FOLDERS.items():
        _tone(data / folder_name / f"{speaker}_back_{word}.wav", sample_rate=24_414)
    # misnamed files seen in public copies
    _tone(data / "OAF_neutral" / "OA_bite_neutral.wav")  # speaker prefix cut short
    _tone(data / "YAF_angry" / "YAF_germ_angry.wav", format="AIFF")  # AIFF named .wav
    _tone(data / "YAF_sad" / "YAF_dog_happy.wav")  # emotion disagrees with folder
    _tone(data / "OAF_Fear" / "OAF_bath_fear.wav", sample_rate=96_000)
    _tone(data / "YAF_late_sad.wav")  # outside the folders: the name decides
    _tone(data / "notes.wav")  # outside the folders and no TESS name
    return tmp_path


def test_tess_folder_names():
    for folder_name, (speaker, emotion, _) in TESS_FOLDERS.items():
        assert tess.parse_folder(folder_name) == (speaker, emotion)
    assert tess.parse_folder("OAF_excited") is None
    assert tess.parse_folder("angry") is None


def test_tess_load(tess_root):
    assert detect_corpus(tess_root) == "tess"
    corpus = load_corpus(tess_root)
    rows = _rows(corpus.table)
    assert len(rows) == len(TESS_FOLDERS) + 5
    for folder_name, (speaker, emotion, word) in TESS_FOLDERS.items():
        row = rows[f"{speaker}_back_{word}.wav"]
        assert Path(row["path"]).parent.name == folder_name
        assert (row["emotion"], row["speaker"], row["gender"], row["corpus"]) == (
            emotion,
            f"tess:{speaker}",
            "female",
            "tess",
        )
        assert row["age_group"] == {"OAF": "older", "YAF": "younger"}[speaker]
        assert row["word"] == "back"
        assert row["name_mismatch"] is False
        assert row["name_issue"] is None

    cut = rows["OA_bite_neutral.wav"]
    assert (cut["speaker"], cut["emotion"], cut["word"], cut["age_group"]) == (
        "tess:OAF",
        "neutral",
        "bite",
        "older",
    )
    assert cut["name_mismatch"] is True
    assert cut["name_issue"] == "speaker OA in name, OAF in folder"

    wrong = rows["YAF_dog_happy.wav"]
    assert (wrong["speaker"], wrong["emotion"], wrong["name_mismatch"]) == (
        "tess:YAF",
        "sad",
        True,
    )
    assert wrong["name_issue"] == "emotion 'happy' in name, sad from folder"

    aiff = rows["YAF_germ_angry.wav"]
    assert (aiff["emotion"], aiff["speaker"], aiff["name_mismatch"]) == (
        "angry",
        "tess:YAF",
        False,
    )
    assert sf.info(aiff["path"]).format == "AIFF"
    assert load_audio(aiff["path"]).size == round(SHORT * 16_000)

    assert rows["OAF_bath_fear.wav"]["emotion"] == "fearful"
    loose = rows["YAF_late_sad.wav"]
    assert (loose["speaker"], loose["emotion"], loose["word"]) == ("tess:YAF", "sad", "late")

    failed = _failed(corpus)
    assert list(failed) == ["notes.wav"]
    assert "not OAF or YAF" in failed["notes.wav"]


def test_tess_single_folder_root(tess_root):
    folder_root = tess_root / "TESS Toronto emotional speech set data" / "OAF_neutral"
    assert detect_corpus(folder_root) == "tess"
    table = load_corpus(folder_root).table
    assert sorted(table["emotion"]) == ["neutral", "neutral"]
    assert set(table["speaker"]) == {"tess:OAF"}


def test_tess_parse_name_without_folder():
    assert tess.parse_name("OAF_back_ps") == {
        "emotion": "surprised",
        "speaker": "tess:OAF",
        "gender": "female",
        "age_group": "older",
        "word": "back",
        "name_mismatch": False,
        "name_issue": None,
    }
    with pytest.raises(ValueError, match="emotion 'excited' in name not recognised"):
        tess.parse_name("OAF_back_excited")


# --------------------------------------------------------------------------- SAVEE


def test_savee_parse_name():
    assert savee.parse_name("DC_sa01") == {
        "emotion": "sad",
        "speaker": "savee:DC",
        "gender": "male",
        "take": 1,
    }
    assert savee.parse_name("su15", folder="KL")["emotion"] == "surprised"
    assert savee.parse_name("a03", folder="JE")["speaker"] == "savee:JE"
    with pytest.raises(ValueError, match="not SPEAKER_CODE"):
        savee.parse_name("DC_s01")
    with pytest.raises(ValueError, match="has no speaker"):
        savee.parse_name("a01", folder="misc")


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_savee_layouts(tmp_path, layout):
    files = {
        ("DC", "a01"): ("angry", 1),
        ("DC", "d02"): ("disgust", 2),
        ("JE", "f03"): ("fearful", 3),
        ("JE", "h04"): ("happy", 4),
        ("JK", "n30"): ("neutral", 30),
        ("JK", "sa05"): ("sad", 5),
        ("KL", "su15"): ("surprised", 15),
    }
    root = tmp_path / "savee"
    for speaker, code in files:
        name = f"ALL/{speaker}_{code}.wav" if layout == "flat" else f"{speaker}/{code}.wav"
        _tone(root / name)
    bad = ["ALL/DC_s01.wav", "ALL/XY_a01.wav"] if layout == "flat" else ["misc/a01.wav"]
    for name in bad:
        _tone(root / name)
    assert detect_corpus(root) == "savee"
    corpus = load_corpus(root)
    table = corpus.table
    assert len(table) == len(files)
    assert set(table["gender"]) == {"male"}
    assert set(table["corpus"]) == {"savee"}
    for (speaker, code), (emotion, take) in files.items():
        name = f"{speaker}_{code}.wav" if layout == "flat" else f"{code}.wav"
        row = table[
            (table["speaker"] == f"savee:{speaker}") & table["path"].str.endswith("/" + name)
        ]
        assert len(row) == 1, (speaker, code)
        assert (row["emotion"].item(), row["take"].item()) == (emotion, take)
    assert sorted(Path(p).name for p, _ in corpus.failures) == sorted(Path(b).name for b in bad)


# --------------------------------------------------------------------------- folder-per-label


def test_folder_per_label(tmp_path):
    root = tmp_path / "mine"
    _tone(root / "Anger" / "a.wav")
    _tone(root / "happiness" / "spk1" / "b.wav")
    _tone(root / "SAD" / "c.flac", format="FLAC")
    _tone(root / "Surprise" / "x" / "session2" / "z.wav")
    _tone(root / "bored" / "e.ogg", format="OGG", subtype="VORBIS")
    _tone(root / "excited" / "d.wav")
    _tone(root / "loose.wav")
    assert detect_corpus(root) == "folder"
    corpus = load_corpus(root)
    rows = _rows(corpus.table)
    assert {name: (r["emotion"], r["speaker"], r["label_folder"]) for name, r in rows.items()} == {
        "a.wav": ("angry", "folder:unknown", "Anger"),
        "b.wav": ("happy", "folder:spk1", "happiness"),
        "c.flac": ("sad", "folder:unknown", "SAD"),
        "z.wav": ("surprised", "folder:x", "Surprise"),
        "e.ogg": ("boredom", "folder:unknown", "bored"),
    }
    assert rows["a.wav"]["note"] == folder.NO_SPEAKER_NOTE
    assert rows["b.wav"]["note"] is None
    assert all(r["gender"] is None and r["corpus"] == "folder" for r in rows.values())
    failed = _failed(corpus)
    assert set(failed) == {"d.wav", "loose.wav"}
    assert "label folder 'excited' is not a known emotion name" in failed["d.wav"]
    assert "angry" in failed["d.wav"] and "happiness" in failed["d.wav"]
    assert "not inside a label folder" in failed["loose.wav"]


def test_folder_not_detected_for_unrelated_subfolders(tmp_path):
    for name in ("session1", "session2", "angry"):
        _tone(tmp_path / name / "x.wav")
    assert not folder.detect(tmp_path)


# --------------------------------------------------------------------------- manifests


def test_manifest_csv(tmp_path):
    root = tmp_path / "m"
    a = _tone(root / "audio" / "a.wav")
    b = _tone(tmp_path / "elsewhere" / "b.flac")
    _tone(root / "audio" / "c.wav")
    (root / "audio" / "notes.txt").write_text("not audio")
    csv = root / "list.csv"
    csv.write_text(
        "path,emotion,speaker,gender,session\n"
        "audio/a.wav,Anger,s1,F,one\n"
        f"{b},happiness,,m,\n"
        "audio/missing.wav,sad,s1,f,two\n"
        "audio/c.wav,excited,s2,f,two\n"
        "audio/notes.txt,sad,s2,f,two\n"
        "audio/a.wav,angry,s1,f,one\n"
        ",sad,s2,f,two\n"
        "audio/c.wav,NEU,s2,x,three\n"
    )
    assert detect_corpus(csv) == "manifest"
    corpus = load_corpus(csv)
    rows = _rows(corpus.table)
    assert rows == {
        "a.wav": {
            "path": str(a.resolve()),
            "emotion": "angry",
            "speaker": "manifest:s1",
            "gender": "female",
            "corpus": "manifest",
            "session": "one",
        },
        "b.flac": {
            "path": str(b.resolve()),
            "emotion": "happy",
            "speaker": "manifest:unknown",
            "gender": "male",
            "corpus": "manifest",
            "session": None,
        },
        "c.wav": {
            "path": str((root / "audio" / "c.wav").resolve()),
            "emotion": "neutral",
            "speaker": "manifest:s2",
            "gender": None,
            "corpus": "manifest",
            "session": "three",
        },
    }
    reasons = [reason for _, reason in corpus.failures]
    assert reasons == [
        "list.csv line 4: file not found: audio/missing.wav",
        "list.csv line 5: unknown emotion 'excited'; known: " + reasons[1].split("known: ")[1],
        "list.csv line 6: not an audio file soundfile reads: audio/notes.txt",
        "list.csv line 7: duplicate of line 2",
        "list.csv line 8: empty path",
    ]
    assert reasons[1].split("known: ")[1].startswith("neutral, calm, happy")


def test_manifest_tsv_with_corpus_column(tmp_path):
    a = _tone(tmp_path / "x" / "a.wav")
    b = _tone(tmp_path / "x" / "b.wav")
    tsv = tmp_path / "list.tsv"
    tsv.write_text(
        "Path\tEmotion\tSpeaker\tcorpus\tnote, with comma\n"
        "x/a.wav\tfear\t7\tmydata\tfirst, yes\n"
        "x/b.wav\tdisgusted\tmydata:8\tmydata\t\n"
    )
    assert detect_corpus(tsv) == "manifest"
    corpus = load_corpus(tsv)
    assert corpus.failures == []
    rows = _rows(corpus.table)
    assert rows["a.wav"]["path"] == str(a.resolve())
    assert (rows["a.wav"]["emotion"], rows["a.wav"]["speaker"], rows["a.wav"]["corpus"]) == (
        "fearful",
        "mydata:7",
        "mydata",
    )
    assert rows["a.wav"]["note, with comma"] == "first, yes"
    assert rows["a.wav"]["gender"] is None
    assert rows["b.wav"]["path"] == str(b.resolve())
    assert (rows["b.wav"]["emotion"], rows["b.wav"]["speaker"]) == ("disgust", "mydata:8")


def test_manifest_missing_columns(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("file,label\na.wav,angry\n")
    assert not manifest.detect(csv)
    with pytest.raises(CorpusError, match=r"lacks required column\(s\) path, emotion"):
        load_corpus(csv, "manifest")
    csv.write_text("path,label\na.wav,angry\n")
    with pytest.raises(CorpusError, match=r"column\(s\) emotion \(found: path, label"):
        load_corpus(csv, "manifest")


def test_manifest_roundtrip_of_a_loaded_table(tmp_path):
    root = tmp_path / "emodb"
    for stem in ("03a01Fa", "08b10Wc"):
        _tone(root / f"{stem}.wav")
    table = load_corpus(root).table
    csv = tmp_path / "table.csv"
    table.to_csv(csv, index=False)
    again = load_corpus(csv).table
    assert list(again["speaker"]) == list(table["speaker"])
    assert list(again["corpus"]) == ["emodb", "emodb"]
    assert list(again["gender"]) == list(table["gender"])


# --------------------------------------------------------------------------- describe


def _small_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [f"/x/{i}.wav" for i in range(6)],
            "emotion": ["angry", "angry", "sad", "neutral", "boredom", "angry"],
            "speaker": ["c:1", "c:1", "c:2", "c:2", "d:9", "d:9"],
            "gender": ["male", "male", "female", "female", None, None],
            "corpus": ["c", "c", "c", "c", "d", "d"],
        }
    )


def test_describe_counts():
    tables = describe(_small_table())
    assert set(tables) == {"emotion", "speaker", "gender", "corpus"}
    emotion = tables["emotion"]
    assert list(emotion.index) == ["neutral", "sad", "angry", "boredom"]
    assert list(emotion["count"]) == [1, 1, 3, 1]
    assert emotion.loc["angry", "fraction"] == pytest.approx(0.5)

    speaker = tables["speaker"]
    assert list(speaker.index) == ["c:1", "c:2", "d:9"]
    assert list(speaker["gender"]) == ["male", "female", "unknown"]
    assert list(speaker["corpus"]) == ["c", "c", "d"]
    assert list(speaker["count"]) == [2, 2, 2]
    assert list(speaker["angry"]) == [2, 0, 1]
    assert list(speaker["boredom"]) == [0, 0, 1]

    gender = tables["gender"]
    assert list(gender.index) == ["female", "male", "unknown"]
    assert list(gender["count"]) == [2, 2, 2]
    assert list(gender["speakers"]) == [1, 1, 1]
    assert list(gender["sad"]) == [1, 0, 0]

    corpus = tables["corpus"]
    assert list(corpus.index) == ["c", "d"]
    assert corpus.loc["c"].to_dict() == {
        "count": 4,
        "speakers": 2,
        "female": 1,
        "male": 1,
        "neutral": 1,
        "sad": 1,
        "angry": 2,
        "boredom": 0,
    }
    assert (corpus.loc["d", "female"], corpus.loc["d", "male"]) == (0, 0)


def test_plot_counts_writes_png_atomically(tmp_path):
    out = plot_counts(_small_table(), tmp_path / "plots" / "counts.png")
    assert out == tmp_path / "plots" / "counts.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in out.parent.iterdir()] == ["counts.png"]
    plot_counts(_small_table().iloc[:2], out)  # overwrite in place
    assert [p.name for p in out.parent.iterdir()] == ["counts.png"]


# --------------------------------------------------------------------------- conftest helpers


def test_write_tone_options(tmp_path):
    path = write_tone(tmp_path / "t.wav", duration=0.25, sample_rate=8000, channels=2,
                      subtype="PCM_24")
    info = sf.info(str(path))
    assert (info.frames, info.samplerate, info.channels, info.subtype) == (2000, 8000, 2, "PCM_24")
    aiff = write_tone(tmp_path / "t2.wav", format="AIFF")
    assert sf.info(str(aiff)).format == "AIFF"


# --------------------------------------------------------------------------- real corpora


def _counts(table: pd.DataFrame, column: str) -> dict:
    return {k: int(v) for k, v in table[column].value_counts().sort_index().items()}


@requires_corpora
def test_real_emodb():
    root = real_corpus("emodb")
    assert detect_corpus(root) == "emodb"
    assert detect_corpus(root / "wav") == "emodb"
    corpus = load_corpus(root)
    assert corpus.failures == []
    table = corpus.table
    assert len(table) == 535
    assert _counts(table, "emotion") == {
        "angry": 127,
        "boredom": 81,
        "disgust": 46,
        "fearful": 69,
        "happy": 71,
        "neutral": 79,
        "sad": 62,
    }
    speakers = table.drop_duplicates("speaker").set_index("speaker")["gender"]
    assert len(speakers) == 10
    assert _counts(speakers.to_frame(), "gender") == {"female": 5, "male": 5}
    assert sorted(table["text"].unique()) == sorted(emodb.TEXTS)


@requires_corpora
def test_real_ravdess():
    speech = load_corpus(real_corpus("ravdess/Audio_Speech_Actors_01-24"))
    assert speech.failures == []
    assert len(speech.table) == 1440
    assert _counts(speech.table, "emotion") == {
        "neutral": 96,
        **{e: 192 for e in ("calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")},
    }
    assert speech.table["speaker"].nunique() == 24
    assert set(speech.table["channel"]) == {"speech"}

    song = load_corpus(real_corpus("ravdess/Audio_Song_Actors_01-24"))
    assert song.failures == []
    assert len(song.table) == 1012
    assert _counts(song.table, "emotion") == {
        "neutral": 92,
        **{e: 184 for e in ("calm", "happy", "sad", "angry", "fearful")},
    }
    assert song.table["speaker"].nunique() == 23
    assert "ravdess:18" not in set(song.table["speaker"])
    for sub in ("ravdess", "ravdess/Audio_Speech_Actors_01-24", "ravdess/Audio_Song_Actors_01-24"):
        assert detect_corpus(real_corpus(sub)) == "ravdess"


@requires_corpora
def test_real_cremad():
    root = real_corpus("crema-d")
    assert detect_corpus(root) == "crema-d"
    assert detect_corpus(root / "AudioWAV") == "crema-d"
    corpus = load_corpus(root)
    assert corpus.failures == []
    table = corpus.table
    assert len(table) == 1621
    assert _counts(table, "emotion") == {
        "angry": 277,
        "disgust": 277,
        "fearful": 277,
        "happy": 277,
        "neutral": 236,
        "sad": 277,
    }
    assert _counts(table, "level") == {"high": 100, "low": 100, "medium": 100, "unspecified": 1321}
    assert table["speaker"].nunique() == 20
    assert sorted(table["actor"].unique()) == list(range(1001, 1021))
    speakers = table.drop_duplicates("speaker")
    assert _counts(speakers, "gender") == {"female": 12, "male": 8}
    # a few recordings are absent from the distribution: 1002 lacks TIE/NEU, and
    # 1008, 1009, 1019 each lack all six takes of one sentence
    per_actor = table["actor"].value_counts()
    assert per_actor[1002] == 81
    assert per_actor[[1008, 1009, 1019]].tolist() == [76, 76, 76]
    assert (per_actor.drop([1002, 1008, 1009, 1019]) == 82).all()
    assert table["age"].notna().all()
    # the same result from the AudioWAV folder (demographics found in the parent)
    again = load_corpus(root / "AudioWAV").table
    pd.testing.assert_frame_equal(again, table)


@requires_corpora
def test_real_corpora_describe_and_combine(tmp_path):
    root = real_corpus("emodb").parent
    corpus = load_corpus(root / "emodb") + load_corpus(root / "crema-d")
    tables = describe(corpus.table)
    assert tables["corpus"].loc["emodb", "count"] == 535
    assert tables["corpus"].loc["crema-d", ["female", "male"]].tolist() == [12, 8]
    assert tables["speaker"].shape[0] == 30
    assert plot_counts(corpus.table, tmp_path / "counts.png").stat().st_size > 1000
