"""Fine-tuning the top Whisper tiny.en blocks, leave-one-corpus-out (issue 13 lever).

The default tier's features are every hidden state of the frozen Whisper tiny.en
encoder, mean-pooled over time (after -23 LUFS loudness scaling). This benchmark asks
whether training the top ``--blocks`` encoder blocks on the training corpora makes
those features carry to a corpus never seen:

1. the encoder up to block ``4 - blocks`` stays frozen: its output frames (float16)
   and the pooled lower states of every file are computed once;
2. per leave-one-corpus-out fold, the top blocks (initialised from the pretrained
   weights) and a linear layer on the standardised pooled states (initialised with
   logistic regression on the frozen features, so epoch 0 is the frozen model) are
   trained with cross-entropy, corpora weighted equally, on the training corpora;
   a fifth of the training speakers is held out and picks the epoch (UAR) — the
   test corpus is never seen, not even for the epoch;
3. every file's pooled states are recomputed with the tuned blocks and scored with
   the tier's own classifiers (C = 0.01 logistic regression, corpora balanced):
   standardised per speaker ("adapted") and unnormalised ("a lone file"), next to the
   same classifiers on the frozen features. No channel augmentation on either side.

Protocol: leave-one-domain-out on the 6 shared classes (EmoDB, RAVDESS speech,
RAVDESS song, CREMA-D); when RAVDESS song is tested RAVDESS speech (the same actors)
is left out of training, and vice versa (``emovox.protocols``).

Usage: ``python benchmarks/finetune.py [--blocks 1] [--epochs 4] [--only emodb]``
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from accuracy import LOUDNESS, TIER_LR, loco_corpora
from common import add_corpora_argument, corpora_root, print_table
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.nn import functional
from tqdm import tqdm

from emovox.audio import load_audio
from emovox.config import load_config
from emovox.experiment import (
    Dataset,
    balance_weights,
    fit_fold,
    normalised_features,
    prepare_dataset,
)
from emovox.features.cache import default_cache_root, file_key, resolve_cache_dir
from emovox.features.encoders import load_whisper_encoder, whisper_hidden_states_batch
from emovox.normalization import DEFAULT_PRIOR_WEIGHT, group_stats, reference_stats
from emovox.preprocess import preprocess
from emovox.protocols import Split, make_splits, with_validation

#: The tier's two classifiers: (row name, normalisation).
CLASSIFIERS = (("adapted", "speaker"), ("a lone file", "none"))
RATE = 16_000


def loco_config(root: Path, normalization: str = "speaker"):
    """The leave-one-corpus-out experiment of the default tier's features (the
    corpora and recipe of ``benchmarks/accuracy.py --loco``)."""
    return load_config(data={"name": "finetune", "corpora": loco_corpora(root),
                             "labels": "common6", "protocol": {"kind": "loco", "by": "domain"},
                             "features": LOUDNESS, "model": TIER_LR,
                             "normalization": normalization})


def frozen_part(paths: list[str], below: int, cache: Path) -> tuple[list[np.ndarray],
                                                                  np.ndarray]:
    """Frames of hidden state ``below`` (float16) and the mean of states 0..below-1.

    Cached in ``cache`` (one file per ``below`` and set of files, each file known by
    its path, size and time: :func:`~emovox.features.cache.file_key`) so reruns skip
    the encoder.
    """
    files = hashlib.sha256("\0".join(map(file_key, paths)).encode()).hexdigest()[:16]
    file = cache / f"finetune-frozen-{below}-{files}.npz"
    if file.exists():
        stored = np.load(file, allow_pickle=False)
        lengths = stored["lengths"]
        frames = np.split(stored["frames"], np.cumsum(lengths)[:-1])
        return frames, stored["pooled"]
    frames, pooled = [], []
    batch = 32
    for begin in tqdm(range(0, len(paths), batch), desc="frozen encoder", unit="batch",
                      disable=not sys.stderr.isatty()):
        signals = [preprocess(load_audio(p, RATE), RATE, loudness_lufs=LOUDNESS["loudness_lufs"])
                   for p in paths[begin:begin + batch]]
        for states in whisper_hidden_states_batch(signals, n_states=below + 1):
            frames.append(states[below].astype(np.float16))
            pooled.append(states[:below].mean(axis=1).reshape(-1))
    pooled_array = np.stack(pooled).astype(np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    partial = file.with_suffix(".partial.npz")
    np.savez(partial, frames=np.concatenate(frames), pooled=pooled_array,
             lengths=np.array([len(f) for f in frames]))
    partial.replace(file)
    return frames, pooled_array


class TopBlocks(nn.Module):
    """The top encoder blocks (trainable copies), mean pooling of their states over the
    real frames, then a linear layer on the standardised pooled states."""

    def __init__(self, encoder: nn.Module, below: int, mean: np.ndarray, scale: np.ndarray,
                 coef: np.ndarray, intercept: np.ndarray, dropout: float) -> None:
        super().__init__()
        self.blocks = copy.deepcopy(encoder.blocks[below:])
        self.ln_post = copy.deepcopy(encoder.ln_post)
        for parameter in [*self.blocks.parameters(), *self.ln_post.parameters()]:
            parameter.requires_grad_(True)  # the shared encoder's are frozen
        self.register_buffer("mean", torch.from_numpy(mean.astype(np.float32)))
        self.register_buffer("scale", torch.from_numpy(scale.astype(np.float32)))
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(coef.shape[1], coef.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(torch.from_numpy(coef.astype(np.float32)))
            self.linear.bias.copy_(torch.from_numpy(intercept.astype(np.float32)))

    def pooled(self, x: torch.Tensor, mask: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
        """Pooled states ``[lower | state below | ... | final]`` of a padded batch."""
        keep = mask[:, :, None].float()
        count = keep.sum(1)
        states = [(x * keep).sum(1) / count]
        attend = mask[:, None, None, :]
        for index, block in enumerate(self.blocks):
            x = _block(block, x, attend)
            out = self.ln_post(x) if index == len(self.blocks) - 1 else x
            states.append((out * keep).sum(1) / count)
        return torch.cat([lower, *states], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, lower: torch.Tensor,
                mean: torch.Tensor | None = None, scale: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Logits; standardised by the rows' own ``mean`` and ``scale`` when given (their
        speakers' statistics), else by the training set's."""
        mean = self.mean if mean is None else mean
        scale = self.scale if scale is None else scale
        z = (self.pooled(x, mask, lower) - mean) / scale
        return self.linear(self.dropout(z))


def _block(block: nn.Module, x: torch.Tensor, attend: torch.Tensor) -> torch.Tensor:
    """One encoder block (:class:`emovox.features.encoders._EncoderBlock`) with a key
    padding mask."""
    batch, frames, d_model = x.shape
    qkv = block.qkv(block.attn_ln(x)).view(batch, frames, 3, block.n_heads, -1)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    attended = functional.scaled_dot_product_attention(q, k, v, attn_mask=attend)
    x = x + block.out(attended.transpose(1, 2).reshape(batch, frames, d_model))
    return x + block.fc2(functional.gelu(block.fc1(block.mlp_ln(x))))


def batches(rows: np.ndarray, lengths: np.ndarray, size: int,
            rng: np.random.Generator | None) -> list[np.ndarray]:
    """Rows in batches of similar length (less padding); shuffled when ``rng`` is given."""
    order = rows[np.argsort(lengths[rows], kind="stable")]
    chunks = [order[i:i + size] for i in range(0, len(order), size)]
    if rng is not None:
        rng.shuffle(chunks)
    return chunks


def collate(frames: list[np.ndarray], pooled: np.ndarray, rows: np.ndarray
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded frames, their mask and the pooled lower states of ``rows``."""
    longest = max(len(frames[i]) for i in rows)
    x = np.zeros((len(rows), longest, frames[rows[0]].shape[1]), np.float32)
    mask = np.zeros((len(rows), longest), bool)
    for j, i in enumerate(rows):
        x[j, :len(frames[i])] = frames[i]
        mask[j, :len(frames[i])] = True
    return torch.from_numpy(x), torch.from_numpy(mask), torch.from_numpy(pooled[rows])


def pooled_features(model: TopBlocks, frames: list[np.ndarray], pooled: np.ndarray,
                    rows: np.ndarray | None = None) -> np.ndarray:
    """The pooled states of ``rows`` (default: every file) through the (tuned) blocks;
    other rows are zero."""
    lengths = np.array([len(f) for f in frames])
    out = np.zeros((len(frames), model.mean.shape[0]), np.float32)
    rows = np.arange(len(frames)) if rows is None else rows
    model.eval()
    with torch.inference_mode():
        for chunk in batches(rows, lengths, 64, None):
            out[chunk] = model.pooled(*collate(frames, pooled, chunk)).numpy()
    return out


def speaker_statistics(features: np.ndarray, speakers: np.ndarray, train: np.ndarray,
                       rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row mean and scale of each row's speaker (shrunk towards the average
    training speaker, as the tier's per-speaker standardisation does)."""
    prior = reference_stats(features[train], speakers[train])
    mean = np.zeros_like(features)
    scale = np.ones_like(features)
    for speaker, stats in group_stats(features[rows], speakers[rows]).items():
        stats = stats.with_prior(prior, DEFAULT_PRIOR_WEIGHT)
        mine = rows[speakers[rows] == speaker]
        mean[mine], scale[mine] = stats.mean, np.sqrt(stats.var + 1e-8)
    return mean, scale


def tune(dataset: Dataset, frames: list[np.ndarray], pooled: np.ndarray, train: np.ndarray,
         valid: np.ndarray, below: int, args: argparse.Namespace, label: str) -> TopBlocks:
    """Top blocks and head trained on ``train`` rows; the epoch with the best UAR on the
    ``valid`` speakers (epoch 0: the frozen encoder with logistic regression)."""
    from sklearn.linear_model import LogisticRegression

    y = dataset.y
    classes = np.array(sorted(set(y)))
    target = torch.from_numpy(np.searchsorted(classes, y))
    speakers = dataset.table["speaker"].astype(str).to_numpy()
    weights = torch.from_numpy(balance_weights(y[train], speakers[train], "corpus")
                               .astype(np.float32))
    weight_of = dict(zip(train.tolist(), weights.tolist(), strict=True))
    frozen = dataset.features
    both = np.concatenate([train, valid])
    by_speaker = args.objective == "speaker"
    if by_speaker:
        row_mean, row_scale = speaker_statistics(frozen, speakers, train, both)
        start_features = (frozen - row_mean) / row_scale
    mean, scale = frozen[train].mean(0), frozen[train].std(0) + 1e-6
    if not by_speaker:
        start_features = (frozen - mean) / scale
    start = LogisticRegression(C=0.01, max_iter=2000).fit(
        start_features[train], y[train], sample_weight=weights.numpy())
    model = TopBlocks(load_whisper_encoder(), below, mean, scale, start.coef_,
                      start.intercept_, args.dropout)
    head = [p for n, p in model.named_parameters() if n.startswith("linear")]
    body = [p for n, p in model.named_parameters() if not n.startswith("linear")]
    optimiser = torch.optim.AdamW([{"params": body, "lr": args.lr},
                                   {"params": head, "lr": args.head_lr}],
                                  weight_decay=args.weight_decay)
    lengths = np.array([len(f) for f in frames])
    rng = np.random.default_rng(0)

    def statistics(rows: np.ndarray) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not by_speaker:
            return None, None
        return torch.from_numpy(row_mean[rows]), torch.from_numpy(row_scale[rows])

    def valid_uar() -> float:
        model.eval()
        with torch.inference_mode():
            chunks = batches(valid, lengths, 64, None)
            logits = [model(*collate(frames, pooled, rows), *statistics(rows))
                      for rows in chunks]
            order = np.concatenate(chunks)
        predicted = classes[torch.cat(logits).argmax(1).numpy()]
        return balanced_accuracy_score(y[order], predicted)

    best, best_state, history = valid_uar(), copy.deepcopy(model.state_dict()), []
    history.append(best)
    for epoch in range(1, args.epochs + 1):
        model.train()
        began = time.perf_counter()
        for rows in batches(train, lengths, args.batch, rng):
            x, mask, lower = collate(frames, pooled, rows)
            logits = model(x, mask, lower, *statistics(rows))
            loss = functional.cross_entropy(logits, target[rows], reduction="none")
            w = torch.tensor([weight_of[i] for i in rows.tolist()])
            optimiser.zero_grad()
            ((loss * w).sum() / w.sum()).backward()
            optimiser.step()
        if by_speaker:  # every speaker's statistics of the tuned features: the
            # validation speakers' adaptation, and the next epoch's standardisation
            row_mean, row_scale = speaker_statistics(
                pooled_features(model, frames, pooled, both), speakers, train, both)
        score = valid_uar()
        history.append(score)
        print(f"  {label} epoch {epoch}: valid UAR {score:.3f} "
              f"({time.perf_counter() - began:.0f} s)", file=sys.stderr, flush=True)
        if score > best:
            best, best_state = score, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    print(f"  {label}: valid UAR by epoch " + " ".join(f"{h:.3f}" for h in history)
          + f"; kept epoch {history.index(best)}", file=sys.stderr, flush=True)
    return model


def scores(root: Path, dataset: Dataset, features: np.ndarray, split: Split
           ) -> dict[str, float]:
    """UAR of the tier's two classifiers on ``features`` for one leave-one-out fold."""
    out = {}
    data = Dataset(dataset.table, features, dataset.label_set, {}, [], 0.0)
    for name, normalization in CLASSIFIERS:
        config = loco_config(root, normalization)
        normalised = normalised_features(config, data, split.train, split.test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = fit_fold(config, data, normalised, split)
            predicted = model.predict(normalised[split.test])
            # (a test corpus may lack a class the model predicts: RAVDESS song)
            out[name] = balanced_accuracy_score(data.y[split.test], predicted)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_corpora_argument(parser)
    parser.add_argument("--blocks", type=int, default=1, help="top blocks trained (1-4)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=2e-5, help="learning rate of the blocks")
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=0.2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objective", choices=("global", "speaker"), default="global",
                        help="standardise the pooled states during training by the "
                             "training set's statistics or by each speaker's own")
    parser.add_argument("--only", help="test only domains whose name contains this")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    root = corpora_root(args)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    below = 4 - args.blocks
    config = loco_config(root)
    dataset = prepare_dataset(config, progress=sys.stderr.isatty())
    paths = dataset.table["path"].astype(str).tolist()
    cache = resolve_cache_dir(config.cache_dir) or default_cache_root()
    frames, pooled = frozen_part(paths, below, cache)
    # The frozen part must reproduce the cached features (same audio, same encoder).
    again = np.concatenate([pooled[:50], np.stack([f.astype(np.float32).mean(0)
                                                   for f in frames[:50]])], axis=1)
    drift = np.abs(again - dataset.features[:50, :again.shape[1]]).max()
    print(f"frozen part: state {below} frames of {len(frames)} files; largest difference "
          f"from the cached features {drift:.3g}", file=sys.stderr, flush=True)
    rows = []
    for split in make_splits(dataset.table, "loco", by="domain"):
        held = split.name.split("test=")[-1]
        if args.only and args.only.lower() not in held.lower():
            continue
        began = time.perf_counter()
        carved = with_validation(dataset.table, split, 0.2, seed=0)
        model = tune(dataset, frames, pooled, carved.train, carved.valid, below, args, held)
        tuned = pooled_features(model, frames, pooled)
        print(f"  {held}: features moved by {np.abs(tuned - dataset.features).mean():.4f} "
              f"on average (frozen: {np.abs(dataset.features).mean():.4f})",
              file=sys.stderr, flush=True)
        seconds = time.perf_counter() - began
        for system, features in (("frozen encoder", dataset.features),
                                 (f"top {args.blocks} block(s) fine-tuned "
                                  f"({args.objective} objective)", tuned)):
            for name, value in scores(root, dataset, features, split).items():
                rows.append({"system": f"{system}, {name}", "test": held, "uar": value,
                             "seconds": seconds})
                print(f"{held:16s} {system + ', ' + name:45s} UAR {value:.3f}", flush=True)
    systems = list(dict.fromkeys(r["system"] for r in rows))
    domains = list(dict.fromkeys(r["test"] for r in rows))
    lines = ["| system | " + " | ".join(domains) + " | mean |",
             "|---|" + "---|" * (len(domains) + 1)]
    for system in systems:
        values = [next(r["uar"] for r in rows if r["system"] == system and r["test"] == d)
                  for d in domains]
        lines.append(f"| {system} | " + " | ".join(f"{v:.3f}" for v in values)
                     + f" | {np.mean(values):.3f} |")
    print_table("\n".join(lines), args.markdown)


if __name__ == "__main__":
    main()
