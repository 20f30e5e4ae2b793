"""The label sets shared by the model, the policy and the training code.

Categories are the MLCommons hazard taxonomy as Llama Guard 3 uses it (S1–S13), as stable
keys, plus ``none``. The order of each tuple is the order of the model's logits.
"""

from __future__ import annotations

CATEGORIES: tuple[str, ...] = (
    "none",
    "violent_crimes",
    "non_violent_crimes",
    "sex_related_crimes",
    "child_sexual_exploitation",
    "defamation",
    "specialized_advice",
    "privacy",
    "intellectual_property",
    "indiscriminate_weapons",
    "hate",
    "suicide_self_harm",
    "sexual_content",
    "elections",
)

HAZARD_CODES: dict[str, str] = {c: f"S{i}" for i, c in enumerate(CATEGORIES) if c != "none"}

# Where the threat comes from: the text alone, the image alone, text written in the image,
# only the combination of a benign image and a benign text, or a jailbreak wrapper.
SOURCES: tuple[str, ...] = ("none", "text", "image", "typography", "cross_modal", "jailbreak")

# How the downstream model should answer.
STRATEGIES: tuple[str, ...] = (
    "none",               # benign: pass through unchanged
    "refuse_redirect",    # decline the harmful part, offer a safe alternative
    "safety_framing",     # answer the legitimate part with safety context
    "professional_help",  # point to qualified or emergency help
    "neutral_factual",    # stay factual and balanced, no endorsement
)

# Token tags of the intent span: outside / beginning / inside.
SPAN_TAGS: tuple[str, ...] = ("O", "B", "I")
