"""Export a trained model for use outside rait: a merged Hugging Face folder, a model card, GGUF files.

- `locate(path, method=..., track=..., seed=...)`: the `rait train` output to export, from that folder or from a
  `rait run` folder and a method name, checked before any work;
- `check(source, settings, out_dir)`: refuse what cannot be exported as asked (`run` checks it first too);
- `run(settings, source, out_dir)`: write the export (`ExportSettings`: GGUF types, adapter only).
"""

from __future__ import annotations

from rait.export.export import (
    CARD_FILE,
    GGUF_TYPES,
    RAIT_FILE,
    ExportSettings,
    Source,
    check,
    gguf_file_name,
    locate,
    run,
)

__all__ = ["CARD_FILE", "GGUF_TYPES", "RAIT_FILE", "ExportSettings", "Source", "check", "gguf_file_name", "locate", "run"]
