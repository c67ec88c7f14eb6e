"""The speech the model hears, as codes or through an encoder: the same miniature, the same
budget, two inputs.

Omni-Diffusion hears speech through SenseVoice features and a projector, and says it as
GLM-4-Voice codes. This trains the miniature's diffusion model exactly as `run.py` does
(same stages, steps, mixtures, seed), except that ASR, speech-to-image and spoken VQA hear
their speech as log-mel frames (`LogMelFrontEnd`, 100 frames a second) through a small
trainable `ConvSpeechEncoder` (stride 8: 12.5 positions a second, the codes' rate) and a
`LinearProjector`, trained jointly from scratch. TTS still says codes. It then scores those
three tasks on the same held-out examples, with 95% bootstrap intervals, and compares them
with the code-input run of the same seed (its `results.json`):

    PYTHONPATH=src python examples/mini_omni/run.py --out outputs/mini_omni
    PYTHONPATH=src python examples/mini_omni/speech_input.py \\
        --codes outputs/mini_omni/results.json --out outputs/speech_input

Writes `speech_input.md` and `speech_input.json` in `--out`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mini_omni.presets import PRESETS
from mini_omni.run import (
    Run,
    diffusion_generate,
    parse_args,
    prepare_data,
    task_samplers,
    train_diffusion,
)
from mini_omni.stats import interval
from mini_omni.tasks import balanced_subset, build_task_data, make_templates
from omni_blocks.data import SpeechFeatures
from omni_blocks.speech import ConvSpeechEncoder, LinearProjector, LogMelFrontEnd

HEARD = ("asr", "s2i", "spoken_vqa")
STRIDE = 8


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--codes", type=Path, required=True, help="results.json of run.py")
    own, rest = parser.parse_known_args(argv)
    args = parse_args(rest)
    codes = json.loads(own.codes.read_text())
    if codes.get("preset") != args.preset:
        raise SystemExit(f"{own.codes} is a {codes.get('preset')} run; pass --preset to match")
    run = Run(args=args, preset=PRESETS[args.preset])
    torch.set_num_threads(args.threads)
    torch.manual_seed(run.seed)
    data = prepare_data(run)
    front = LogMelFrontEnd(sample_rate=data.tokenizers.speech.sample_rate, n_mels=40)
    t = time.time()
    tasks = build_task_data(
        data.corpus, data.tokenizers, pairings=run.preset.pairings, seed=run.seed,
        front_end=front,
    )  # fmt: skip
    run.lap("feature frames", t)
    heard = SpeechFeatures(extra_positions=0, stride=STRIDE)
    data = replace(data, tasks=tasks, templates=make_templates(data.tokenizers, heard))
    width = run.preset.hidden_size
    encoder = ConvSpeechEncoder(feature_size=40, output_size=width, stride=STRIDE, num_layers=2)
    module, training = train_diffusion(run, data, (encoder, LinearProjector(width, width)))
    generate = diffusion_generate(module, task_samplers(data, 8, run.guided), run.seed)
    rows, out = [], {"preset": args.preset, "seed": run.seed, "training": training, "tasks": {}}
    for task in HEARD:
        examples = balanced_subset(data.tasks.test[task], run.preset.eval_examples)
        length = data.tasks.target_lengths[task]
        result = data.score(task, examples, generate(task, data.templates[task], examples, length))
        ci = interval(result)
        base = codes["results"]["diffusion"][task]
        low, high = base.get("interval", [base["value"], base["value"]])
        coded = {"mean": base["value"], "low": low, "high": high}
        out["tasks"][task] = {"metric": result.metric, "features": ci.as_dict(), "codes": coded}
        rows.append(
            f"| {task} | {result.metric} | {base['value']:.3f} [{low:.2f}, {high:.2f}] | {ci} |"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speech_input.json").write_text(json.dumps(out, indent=2) + "\n")
    table = "\n".join(
        ["| task | metric | codes (MelVQ) | features (ConvSpeechEncoder) |",
         "|---|---|---|---|", *rows]
    )  # fmt: skip
    (args.out / "speech_input.md").write_text(
        f"# Speech heard as codes or through an encoder\n\nPreset `{args.preset}`, seed "
        f"{run.seed}, the same stages, steps and mixtures; 8 sampling steps; 95% bootstrap "
        f"intervals over {run.preset.eval_examples} held-out examples per task.\n\n{table}\n"
    )
    print(table, flush=True)
    return out


if __name__ == "__main__":
    main()
