"""Typed errors. Every failure the guard can raise derives from :class:`VLMGuardError`.

Input problems are ``InvalidInputError`` (also a ``ValueError``), so callers can catch
"bad request" separately from "the guard itself failed" (``GuardError``), which callers
must treat as *fail closed*: do not forward the request.
"""

from __future__ import annotations


class VLMGuardError(Exception):
    """Base class of every error raised by vlmguard."""


class InvalidInputError(VLMGuardError, ValueError):
    """The image or text given to the guard cannot be used."""


class UnsupportedInputTypeError(InvalidInputError, TypeError):
    """The input has a Python type the guard does not accept (e.g. an int as text)."""


class EmptyInputError(InvalidInputError):
    """Neither an image nor any non-blank text was given."""


class ImageDecodeError(InvalidInputError):
    """The image bytes are corrupt, truncated or not an image format Pillow can read."""


class ImageTooLargeError(InvalidInputError):
    """The image has more pixels than the configured limit (a decompression bomb guard)."""


class ImageSizeError(InvalidInputError):
    """The image has a zero or otherwise unusable size."""


class AnimatedImageError(InvalidInputError):
    """An animated or multi-page image with more frames than the guard reads
    (``vlmguard.image.MAX_FRAMES``): refused, since frames it has not read could carry text."""


class TextDecodeError(InvalidInputError):
    """Text given as bytes is not valid UTF-8, or a str holds a lone surrogate."""


class BudgetExceededError(InvalidInputError):
    """The request would cost more than the guard's per-request budget (tokens, windows)."""


class TextTooLongError(BudgetExceededError):
    """The text is over the character or token budget (``max_text_tokens``)."""


class InvalidConfigError(VLMGuardError, ValueError):
    """A guard option (threshold, categories, limits, policy) has an unusable value."""


class ModelLoadError(VLMGuardError):
    """A model bundle is missing, incomplete, or does not match its manifest."""


class GuardError(VLMGuardError):
    """Inference failed inside the guard. Fail closed: treat the request as unsafe."""
