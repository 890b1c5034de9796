"""Named configurations: the paper's, and the one measured best for LiteMedSAM.

``paper`` is :class:`SynPoConfig`'s defaults: SAM2 + DINOv2 with point prompts, three
masks chosen by prototype similarity, two mask-input refine rounds.

``lite`` was measured on Colin27 + AAL (6 structures: thalamus L, caudate L, putamen
L, hippocampus L, amygdala L, pallidum L; support = middle slice, query = every other
slice of the structure; pooled Dice, mean over structures). LiteMedSAM was fine-tuned
with box prompts and one output mask, so (numbers from that run, README "Prompt
strategies"):

- point prompts: 0.011 (it ignores points); box + points 0.300; box + negatives 0.351;
- (each step keeps the previous choices) a box from the confident region 0.304; with the location prior (sigma 0.5 x the
  support box diagonal) 0.458; at the 0.99 quantile 0.438; without refine 0.503;
- refine rounds hurt: mask input 0.438 (it was never trained on mask prompts), a
  re-derived box 0.428 (each round shrinks the box);
- the support mask's box size centred on the positives: 0.486 with no margin, 0.528
  / 0.535 / 0.525 / 0.510 grown by 5 / 10 / 15 / 20 % a side: 10 % is the default
  (a region-derived box with the same margins: 0.511 / 0.491).
"""

from __future__ import annotations

from typing import Dict

from .config import PromptStrategy, SynPoConfig

PRESETS: Dict[str, SynPoConfig] = {
    "paper": SynPoConfig(),
    "lite": SynPoConfig().updated(**{
        "prompt.strategy": PromptStrategy.SUPPORT_BOX,
        "prompt.support_box_margin": 0.1,
        "prompt.multimask": False,
        "prompt.box_quantile": 0.99,
        "points.location_prior": 0.5,
        "refine.rounds": 0,
    }),
}


def preset(name: str) -> SynPoConfig:
    """The named configuration ("paper" or "lite")."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}") from None
