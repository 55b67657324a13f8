"""Healing: label-free distillation of a LiteWhisper encoder's factors against the dense encoder it came from.

The factorization is the best answer per layer to its own objective; healing fits the compressed encoder to the
dense one's behaviour across layers, with gradients, on unlabelled audio:

1. block-wise, for each encoder layer in turn: only that layer's factors (and optionally its LayerNorms) train, so
   that the compressed layer fed the compressed path's input reproduces the dense layer's output on the dense path's
   input. The loss is the squared error per output channel divided by that channel's variance in the dense output,
   so that the outlier direction of the last layers (most of their output variance) does not drown the rest;
   averaged over positions alike, or with ``speech_share`` of it on the positions that hold audio;
2. end to end: every factor trains so that the compressed encoder's final output matches the dense one's
   (the same normalised squared error, or one minus the cosine per position), or so that Whisper's decoder says what
   it says from the dense output (:mod:`.decoder_loss`).

A held-out share of the windows decides when to stop: each stage keeps the parameters of its best held-out loss and
stops after ``patience`` evaluations without improvement. A loss that becomes NaN, or a mean training loss ten times
the held-out loss before training, stops the run with :class:`HealingDiverged`. The student is changed in place; the
teacher is left as it was.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import PreTrainedModel, WhisperFeatureExtractor

from ..data.windows import cut_pieces, pack_clips
from ..models.lite_whisper.modeling_lite_whisper import LowRankLinear
from ..parallel import Processes
from .calibration import StopForward
from .decoder_loss import decoder_kl, teacher_transcripts
from .memory import peak_rss_mb
from .report import HealingReport, HealingStage, HealingWindows
from .settings import LOSSES, WINDOWS, HealSettings  # noqa: F401  LOSSES, WINDOWS: importable from here as before

#: A training loss (the mean of a few batches) this many times the held-out loss before training, or a NaN, means the
#: learning rate is too high.
DIVERGENCE_FACTOR = 10.0


class HealingDiverged(ValueError):
    """The distillation loss became NaN or grew tenfold: the learning rate is too high for this model."""


def healing_parameters(layer: nn.Module, train_layer_norms: bool) -> list[nn.Parameter]:
    """The parameters healing trains in one encoder layer: every factor (``weight1``, ``weight2``, ``bias``) of its
    factorized projections, and with ``train_layer_norms`` its LayerNorms."""
    params = [p for m in layer.modules() if isinstance(m, LowRankLinear) for p in m.parameters()]
    if train_layer_norms:
        params += [p for m in layer.modules() if isinstance(m, nn.LayerNorm) for p in m.parameters()]
    return params


def _layer(layer: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    out = layer(hidden, None)
    return out[0] if isinstance(out, tuple) else out  # transformers 4 returns a tuple


def healing_windows(clips: Sequence[np.ndarray], settings: HealSettings) -> list[np.ndarray]:
    """The audio of each healing window, in a seeded random order, at most ``settings.num_samples`` of them."""
    if settings.windows == "pieces":
        windows = cut_pieces(clips, settings.piece_seconds, settings.seed)
    else:
        windows = pack_clips(clips, settings.pack_seconds)
    order = np.random.default_rng(settings.seed).permutation(len(windows))
    return [windows[i] for i in order[: settings.num_samples]]


def _check_audio(windows: Sequence[np.ndarray]) -> None:
    if not windows:
        raise ValueError("No healing audio: give at least one clip (a folder, manifest or datasets split).")
    peaks = [float(np.max(np.abs(w))) if w.size else 0.0 for w in windows]
    if max(peaks) < 1e-4:
        raise ValueError("The healing audio is silent (every sample below 1e-4 in magnitude): give recorded speech.")


class _Stage:
    """One training stage: optimiser, warm-up, held-out early stopping, divergence check, best parameters."""

    def __init__(self, name: str, params: list[nn.Parameter], steps: int, settings: HealSettings,
                 holdout_loss: Callable[[], float], processes: Processes):
        self.name, self.params, self.steps, self.settings = name, params, steps, settings
        self.processes = processes
        self.holdout_loss = holdout_loss
        self.optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
        warmup = max(1, int(settings.warmup * steps))

        def factor(step: int) -> float:  # linear warm-up, then cosine decay to 0 at the last step
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        # Divergence is judged on the mean of the last `window` batches against the held-out loss before training:
        # one batch's loss can be many times another's (the decoder loss of a window whose transcript is long or
        # odd), while a diverging run's mean stays high, even when it jumps at the first step.
        self.window = max(1, min(settings.eval_every, steps))
        self.recent: list[float] = []
        self.best = holdout_loss()
        self.initial_holdout = self.best
        self.best_state = [p.detach().clone() for p in params]
        self.stale = 0
        self.done_steps = 0

    def step(self, loss: torch.Tensor | None) -> bool:
        """Apply one step of ``loss``, this process's part of the batch's loss (``None``: no window of the batch
        here); returns False once early stopping says to stop."""
        value = self.processes.total(float(loss.detach()) if loss is not None else 0.0)
        self.recent = [*self.recent, value][-self.window:]
        mean = sum(self.recent) / len(self.recent)
        limit = DIVERGENCE_FACTOR * self.initial_holdout
        if not math.isfinite(value) or (len(self.recent) == self.window and mean > limit):
            raise HealingDiverged(
                f"Healing diverged in {self.name} at step {self.done_steps + 1}: the loss "
                + (f"became {value}" if not math.isfinite(value) else
                   f"of the last {self.window} batches averaged {mean:.4g}, over {DIVERGENCE_FACTOR:g} times the "
                   f"held-out loss before training ({self.initial_holdout:.4g})")
                + f", with lr {self.settings.lr:g}. Lower heal.lr (e.g. to {self.settings.lr / 10:g}).")
        self.optimizer.zero_grad(set_to_none=True)
        if loss is not None:
            loss.backward()
        if self.processes.distributed:  # the batch's gradient is the sum of the processes' parts
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
            flat = self.processes.sum_(torch.cat([g.reshape(-1) for g in grads]))
            for param, grad in zip(self.params, flat.split([g.numel() for g in grads])):
                param.grad = grad.view_as(param)
        self.optimizer.step()
        self.scheduler.step()
        self.done_steps += 1
        if self.done_steps % self.settings.eval_every == 0 or self.done_steps == self.steps:
            held = self.holdout_loss()
            if held < self.best:
                self.best, self.stale = held, 0
                self.best_state = [p.detach().clone() for p in self.params]
            else:
                self.stale += 1
        return self.stale < self.settings.patience and self.done_steps < self.steps

    def finish(self) -> HealingStage:
        """Put back the parameters of the best held-out loss; a summary of the stage."""
        with torch.no_grad():
            for param, best in zip(self.params, self.best_state):
                param.copy_(best)
        return HealingStage(stage=self.name, steps=self.done_steps, holdout_loss_before=round(self.initial_holdout, 6),
                            holdout_loss_after=round(self.best, 6))


def _batches(indices: Sequence[int], batch_size: int, generator: torch.Generator) -> Iterator[list[int]]:
    """Shuffled batches of ``indices``, forever."""
    while True:
        order = torch.randperm(len(indices), generator=generator).tolist()
        for start in range(0, len(order), batch_size):
            yield [indices[i] for i in order[start : start + batch_size]]


def _chunks(indices: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(indices), size):
        yield list(indices[start : start + size])


def _part(batch: Sequence[int], processes: Processes) -> list[int]:
    """This process's windows of a batch that all processes drew alike."""
    return [batch[i] for i in processes.shard(len(batch))]


def _by_shares(compute: Callable[[list[int]], torch.Tensor], n: int, tail: tuple[int, ...], batch_size: int,
               processes: Processes, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``compute`` for the positions ``0..n-1`` (in batches of ``batch_size``), stacked ``(n, *tail)``: each process
    computes its shard and receives the others' by broadcast, so every process ends with all rows."""
    mine = processes.shard(n)
    parts = [compute(chunk).to(device) for chunk in _chunks(list(mine), batch_size)]
    if not processes.distributed:
        return torch.cat(parts)
    rows = torch.empty(n, *tail, device=device, dtype=dtype)
    if parts:
        rows[mine.start : mine.stop] = torch.cat(parts)
    for rank in range(processes.world_size):
        share = Processes(rank, processes.world_size).shard(n)
        if len(share):
            processes.broadcast(rows[share.start : share.stop], rank)
    return rows


def encoder_embeddings(encoder: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The input of a Whisper encoder's first layer (convolutions and positions): ``(batch, positions, d)``.

    The encoder's own forward computes it (the code differs between transformers versions) and is stopped by a hook
    at its first layer, so the layers do not run."""
    captured = []

    def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise StopForward

    handle = encoder.layers[0].register_forward_pre_hook(stop, with_kwargs=True)
    try:
        encoder(features)
    except StopForward:
        pass
    finally:
        handle.remove()
    return captured[0]


def position_weights(lengths: Sequence[int], positions: int, speech_share: float | None,
                     samples_per_position: int) -> torch.Tensor:
    """``(windows, positions)`` loss weights, each row summing to 1: ``speech_share`` of it spread evenly over the
    positions that hold the window's audio (``lengths`` in samples, the audio first, then padding; an encoder position
    covers ``samples_per_position``), the rest over its padding; None, or a window without padding, weighs every
    position alike."""
    weights = torch.full((len(lengths), positions), 1.0 / positions)
    if speech_share is None:
        return weights
    for row, samples in zip(weights, lengths):
        speech = min(positions, max(1, math.ceil(samples / samples_per_position)))
        if speech < positions:
            row[:speech] = speech_share / speech
            row[speech:] = (1 - speech_share) / (positions - speech)
    return weights


def _normalised_mse(student: torch.Tensor, teacher: torch.Tensor, scale: torch.Tensor,
                    weights: torch.Tensor) -> torch.Tensor:
    # a device_map spreads the layers
    teacher, scale, weights = (t.to(student.device) for t in (teacher, scale, weights))
    return ((((student - teacher) / scale) ** 2).mean(dim=-1) * weights).sum(dim=-1).mean()


def _cosine(student: torch.Tensor, teacher: torch.Tensor, scale: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    teacher, weights = teacher.to(student.device), weights.to(student.device)
    return ((1 - nn.functional.cosine_similarity(student, teacher, dim=-1)) * weights).sum(dim=-1).mean()


def _channel_scale(outputs: torch.Tensor) -> torch.Tensor:
    """Per channel standard deviation of ``outputs`` ``(windows, positions, d)`` over windows and positions."""
    flat = outputs.reshape(-1, outputs.shape[-1]).double()
    return flat.std(dim=0).clamp_min(1e-6).to(outputs.dtype)


def heal(
    student: PreTrainedModel,
    teacher: PreTrainedModel,
    clips: Sequence[np.ndarray],
    feature_extractor: WhisperFeatureExtractor,
    settings: HealSettings | None = None,
    progress: bool = True,
    processes: Processes | None = None,
    holdout_clips: Sequence[np.ndarray] | None = None,
) -> HealingReport:
    """Distil ``student``'s encoder factors (a LiteWhisper model) towards ``teacher``'s encoder (the dense Whisper it
    was compressed from), in place. ``clips`` are 16 kHz mono arrays, made into windows by
    :func:`healing_windows`. ``holdout_clips``: speech of other speakers to stop on (``settings.holdout`` of
    ``settings.num_samples`` windows drawn from it); without it, that share of ``clips``' windows is held out. Stopping
    on speakers that training never hears keeps healing from fitting its own voices.

    Returns a report: per stage the steps taken and the held-out loss before and after, the time, and the peak
    memory. Raises ``ValueError`` for empty or silent audio and :class:`HealingDiverged` when the loss blows up.

    ``processes``: the processes of a data-parallel run (:func:`liteasr_hf.parallel.process_group`), each calling this
    with the same arguments and models: each computes its share of the hidden states and of every batch, the
    gradients are summed, and all end with the same factors (as one process would, up to the order of the sums).
    """
    settings = settings or HealSettings()
    processes = processes or Processes()
    windows = healing_windows(clips, settings)
    _check_audio(windows)
    if len(windows) < 2:
        raise ValueError("Healing needs at least 2 windows of audio (one to train on, one held out); got 1.")
    started = time.perf_counter()
    s_encoder, t_encoder = student.get_encoder(), teacher.get_encoder()
    device = s_encoder.conv1.weight.device
    dtype = s_encoder.conv1.weight.dtype
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast(
        "cpu", enabled=False)
    generator = torch.Generator().manual_seed(settings.seed)
    order = torch.randperm(len(windows), generator=generator).tolist()
    n_holdout = max(1, round(settings.holdout * len(windows)))
    if holdout_clips is not None:
        held = healing_windows(holdout_clips, dataclasses.replace(settings, num_samples=n_holdout))
        _check_audio(held)
        holdout, train = list(range(len(windows), len(windows) + len(held))), order
        windows = [*windows, *held]
    else:
        holdout, train = order[:n_holdout], order[n_holdout:]

    teacher.requires_grad_(False)
    student.requires_grad_(False)
    student.eval()  # no dropout: the teacher's behaviour is the target
    # Several processes: every one draws the same windows, split and batches (same seed); each computes its shard of
    # the hidden states and receives the rest, and its part of every batch, whose gradients are summed.
    counts = {"trained": 0, "computed": 0}

    def by_shares(compute: Callable[[list[int]], torch.Tensor], n: int) -> torch.Tensor:
        counts["computed"] += len(processes.shard(n))
        return _by_shares(compute, n, tail, settings.batch_size, processes, device, dtype)

    def chunks(indices: Sequence[int]) -> Iterator[list[int]]:
        return _chunks(indices, settings.batch_size)

    def mean_over(indices: Sequence[int], loss: Callable[[list[int]], torch.Tensor]) -> float:
        """The mean over ``indices`` of a per-batch mean ``loss``, each process adding its shard."""
        with torch.no_grad(), autocast:
            local = sum(float(loss(b).float()) * len(b) for b in chunks(_part(indices, processes)))
        return processes.total(local) / len(indices)

    def part_loss(batch: list[int], loss: Callable[[list[int]], torch.Tensor]) -> torch.Tensor | None:
        """This process's share of the batch's mean loss (None: none of the batch here)."""
        part = _part(batch, processes)
        counts["trained"] += len(part)
        if not part:
            return None
        with autocast:
            return loss(part).float() * (len(part) / len(batch))

    with torch.no_grad():
        features = torch.cat([feature_extractor(windows[i : i + settings.batch_size], sampling_rate=16000,
                                                return_tensors="pt").input_features
                              for i in range(0, len(windows), settings.batch_size)]).to(device=device, dtype=dtype)
        tail = (features.shape[-1] // 2, t_encoder.config.d_model)  # (positions, width) of the hidden states
        # a position covers the feature hop times the frames the convolutions fold into it
        weights = position_weights([len(w) for w in windows], tail[0], settings.speech_share,
                                   feature_extractor.hop_length * features.shape[-1] // tail[0])
        # The teacher's hidden states go through every window, layer by layer, and end as the end-to-end target;
        # the student's only through the windows the block-wise stage uses (the held-out ones and one batch a step).
        t_hidden = by_shares(lambda b: encoder_embeddings(t_encoder, features[b]), len(windows))
    block_ids = holdout + train[: settings.block_steps * settings.batch_size]
    block_holdout, block_train = list(range(len(holdout))), list(range(len(holdout), len(block_ids)))
    block_weights = weights[block_ids]
    stages: list[HealingStage] = []

    if settings.block_steps:
        s_hidden = t_hidden[block_ids].clone()  # the embeddings (convolutions, positions) are not factorized
        for layer in tqdm(range(len(s_encoder.layers)), desc="Healing encoder layers", disable=not progress):
            s_layer, t_layer = s_encoder.layers[layer], t_encoder.layers[layer]
            params = healing_parameters(s_layer, settings.train_layer_norms)
            with torch.no_grad():
                t_hidden = by_shares(lambda b: _layer(t_layer, t_hidden[b]), len(windows))
            target = t_hidden[block_ids]
            if params:
                scale = _channel_scale(target[block_train])

                def block_loss(b: list[int], layer_module=s_layer, inputs=s_hidden, target=target,
                               scale=scale) -> torch.Tensor:
                    return _normalised_mse(_layer(layer_module, inputs[b]), target[b], scale, block_weights[b])

                for p in params:
                    p.requires_grad_(True)
                stage = _Stage(f"encoder layer {layer}", params, settings.block_steps, settings,
                               lambda loss=block_loss: mean_over(block_holdout, loss), processes)
                for batch in _batches(block_train, settings.batch_size, generator):
                    if not stage.step(part_loss(batch, block_loss)):
                        break
                stages.append(stage.finish())
                for p in params:
                    p.requires_grad_(False)
            with torch.no_grad():
                s_hidden = by_shares(lambda b: _layer(s_layer, s_hidden[b]), len(block_ids))
        del s_hidden

    if settings.steps:
        with torch.no_grad():
            if settings.block_steps:  # t_hidden is the last layer's output: only the final LayerNorm is left
                target = by_shares(lambda b: t_encoder.layer_norm(t_hidden[b]), len(windows))
            else:
                target = by_shares(lambda b: t_encoder(features[b]).last_hidden_state, len(windows))
        del t_hidden
        params = [p for layer in s_encoder.layers for p in healing_parameters(layer, settings.train_layer_norms)]
        if params:
            if settings.loss == "decoder":
                # Every process transcribes every window (greedy, so all get the same tokens): transcripts differ in
                # length, which the sharded hidden states' exchange does not carry.
                transcripts = teacher_transcripts(teacher, features, settings.batch_size, encoder_hidden=target)

                def e2e_loss(b: list[int]) -> torch.Tensor:
                    return decoder_kl(student, s_encoder(features[b]).last_hidden_state, target[b],
                                      transcripts.tokens[b], transcripts.targets[b])
            else:
                scale = _channel_scale(target[train])
                loss_fn = _normalised_mse if settings.loss == "mse" else _cosine

                def e2e_loss(b: list[int]) -> torch.Tensor:
                    return loss_fn(s_encoder(features[b]).last_hidden_state, target[b], scale, weights[b])

            for p in params:
                p.requires_grad_(True)
            stage = _Stage("end to end", params, settings.steps, settings, lambda: mean_over(holdout, e2e_loss),
                           processes)
            bar = tqdm(total=settings.steps, desc="Healing end to end", disable=not progress)
            for batch in _batches(train, settings.batch_size, generator):
                going = stage.step(part_loss(batch, e2e_loss))
                bar.update()
                if not going:
                    break
            bar.close()
            stages.append(stage.finish())
            for p in params:
                p.requires_grad_(False)

    peak = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
            else peak_rss_mb() * 2**20)
    report = HealingReport(settings=asdict(settings), windows=HealingWindows(train=len(train), holdout=len(holdout)),
                           stages=stages, seconds=round(time.perf_counter() - started, 1), peak_memory_bytes=int(peak))
    if processes.distributed:  # what each process did: its windows trained on and computed through a layer
        report.trained_windows_per_process = processes.gather(counts["trained"])
        report.computed_windows_per_process = processes.gather(counts["computed"])
        report.processes = processes.world_size
    return report


def describe_healing(report: HealingReport) -> str:
    """One line for a person: how long :func:`heal` took, its peak memory, its windows, and what its last stage did
    to the held-out loss."""
    peak = "unrecorded" if report.peak_memory_bytes is None else f"{report.peak_memory_bytes / 2**30:.1f} GiB"
    line = (f"Healing took {report.seconds / 60:.1f} min, peak {peak}, on {report.windows.train} windows "
            f"({report.windows.holdout} held out)")
    if report.stages:
        last = report.stages[-1]
        line += (f"; {last.stage}: held-out loss {last.holdout_loss_before:.4g} -> {last.holdout_loss_after:.4g} in "
                 f"{last.steps} steps")
    return line
