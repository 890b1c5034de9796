"""The paper's method on one slice, module by module.

SynPo (MICCAI 2025, "Boosting Training-Free Few-Shot Medical Segmentation via
High-Quality Negative Prompts") on one encoded query slice and one support slice:

=====================  ===============================================================
module                 the paper's part
=====================  ===============================================================
:mod:`.synergy`        Confidence Map Synergy Module (CMSM): per-backbone mean cosine
                       similarity to the support foreground, fused SAM x DINOv2; the
                       support background's Gaussian that places the negatives
:mod:`.points`         Point Selection Module (PSM): K-means positives from the most
                       confident pixels, negatives from the Gaussian interval
:mod:`.prompts`        the decoder prompt built from the points (and, for decoders
                       trained on boxes, a box)
:mod:`.refine`         Noise-aware Refine Module (NRM): opening, the most
                       support-like component, re-prompting
:mod:`.segmenter`      the pipeline: map -> points -> prompt -> mask choice -> refine
=====================  ===============================================================

Every parameter is in :mod:`SynPoLib.config`, with its source. Volumes, modes and
auto-stop are :mod:`SynPoLib.volume`'s job; models are :mod:`SynPoLib.backends`'.
"""
