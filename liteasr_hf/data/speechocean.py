"""speechocean762: real English read by 250 non-native speakers (Mandarin first language), children and adults.

The corpus (Zhang et al., 2021; "free for commercial and non-commercial purposes", Apache-2.0 on its authors' dataset
card) holds 5,000 read prompts, 20 per speaker, 16 kHz WAV, in a ``train`` and a ``test`` half with disjoint
speakers (125 each), and every speaker's age and gender. The project ships a selection, made by
:func:`build_speechocean_set` from a checkout of the corpus:

- ``evaluation``: from the **test** half only, ``per_speaker_evaluation`` prompts of every test speaker;
- ``development``: prompts of a quarter of the **train** speakers (children and adults alike): what healing stops
  on and what settings are chosen on, so the evaluation speakers judge and nothing is tuned on them;
- ``calibration``: prompts of the other train speakers: what calibration and healing read (no transcripts needed;
  they are kept for provenance).

No speaker is in two splits. Speakers of 15 or younger are ``child``; the corpus has nobody aged 16 to 18.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import soundfile as sf
from tqdm.auto import tqdm

from ..atomic import atomic_directory
from .conditioning import to_mono_16k
from .speech_set import write_clip, write_metadata

#: Bumped when the selection recipe changes.
SPEECHOCEAN_SET_VERSION = 1
SPLITS = ("calibration", "development", "evaluation")
CHILD_MAX_AGE = 15
SOURCE = "speechocean762"


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One recorded prompt of the corpus."""

    id: str
    path: Path
    text: str
    speaker: str
    age: int
    gender: str
    half: str  # "train" or "test": the corpus's own split

    @property
    def group(self) -> str:
        return "real non-native child" if self.age <= CHILD_MAX_AGE else "real non-native adult"


def _table(path: Path) -> dict[str, str]:
    """A Kaldi table (``key value...`` per line) as a dict."""
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=1)  # tabs or spaces
        if parts:
            rows[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return rows


def read_speechocean(root: str | os.PathLike) -> list[Prompt]:
    """Every transcribed prompt of a speechocean762 checkout (folders ``train``, ``test`` and ``WAVE``)."""
    root = Path(root)
    prompts = []
    for half in ("train", "test"):
        folder = root / half
        needed = [folder / name for name in ("wav.scp", "text", "utt2spk", "spk2age", "spk2gender")]
        missing = [str(p) for p in needed if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"{root} is not a speechocean762 checkout: missing {', '.join(missing)}.")
        wavs, texts, speakers, ages, genders = (_table(p) for p in needed)
        for utt, text in sorted(texts.items()):
            speaker = speakers[utt]
            path = root / wavs[utt]
            if not path.is_file():
                raise FileNotFoundError(f"{path} (prompt {utt} of {half}) is missing from the checkout.")
            prompts.append(Prompt(id=f"so762-{utt}", path=path, text=" ".join(text.split()), speaker=f"so762-{speaker}",
                                  age=int(ages[speaker]), gender=genders[speaker], half=half))
    return prompts


def select_prompts(prompts: list[Prompt], seed: int = 0, development_share: float = 0.25,
                   per_speaker_evaluation: int = 2, per_speaker_development: int = 4, per_speaker_calibration: int = 4,
                   ) -> dict[str, list[Prompt]]:
    """Split ``prompts`` into speaker-disjoint ``calibration``, ``development`` and ``evaluation`` selections.

    Test speakers give the evaluation prompts; train speakers are shuffled within each group (children, adults) and
    ``development_share`` of each group goes to development, the rest to calibration. Each speaker's prompts are
    drawn at random (one seed) among those that name at least two words, so that single-word prompts do not
    dominate the WER.
    """
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[Prompt]] = {}
    for prompt in prompts:
        by_speaker.setdefault(prompt.speaker, []).append(prompt)

    def draw(speaker: str, count: int) -> list[Prompt]:
        pool = [p for p in by_speaker[speaker] if len(p.text.split()) >= 2] or by_speaker[speaker]
        picked = rng.choice(len(pool), size=min(count, len(pool)), replace=False)
        return [pool[int(i)] for i in sorted(picked)]

    speakers = {half: sorted({p.speaker for p in prompts if p.half == half}) for half in ("train", "test")}
    chosen: dict[str, list[Prompt]] = {split: [] for split in SPLITS}
    for speaker in speakers["test"]:
        chosen["evaluation"] += draw(speaker, per_speaker_evaluation)
    for group in ("real non-native child", "real non-native adult"):
        members = [s for s in speakers["train"] if by_speaker[s][0].group == group]
        members = [members[int(i)] for i in rng.permutation(len(members))]
        cut = round(development_share * len(members))
        for speaker in sorted(members[:cut]):
            chosen["development"] += draw(speaker, per_speaker_development)
        for speaker in sorted(members[cut:]):
            chosen["calibration"] += draw(speaker, per_speaker_calibration)
    return chosen


def build_speechocean_set(root: str | os.PathLike, output: str | os.PathLike, seed: int = 0, overwrite: bool = False,
                          progress: bool = True, **selection) -> dict[str, list[dict]]:
    """Write the selection (:func:`select_prompts`) of the checkout ``root`` to ``output/<split>`` audiofolders,
    atomically: evaluation in FLAC (lossless), calibration and development in Opus (a fifth of the size; what they
    feed is covariances and distillation, not WER). Returns each split's metadata rows."""
    chosen = select_prompts(read_speechocean(root), seed=seed, **selection)
    written: dict[str, list[dict]] = {}
    with atomic_directory(output, overwrite=overwrite) as out:
        out.chmod(0o755)
        for split, selected in chosen.items():
            folder = out / split
            folder.mkdir()
            rows = []
            for prompt in tqdm(selected, desc=f"speechocean762 {split}", unit="clip", disable=not progress):
                audio, rate = sf.read(prompt.path, dtype="float32")
                rows.append(write_clip(folder, prompt.id, to_mono_16k(audio, rate), {
                    "text": prompt.text, "speaker": prompt.speaker, "group": prompt.group, "age": prompt.age,
                    "gender": prompt.gender, "engine": "recording", "source": SOURCE, "corpus_split": prompt.half,
                }, codec="flac" if split == "evaluation" else "opus"))
            write_metadata(folder, rows)
            written[split] = rows
        (out / "README.md").write_text(data_card(written, seed), encoding="utf-8")
    return written


def data_card(written: dict[str, list[dict]], seed: int) -> str:
    """The folder's README: what each split holds, who speaks, where it comes from and under which terms."""
    lines = [
        "# speechocean762 selection: real non-native speakers, children and adults",
        "",
        "Written by `python scripts/make_speechocean_set.py --corpus CHECKOUT` "
        f"(`liteasr_hf.data.speechocean.build_speechocean_set`, recipe v{SPEECHOCEAN_SET_VERSION}, seed {seed}) "
        "from a checkout of github.com/jimbozhang/speechocean762; regenerate rather than edit.",
        "",
        "| split | corpus half | use | clips | speakers | children | adults | minutes | format |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    uses = {"calibration": "calibration and healing audio", "development": "healing's early stop, choosing settings",
            "evaluation": "evaluation only"}
    for split, rows in written.items():
        speakers = {r["speaker"]: r["group"] for r in rows}
        children = sum(g.endswith("child") for g in speakers.values())
        lines.append(f"| {split} | {rows[0]['corpus_split']} | {uses[split]} | {len(rows)} | {len(speakers)} | "
                     f"{children} | {len(speakers) - children} | {sum(r['duration'] for r in rows) / 60:.1f} | "
                     f"{'FLAC' if split == 'evaluation' else 'Opus (Ogg)'} |")
    lines += [
        "",
        "No speaker is in two splits; the evaluation speakers are the corpus's test half, never read by calibration "
        "or healing. Every speaker's first language is Mandarin; `group` is `real non-native child` (age "
        f"{CHILD_MAX_AGE} or younger; the corpus has nobody aged 16 to 18) or `real non-native adult`. Each clip is "
        "one read prompt, 16 kHz mono; `text` is the corpus's transcript (upper case, as given).",
        "",
        "## Source and licence",
        "",
        "speechocean762 (Zhang, Zhang, Wang, Yan, Song, Huang, Li, Povey and Wang, 'speechocean762: An Open-Source "
        "Non-native English Speech Corpus For Pronunciation Assessment', Interspeech 2021, arXiv:2104.01378), by "
        "Speechocean and Xiaomi: 'free download for both commercial and non-commercial purposes' (its README); "
        "Apache-2.0 on its authors' dataset card. Clips are copied unchanged apart from the container (FLAC, or Opus "
        "at libsndfile's default rate for the audio-only splits).",
        "",
    ]
    return "\n".join(lines)
