"""The offline miniature of Omni-Diffusion: digits you can see and hear, on two CPU cores.

`run.py` is the recipe (read it top to bottom); the modules here hold its pieces:
`corpus` (digit images and espeak-ng speech), `tokenizing` (the small tokenizers and the
unified vocabulary), `tasks` (the eight tasks' examples), `judges` (classifiers trained on
real data that score generated images and speech), `autoregressive` (the causal baseline),
`evaluation` (metrics of every task) and `reporting` (report.md, images.png, WAVs).
"""
