"""Pre-tokenize a manifest: image and audio files -> inline codes, once, in batches.

The stage configs' data module tokenizes media files as it reads them (in the data-loader
workers, on the CPU). For a real run, tokenize each manifest once beforehand, on a GPU,
and train on the result:

```bash
python examples/omni_diffusion/prepare.py data/raw/t2i.jsonl data/omni_diffusion/t2i.jsonl \\
    --image-tokenizer showlab/magvitv2 --image-size 256 \\
    --speech-tokenizer THUDM/glm-4-voice-tokenizer --device cuda
```

Every record keeps its other keys; `image` becomes `image_codes` and `audio` becomes
`speech_codes` (lists of integers), computed exactly as the data module would (same image
resize and crop, same resampling); codes given as `.npy` files are inlined too, so the
written manifest needs no file beside it. Relative media paths resolve against the input
manifest's folder, or `--root`. A record that cannot be read stops the run with its file
and line, unless `--skip-errors` (then it is left out and counted).

The tasks that hear speech through SenseVoice in the stage configs (ASR, speech-to-image,
spoken VQA) read audio files, not codes: prepare their manifests with `--keep-audio` (images
are still tokenized; the audio paths are made absolute).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from omni_blocks.data import DataError
from omni_blocks.data.manifest import load_image
from omni_blocks.tokenizers.audio import load_audio
from omni_blocks.tokenizers.base import ImageTokenizer, SpeechTokenizer


@dataclass
class PrepareReport:
    """How many records were written and skipped (with the first errors)."""

    written: int
    skipped: int
    errors: list[str]


def _read(path: Path) -> list[tuple[int, dict[str, Any]]]:
    records = []
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    record = {"__error__": f"not valid JSON ({err})"}
                records.append((number, record))
    return records


def _media(path: str, base: Path) -> Path:
    resolved = Path(path).expanduser()
    resolved = resolved if resolved.is_absolute() else base / resolved
    if not resolved.is_file():
        raise DataError(f"{resolved} does not exist")
    return resolved


def prepare(
    source: Path,
    target: Path,
    *,
    image_tokenizer: ImageTokenizer | None = None,
    speech_tokenizer: SpeechTokenizer | None = None,
    root: Path | None = None,
    batch_size: int = 16,
    skip_errors: bool = False,
    progress: bool = True,
    keep_audio: bool = False,
) -> PrepareReport:
    """Write `target`: the records of `source` with media files replaced by codes.

    With `keep_audio`, `audio` files stay files, made absolute (the tasks that hear speech
    through SenseVoice: the data module's front end reads them, as upstream does).

    Raises:
        DataError: a record that cannot be read or tokenized (naming `file:line`), unless
            `skip_errors`.
    """
    base = root if root is not None else source.parent
    records = _read(source)
    report = PrepareReport(written=0, skipped=0, errors=[])
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("w") as out:
        for start in tqdm(
            range(0, len(records), batch_size), desc=f"prepare {source.name}", disable=not progress
        ):
            chunk = records[start : start + batch_size]
            ready: list[dict[str, Any] | None] = []
            images: dict[int, torch.Tensor] = {}
            audios: dict[int, torch.Tensor] = {}
            for i, (number, record) in enumerate(chunk):
                try:
                    if not isinstance(record, dict):
                        raise DataError("a manifest line must be a JSON object")
                    if "__error__" in record:
                        raise DataError(record["__error__"])
                    record = dict(record)
                    for key in ("image_codes", "speech_codes"):
                        if isinstance(record.get(key), str):  # a .npy file: inline it
                            array = np.load(_media(record[key], base), allow_pickle=False)
                            record[key] = np.asarray(array).reshape(-1).astype(int).tolist()
                    if "image" in record:
                        if image_tokenizer is None:
                            raise DataError("has an 'image' file; pass --image-tokenizer")
                        path = _media(str(record["image"]), base)
                        image = load_image(path, image_tokenizer.image_size)
                        if image_tokenizer.channels == 1:
                            image = image.mean(dim=0, keepdim=True)
                        images[i] = image
                    if "audio" in record and keep_audio:
                        record["audio"] = str(_media(str(record["audio"]), base).resolve())
                    elif "audio" in record:
                        if speech_tokenizer is None:
                            raise DataError("has an 'audio' file; pass --speech-tokenizer")
                        path = _media(str(record["audio"]), base)
                        audios[i] = load_audio(path, speech_tokenizer.sample_rate)
                    ready.append(record)
                except (DataError, OSError, RuntimeError, ValueError) as err:
                    message = f"{source}:{number}: {err}"
                    if not skip_errors:
                        raise DataError(message) from err
                    report.skipped += 1
                    report.errors.append(message)
                    ready.append(None)
                    images.pop(i, None)
                    audios.pop(i, None)
            if images and image_tokenizer is not None:
                rows = sorted(images)
                codes = image_tokenizer.encode(torch.stack([images[i] for i in rows]))
                for row, i in enumerate(rows):
                    record = ready[i]
                    assert record is not None
                    record.pop("image")
                    record["image_codes"] = torch.as_tensor(codes[row]).reshape(-1).tolist()
            if audios and speech_tokenizer is not None:
                rows = sorted(audios)
                encoded = speech_tokenizer.encode(  # type: ignore[call-arg]
                    [audios[i] for i in rows], sample_rate=speech_tokenizer.sample_rate
                )
                for row, i in enumerate(rows):
                    record = ready[i]
                    assert record is not None
                    record.pop("audio")
                    record["speech_codes"] = torch.as_tensor(encoded[row]).reshape(-1).tolist()
            for record in ready:
                if record is not None:
                    out.write(json.dumps(record) + "\n")
                    report.written += 1
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="manifest with image / audio files")
    parser.add_argument("target", type=Path, help="manifest to write, with codes")
    parser.add_argument("--image-tokenizer", help="MAGVIT-v2 folder or hub id")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--speech-tokenizer", help="GLM-4-Voice tokenizer folder or hub id")
    parser.add_argument("--root", type=Path, help="folder relative media paths start from")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--skip-errors", action="store_true")
    parser.add_argument(
        "--keep-audio",
        action="store_true",
        help="leave audio files as files (tasks that hear speech through SenseVoice)",
    )
    args = parser.parse_args(argv)

    from omni_blocks.tokenizers import GLM4VoiceTokenizer, PretrainedMagvitV2

    image = None
    if args.image_tokenizer:
        image = PretrainedMagvitV2(
            args.image_tokenizer, image_size=args.image_size, device=args.device
        )
    speech = None
    if args.speech_tokenizer:
        speech = GLM4VoiceTokenizer(args.speech_tokenizer, device=args.device)
    report = prepare(
        args.source,
        args.target,
        image_tokenizer=image,
        speech_tokenizer=speech,
        root=args.root,
        batch_size=args.batch_size,
        skip_errors=args.skip_errors,
        keep_audio=args.keep_audio,
    )
    print(f"wrote {report.written} records to {args.target}; skipped {report.skipped}")
    for message in report.errors[:10]:
        print(f"  {message}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
