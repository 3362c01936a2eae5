"""Numbers as values: a numeric-aware tokenizer around any Hugging Face tokenizer, and its model modules.

See docs/numeric.md for the parsing rules, the modes (``xval``, ``digits``, ``none``), the decoded
number format and the embedding-resize step.
"""

from spectravlm.numeric.causal_lm import NumericCausalLM, NumericGeneration, NumericLMOutput
from spectravlm.numeric.modules import (
    NumberEmbedding,
    NumberHead,
    NumberHeadOutput,
    NumberLoss,
    scale_values,
    unscale_values,
)
from spectravlm.numeric.parsing import NumberSpan, find_numbers, format_number
from spectravlm.numeric.tokenizer import (
    DIGIT_TOKENS,
    NUM_TOKEN,
    SPACE_NUM_TOKEN,
    NumericMode,
    NumericTokenizer,
)

__all__ = [
    "DIGIT_TOKENS",
    "NUM_TOKEN",
    "SPACE_NUM_TOKEN",
    "NumberEmbedding",
    "NumberHead",
    "NumberHeadOutput",
    "NumberLoss",
    "NumberSpan",
    "NumericCausalLM",
    "NumericGeneration",
    "NumericLMOutput",
    "NumericMode",
    "NumericTokenizer",
    "find_numbers",
    "format_number",
    "scale_values",
    "unscale_values",
]
